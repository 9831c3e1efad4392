//! What happens to a stored authorization request: sign-in when needed, consent when needed,
//! then the authorization code goes to the client (RFC 6749 §4.1.2).
//!
//! [`decide`] is the one place that says what a request still needs, from the grant, the signed-in
//! browser session and the remembered consents:
//! - sign-in, when nobody is signed in, when `prompt=login` asked for a sign-in that hasn't
//!   happened since the request, or when the last sign-in is older than `max_age`
//!   (OIDC Core §3.1.2.1);
//! - consent, when `prompt=consent` asked for it or the user never granted this client these
//!   scopes.
//!
//! `prompt=none` turns each need into an error for the client (`login_required`,
//! `consent_required`, OIDC Core §3.1.2.6) instead of a page.

use axum::{
    extract::{Form, Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use chrono::Duration;
use serde::Deserialize;
use ulid::Ulid;

use crate::{
    app::AppState,
    crypto::sha256,
    domain::{
        scope::{self, API_SCOPE, MAS_ADMIN_SCOPE, SYNAPSE_ADMIN_SCOPE, UNSTABLE_API_SCOPE},
        token::random_code,
    },
    oauth2::authorize::{error_response, respond_to_client, OAuthError, ResponseMode},
    storage::{
        AuthorizationGrant, BoxRepository, BrowserSession, Client, NewOAuth2Session, StorageError,
        User,
    },
    web::{self, session::BrowserCookie},
};

/// How long a stored authorization request may wait for the user (sign-in and consent).
pub const REQUEST_LIFETIME_MINUTES: i64 = 15;

/// The browser session the cookie names and its user, when both are still active.
pub async fn signed_in(
    state: &AppState,
    cookie: &BrowserCookie,
) -> Result<Option<(BrowserSession, User)>, StorageError> {
    if cookie.session_id().is_none() {
        return Ok(None);
    }
    signed_in_on(&mut state.storage.reader().await?, cookie).await
}

/// [`signed_in`] on a connection the caller already holds.
async fn signed_in_on(
    repo: &mut BoxRepository,
    cookie: &BrowserCookie,
) -> Result<Option<(BrowserSession, User)>, StorageError> {
    let Some(id) = cookie.session_id() else {
        return Ok(None);
    };
    let Some(session) = repo.browser_sessions().lookup(id).await? else {
        return Ok(None);
    };
    if !session.is_active() {
        return Ok(None);
    }
    match repo.users().lookup(session.user_id).await? {
        Some(user) if user.is_active() => Ok(Some((session, user))),
        _ => Ok(None),
    }
}

/// What a request still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    SignIn,
    /// The signed-in user may not have what the request asks for: `urn:synapse:admin:*` is
    /// only for users allowed to administer the server (MSC2967, the homeserver contract).
    NotAllowed,
    Consent,
    /// Everything is there: issue the code.
    Complete,
}

fn prompts(grant: &AuthorizationGrant) -> Vec<&str> {
    grant
        .prompt
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter(|p| !p.is_empty())
        .collect()
}

/// Decides what the request needs next (see the module docs).
async fn decide(
    repo: &mut BoxRepository,
    state: &AppState,
    grant: &AuthorizationGrant,
    signed_in: Option<&(BrowserSession, User)>,
    cookie: &BrowserCookie,
) -> Result<Decision, StorageError> {
    let Some((session, user)) = signed_in else {
        return Ok(Decision::SignIn);
    };
    let now = state.storage.entropy().clock.now();
    let last = repo
        .browser_sessions()
        .last_authentication(session.id)
        .await?;
    let Some(last) = last else {
        return Ok(Decision::SignIn);
    };
    // `urn:synapse:admin:*` and `urn:mas:admin` only for users allowed to administer.
    if !user.can_request_admin && scope::asks_for_admin(&grant.scope) {
        return Ok(Decision::NotAllowed);
    }
    let prompts = prompts(grant);
    // prompt=login / prompt=create: a sign-in (or registration) made for this request, or
    // anyway after it was made.
    let fresh = cookie.signed_in_for() == Some(grant.id) || last.created_at > grant.created_at;
    if (prompts.contains(&"login") || prompts.contains(&"create")) && !fresh {
        return Ok(Decision::SignIn);
    }
    if let Some(max_age) = grant.max_age {
        if last.created_at + Duration::seconds(max_age) < now {
            return Ok(Decision::SignIn);
        }
    }
    if prompts.contains(&"consent")
        || !repo
            .consents()
            .has_consent(user.id, grant.client_id, &grant.scope)
            .await?
    {
        return Ok(Decision::Consent);
    }
    Ok(Decision::Complete)
}

/// The page for a storage failure of this flow.
fn unavailable(state: &AppState, error: &StorageError) -> Response {
    web::unavailable(state, "sign-in flow", error)
}

fn expired(state: &AppState) -> Response {
    web::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::BAD_REQUEST,
        "This sign-in request has expired",
        "Go back to the application and start signing in again.",
        None,
    )
}

