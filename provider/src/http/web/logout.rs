//! RP-Initiated Logout 1.0: `GET|POST /oauth2/logout` (the `end_session_endpoint`).
//!
//! - `id_token_hint` must be an ID token this server signed (expired ones are accepted, §2);
//!   its `aud` names the client, and must agree with `client_id` when both are sent.
//! - `post_logout_redirect_uri` must be one the client registered (§3; loopback ones on any port,
//!   like redirect URIs); without a known client it is refused. `state` is passed back.
//! - The user confirms on a page (the OP SHOULD ask, §2), protected by the CSRF token; signing
//!   out ends the browser session and every OAuth 2.0 session started from it, so their tokens
//!   stop working at once.
//! - §3: without an `id_token_hint` "the OP MUST NOT perform post-logout redirection unless the
//!   OP has other means of confirming the legitimacy of the post-logout redirection target".
//!   Here a target is confirmed by a valid hint for the client (signed here, its `aud` the
//!   client, and, when someone is signed in, its `sub` that user and its `sid` that browser
//!   session), or by the client being static (its addresses written by the operator). Any other
//!   target is never redirected to on its own: the page names the application and the target,
//!   and the browser only goes there by the user's button (signed in) or link (signed out).
//!   Otherwise anyone could register a client (RFC 7591) whose post-logout address is a phishing
//!   site and use this endpoint as an open redirector (RFC 9700 §4.11.2).

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;
use url::Url;

use crate::core::clients;
use crate::http::kit;
use crate::{
    core::sessions::end_browser_session,
    domain::{protocol::ErrorCode, redirect_uri},
    http::{
        kit::{params::Params, redirect_to},
        AppState,
    },
    storage::{BrowserSession, Client, StorageError, User},
};

#[derive(Debug, Deserialize)]
struct HintClaims {
    aud: String,
    /// The user (OIDC Core §2).
    sub: String,
    /// The browser session the ID token was issued from (OIDC Front-Channel Logout 1.0 §3).
    #[serde(default)]
    sid: Option<String>,
}

/// A validated logout request.
struct LogoutRequest {
    client: Option<Client>,
    /// The verified `id_token_hint`'s claims.
    hint: Option<HintClaims>,
    /// Where to go afterwards, with `state` already added.
    redirect: Option<Url>,
    /// The parameters to carry through the confirmation form.
    fields: Vec<(String, String)>,
}

impl LogoutRequest {
    /// Is the post-logout redirect target confirmed without asking the user (RP-Initiated
    /// Logout 1.0 §3, see the module docs)? `signed_in` is the browser's session and user, if
    /// any: a hint for someone else, or from another browser session, is suspect (§2: "the OP
    /// SHOULD treat the logout request as suspect") and confirms nothing.
    fn target_confirmed(&self, signed_in: Option<(&BrowserSession, &User)>) -> bool {
        if self.client.as_ref().is_some_and(|c| c.is_static) {
            return true;
        }
        let Some(hint) = &self.hint else {
            return false;
        };
        match signed_in {
            None => true,
            Some((session, user)) => {
                hint.sub == user.id.to_string()
                    && hint
                        .sid
                        .as_ref()
                        .is_none_or(|sid| *sid == session.id.to_string())
            }
        }
    }
}

fn bad_request(state: &AppState, detail: &str) -> Response {
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::BAD_REQUEST,
        "Invalid sign-out request",
        detail,
        Some(ErrorCode::InvalidRequest.as_str()),
    )
}

async fn validate(
    state: &AppState,
    params: &Params,
) -> Result<Result<LogoutRequest, String>, StorageError> {
    let mut fields = Vec::new();
    for name in [
        "id_token_hint",
        "client_id",
        "post_logout_redirect_uri",
        "state",
    ] {
        if let Some(value) = params.get(name) {
            fields.push((name.to_owned(), value.to_owned()));
        }
    }
    let hint = match params.get("id_token_hint") {
        Some(hint) => match state
            .settings
            .keystore
            .verify_own::<HintClaims>(hint, state.settings.issuer.as_str())
        {
            Some(claims) => Some(claims),
            None => {
                return Ok(Err(
                    "The id_token_hint is not an ID token issued here.".into()
                ))
            }
        },
        None => None,
    };
    let hinted = hint.as_ref().map(|h| h.aud.clone());
    let client_id = match (hinted, params.get("client_id")) {
        (Some(a), Some(b)) if a != b => {
            return Ok(Err(
                "client_id does not match the id_token_hint's audience.".into(),
            ))
        }
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_owned),
    };
    let client = match &client_id {
        Some(id) => {
            let mut repo = state.storage.reader().await?;
            match repo.clients().find_by_client_id(id).await? {
                Some(client) => Some(client),
                None => return Ok(Err(format!("No application is registered as `{id}`."))),
            }
        }
        None => None,
    };
    let redirect = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let Some(client) = &client else {
                return Ok(Err(
                    "post_logout_redirect_uri needs the application to be known (id_token_hint or client_id).".into(),
                ));
            };
            let registered: Vec<String> = client
                .metadata
                .get("post_logout_redirect_uris")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            if redirect_uri::find_match(&registered, uri).is_none() {
                return Ok(Err(format!(
                    "`{uri}` is not a sign-out return address registered for this application."
                )));
            }
            let Ok(mut url) = Url::parse(uri) else {
                return Ok(Err("post_logout_redirect_uri is not a URL.".into()));
            };
            if let Some(s) = params.get("state") {
                url.query_pairs_mut().append_pair("state", s);
            }
            Some(url)
        }
    };
    Ok(Ok(LogoutRequest {
        client,
        hint,
        redirect,
        fields,
    }))
}

