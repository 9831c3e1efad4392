//! The browser's cookie: which browser session is signed in, and the CSRF token of its forms.
//!
//! One private cookie (encrypted and authenticated with a key derived from the configured
//! encryption key, so it can be neither read nor forged) holds both. Forms carry the CSRF token in
//! a hidden field, and a POST is accepted only when it matches the cookie's (the synchroniser
//! token pattern, OWASP CSRF Prevention Cheat Sheet). The token changes whenever who is signed in
//! changes, so a token seen before login is worthless after it.

use axum_extra::extract::{
    cookie::{Cookie, Key, SameSite},
    PrivateCookieJar,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use ulid::Ulid;

use crate::domain::token::random_code;

/// The cookie's name.
pub const COOKIE_NAME: &str = "provider_session";

/// The key that protects the cookie, derived from the configured 32-byte encryption key.
pub fn cookie_key(encryption_key: &[u8; 32]) -> Key {
    Key::derive_from(encryption_key)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CookieState {
    /// The signed-in browser session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<Ulid>,
    csrf: String,
    /// The authorization request the last sign-in was made for (`prompt=login|create` asks for
    /// a sign-in for that very request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signed_in_for: Option<Ulid>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the form has expired or was not sent from this site; go back, reload the page and try again"
)]
pub struct CsrfError;

/// The decoded cookie of one request.
#[derive(Debug)]
pub struct BrowserCookie {
    jar: PrivateCookieJar,
    state: CookieState,
    secure: bool,
    changed: bool,
}

impl BrowserCookie {
    /// Reads the cookie; a missing or undecryptable one starts a fresh state. `secure` adds the
    /// `Secure` attribute (on https issuers).
    pub fn load(jar: PrivateCookieJar, rng: &mut impl RngCore, secure: bool) -> Self {
        let existing = jar
            .get(COOKIE_NAME)
            .and_then(|c| serde_json::from_str::<CookieState>(c.value()).ok());
        let (state, changed) = match existing {
            Some(state) => (state, false),
            None => (
                CookieState {
                    session: None,
                    csrf: random_code(rng, 32),
                    signed_in_for: None,
                },
                true,
            ),
        };
        Self {
            jar,
            state,
            secure,
            changed,
        }
    }

    /// The token to put in this page's forms.
    pub fn csrf_token(&self) -> &str {
        &self.state.csrf
    }

    /// Checks a submitted form's token, in constant time.
    pub fn verify_csrf(&self, submitted: &str) -> Result<(), CsrfError> {
        if bool::from(self.state.csrf.as_bytes().ct_eq(submitted.as_bytes())) {
            Ok(())
        } else {
            Err(CsrfError)
        }
    }

    /// The browser session the cookie names (it may have ended since: check it).
    pub fn session_id(&self) -> Option<Ulid> {
        self.state.session
    }

    /// Records who is signed in (or nobody), with a fresh CSRF token, and the authorization
    /// request the sign-in was made for, if any.
    pub fn set_session(
        &mut self,
        session: Option<Ulid>,
        for_grant: Option<Ulid>,
        rng: &mut impl RngCore,
    ) {
        self.state.session = session;
        self.state.signed_in_for = for_grant;
        self.state.csrf = random_code(rng, 32);
        self.changed = true;
    }

    /// The authorization request the current sign-in was made for.
    pub fn signed_in_for(&self) -> Option<Ulid> {
        self.state.signed_in_for
    }

    /// The jar to return with the response: the cookie is (re)written only when it changed.
    pub fn into_jar(self) -> PrivateCookieJar {
        if !self.changed {
            return self.jar;
        }
        let value = serde_json::to_string(&self.state).unwrap_or_default();
        let cookie = Cookie::build((COOKIE_NAME, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .build();
        self.jar.add(cookie)
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    fn jar() -> PrivateCookieJar {
        PrivateCookieJar::new(cookie_key(&[3; 32]))
    }

    #[test]
    fn a_fresh_cookie_has_a_token_and_nobody_signed_in() {
        let mut rng = StdRng::seed_from_u64(1);
        let cookie = BrowserCookie::load(jar(), &mut rng, false);
        assert_eq!(cookie.session_id(), None);
        assert_eq!(cookie.csrf_token().len(), 32);
        assert_eq!(cookie.verify_csrf(cookie.csrf_token()), Ok(()));
        assert_eq!(cookie.verify_csrf("nope"), Err(CsrfError));
        assert_eq!(cookie.verify_csrf(""), Err(CsrfError));
    }

    #[test]
    fn round_trip_and_rotation() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut cookie = BrowserCookie::load(jar(), &mut rng, true);
        let before = cookie.csrf_token().to_owned();
        let session = Ulid::from_parts(1, 2);
        cookie.set_session(Some(session), None, &mut rng);
        assert_ne!(cookie.csrf_token(), before, "login rotates the CSRF token");
        let after = cookie.csrf_token().to_owned();
        let written = cookie.into_jar();
        let raw = written.get(COOKIE_NAME).unwrap();
        assert_eq!(raw.http_only(), Some(true));
        assert_eq!(raw.same_site(), Some(SameSite::Lax));
        assert_eq!(raw.secure(), Some(true));

        // What the browser receives is encrypted...
        let response = axum::response::IntoResponse::into_response(written);
        let set_cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(set_cookie.starts_with("provider_session="), "{set_cookie}");
        assert!(
            !set_cookie.contains(&after),
            "the cookie is encrypted: {set_cookie}"
        );
        // ...and reads back on the next request.
        let value = set_cookie.split(';').next().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, value.parse().unwrap());
        let next = PrivateCookieJar::from_headers(&headers, cookie_key(&[3; 32]));
        let again = BrowserCookie::load(next, &mut rng, true);
        assert_eq!(again.session_id(), Some(session));
        assert_eq!(again.verify_csrf(&after), Ok(()));
    }
}
