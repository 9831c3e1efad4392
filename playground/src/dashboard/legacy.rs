//! The legacy login panel: a client of the legacy Matrix API. `m.login.password` at the
//! homeserver (which passes `/login`, `/refresh` and `/logout` to the provider's compatibility
//! layer, MSC3824), then `whoami` with the token it got; refresh and log out from there.

use axum::{extract::State, response::Response, Form};
use minijinja::context;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    http::{send, Answer, Outgoing, Step},
    Dashboard,
};

/// `GET /legacy`: the form.
pub async fn form(State(d): State<Dashboard>) -> Response {
    let username = d
        .accounts
        .first()
        .map(|a| a.username.clone())
        .unwrap_or_default();
    page(&d, &username, true, Vec::new(), None, None)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// `POST /legacy`: the login flows, a password login, `whoami`.
pub async fn login(State(d): State<Dashboard>, Form(form): Form<LoginForm>) -> Response {
    let want_refresh = form.refresh_token.is_some();
    let flows = send(
        &d.http,
        "The login flows the homeserver offers",
        Method::GET,
        d.homeserver_url("/_matrix/client/v3/login"),
        None,
        Outgoing::Empty,
    )
    .await;
    let mut body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": form.username },
        "password": form.password,
        "initial_device_display_name": "Playground legacy panel",
    });
    if want_refresh {
        body["refresh_token"] = json!(true);
    }
    let mut shown = body.clone();
    shown["password"] = json!("(hidden)");
    let login = send(
        &d.http,
        "Password login (m.login.password)",
        Method::POST,
        d.homeserver_url("/_matrix/client/v3/login"),
        None,
        Outgoing::Json { body, shown },
    )
    .await;
    let mut steps = vec![flows.step, login.step.clone()];
    let (access, refresh) = tokens(&login);
    if let Some(token) = &access {
        steps.push(whoami(&d, token, "whoami with the new access token").await);
    }
    page(&d, &form.username, want_refresh, steps, access, refresh)
}

#[derive(Debug, Deserialize)]
pub struct RefreshForm {
    refresh_token: String,
}

/// `POST /legacy/refresh`: a new token pair, then `whoami` with the new access token.
pub async fn refresh(State(d): State<Dashboard>, Form(form): Form<RefreshForm>) -> Response {
    let body = json!({ "refresh_token": form.refresh_token });
    let answer = send(
        &d.http,
        "Refresh (the refresh token is used up)",
        Method::POST,
        d.homeserver_url("/_matrix/client/v3/refresh"),
        None,
        Outgoing::Json {
            shown: body.clone(),
            body,
        },
    )
    .await;
    let mut steps = vec![answer.step.clone()];
    let (access, refresh) = tokens(&answer);
    if let Some(token) = &access {
        steps.push(whoami(&d, token, "whoami with the refreshed access token").await);
    }
    page(&d, "", true, steps, access, refresh)
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    access_token: String,
}

/// `POST /legacy/logout`: ends the session, then shows the token no longer works.
pub async fn logout(State(d): State<Dashboard>, Form(form): Form<LogoutForm>) -> Response {
    let answer = send(
        &d.http,
        "Log out",
        Method::POST,
        d.homeserver_url("/_matrix/client/v3/logout"),
        Some(&form.access_token),
        Outgoing::Json {
            body: json!({}),
            shown: json!({}),
        },
    )
    .await;
    let after = whoami(
        &d,
        &form.access_token,
        "whoami after logging out (the token is gone)",
    )
    .await;
    page(&d, "", true, vec![answer.step, after], None, None)
}

fn tokens(answer: &Answer) -> (Option<String>, Option<String>) {
    if !answer.is_success() {
        return (None, None);
    }
    (
        answer.str("access_token").map(str::to_owned),
        answer.str("refresh_token").map(str::to_owned),
    )
}

async fn whoami(d: &Dashboard, token: &str, title: &str) -> Step {
    send(
        &d.http,
        title,
        Method::GET,
        d.homeserver_url("/_matrix/client/v3/account/whoami"),
        Some(token),
        Outgoing::Empty,
    )
    .await
    .step
}

fn page(
    d: &Dashboard,
    username: &str,
    refresh_token: bool,
    steps: Vec<Step>,
    access_token: Option<String>,
    refresh: Option<String>,
) -> Response {
    let username = if username.is_empty() {
        d.accounts
            .first()
            .map(|a| a.username.as_str())
            .unwrap_or_default()
    } else {
        username
    };
    d.render(
        "legacy.html",
        "/legacy",
        context! {
            username,
            refresh_token,
            steps,
            access_token,
            refresh,
            accounts => d.accounts,
        },
    )
}
