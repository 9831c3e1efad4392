//! `GET|POST /upstream/link/{session_id}`: what becomes of the identity a completed upstream
//! login brought back.
//!
//! - Linked to an account: that account is signed in (once: the session is consumed).
//! - Not linked: the page offers, from the claim imports ([`crate::config::upstream::claims`]):
//!   - a new account, its username, display name and email address suggested or imposed by the
//!     provider (a `require`d claim that is missing refuses the login);
//!   - linking to an existing account, after signing in to it with its password: the way out
//!     when the username the provider imposes is taken, and for people who had an account before
//!     the provider was added;
//!   - linking to the account already signed in in this browser.
//!
//! Every POST carries the CSRF token of the browser cookie; every outcome (account created,
//! identity linked, session consumed, browser session opened) is written in one transaction.

use axum::{
    extract::{Form, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;
use ulid::Ulid;

use super::{
    continue_to,
    cookie::{Pending, UpstreamCookie, LIFETIME},
};
use crate::core::sign_in;
use crate::domain::sign_in_method::SignInMethod;
use crate::endpoints::UPSTREAM_LINK;
use crate::http::kit;
use crate::{
    config::upstream::claims::Imported,
    core::upstream::{client::Provider, UpstreamError},
};
use crate::{
    core::{
        accounts::{self, AccountError, NewEmail, NewUser},
        rate_limit::{wait_in_words, ClientIp},
        sign_in::{AttemptError, Refusal},
    },
    http::{
        kit::{session::BrowserCookie, signed_in},
        AppState,
    },
    storage::{BoxRepository, StorageError, UpstreamAuthorizationSession, UpstreamLink, User},
};

/// The answers of the link page's forms.
#[derive(Debug, Default, Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    csrf: String,
    /// `register`, `login` or `link_current`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// Checkboxes of suggested imports ("on" when ticked).
    #[serde(default)]
    import_displayname: Option<String>,
    #[serde(default)]
    import_email: Option<String>,
}

/// An upstream login ready for its last step: the session, its link, its provider and where
/// the browser goes afterwards.
struct Completed {
    session: UpstreamAuthorizationSession,
    link: UpstreamLink,
    provider: Provider,
    pending: Pending,
}

/// Reads a completed, unconsumed session this browser started.
async fn load(
    state: &AppState,
    cookie: &UpstreamCookie,
    session_id: &str,
) -> Result<Completed, UpstreamError> {
    let id = Ulid::from_string(session_id).map_err(|_| UpstreamError::UnknownSession)?;
    let pending = cookie
        .find(id)
        .cloned()
        .ok_or(UpstreamError::OtherBrowser)?;
    let mut repo = state.storage.reader().await?;
    let session = repo
        .upstream_sessions()
        .lookup(id)
        .await?
        .filter(|s| s.completed_at.is_some() && s.consumed_at.is_none())
        .ok_or(UpstreamError::UnknownSession)?;
    if state.storage.entropy().clock.now() - session.created_at > LIFETIME {
        return Err(UpstreamError::Expired);
    }
    let link = match session.link_id {
        Some(link_id) => repo.upstream_links().lookup(link_id).await?,
        None => None,
    }
    .ok_or(UpstreamError::UnknownSession)?;
    let provider = Provider::load_enabled(
        &mut repo,
        session.provider_id,
        &state.settings.encryption_key,
    )
    .await?;
    Ok(Completed {
        session,
        link,
        provider,
        pending,
    })
}

fn cookies(state: &AppState, jar: PrivateCookieJar) -> (BrowserCookie, UpstreamCookie) {
    let upstream = UpstreamCookie::for_request(state, jar.clone());
    (kit::load_cookie(state, jar), upstream)
}

fn respond(cookie: BrowserCookie, upstream: UpstreamCookie, response: Response) -> Response {
    (cookie.into_jar(), upstream.into_jar(), response).into_response()
}

/// `GET /upstream/link/{session_id}`.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Response {
    let (mut cookie, mut upstream) = cookies(&state, jar);
    let done = match load(&state, &upstream, &session_id).await {
        Ok(done) => done,
        Err(e) => return respond(cookie, upstream, e.page(&state, None)),
    };
    let response = match done.link.user_id {
        Some(user_id) => {
            sign_in_linked(&state, &mut cookie, &mut upstream, &done, user_id, &headers).await
        }
        None => page(&state, &cookie, &done, StatusCode::OK, None, None).await,
    };
    respond(cookie, upstream, response)
}

