//! The continuation of a stored authorization request, and its consent page
//! (`GET|POST /consent/{grant}`): sign-in when needed, consent when needed, then the code goes to
//! the client (RFC 6749 §4.1.2).
//!
//! The answer to the client is sent from here, through [`super::respond`] (the one encoding of
//! the response modes and RFC 9207 `iss`, shared with `/authorize`'s errors), so a first login
//! walks `/authorize` → (the sign-in pages) → this module → the client, each once, and never
//! back.
//!
//! What the request still needs is decided in one place, [`grants::decide`] (core); this module
//! answers the decision, and is the only one that does: the sign-in pages come back to [`get`]
//! (their [`AfterSignIn::Grant`] leads
//! here); `/authorize` hands a request it just stored to [`proceed`] when the browser already
//! has a session (without one it goes straight to the sign-in page: nothing to decide yet); the
//! consent form posts to [`post`].

use axum::{
    extract::{Form, Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;

use super::respond::{error_to_client, respond_to_client, OAuthError};
use crate::domain::after_sign_in::AfterSignIn;
use crate::{
    core::{
        clients,
        grants::{self, Decision},
    },
    domain::protocol::{ErrorCode, Prompt},
    domain::scope::describe_scopes,
    endpoints,
    http::{
        kit::{self, session::BrowserCookie},
        AppState,
    },
    storage::{AuthorizationGrant, BrowserSession, Client, StorageError, User},
};

/// Where the consent page is served (`/consent/{grant id}`).
pub const PATH: &str = endpoints::CONSENT;

/// The page for a storage failure of this flow.
fn unavailable(state: &AppState, error: &StorageError) -> Response {
    kit::unavailable(state, "sign-in flow", error)
}

fn expired(state: &AppState) -> Response {
    kit::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::BAD_REQUEST,
        "This sign-in request has expired",
        "Go back to the application and start signing in again.",
        None,
    )
}

/// An error for the client, on behalf of a stored grant (shown first when the client
/// registered itself: [`error_to_client`], RFC 9700 §4.11.2).
fn client_error(
    state: &AppState,
    grant: &AuthorizationGrant,
    client: &Client,
    error: OAuthError,
) -> Response {
    error_to_client(
        state,
        client,
        &grant.redirect_uri,
        grant.response_mode,
        &error,
        grant.state.as_deref(),
    )
}

/// Ends a request asking for more than the user may have (cancelled, so the consent page
/// won't serve it later): `access_denied` for the client (RFC 6749 §4.1.2.1).
async fn not_allowed(state: &AppState, grant: &AuthorizationGrant, client: &Client) -> Response {
    match grants::cancel(state, grant.id).await {
        Ok(_) => client_error(
            state,
            grant,
            client,
            OAuthError::new(
                ErrorCode::AccessDenied,
                "this account may not be granted urn:synapse:admin:* or urn:mas:admin \
                 (server administration)",
            ),
        ),
        Err(e) => unavailable(state, &e),
    }
}

/// Continues a request just stored by `/authorize` for a browser with a session (`cookie`).
pub async fn proceed(
    state: &AppState,
    cookie: BrowserCookie,
    grant: AuthorizationGrant,
    client: Client,
) -> Response {
    let assessed = async {
        let mut repo = state.storage.reader().await?;
        grants::assess(
            &mut repo,
            state,
            &grant,
            &client,
            cookie.session_id(),
            cookie.signed_in_for(),
        )
        .await
    }
    .await;
    let (user, decision) = match assessed {
        Ok(assessed) => assessed,
        Err(e) => return unavailable(state, &e),
    };
    let none = grant.prompt.contains(Prompt::None);
    if none && decision != Decision::Complete {
        // OIDC Core §3.1.2.6: the request ends here with an error; the stored request must not
        // be served later by the consent page.
        if let Err(e) = grants::cancel(state, grant.id).await {
            return unavailable(state, &e);
        }
    }
    let response = match (decision, none, user) {
        (Decision::NotAllowed, ..) => not_allowed(state, &grant, &client).await,
        (Decision::SignIn, true, _) => client_error(
            state,
            &grant,
            &client,
            OAuthError::new(ErrorCode::LoginRequired, "the user is not signed in"),
        ),
        (Decision::Consent, true, _) => client_error(
            state,
            &grant,
            &client,
            OAuthError::new(
                ErrorCode::ConsentRequired,
                "the user has not allowed this client",
            ),
        ),
        // RFC 8252 §8.6: allowed before, but this client's identity can't be assured.
        (Decision::Confirm, true, _) => client_error(
            state,
            &grant,
            &client,
            OAuthError::new(
                ErrorCode::InteractionRequired,
                "the user must confirm this request: the client's identity can't be assured",
            ),
        ),
        (Decision::Complete, _, Some((session, user))) => {
            complete(state, &grant, &client, &session, &user).await
        }
        (Decision::SignIn, false, _) | (Decision::Complete, _, None) => kit::sign_in_first(
            state,
            &AfterSignIn::Grant(grant.id),
            grant.prompt.contains(Prompt::Create),
        ),
        (Decision::Consent | Decision::Confirm, false, _) => {
            Redirect::to(&format!("{PATH}/{}", grant.id)).into_response()
        }
    };
    (cookie.into_jar(), response).into_response()
}

/// Issues the code ([`grants::issue_code`]), then the redirect to the client with `code` and
/// `state`.
async fn complete(
    state: &AppState,
    grant: &AuthorizationGrant,
    client: &Client,
    session: &BrowserSession,
    user: &User,
) -> Response {
    match grants::issue_code(state, grant, client, session, user).await {
        Ok(Some(code)) => {
            let mut fields: Vec<(&str, &str)> = vec![("code", &code)];
            if let Some(s) = &grant.state {
                fields.push(("state", s));
            }
            respond_to_client(state, &grant.redirect_uri, grant.response_mode, &fields)
        }
        // Approved twice (two tabs, a double click): the first approval already answered.
        Ok(None) => expired(state),
        Err(e) => unavailable(state, &e),
    }
}

fn consent_page(
    state: &AppState,
    cookie: &BrowserCookie,
    grant: &AuthorizationGrant,
    client: &Client,
    user: &User,
) -> Response {
    // The answer redirects to the client: `form-action` must allow it (browsers check a form's
    // redirects against it too).
    kit::page_with_csp(
        state,
        StatusCode::OK,
        "pages/consent.html",
        minijinja::context! {
            client_name => clients::client_name(client),
            client_uri => clients::client_uri(client),
            username => user.username,
            scopes => describe_scopes(&grant.scope),
            csrf => cookie.csrf_token(),
            action => format!("{PATH}/{}", grant.id),
        },
        &kit::csp_redirecting_to(url::Url::parse(&grant.redirect_uri).ok().as_ref()),
    )
}

/// The login page, to come back to this request afterwards: the consent page's own refusal of
/// a browser without a session (never the registration page: whoever was signing in for this
/// request already has an account).
fn login_first(state: &AppState, grant: &AuthorizationGrant) -> Response {
    kit::sign_in_first(state, &AfterSignIn::Grant(grant.id), false)
}

/// `GET /consent/{grant}`: sign-in if needed, the consent page if needed, else the code.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(id): Path<String>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    // One connection for every read: the request, its client, the browser session, its user,
    // the last sign-in and the remembered consents.
    let found = async {
        let mut repo = state.storage.reader().await?;
        let Some((grant, client)) = grants::pending_grant(&mut repo, &state, &id).await? else {
            return Ok(None);
        };
        let (user, decision) = grants::assess(
            &mut repo,
            &state,
            &grant,
            &client,
            cookie.session_id(),
            cookie.signed_in_for(),
        )
        .await?;
        Ok::<_, StorageError>(Some((grant, client, user, decision)))
    }
    .await;
    let (grant, client, user, decision) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return (cookie.into_jar(), expired(&state)).into_response(),
        Err(e) => return (cookie.into_jar(), unavailable(&state, &e)).into_response(),
    };
    let response = match (decision, &user) {
        (Decision::NotAllowed, _) => not_allowed(&state, &grant, &client).await,
        (Decision::Consent | Decision::Confirm, Some((_, user))) => {
            consent_page(&state, &cookie, &grant, &client, user)
        }
        (Decision::Complete, Some((session, user))) => {
            complete(&state, &grant, &client, session, user).await
        }
        _ => login_first(&state, &grant),
    };
    (cookie.into_jar(), response).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
}

