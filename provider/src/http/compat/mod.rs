//! The compatibility layer: the legacy Matrix login API, for clients that don't speak OAuth 2.0
//! yet (MSC3824; client-server API §"Login", §"Refreshing access tokens", §"Logout"). The
//! homeserver's reverse proxy sends these paths here, under `/_matrix/client/r0` and `/v3`:
//!
//! - [`login`]: `GET /login` (the flows) and `POST /login` (`m.login.password`,
//!   `m.login.token`);
//! - [`sso`]: `GET /login/sso/redirect[/{idp}]` → the provider's confirmation page
//!   (`/complete-compat-sso/{id}`) → back to the client with a `loginToken`;
//! - [`refresh`]: `POST /refresh`;
//! - [`logout`]: `POST /logout` and `POST /logout/all`.
//!
//! A login starts a *compat session*: one Matrix device, with `mct_` access tokens (and `mcr_`
//! refresh tokens when the client asks for them), introspected for the homeserver like OAuth 2.0
//! tokens. The device is upserted on the homeserver before the client gets its token (in the
//! login's transaction: a homeserver that doesn't take it leaves nothing behind); a session that
//! ends deletes its device through the provisioning queue. Errors are Matrix errors
//! ([`MatrixError`]).

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::{DateTime, Duration, Utc};
use rand::{Rng as _, RngCore};
use serde::Serialize;
use ulid::Ulid;

use crate::{
    crypto::sha256,
    domain::token::TokenKind,
    endpoints,
    http::AppState,
    storage::{BoxRepository, StorageError},
};

mod error;
pub mod login;
pub mod logout;
pub mod refresh;
pub mod sso;

pub use error::MatrixError;

/// How long a compat access token lives when it comes with a refresh token (DESIGN.md
/// "Tokens"). Without one it never expires (SPEC-NOTES.md, compat layer): legacy clients that
/// don't refresh can't be cut off by expiry.
pub const ACCESS_TOKEN_LIFETIME_MINUTES: i64 = 5;

/// The length of a device ID the server makes up (client-server API §"Login": "If this does not
/// correspond to a known client device, a new device will be created"; MSC2967 recommends at
/// least 10 characters).
pub const GENERATED_DEVICE_ID_LEN: usize = 10;

/// The longest device ID accepted from a client.
pub const MAX_DEVICE_ID_LEN: usize = 255;

/// The longest device display name kept, in characters (Synapse's limit); longer ones are cut.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// The routes of the legacy login API under both prefixes, and the confirmation page of SSO
/// logins. The router gives the API CORS as for every API a client running in a page calls
/// (client-server API §"Web Browser Clients": any origin; the requests carry no cookies), and
/// the page none ([`crate::app`]).
pub fn routes() -> Router<AppState> {
    let mut api = Router::new();
    for prefix in endpoints::MATRIX_CLIENT_PREFIXES {
        let path = |suffix: &str| format!("{prefix}{suffix}");
        api = api
            .route(
                &path(endpoints::COMPAT_LOGIN),
                get(login::flows)
                    .post(login::post)
                    .fallback(method_not_allowed),
            )
            .route(
                &path(endpoints::COMPAT_SSO_REDIRECT),
                get(sso::redirect).fallback(method_not_allowed),
            )
            .route(
                &path(endpoints::COMPAT_SSO_REDIRECT_IDP),
                get(sso::redirect).fallback(method_not_allowed),
            )
            .route(
                &path(endpoints::COMPAT_REFRESH),
                post(refresh::post).fallback(method_not_allowed),
            )
            .route(
                &path(endpoints::COMPAT_LOGOUT),
                post(logout::post).fallback(method_not_allowed),
            )
            .route(
                &path(endpoints::COMPAT_LOGOUT_ALL),
                post(logout::post_all).fallback(method_not_allowed),
            );
    }
    let page = format!("{}/{{id}}", endpoints::COMPLETE_COMPAT_SSO);
    api.route(&page, get(sso::page).post(sso::complete))
}

/// A known path asked with another method: 405 `M_UNRECOGNIZED` (client-server API §"Common
/// error codes").
async fn method_not_allowed() -> Response {
    MatrixError::MethodNotAllowed.into_response()
}