/// Opens a browser session for `user` (the login's sign-in, recorded as `methods`), consuming
/// the upstream session, in the caller's transaction; sets the cookie once committed by the
/// caller. `None` when the session was consumed meanwhile.
async fn open_session(
    repo: &mut BoxRepository,
    done: &Completed,
    user: &User,
    methods: &[SignInMethod],
    user_agent: Option<&str>,
) -> Result<Option<Ulid>, StorageError> {
    // Single use: the same login can't sign in twice.
    if !repo.upstream_sessions().consume(done.session.id).await? {
        return Ok(None);
    }
    let session = repo
        .browser_sessions()
        .add(user.id, user_agent, None)
        .await?;
    for method in methods {
        repo.browser_sessions()
            .record_authentication(session.id, *method)
            .await?;
    }
    Ok(Some(session.id))
}

/// Signs in the account an identity is linked to.
async fn sign_in_linked(
    state: &AppState,
    cookie: &mut BrowserCookie,
    upstream: &mut UpstreamCookie,
    done: &Completed,
    user_id: Ulid,
    headers: &HeaderMap,
) -> Response {
    let user_agent = kit::user_agent(headers);
    let opened = async {
        let mut repo = state.storage.begin().await?;
        let user = repo
            .users()
            .lookup(user_id)
            .await?
            .ok_or(UpstreamError::UnknownSession)?;
        if !user.is_active() {
            return Err(UpstreamError::AccountUnavailable {
                deactivated: user.deactivated_at.is_some(),
            });
        }
        let methods = [SignInMethod::Upstream(done.link.id)];
        let session = open_session(&mut repo, done, &user, &methods, user_agent.as_deref())
            .await?
            .ok_or(UpstreamError::UnknownSession)?;
        repo.commit().await?;
        Ok((user, session))
    }
    .await;
    match opened {
        Ok((user, session)) => {
            tracing::info!(user = %user.username, provider = %done.provider.id, "signed in through an upstream provider");
            finish(state, cookie, upstream, done, session)
        }
        Err(e) => e.page(state, Some(&done.provider.name)),
    }
}

/// The browser is signed in as `session`: set the cookie, forget the login, continue.
fn finish(
    state: &AppState,
    cookie: &mut BrowserCookie,
    upstream: &mut UpstreamCookie,
    done: &Completed,
    session: Ulid,
) -> Response {
    let mut rng = state.storage.entropy().rng.rng();
    cookie.set_session(Some(session), done.pending.grant, &mut rng);
    upstream.remove(done.session.id);
    continue_to(&done.pending)
}

/// Is this localpart taken, here or on the homeserver? `false` when the homeserver can't tell
/// (the registration checks again, see [`register`]).
async fn localpart_taken(state: &AppState, localpart: &str) -> Result<bool, StorageError> {
    let mut repo = state.storage.reader().await?;
    if repo.users().find_by_username(localpart).await?.is_some() {
        return Ok(true);
    }
    drop(repo);
    match accounts::check_localpart_available(state, localpart).await {
        Ok(()) => Ok(false),
        Err(AccountError::UsernameTaken(_)) => Ok(true),
        Err(e) => {
            tracing::warn!(error = %e, "upstream link: can't ask the homeserver about a username");
            Ok(false)
        }
    }
}

/// The link page.
async fn page(
    state: &AppState,
    cookie: &BrowserCookie,
    done: &Completed,
    status: StatusCode,
    error: Option<&str>,
    typed_username: Option<&str>,
) -> Response {
    let claims = done.session.claims.clone().unwrap_or_default();
    let imported = match done.provider.settings.claims_imports.import(&claims) {
        Ok(imported) => imported,
        Err(e) => return UpstreamError::from(e).page(state, Some(&done.provider.name)),
    };
    let localpart = imported.localpart.value.clone();
    let invalid = localpart
        .as_deref()
        .and_then(|n| accounts::check_username(state, n).err())
        .map(|e| e.to_string());
    let taken = match &localpart {
        Some(name) if invalid.is_none() => match localpart_taken(state, name).await {
            Ok(taken) => taken,
            Err(e) => return UpstreamError::from(e).page(state, Some(&done.provider.name)),
        },
        _ => false,
    };
    // An imposed username that is taken (or invalid) can't make an account: only linking is
    // left.
    let locked = imported.localpart.is_locked();
    let can_register = !(locked && (taken || invalid.is_some()));
    let current = match signed_in(state, cookie).await {
        Ok(current) => current.map(|(_, user)| user.username),
        Err(e) => return UpstreamError::from(e).page(state, Some(&done.provider.name)),
    };
    let request = sign_in::pending_request(state, done.pending.after().as_ref()).await;
    let csp = kit::csp_redirecting_to(request.redirect_uri.as_ref());
    kit::page_with_csp(
        state,
        status,
        "pages/upstream_link.html",
        minijinja::context! {
            client_name => request.client_name,
            provider => done.provider.name,
            account_name => done.link.human_account_name,
            csrf => cookie.csrf_token(),
            action => format!("{UPSTREAM_LINK}/{}", done.session.id),
            error => error,
            server_name => state.settings.matrix.homeserver,
            can_register => can_register,
            username => typed_username.map(str::to_owned).or_else(|| localpart.clone()).unwrap_or_default(),
            username_locked => locked && can_register,
            username_taken => taken.then(|| localpart.clone()).flatten(),
            username_invalid => locked.then_some(invalid).flatten(),
            displayname => imported.displayname.value,
            displayname_locked => imported.displayname.is_locked(),
            email => imported.email.value,
            email_locked => imported.email.is_locked(),
            email_verified => imported.email_verified,
            login_username => if taken { localpart.unwrap_or_default() } else { String::new() },
            current_user => current,
        },
        &csp,
    )
}

