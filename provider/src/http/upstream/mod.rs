//! Signing in through upstream OpenID Connect providers ("Continue with …").
//!
//! The walk of one upstream login, one request and one transaction per step:
//! 1. `GET /upstream/authorize/{provider}` ([`authorize`]), from a button of the login page:
//!    stores an authorization session (the SHA-256 of the `state`, the nonce, the PKCE
//!    verifier), remembers it in the browser's cookie ([`cookie`]) with the pending
//!    authorization request, and redirects to the provider.
//! 2. `GET|POST /upstream/callback/{provider}` ([`callback`]): the provider's answer, by
//!    redirect or `form_post`. The `state` must be one this browser started; the code is
//!    exchanged ([`client`](crate::core::upstream::client)), the ID token validated
//!    ([`id_token`](crate::core::upstream::id_token), OIDC Core §3.1.3.7),
//!    userinfo fetched when configured, and the claims stored with the upstream identity's link.
//! 3. `GET|POST /upstream/link/{session}` ([`link`]): an identity linked to an account signs
//!    that account in; otherwise the claim imports
//!    ([`claims`](crate::config::upstream::claims)) fill in a new account, or the user links
//!    the identity to an account they sign in to (with its password, or the one already signed
//!    in).
//!
//! The providers come from the configuration ([`crate::config::upstream`]), written to the
//! database at start ([`crate::core::upstream::sync`]); the account page lists the linked
//! identities and unlinks them ([`account`]).
//!
//! The relying party is written over `reqwest` and `jsonwebtoken` (both already used by the
//! provider) rather than the `openidconnect` crate: that crate brings a second copy of the
//! elliptic-curve and Ed25519 stacks, and its typed claims get in the way of templates that
//! read any claim the provider sends.

use axum::{http::StatusCode, response::Response, routing::get, Router};
use ulid::Ulid;

use crate::http::kit;
use crate::{core::upstream::UpstreamError, domain::protocol::ErrorCode, http::AppState};

pub mod account;
pub mod authorize;
pub mod callback;
pub mod cookie;
pub mod link;

use crate::endpoints::{UPSTREAM_AUTHORIZE, UPSTREAM_CALLBACK, UPSTREAM_LINK, UPSTREAM_UNLINK};

/// The routes of the upstream login.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{UPSTREAM_AUTHORIZE}/{{provider_id}}"),
            get(authorize::get),
        )
        .route(
            &format!("{UPSTREAM_CALLBACK}/{{provider_id}}"),
            get(callback::get).post(callback::post),
        )
        .route(
            &format!("{UPSTREAM_LINK}/{{session_id}}"),
            get(link::get).post(link::post),
        )
        .route(
            &format!("{UPSTREAM_UNLINK}/{{link_id}}"),
            get(account::unlink_page).post(account::unlink),
        )
}

/// The redirect URI registered at the provider for us.
pub fn redirect_uri(state: &AppState, provider_id: Ulid) -> String {
    crate::endpoints::url(
        &state.settings.public_base,
        &format!("{UPSTREAM_CALLBACK}/{provider_id}"),
    )
    .to_string()
}

/// Where a browser goes once signed in: what the login that started it was to continue with
/// (kept in the cookie, [`cookie::Pending::after`]), or the "signed in" page.
pub fn continue_to(pending: &cookie::Pending) -> Response {
    kit::go_on(pending.after().as_ref())
}