/// Where the browser goes once signed out: to the target when `confirmed` (by
/// [`LogoutRequest::target_confirmed`] or by the user's button), else the signed-out page, with
/// a link to an unconfirmed target for the user to follow or not.
fn done(state: &AppState, request: &LogoutRequest, confirmed: bool) -> Response {
    match &request.redirect {
        Some(url) if confirmed => redirect_to(url),
        unconfirmed => kit::page(
            state,
            StatusCode::OK,
            "pages/signed_out.html",
            minijinja::context! {
                client_name => request.client.as_ref().map(clients::client_name),
                target => unconfirmed.as_ref().map(target_of),
                link => unconfirmed.as_ref().map(Url::as_str),
            },
        ),
    }
}

/// The target as shown to the user: the registered address, without the `state` added.
fn target_of(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// `GET|POST /oauth2/logout`.
pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    jar: PrivateCookieJar,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let input = if method == Method::POST {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        query.unwrap_or_default()
    };
    let params = Params::parse(&input);
    let mut cookie = kit::load_cookie(&state, jar);
    let request = match validate(&state, &params).await {
        Ok(Ok(request)) => request,
        Ok(Err(detail)) => {
            return (cookie.into_jar(), bad_request(&state, &detail)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "logout: storage error");
            return (cookie.into_jar(), StatusCode::SERVICE_UNAVAILABLE).into_response();
        }
    };
    let signed_in = match kit::signed_in(&state, &cookie).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "logout: storage error");
            return (cookie.into_jar(), StatusCode::SERVICE_UNAVAILABLE).into_response();
        }
    };
    let Some((session, user)) = signed_in else {
        // Nobody to sign out: straight on, if the target is confirmed.
        let confirmed = request.target_confirmed(None);
        return (cookie.into_jar(), done(&state, &request, confirmed)).into_response();
    };
    let confirmed = method == Method::POST && params.get("confirm") == Some("1");
    if !confirmed {
        // Signing out redirects to `post_logout_redirect_uri`: `form-action` must allow it
        // (browsers check a form's redirects against it too).
        let page = kit::page_with_csp(
            &state,
            StatusCode::OK,
            "pages/logout.html",
            minijinja::context! {
                username => user.username,
                client_name => request.client.as_ref().map(clients::client_name),
                // Named on the page when only the user's button confirms it (§3).
                target => request
                    .redirect
                    .as_ref()
                    .filter(|_| !request.target_confirmed(Some((&session, &user))))
                    .map(target_of),
                csrf => cookie.csrf_token(),
                action => crate::endpoints::END_SESSION,
                fields => request.fields,
            },
            &kit::csp_redirecting_to(request.redirect.as_ref()),
        );
        return (cookie.into_jar(), page).into_response();
    }
    if let Err(e) = cookie.verify_csrf(params.get("csrf").unwrap_or_default()) {
        let page = kit::csrf_refused(&state, &e);
        return (cookie.into_jar(), page).into_response();
    }
    let ended = async {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        // The OAuth 2.0 sessions approved from this browser session end with it (their
        // Matrix devices are deleted too).
        let (_, jobs) = end_browser_session(&mut repo, session.id, user.id, now).await?;
        repo.commit().await?;
        Ok::<_, StorageError>(jobs)
    }
    .await;
    match ended {
        Ok(jobs) => jobs.run(&state).await,
        Err(e) => {
            tracing::error!(error = %e, "logout: can't end the session");
            return (cookie.into_jar(), StatusCode::SERVICE_UNAVAILABLE).into_response();
        }
    }
    let mut rng = state.storage.entropy().rng.rng();
    cookie.set_session(None, None, &mut rng);
    // The user pressed the button of a page naming the target: confirmed (§3).
    (cookie.into_jar(), done(&state, &request, true)).into_response()
}