/// `POST /upstream/link/{session_id}`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Path(session_id): Path<String>,
    Form(form): Form<LinkForm>,
) -> Response {
    let (mut cookie, mut upstream) = cookies(&state, jar);
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let response = kit::csrf_refused(&state, &e);
        return respond(cookie, upstream, response);
    }
    let done = match load(&state, &upstream, &session_id).await {
        Ok(done) => done,
        Err(e) => return respond(cookie, upstream, e.page(&state, None)),
    };
    if done.link.user_id.is_some() {
        // Linked meanwhile (another tab): the GET signs that account in.
        let back = Redirect::to(&format!("{UPSTREAM_LINK}/{}", done.session.id)).into_response();
        return respond(cookie, upstream, back);
    }
    let user_agent = kit::user_agent(&headers);
    let outcome = match form.action.as_str() {
        "register" => register(&state, &done, &form, user_agent.as_deref()).await,
        "login" => {
            link_with_password(&state, &client_ip, &done, &form, user_agent.as_deref()).await
        }
        "link_current" => link_current(&state, &cookie, &done).await,
        _ => Ok(Err(Retry::new(
            StatusCode::BAD_REQUEST,
            "Choose one of the options.",
        ))),
    };
    let response = match outcome {
        Ok(Ok(session)) => finish(&state, &mut cookie, &mut upstream, &done, session),
        Ok(Err(retry)) => {
            let typed = (form.action == "register").then_some(form.username.as_str());
            page(
                &state,
                &cookie,
                &done,
                retry.status,
                Some(&retry.message),
                typed,
            )
            .await
        }
        Err(e) => e.page(&state, Some(&done.provider.name)),
    };
    respond(cookie, upstream, response)
}

/// A refusal the user can do something about: the page again, with this message.
struct Retry {
    status: StatusCode,
    message: String,
}

impl Retry {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

type Outcome = Result<Result<Ulid, Retry>, UpstreamError>;

/// Links the identity to `user` and consumes the session, in the caller's transaction;
/// `Retry` when the identity was linked (or the session used) meanwhile.
async fn associate(
    repo: &mut BoxRepository,
    done: &Completed,
    user: &User,
) -> Result<Result<(), Retry>, StorageError> {
    if !repo
        .upstream_links()
        .associate(done.link.id, user.id)
        .await?
    {
        return Ok(Err(Retry::new(
            StatusCode::CONFLICT,
            "This identity was linked to an account meanwhile. Start again from the sign-in page.",
        )));
    }
    Ok(Ok(()))
}

/// Creates an account from the claims and what the user chose.
async fn register(
    state: &AppState,
    done: &Completed,
    form: &LinkForm,
    user_agent: Option<&str>,
) -> Outcome {
    let claims = done.session.claims.clone().unwrap_or_default();
    let imported: Imported = done.provider.settings.claims_imports.import(&claims)?;
    let username = match (&imported.localpart.value, imported.localpart.is_locked()) {
        (Some(imposed), true) => imposed.clone(),
        _ => form.username.trim().to_owned(),
    };
    let taken = || {
        Ok(Err(Retry::new(
            StatusCode::CONFLICT,
            format!("The username {username} is taken. Choose another, or sign in to that account to link it."),
        )))
    };
    // The homeserver has the last word on the localpart (the homeserver contract).
    match accounts::check_new_username(state, &username).await {
        Ok(()) => {}
        Err(AccountError::UsernameTaken(_)) => return taken(),
        Err(AccountError::InvalidUsername(e)) => {
            return Ok(Err(Retry::new(
                StatusCode::BAD_REQUEST,
                format!("Username: {e}."),
            )))
        }
        Err(e) => {
            tracing::error!(error = %e, "upstream registration: can't check the username");
            return Ok(Err(Retry::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The Matrix server can't be reached to check this username. Try again shortly.",
            )));
        }
    }
    let chosen = |attribute: &crate::config::upstream::claims::Attribute,
                  ticked: &Option<String>| {
        attribute
            .value
            .clone()
            .filter(|_| attribute.is_locked() || ticked.is_some())
    };
    let display_name = chosen(&imported.displayname, &form.import_displayname)
        .and_then(|n| accounts::valid_display_name(&n).map(str::to_owned));
    let email = chosen(&imported.email, &form.import_email)
        .filter(|e| accounts::is_plausible_email(e))
        .map(|address| NewEmail {
            address,
            verified: imported.email_verified,
        });
    let new = NewUser {
        username: username.clone(),
        password: None,
        emails: email.into_iter().collect(),
        admin: false,
        display_name,
    };
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let (user, jobs) = match accounts::create_user(&mut repo, &new, now).await {
        Ok(created) => created,
        Err(AccountError::UsernameTaken(_)) => return taken(),
        Err(AccountError::Storage(e)) => return Err(e.into()),
        Err(e) => return Ok(Err(Retry::new(StatusCode::BAD_REQUEST, e.to_string()))),
    };
    if let Err(retry) = associate(&mut repo, done, &user).await? {
        return Ok(Err(retry));
    }
    let Some(session) = open_session(
        &mut repo,
        done,
        &user,
        &[SignInMethod::Upstream(done.link.id)],
        user_agent,
    )
    .await?
    else {
        return Err(UpstreamError::UnknownSession);
    };
    repo.commit().await?;
    tracing::info!(username = %user.username, provider = %done.provider.id, "account created through an upstream provider");
    // The homeserver learns of the account (and its display name and verified email) now, or
    // from the worker if it is down.
    jobs.run(state).await;
    Ok(Ok(session))
}