fn grant_mode(grant: &AuthorizationGrant) -> ResponseMode {
    ResponseMode::parse(Some(&grant.response_mode)).unwrap_or(ResponseMode::Query)
}

/// An error for the client, on behalf of a stored grant.
fn client_error(state: &AppState, grant: &AuthorizationGrant, error: OAuthError) -> Response {
    error_response(
        state,
        &grant.redirect_uri,
        grant_mode(grant),
        &error,
        grant.state.as_deref(),
    )
}

/// Ends a request asking for more than the user may have (cancelled, so the consent page
/// won't serve it later): `access_denied` for the client (RFC 6749 §4.1.2.1).
async fn not_allowed(state: &AppState, grant: &AuthorizationGrant) -> Response {
    let cancelled = async {
        let mut repo = state.storage.begin().await?;
        repo.authorization_grants().cancel(grant.id).await?;
        repo.commit().await
    }
    .await;
    match cancelled {
        Ok(()) => client_error(
            state,
            grant,
            OAuthError::new(
                "access_denied",
                "this account may not be granted urn:synapse:admin:* or urn:mas:admin \
                 (server administration)",
            ),
        ),
        Err(e) => unavailable(state, &e),
    }
}

/// Who is signed in and what the request still needs, on one connection.
async fn assess(
    repo: &mut BoxRepository,
    state: &AppState,
    grant: &AuthorizationGrant,
    cookie: &BrowserCookie,
) -> Result<(Option<(BrowserSession, User)>, Decision), StorageError> {
    let user = signed_in_on(repo, cookie).await?;
    let decision = decide(repo, state, grant, user.as_ref(), cookie).await?;
    Ok((user, decision))
}

/// Continues a request just stored by `/authorize`.
pub async fn proceed(
    state: &AppState,
    jar: PrivateCookieJar,
    grant: AuthorizationGrant,
    client: Client,
) -> Response {
    let cookie = web::load_cookie(state, jar);
    let assessed = async {
        let mut repo = state.storage.reader().await?;
        assess(&mut repo, state, &grant, &cookie).await
    }
    .await;
    let (user, decision) = match assessed {
        Ok(assessed) => assessed,
        Err(e) => return unavailable(state, &e),
    };
    let none = prompts(&grant).contains(&"none");
    if none && decision != Decision::Complete {
        // OIDC Core §3.1.2.6: the request ends here with an error; the stored request must not
        // be served later by the consent page.
        let cancelled = async {
            let mut repo = state.storage.begin().await?;
            repo.authorization_grants().cancel(grant.id).await?;
            repo.commit().await
        }
        .await;
        if let Err(e) = cancelled {
            return unavailable(state, &e);
        }
    }
    let response = match (decision, none, user) {
        (Decision::NotAllowed, ..) => not_allowed(state, &grant).await,
        (Decision::SignIn, true, _) => client_error(
            state,
            &grant,
            OAuthError::new("login_required", "the user is not signed in"),
        ),
        (Decision::Consent, true, _) => client_error(
            state,
            &grant,
            OAuthError::new("consent_required", "the user has not allowed this client"),
        ),
        (Decision::Complete, _, Some((session, user))) => {
            complete(state, &grant, &client, &session, &user).await
        }
        (Decision::SignIn, false, _) | (Decision::Complete, _, None) => {
            // Initiating User Registration via OIDC 1.0: prompt=create opens registration.
            let page = if state.settings.registration && prompts(&grant).contains(&"create") {
                super::register::PATH
            } else {
                super::login::PATH
            };
            Redirect::to(&format!("{page}?grant={}", grant.id)).into_response()
        }
        (Decision::Consent, false, _) => {
            Redirect::to(&format!("{}/{}", PATH, grant.id)).into_response()
        }
    };
    (cookie.into_jar(), response).into_response()
}