/// A JSON answer that carries tokens (or ends a session): never cached (as RFC 6749 §5.1 asks
/// of token responses).
fn json_no_store(body: impl Serialize) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The user's Matrix ID on this homeserver: `@localpart:server_name`.
fn matrix_user_id(state: &AppState, localpart: &str) -> String {
    format!("@{localpart}:{}", state.settings.matrix.homeserver)
}

/// A device ID the server makes up: [`GENERATED_DEVICE_ID_LEN`] upper-case letters, as
/// Synapse's (easy to read out, and valid in a device scope, MSC2967).
pub fn generate_device_id(rng: &mut impl RngCore) -> String {
    (0..GENERATED_DEVICE_ID_LEN)
        .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
        .collect()
}

/// A device ID a client may choose: 1 to [`MAX_DEVICE_ID_LEN`] characters, each an RFC 3986
/// §2.3 unreserved character (`A-Z a-z 0-9 - . _ ~`), so it is also valid in a device scope
/// (MSC2967) and in a URL path without escaping.
pub fn is_valid_device_id(device_id: &str) -> bool {
    (1..=MAX_DEVICE_ID_LEN).contains(&device_id.len())
        && device_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A device display name as kept: at most [`MAX_DISPLAY_NAME_CHARS`] characters; empty is none.
fn display_name(name: Option<String>) -> Option<String> {
    name.map(|n| n.chars().take(MAX_DISPLAY_NAME_CHARS).collect::<String>())
        .filter(|n| !n.trim().is_empty())
}

/// Tokens just issued for a session.
#[derive(Debug)]
struct IssuedTokens {
    access_token: String,
    refresh_token: Option<String>,
    /// The stored refresh token, when one was issued.
    refresh_id: Option<Ulid>,
    /// The access token's lifetime, when it expires.
    expires_in_ms: Option<i64>,
}

/// Issues an access token for a session, with a refresh token when asked (then the access token
/// expires after [`ACCESS_TOKEN_LIFETIME_MINUTES`]; else never), in the caller's transaction.
/// Only the hashes are stored.
async fn issue_tokens(
    repo: &mut BoxRepository,
    session_id: Ulid,
    with_refresh: bool,
    now: DateTime<Utc>,
    rng: &mut impl RngCore,
) -> Result<IssuedTokens, StorageError> {
    let access_token = TokenKind::CompatAccessToken.generate(rng);
    let lifetime = Duration::minutes(ACCESS_TOKEN_LIFETIME_MINUTES);
    let expires_at = with_refresh.then(|| now + lifetime);
    let access = repo
        .compat_tokens()
        .add_access(session_id, &sha256(&access_token), expires_at)
        .await?;
    let (refresh_token, refresh_id) = if with_refresh {
        let refresh_token = TokenKind::CompatRefreshToken.generate(rng);
        let stored = repo
            .compat_tokens()
            .add_refresh(session_id, &sha256(&refresh_token), access.id)
            .await?;
        (Some(refresh_token), Some(stored.id))
    } else {
        (None, None)
    };
    Ok(IssuedTokens {
        access_token,
        refresh_token,
        refresh_id,
        expires_in_ms: with_refresh.then(|| lifetime.num_milliseconds()),
    })
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn generated_device_ids() {
        let mut rng = StdRng::seed_from_u64(9);
        let a = generate_device_id(&mut rng);
        let b = generate_device_id(&mut rng);
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), GENERATED_DEVICE_ID_LEN);
            assert!(id.bytes().all(|c| c.is_ascii_uppercase()), "{id}");
            assert!(is_valid_device_id(&id));
        }
        // The same seed gives the same ID (the RNG is injected).
        assert_eq!(
            generate_device_id(&mut StdRng::seed_from_u64(9)),
            generate_device_id(&mut StdRng::seed_from_u64(9))
        );
    }

    #[test]
    fn device_id_rules() {
        for good in ["A", "ABCDEFGHIJ", "my-phone.2_~", &"x".repeat(255)] {
            assert!(is_valid_device_id(good), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "a:b",
            "é",
            "a\"b",
            "%41",
            &"x".repeat(256),
        ] {
            assert!(!is_valid_device_id(bad), "{bad}");
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name(None), None);
        assert_eq!(display_name(Some("  ".into())), None);
        assert_eq!(display_name(Some("Phone".into())).as_deref(), Some("Phone"));
        let long = "é".repeat(150);
        assert_eq!(
            display_name(Some(long)).unwrap().chars().count(),
            MAX_DISPLAY_NAME_CHARS
        );
    }
}