/// Links the identity to an existing account after its password (behind the sign-in rate
/// limits, like the login page).
async fn link_with_password(
    state: &AppState,
    client_ip: &ClientIp,
    done: &Completed,
    form: &LinkForm,
    user_agent: Option<&str>,
) -> Outcome {
    let attempt =
        sign_in::attempt_sign_in(state, client_ip, &form.username, form.password.clone()).await;
    let matched = match attempt {
        Ok(Ok(matched)) => matched,
        Ok(Err(refusal)) => {
            let message = match refusal {
                Refusal::WrongCredentials => "Wrong username or password.",
                Refusal::Locked => "This account is locked. Contact the server's administrators.",
                Refusal::Deactivated => "This account has been deactivated.",
            };
            return Ok(Err(Retry::new(StatusCode::UNAUTHORIZED, message)));
        }
        Err(AttemptError::Limited { retry_after }) => {
            return Ok(Err(Retry::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many sign-in attempts. Try again {}.",
                    wait_in_words(retry_after)
                ),
            )))
        }
        Err(AttemptError::Check(e)) => {
            return Err(UpstreamError::Misconfigured(format!("password check: {e}")))
        }
    };
    let mut repo = state.storage.begin().await?;
    matched.store_upgrade(&mut repo).await?;
    if let Err(retry) = associate(&mut repo, done, &matched.user).await? {
        return Ok(Err(retry));
    }
    let methods = [SignInMethod::Password, SignInMethod::Upstream(done.link.id)];
    let Some(session) = open_session(&mut repo, done, &matched.user, &methods, user_agent).await?
    else {
        return Err(UpstreamError::UnknownSession);
    };
    repo.commit().await?;
    tracing::info!(username = %matched.user.username, provider = %done.provider.id, "upstream identity linked to an existing account");
    Ok(Ok(session))
}

/// Links the identity to the account signed in in this browser.
async fn link_current(state: &AppState, cookie: &BrowserCookie, done: &Completed) -> Outcome {
    let Some((session, user)) = signed_in(state, cookie).await? else {
        return Ok(Err(Retry::new(
            StatusCode::UNAUTHORIZED,
            "You are no longer signed in here. Sign in to the account to link, or create one.",
        )));
    };
    let mut repo = state.storage.begin().await?;
    if let Err(retry) = associate(&mut repo, done, &user).await? {
        return Ok(Err(retry));
    }
    if !repo.upstream_sessions().consume(done.session.id).await? {
        return Err(UpstreamError::UnknownSession);
    }
    repo.browser_sessions()
        .record_authentication(session.id, SignInMethod::Upstream(done.link.id))
        .await?;
    repo.commit().await?;
    tracing::info!(username = %user.username, provider = %done.provider.id, "upstream identity linked to the signed-in account");
    Ok(Ok(session.id))
}
