//! `GET|POST /register`: self-service account creation (Initiating User Registration via OIDC
//! 1.0: `prompt=create` opens it), when the configuration allows it (`account.registration`).
//!
//! A username is never issued twice, not even after deactivation (the users table keeps every
//! name). The new account is signed in at once.

use axum::{
    extract::{Form, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;
use ulid::Ulid;

use crate::{
    app::AppState,
    domain::username,
    matrix::provisioning::{self, Task},
    storage::StorageError,
    web::{self, consent, login, session::BrowserCookie},
};

/// Where the registration page is served.
pub const PATH: &str = "/register";

#[derive(Debug, Default, Deserialize)]
pub struct RegisterQuery {
    #[serde(default)]
    grant: Option<String>,
    /// A page to return to afterwards, other than a grant (see [`login::valid_next`]).
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grant: Option<String>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

fn closed(state: &AppState) -> Response {
    web::error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::FORBIDDEN,
        "Registration is closed",
        "This server doesn't let people create accounts themselves. Ask its administrators for one.",
        None,
    )
}

async fn page(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    grant: Option<&str>,
    next: Option<&str>,
    username: &str,
    error: Option<&str>,
) -> Response {
    let login = login::with_return(login::PATH, grant, next);
    let for_grant = login::for_grant(state, grant).await;
    web::page_with_csp(
        state,
        status,
        "pages/register.html",
        minijinja::context! {
            client_name => for_grant.client_name,
            csrf => cookie.csrf_token(),
            action => PATH,
            grant => grant,
            next => next,
            username => username,
            error => error,
            server_name => state.settings.matrix.homeserver,
            min_length => state.passwords.policy().min_length,
            login => login,
        },
        &for_grant.csp,
    )
}

/// `GET /register`.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(query): Query<RegisterQuery>,
) -> Response {
    if !state.settings.registration {
        return closed(&state);
    }
    let cookie = web::load_cookie(&state, jar);
    let grant = login::valid_grant(query.grant.as_deref());
    let next = login::valid_next(query.next.as_deref());
    let response = page(
        &state,
        &cookie,
        StatusCode::OK,
        grant.as_deref(),
        next.as_deref(),
        "",
        None,
    )
    .await;
    (cookie.into_jar(), response).into_response()
}

/// Creates the account and its first browser session; `Err` carries what to tell the user.
async fn create(
    state: &AppState,
    form: &RegisterForm,
    user_agent: Option<&str>,
) -> Result<Result<Ulid, String>, StorageError> {
    let name = form.username.trim();
    if let Err(e) = username::check(name, &state.settings.matrix.homeserver) {
        return Ok(Err(format!("Username: {e}.")));
    }
    if let Err(e) = state.passwords.check_policy(&form.password) {
        return Ok(Err(format!("Password: {e}.")));
    }
    if form.password != form.password_confirm {
        return Ok(Err("The two passwords differ.".into()));
    }
    // The homeserver may hold users the provider doesn't (imported, appservice users): it has
    // the last word on whether the localpart is free (the homeserver contract).
    match state.homeserver.is_localpart_available(name).await {
        Ok(true) => {}
        Ok(false) => return Ok(Err("This username is taken.".into())),
        Err(e) => {
            tracing::error!(error = %e, "registration: can't ask the homeserver about a username");
            return Ok(Err(
                "The Matrix server can't be reached to check this username. Try again shortly."
                    .into(),
            ));
        }
    }
    let (version, hash) = match state.passwords.hash(form.password.clone()).await {
        Ok(hashed) => hashed,
        Err(e) => return Ok(Err(format!("Password: {e}."))),
    };
    let mut repo = state.storage.begin().await?;
    let user = match repo.users().add(name).await {
        Ok(user) => user,
        Err(StorageError::Conflict(_)) => return Ok(Err("This username is taken.".into())),
        Err(e) => return Err(e),
    };
    repo.user_passwords()
        .add(user.id, &hash, version, None)
        .await?;
    let session = login::open_password_session(&mut repo, user.id, user_agent).await?;
    // The homeserver learns of the account through the job queue: at once below, or later by
    // the worker if the homeserver is down meanwhile.
    let now = state.storage.entropy().clock.now();
    let job =
        provisioning::enqueue(&mut repo, &Task::ProvisionUser { user_id: user.id }, now).await?;
    repo.commit().await?;
    tracing::info!(username = %user.username, "account created");
    provisioning::run_now(state, &[job]).await;
    Ok(Ok(session))
}

/// `POST /register`.
pub async fn post(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Form(form): Form<RegisterForm>,
) -> Response {
    if !state.settings.registration {
        return closed(&state);
    }
    let mut cookie = web::load_cookie(&state, jar);
    let grant = login::valid_grant(form.grant.as_deref());
    let next = login::valid_next(form.next.as_deref());
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let response = page(
            &state,
            &cookie,
            StatusCode::FORBIDDEN,
            grant.as_deref(),
            next.as_deref(),
            &form.username,
            Some(&e.to_string()),
        )
        .await;
        return (cookie.into_jar(), response).into_response();
    }
    let user_agent = web::user_agent(&headers);
    let response = match create(&state, &form, user_agent.as_deref()).await {
        Ok(Ok(session)) => {
            let mut rng = state.storage.entropy().rng.rng();
            let for_grant = grant.as_deref().and_then(|g| Ulid::from_string(g).ok());
            cookie.set_session(Some(session), for_grant, &mut rng);
            match (&grant, &next) {
                (Some(grant), _) => {
                    Redirect::to(&format!("{}/{grant}", consent::PATH)).into_response()
                }
                (None, Some(next)) => Redirect::to(next).into_response(),
                (None, None) => Redirect::to(login::PATH).into_response(),
            }
        }
        Ok(Err(message)) => {
            page(
                &state,
                &cookie,
                StatusCode::BAD_REQUEST,
                grant.as_deref(),
                next.as_deref(),
                &form.username,
                Some(&message),
            )
            .await
        }
        Err(e) => {
            tracing::error!(error = %e, "registration failed");
            web::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Creating accounts is not possible right now. Try again in a moment.",
                None,
            )
        }
    };
    (cookie.into_jar(), response).into_response()
}
