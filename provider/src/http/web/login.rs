//! `GET|POST /login`: password sign-in.
//!
//! Wrong username and wrong password get the same answer, after the same work (an unknown user is
//! checked against a dummy hash), so the page doesn't tell which usernames exist. Whether an
//! account is locked or deactivated is said only after the right password. A stored hash made
//! by an older scheme is replaced on the way (see [`crate::core::passwords`]).
//!
//! Rate limits ([`sign_in::attempt_sign_in`], shared with the legacy Matrix login): attempts per
//! client IP, and failed attempts per account; over either, 429 with `Retry-After` and the
//! password is not checked, so a brute force learns nothing from the refused attempts.

use axum::{
    extract::{Form, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;

use crate::core::accounts::password_recovery_offered;
use crate::core::sign_in::{self, authenticate, AttemptError};
use crate::domain::after_sign_in::{self, AfterSignIn};
use crate::endpoints;
use crate::http::kit;
use crate::{
    core::rate_limit::{self, ClientIp},
    http::{kit::session::BrowserCookie, AppState},
};

/// Where the login page is served.
pub const PATH: &str = endpoints::LOGIN;

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    grant: Option<String>,
    /// A page to return to after signing in, other than a grant (see [`AfterSignIn`]).
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
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
}

async fn login_page(
    state: &AppState,
    cookie: &BrowserCookie,
    status: StatusCode,
    after: Option<&AfterSignIn>,
    username: Option<&str>,
    error: Option<&str>,
) -> Response {
    let pending = sign_in::pending_request(state, after).await;
    let csp = kit::csp_redirecting_to(pending.redirect_uri.as_ref());
    let (grant, next) = after.map(AfterSignIn::fields).unwrap_or_default();
    kit::page_with_csp(
        state,
        status,
        "pages/login.html",
        minijinja::context! {
            client_name => pending.client_name,
            csrf => cookie.csrf_token(),
            action => PATH,
            grant => grant,
            next => next,
            username => username.or(pending.login_hint.as_deref()).unwrap_or_default(),
            error => error,
            upstream_buttons => sign_in::upstream_offers(state)
                .await
                .into_iter()
                .map(|offer| kit::Button::new(offer, after))
                .collect::<Vec<_>>(),
            register => state
                .settings
                .registration
                .then(|| after_sign_in::sign_in_link(endpoints::REGISTER, after)),
            recover => password_recovery_offered(state).then_some(endpoints::RECOVER),
        },
        &csp,
    )
}

/// `GET /login`.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Query(query): Query<LoginQuery>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    let after = AfterSignIn::from_params(query.grant.as_deref(), query.next.as_deref());
    if after.is_none() {
        // Nothing to continue to: say who is signed in, if anyone.
        if let Ok(Some((_, user))) = kit::signed_in(&state, &cookie).await {
            let page = kit::page(
                &state,
                StatusCode::OK,
                "pages/signed_in.html",
                minijinja::context! {
                    username => user.username,
                },
            );
            return (cookie.into_jar(), page).into_response();
        }
    }
    let page = login_page(&state, &cookie, StatusCode::OK, after.as_ref(), None, None).await;
    (cookie.into_jar(), page).into_response()
}

/// `POST /login`.
pub async fn post(
    State(state): State<AppState>,
    client_ip: ClientIp,
    jar: PrivateCookieJar,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let mut cookie = kit::load_cookie(&state, jar);
    let after = AfterSignIn::from_params(form.grant.as_deref(), form.next.as_deref());
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let page = login_page(
            &state,
            &cookie,
            StatusCode::FORBIDDEN,
            after.as_ref(),
            Some(&form.username),
            Some(&e.to_string()),
        )
        .await;
        return (cookie.into_jar(), page).into_response();
    }
    let user_agent = kit::user_agent(&headers);
    let outcome = authenticate(
        &state,
        &client_ip,
        &form.username,
        form.password,
        user_agent.as_deref(),
    )
    .await;
    let response = match outcome {
        Ok(Ok(session)) => {
            let mut rng = state.storage.entropy().rng.rng();
            cookie.set_session(
                Some(session),
                after.as_ref().and_then(AfterSignIn::grant),
                &mut rng,
            );
            kit::go_on(after.as_ref())
        }
        Ok(Err(refusal)) => {
            login_page(
                &state,
                &cookie,
                StatusCode::UNAUTHORIZED,
                after.as_ref(),
                Some(&form.username),
                Some(refusal.message()),
            )
            .await
        }
        // RFC 6585 §4: 429 with Retry-After; the form again, saying when to try.
        Err(AttemptError::Limited { retry_after }) => {
            let message = format!(
                "Too many sign-in attempts. Try again {}.",
                rate_limit::wait_in_words(retry_after)
            );
            let page = login_page(
                &state,
                &cookie,
                StatusCode::TOO_MANY_REQUESTS,
                after.as_ref(),
                Some(&form.username),
                Some(&message),
            )
            .await;
            kit::with_retry_after(page, retry_after)
        }
        Err(AttemptError::Check(e)) => {
            tracing::error!(error = %e, "login failed");
            kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Signing in is not possible right now. Try again in a moment.",
                None,
            )
        }
    };
    (cookie.into_jar(), response).into_response()
}
