//! `GET /upstream/authorize/{provider_id}[?grant=…|next=…]`: starts a login at an upstream
//! provider.
//!
//! Stores an authorization session (the SHA-256 of a fresh `state`, a `nonce` and the PKCE
//! verifier), remembers it in the browser's cookie with where to continue afterwards, and
//! redirects to the provider's authorization endpoint with an OpenID Connect authorization
//! request (OIDC Core §3.1.2.1).

use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use ulid::Ulid;
use url::Url;

use super::{
    cookie::{Pending, UpstreamCookie},
    redirect_uri,
};
use crate::domain::after_sign_in::AfterSignIn;
use crate::{
    config::upstream::ResponseMode,
    core::upstream::{client::Provider, UpstreamError},
};
use crate::{
    crypto::sha256,
    domain::{pkce, protocol, token::random_code},
    http::{kit::redirect_to, AppState},
};

#[derive(Debug, Default, Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    grant: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

/// Reads an enabled provider named in a path.
async fn load_provider(state: &AppState, id: &str) -> Result<Provider, UpstreamError> {
    let id = Ulid::from_string(id).map_err(|_| UpstreamError::UnknownProvider)?;
    let mut repo = state.storage.reader().await?;
    Provider::load_enabled(&mut repo, id, &state.settings.encryption_key).await
}

/// `GET /upstream/authorize/{provider_id}`.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(provider_id): Path<String>,
    Query(query): Query<StartQuery>,
) -> Response {
    let mut cookie = UpstreamCookie::for_request(&state, jar);
    let provider = match load_provider(&state, &provider_id).await {
        Ok(provider) => provider,
        Err(e) => return (cookie.into_jar(), e.page(&state, None)).into_response(),
    };
    match start(&state, &provider, &query).await {
        Ok((url, pending)) => {
            cookie.add(pending);
            (cookie.into_jar(), redirect_to(&url)).into_response()
        }
        Err(e) => (cookie.into_jar(), e.page(&state, Some(&provider.name))).into_response(),
    }
}

async fn start(
    state: &AppState,
    provider: &Provider,
    query: &StartQuery,
) -> Result<(Url, Pending), UpstreamError> {
    let after = AfterSignIn::from_params(query.grant.as_deref(), query.next.as_deref());
    let now = state.storage.entropy().clock.now();
    let endpoints = state.upstream.endpoints(provider, now).await?;
    let (state_value, nonce, verifier) = {
        let mut rng = state.storage.entropy().rng.rng();
        (
            random_code(&mut rng, 32),
            random_code(&mut rng, 32),
            // RFC 7636 §4.1: 43 to 128 unreserved characters; 64 base62 ones carry 380 bits.
            endpoints.pkce.then(|| random_code(&mut rng, 64)),
        )
    };
    let mut repo = state.storage.begin().await?;
    let session = repo
        .upstream_sessions()
        .add(
            provider.id,
            &sha256(&state_value),
            verifier.as_deref(),
            Some(&nonce),
        )
        .await?;
    repo.commit().await?;

    let mut url = endpoints.authorization.clone();
    {
        let mut pairs = url.query_pairs_mut();
        pairs
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &redirect_uri(state, provider.id))
            .append_pair("scope", &provider.scope)
            .append_pair("state", &state_value)
            // OIDC Core §3.1.2.1: the nonce binds the ID token to this browser's request.
            .append_pair("nonce", &nonce);
        if let Some(verifier) = &verifier {
            // RFC 7636 §4.2: S256 only (RFC 9700 §2.1.1).
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            pairs
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", pkce::S256);
        }
        if provider.settings.response_mode == ResponseMode::FormPost {
            // OAuth 2.0 Form Post Response Mode §2.
            pairs.append_pair("response_mode", protocol::ResponseMode::FormPost.as_str());
        }
    }
    let pending = Pending {
        session: session.id,
        provider: provider.id,
        grant: after.as_ref().and_then(AfterSignIn::grant),
        next: after
            .as_ref()
            .filter(|after| after.grant().is_none())
            .map(AfterSignIn::path),
        started: now.timestamp(),
    };
    tracing::info!(provider = %provider.id, session = %session.id, pkce = endpoints.pkce, "upstream login started");
    Ok((url, pending))
}