/// Issues the code: the OAuth 2.0 session, the remembered consent and the fulfilled grant, in
/// one transaction, then the redirect to the client with `code` and `state`.
async fn complete(
    state: &AppState,
    grant: &AuthorizationGrant,
    client: &Client,
    session: &BrowserSession,
    user: &User,
) -> Response {
    let mut rng = state.storage.entropy().rng.rng();
    // RFC 6749 §10.10: unguessable; only its hash is stored.
    let code = random_code(&mut rng, 32);
    let result = async {
        let mut repo = state.storage.begin().await?;
        let oauth_session = repo
            .oauth2_sessions()
            .add(NewOAuth2Session {
                user_id: Some(user.id),
                client_id: client.id,
                browser_session_id: Some(session.id),
                scope: &grant.scope,
                device_id: scope::granted_device(&grant.scope).as_deref(),
                user_agent: session.user_agent.as_deref(),
            })
            .await?;
        repo.consents()
            .record(user.id, client.id, &grant.scope)
            .await?;
        let won = repo
            .authorization_grants()
            .fulfill(grant.id, session.id, oauth_session.id, &sha256(&code))
            .await?;
        if won {
            repo.commit().await?;
        }
        Ok::<_, StorageError>(won)
    }
    .await;
    match result {
        Ok(true) => {
            let mut fields: Vec<(&str, &str)> = vec![("code", &code)];
            if let Some(s) = &grant.state {
                fields.push(("state", s));
            }
            respond_to_client(state, &grant.redirect_uri, grant_mode(grant), &fields)
        }
        // Approved twice (two tabs, a double click): the first approval already answered.
        Ok(false) => expired(state),
        Err(e) => unavailable(state, &e),
    }
}

/// Where the consent page is served (`/consent/{grant id}`).
pub const PATH: &str = "/consent";

/// A stored grant still waiting for the user, with its client.
async fn pending_grant(
    repo: &mut BoxRepository,
    state: &AppState,
    id: &str,
) -> Result<Option<(AuthorizationGrant, Client)>, StorageError> {
    let Ok(id) = Ulid::from_string(id) else {
        return Ok(None);
    };
    let Some(grant) = repo.authorization_grants().lookup(id).await? else {
        return Ok(None);
    };
    let now = state.storage.entropy().clock.now();
    if grant.fulfilled_at.is_some()
        || grant.cancelled_at.is_some()
        || grant.created_at + Duration::minutes(REQUEST_LIFETIME_MINUTES) < now
    {
        return Ok(None);
    }
    Ok(repo
        .clients()
        .lookup(grant.client_id)
        .await?
        .map(|c| (grant, c)))
}

/// Human words for a scope token, for the consent page.
pub fn describe_scope(token: &str) -> String {
    match token {
        "openid" => "Know who you are (your user ID)".into(),
        "email" => "See your email address".into(),
        API_SCOPE | UNSTABLE_API_SCOPE => "Access your Matrix account".into(),
        SYNAPSE_ADMIN_SCOPE => "Administer the Matrix server".into(),
        MAS_ADMIN_SCOPE => "Administer the accounts of this server (the admin API)".into(),
        _ => match scope::device_id(token) {
            Some(id) => format!("Device {id}"),
            None => format!("Use the permission “{token}”"),
        },
    }
}