impl UpstreamError {
    /// The browser's page for this error. Every failure is logged with its cause; the page
    /// tells what the user can do, and names the provider's error when there is one.
    pub fn page(&self, state: &AppState, provider: Option<&str>) -> Response {
        let provider = provider.unwrap_or("the identity provider");
        let (status, title, detail, code): (StatusCode, &str, String, Option<&str>) = match self {
            Self::UnknownProvider => (
                StatusCode::NOT_FOUND,
                "Unknown sign-in method",
                "This way of signing in doesn't exist (any more). Go back and choose another."
                    .into(),
                None,
            ),
            Self::Denied { error, description } => (
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                match description {
                    Some(d) => format!("{provider} did not let you sign in: {d}"),
                    // RFC 6749 §4.1.2.1: the user or the provider refused; the code is read
                    // as ours, other (extension) codes are shown as sent.
                    None if error.parse() == Ok(ErrorCode::AccessDenied) => {
                        format!("{provider} did not let you sign in (access denied).")
                    }
                    None => format!("{provider} did not let you sign in."),
                },
                Some(error.as_str()),
            ),
            Self::UnknownSession | Self::Expired | Self::OtherBrowser | Self::MissingCode => (
                StatusCode::BAD_REQUEST,
                "Sign-in not completed",
                format!(
                    "{} Start again from the sign-in page.",
                    match self {
                        Self::Expired => "This sign-in attempt took too long.",
                        Self::OtherBrowser =>
                            "This sign-in attempt was started in another browser (or its cookie is gone).",
                        Self::MissingCode => "The answer from the identity provider is incomplete.",
                        _ => "This sign-in attempt is unknown or was already used.",
                    }
                ),
                None,
            ),
            Self::Import(crate::config::upstream::claims::ImportError::Missing(what)) => (
                StatusCode::FORBIDDEN,
                "Missing account information",
                format!(
                    "{provider} did not share the {} this server needs to create your account. \
                     Allow it to share it, or ask the server's administrators.",
                    match *what {
                        "displayname" => "display name",
                        "localpart" => "username",
                        other => other,
                    }
                ),
                None,
            ),
            Self::AccountUnavailable { deactivated } => (
                StatusCode::FORBIDDEN,
                "Account not available",
                if *deactivated {
                    "The account linked to this identity has been deactivated.".into()
                } else {
                    "The account linked to this identity is locked. Contact the server's \
                     administrators."
                        .into()
                },
                None,
            ),
            Self::Storage(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service can't process requests right now. Try again in a moment."
                    .into(),
                None,
            ),
            Self::Misconfigured(_) | Self::Import(_) | Self::NoSubject => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is misconfigured",
                format!(
                    "Signing in with {provider} is not set up correctly on this server. \
                     Tell its administrators."
                ),
                None,
            ),
            Self::TokenRefused { error, .. } => (
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                format!("{provider} refused to complete the sign-in. Try again."),
                Some(error.as_str()),
            ),
            Self::Discovery(_)
            | Self::Unreachable { .. }
            | Self::BadStatus { .. }
            | Self::InvalidResponse { .. }
            | Self::NoIdToken
            | Self::IdToken(_)
            | Self::IssuerMismatch => (
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                format!(
                    "{provider} gave an answer this server can't accept ({self}). Try again; \
                     if it keeps failing, tell the server's administrators."
                ),
                None,
            ),
        };
        match self {
            Self::Storage(_) | Self::Misconfigured(_) | Self::Import(_) | Self::NoSubject => {
                tracing::error!(error = %self, provider, "upstream login failed")
            }
            _ => tracing::warn!(error = %self, provider, "upstream login failed"),
        }
        kit::error_page(
            &state.templates,
            &state.chrome(),
            status,
            title,
            &detail,
            code,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{core::sign_in::UpstreamOffer, domain::after_sign_in::AfterSignIn};

    #[test]
    fn the_pages_render_and_escape() {
        let t = crate::core::templates::Templates::new();
        let chrome = minijinja::context! { site_name => "S", stylesheet => "/s.css" };
        let html = t
            .render(
                "pages/upstream_link.html",
                minijinja::context! {
                    provider => "<Evil>", account_name => "a@b", csrf => "t", action => "/upstream/link/x",
                    can_register => true, username => "alice", username_locked => false,
                    username_taken => "alice", displayname => "Alice <3", displayname_locked => false,
                    email => "a@b.c", email_locked => true, email_verified => false,
                    login_username => "alice", current_user => "bob", server_name => "example.org",
                    ..chrome.clone()
                },
            )
            .unwrap();
        assert!(html.contains("&lt;Evil&gt;"), "{html}");
        assert!(html.contains("Alice &lt;3"), "{html}");
        for id in [
            "register-form",
            "link-current-form",
            "login-form",
            "taken-hint",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}: {html}");
        }
        let html = t
            .render(
                "pages/upstream_link.html",
                minijinja::context! {
                    provider => "P", csrf => "t", action => "/a", can_register => false,
                    username => "alice", username_taken => "alice", ..chrome.clone()
                },
            )
            .unwrap();
        assert!(html.contains("id=\"cannot-register\""), "{html}");
        assert!(!html.contains("id=\"register-form\""), "{html}");
        let html = t
            .render(
                "pages/upstream_buttons.html",
                minijinja::context! {
                    upstream_buttons => vec![kit::Button::new(
                        UpstreamOffer {
                            id: Ulid(1),
                            name: "Example".into(),
                            brand: Some("example".into()),
                        },
                        AfterSignIn::from_next("/account").as_ref(),
                    )],
                },
            )
            .unwrap();
        assert!(html.contains("Continue with Example"), "{html}");
        assert!(html.contains("next=%2Faccount"), "{html}");
        for (name, context) in [
            (
                "pages/upstream_unlink.html",
                minijinja::context! { provider => "P", last_way_in => true, ..chrome.clone() },
            ),
            (
                "pages/upstream_continue.html",
                minijinja::context! { refresh => "/upstream/link/x", ..chrome.clone() },
            ),
            (
                "pages/upstream_continue.html",
                minijinja::context! { script => "s()", action => "/cb", fields => vec![("code", "c")], ..chrome.clone() },
            ),
            (
                "pages/upstream_linked.html",
                minijinja::context! { linked_accounts => minijinja::context! { linked => Vec::<()>::new(), providers => Vec::<()>::new() } },
            ),
        ] {
            assert!(t.render(name, context).is_some(), "{name}");
        }
    }
}
