//! `GET|POST /upstream/callback/{provider_id}`: the provider's authorization response (a
//! redirect with the response in the query, or a `form_post`).
//!
//! The response is accepted only for a session this browser started ([`super::cookie`]),
//! not yet completed, and younger than [`super::cookie::LIFETIME`]. Then: the `iss` parameter
//! (RFC 9207 §2.4), the provider's error if any (RFC 6749 §4.1.2.1), the code exchange, the ID
//! token (OIDC Core §3.1.3.7), userinfo when configured, and the identity's link, stored with the
//! claims in one transaction. The browser goes on to the link page.
//!
//! A `form_post` response is a cross-site POST, which carries no `SameSite=Lax` cookie: the
//! callback answers it with a page that posts the same fields again from our own origin, and
//! that second POST has the cookie. A posted response is answered with a page that moves on by
//! itself (see [`onward`]) rather than a redirect.

use axum::{
    extract::{Form, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use ulid::Ulid;

use super::{
    cookie::{UpstreamCookie, LIFETIME},
    redirect_uri,
};
use crate::core::upstream::{client::Provider, id_token, UpstreamError};
use crate::endpoints::{UPSTREAM_CALLBACK, UPSTREAM_LINK};
use crate::http::kit;
use crate::{
    crypto::sha256,
    http::AppState,
    storage::{BoxRepository, StorageError, UpstreamAuthorizationSession},
};

/// The longest provider error text shown or logged, in characters.
const MAX_ERROR_CHARS: usize = 300;

/// The authorization response (RFC 6749 §4.1.2, §4.1.2.1; RFC 9207 §2).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct CallbackParams {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    /// Set by our own re-post of a `form_post` response (see the module docs).
    #[serde(default)]
    resubmitted: Option<String>,
}

impl CallbackParams {
    fn fields(&self) -> Vec<(&'static str, String)> {
        [
            ("code", &self.code),
            ("state", &self.state),
            ("error", &self.error),
            ("error_description", &self.error_description),
            ("iss", &self.iss),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
        .collect()
    }
}

/// `GET /upstream/callback/{provider_id}` (response mode `query`).
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(provider_id): Path<String>,
    Query(params): Query<CallbackParams>,
) -> Response {
    handle(state, jar, provider_id, params, false).await
}

/// `POST /upstream/callback/{provider_id}` (response mode `form_post`).
pub async fn post(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(provider_id): Path<String>,
    Form(params): Form<CallbackParams>,
) -> Response {
    handle(state, jar, provider_id, params, true).await
}

/// The script of the re-post page: submits its form at once.
const RESUBMIT_SCRIPT: &str =
    "window.addEventListener('DOMContentLoaded',function(){document.forms[0].submit()});";

/// The page that posts a `form_post` response again from our origin, so the cookie comes along.
fn resubmit(state: &AppState, provider_id: &str, params: &CallbackParams) -> Response {
    let hash = format!(
        "sha256-{}",
        STANDARD.encode(Sha256::digest(RESUBMIT_SCRIPT.as_bytes()))
    );
    let mut fields = params.fields();
    fields.push(("resubmitted", "1".into()));
    kit::page_with_csp(
        state,
        StatusCode::OK,
        "pages/upstream_continue.html",
        minijinja::context! {
            script => RESUBMIT_SCRIPT,
            action => format!("{UPSTREAM_CALLBACK}/{provider_id}"),
            fields => fields,
        },
        &kit::csp("'self'", Some(&hash)),
    )
}

/// The answer to a posted response: a page that moves on to `target` by itself. Not a redirect:
/// the POST came from a form (the provider's, or our re-post page), and browsers check a form's
/// redirects against the page's `form-action`, which can't name the client the login may end
/// at; a fresh navigation starts a new chain.
fn onward(state: &AppState, target: &str) -> Response {
    kit::page(
        state,
        StatusCode::OK,
        "pages/upstream_continue.html",
        minijinja::context! { refresh => target },
    )
}

async fn handle(
    state: AppState,
    jar: PrivateCookieJar,
    provider_id: String,
    params: CallbackParams,
    posted: bool,
) -> Response {
    let mut cookie = UpstreamCookie::for_request(&state, jar);
    if posted && !cookie.is_present() && params.resubmitted.is_none() {
        return (cookie.into_jar(), resubmit(&state, &provider_id, &params)).into_response();
    }
    // The provider and the session on one connection, released before calling the provider.
    let found = async {
        let id = Ulid::from_string(&provider_id).map_err(|_| UpstreamError::UnknownProvider)?;
        let mut repo = state.storage.reader().await?;
        let provider =
            Provider::load_enabled(&mut repo, id, &state.settings.encryption_key).await?;
        let session = find_session(&state, &mut repo, &cookie, &provider, &params).await;
        Ok::<_, UpstreamError>((provider, session))
    }
    .await;
    let (provider, session) = match found {
        Ok(found) => found,
        Err(e) => return (cookie.into_jar(), e.page(&state, None)).into_response(),
    };
    let outcome = match session {
        Ok(session) => complete(&state, &mut cookie, &provider, session, &params).await,
        Err(e) => Err(e),
    };
    let response = match outcome {
        Ok(session) if posted => onward(&state, &format!("{UPSTREAM_LINK}/{session}")),
        Ok(session) => Redirect::to(&format!("{UPSTREAM_LINK}/{session}")).into_response(),
        Err(e) => e.page(&state, Some(&provider.name)),
    };
    (cookie.into_jar(), response).into_response()
}

/// The session this response answers, if this browser started it and it is still open.
async fn find_session(
    state: &AppState,
    repo: &mut BoxRepository,
    cookie: &UpstreamCookie,
    provider: &Provider,
    params: &CallbackParams,
) -> Result<UpstreamAuthorizationSession, UpstreamError> {
    let state_value = params
        .state
        .as_deref()
        .ok_or(UpstreamError::UnknownSession)?;
    let session = repo
        .upstream_sessions()
        .find_by_state_hash(&sha256(state_value))
        .await?
        .filter(|s| s.provider_id == provider.id)
        .ok_or(UpstreamError::UnknownSession)?;
    if cookie.find(session.id).is_none() {
        return Err(UpstreamError::OtherBrowser);
    }
    if session.completed_at.is_some() {
        return Err(UpstreamError::UnknownSession);
    }
    if state.storage.entropy().clock.now() - session.created_at > LIFETIME {
        return Err(UpstreamError::Expired);
    }
    Ok(session)
}

fn shorten(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// Checks the response, exchanges the code and stores what came back; returns the session.
async fn complete(
    state: &AppState,
    cookie: &mut UpstreamCookie,
    provider: &Provider,
    session: UpstreamAuthorizationSession,
    params: &CallbackParams,
) -> Result<Ulid, UpstreamError> {
    let now = state.storage.entropy().clock.now();
    let endpoints = state.upstream.endpoints(provider, now).await?;
    // RFC 9207 §2.4: an `iss` that isn't the provider's is a mix-up attack; a provider that
    // promised `iss` must send it.
    match &params.iss {
        Some(iss) if *iss != provider.issuer => return Err(UpstreamError::IssuerMismatch),
        None if endpoints.iss_parameter => return Err(UpstreamError::IssuerMismatch),
        _ => {}
    }
    if let Some(error) = &params.error {
        // RFC 6749 §4.1.2.1: the provider refused (the user said no, or the request was
        // wrong). This attempt is over.
        cookie.remove(session.id);
        return Err(UpstreamError::Denied {
            error: shorten(error),
            description: params.error_description.as_deref().map(shorten),
        });
    }
    let code = params.code.as_deref().ok_or(UpstreamError::MissingCode)?;

    let tokens = {
        let mut rng = state.storage.entropy().rng.rng();
        state
            .upstream
            .exchange(
                provider,
                &endpoints,
                code,
                &redirect_uri(state, provider.id),
                session.code_verifier.as_deref(),
                &state.settings.keystore,
                now,
                &mut rng,
            )
            .await?
    };
    // OIDC Core §3.1.3.3: the token response of an OpenID Connect request has an ID token.
    let jwt = tokens.id_token.as_deref().ok_or(UpstreamError::NoIdToken)?;
    let alg = &provider.settings.id_token_signed_response_alg;
    let mut keys = state.upstream.keys(&endpoints.jwks, now, false).await?;
    if !id_token::has_key(&keys, jwt, alg) {
        // The provider may have rotated its keys since they were cached.
        keys = state.upstream.keys(&endpoints.jwks, now, true).await?;
    }
    let expected = id_token::Expected {
        issuer: &provider.issuer,
        client_id: &provider.client_id,
        algorithm: alg,
        nonce: session.nonce.as_deref(),
        access_token: Some(&tokens.access_token),
        now,
    };
    let mut claims = id_token::validate(jwt, &keys, &expected)?;
    if provider.settings.fetch_userinfo {
        if let Some(userinfo) = &endpoints.userinfo {
            let subject = claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let more = state
                .upstream
                .userinfo(userinfo, &tokens.access_token, &subject)
                .await?;
            claims.extend(more);
        }
    }
    let claims = Value::Object(claims);
    let subject = provider
        .settings
        .claims_imports
        .subject(&claims)
        .map_err(|e| crate::config::upstream::claims::ImportError::Template("subject", e))?
        .ok_or(UpstreamError::NoSubject)?;
    // A name for the upstream account on the account page.
    let account_name = ["preferred_username", "email", "name"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
        .unwrap_or(&subject)
        .to_owned();

    let mut repo = state.storage.begin().await?;
    let link = match repo
        .upstream_links()
        .find_by_subject(provider.id, &subject)
        .await?
    {
        Some(link) => link,
        None => match repo
            .upstream_links()
            .add(provider.id, &subject, Some(&account_name))
            .await
        {
            Ok(link) => link,
            // Another login of the same identity got there first: use its link.
            Err(StorageError::Conflict(_)) => repo
                .upstream_links()
                .find_by_subject(provider.id, &subject)
                .await?
                .ok_or(StorageError::NotFound("upstream link"))?,
            Err(e) => return Err(e.into()),
        },
    };
    let completed = repo
        .upstream_sessions()
        .complete(session.id, link.id, Some(jwt), &claims)
        .await?;
    if !completed {
        // The same response came twice; the first one goes on.
        return Err(UpstreamError::UnknownSession);
    }
    repo.commit().await?;
    tracing::info!(provider = %provider.id, session = %session.id, link = %link.id, "upstream login completed");
    Ok(session.id)
}