/// `POST /consent/{grant}`: the user's answer.
pub async fn post(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(id): Path<String>,
    Form(form): Form<ConsentForm>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let page = kit::csrf_refused(&state, &e);
        return (cookie.into_jar(), page).into_response();
    }
    let found = async {
        let mut repo = state.storage.reader().await?;
        let Some((grant, client)) = grants::pending_grant(&mut repo, &state, &id).await? else {
            return Ok(None);
        };
        // The same decision as the page: an answer posted straight here can't skip a sign-in
        // that `prompt=login` or `max_age` asks for.
        let (user, decision) = grants::assess(
            &mut repo,
            &state,
            &grant,
            &client,
            cookie.session_id(),
            cookie.signed_in_for(),
        )
        .await?;
        Ok::<_, StorageError>(Some((grant, client, user, decision)))
    }
    .await;
    let (grant, client, user) = match found {
        Ok(Some((
            grant,
            client,
            Some(user),
            Decision::Consent | Decision::Confirm | Decision::Complete,
        ))) => (grant, client, user),
        Ok(Some((grant, client, _, Decision::NotAllowed))) => {
            let response = not_allowed(&state, &grant, &client).await;
            return (cookie.into_jar(), response).into_response();
        }
        Ok(Some((grant, ..))) => {
            return (cookie.into_jar(), login_first(&state, &grant)).into_response()
        }
        Ok(None) => return (cookie.into_jar(), expired(&state)).into_response(),
        Err(e) => return (cookie.into_jar(), unavailable(&state, &e)).into_response(),
    };
    let response = match form.action.as_str() {
        "allow" => complete(&state, &grant, &client, &user.0, &user.1).await,
        // RFC 6749 §4.1.2.1: the resource owner denied the request.
        "deny" => match grants::cancel(&state, grant.id).await {
            Ok(true) => client_error(
                &state,
                &grant,
                &client,
                OAuthError::new(ErrorCode::AccessDenied, "the user denied the request"),
            ),
            Ok(false) => expired(&state),
            Err(e) => unavailable(&state, &e),
        },
        _ => kit::invalid_answer(&state),
    };
    (cookie.into_jar(), response).into_response()
}