/// A granted scope in words, one line a token, for the consent and device approval pages.
pub fn describe_scopes(scope: &str) -> Vec<String> {
    scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(describe_scope)
        .collect()
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
    web::page_with_csp(
        state,
        StatusCode::OK,
        "pages/consent.html",
        minijinja::context! {
            client_name => web::client_name(client),
            client_uri => web::client_uri(client),
            username => user.username,
            scopes => describe_scopes(&grant.scope),
            csrf => cookie.csrf_token(),
            action => format!("{PATH}/{}", grant.id),
        },
        &web::csp_redirecting_to(url::Url::parse(&grant.redirect_uri).ok().as_ref()),
    )
}

/// The login page, to come back to this request afterwards.
fn sign_in_first(grant: &AuthorizationGrant) -> Redirect {
    Redirect::to(&format!("{}?grant={}", super::login::PATH, grant.id))
}

/// `GET /consent/{grant}`: sign-in if needed, the consent page if needed, else the code.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(id): Path<String>,
) -> Response {
    let cookie = web::load_cookie(&state, jar);
    // One connection for every read: the request, its client, the browser session, its user,
    // the last sign-in and the remembered consents.
    let found = async {
        let mut repo = state.storage.reader().await?;
        let Some((grant, client)) = pending_grant(&mut repo, &state, &id).await? else {
            return Ok(None);
        };
        let (user, decision) = assess(&mut repo, &state, &grant, &cookie).await?;
        Ok::<_, StorageError>(Some((grant, client, user, decision)))
    }
    .await;
    let (grant, client, user, decision) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return (cookie.into_jar(), expired(&state)).into_response(),
        Err(e) => return (cookie.into_jar(), unavailable(&state, &e)).into_response(),
    };
    let response = match (decision, &user) {
        (Decision::NotAllowed, _) => not_allowed(&state, &grant).await,
        (Decision::Consent, Some((_, user))) => {
            consent_page(&state, &cookie, &grant, &client, user)
        }
        (Decision::Complete, Some((session, user))) => {
            complete(&state, &grant, &client, session, user).await
        }
        _ => sign_in_first(&grant).into_response(),
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
    let cookie = web::load_cookie(&state, jar);
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let page = web::csrf_refused(&state, &e);
        return (cookie.into_jar(), page).into_response();
    }
    let found = async {
        let mut repo = state.storage.reader().await?;
        let Some((grant, client)) = pending_grant(&mut repo, &state, &id).await? else {
            return Ok(None);
        };
        // The same decision as the page: an answer posted straight here can't skip a sign-in
        // that `prompt=login` or `max_age` asks for.
        let (user, decision) = assess(&mut repo, &state, &grant, &cookie).await?;
        Ok::<_, StorageError>(Some((grant, client, user, decision)))
    }
    .await;
    let (grant, client, user) = match found {
        Ok(Some((grant, client, Some(user), Decision::Consent | Decision::Complete))) => {
            (grant, client, user)
        }
        Ok(Some((grant, _, _, Decision::NotAllowed))) => {
            let response = not_allowed(&state, &grant).await;
            return (cookie.into_jar(), response).into_response();
        }
        Ok(Some((grant, ..))) => return (cookie.into_jar(), sign_in_first(&grant)).into_response(),
        Ok(None) => return (cookie.into_jar(), expired(&state)).into_response(),
        Err(e) => return (cookie.into_jar(), unavailable(&state, &e)).into_response(),
    };
    let response = match form.action.as_str() {
        "allow" => complete(&state, &grant, &client, &user.0, &user.1).await,
        "deny" => {
            let cancelled = async {
                let mut repo = state.storage.begin().await?;
                let won = repo.authorization_grants().cancel(grant.id).await?;
                repo.commit().await?;
                Ok::<_, StorageError>(won)
            }
            .await;
            match cancelled {
                // RFC 6749 §4.1.2.1: the resource owner denied the request.
                Ok(true) => client_error(
                    &state,
                    &grant,
                    OAuthError::new("access_denied", "the user denied the request"),
                ),
                Ok(false) => expired(&state),
                Err(e) => unavailable(&state, &e),
            }
        }
        _ => web::invalid_answer(&state),
    };
    (cookie.into_jar(), response).into_response()
}
