//! The browser's upstream logins in progress: a private cookie (encrypted and authenticated like
//! the session cookie, [`crate::http::kit::session`]) listing the authorization sessions this browser
//! started, with where to go once signed in (the pending authorization request, or a page).
//!
//! The callback accepts a `state` only when its session is in this list: the authorization
//! response is bound to the browser that made the request, so nobody can finish their own
//! upstream login in someone else's browser (login CSRF, RFC 6749 §10.12, RFC 9700 §4.7). The
//! list holds at most [`MAX_ENTRIES`] sessions younger than [`LIFETIME`].

use axum_extra::extract::{
    cookie::{Cookie, SameSite},
    PrivateCookieJar,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::domain::after_sign_in::AfterSignIn;
use crate::http::AppState;

/// The cookie's name.
pub const COOKIE_NAME: &str = "provider_upstream";
/// How long an upstream login may take, from the button to the end of the link page.
pub const LIFETIME: Duration = Duration::minutes(30);
/// The most logins in progress kept per browser (the oldest is dropped).
pub const MAX_ENTRIES: usize = 5;

/// One upstream login in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The authorization session.
    pub session: Ulid,
    pub provider: Ulid,
    /// The authorization request to continue once signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Ulid>,
    /// A page to return to instead (read back through [`AfterSignIn::from_next`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Seconds since the epoch.
    pub started: i64,
}

impl Pending {
    /// What to continue with once signed in.
    pub fn after(&self) -> Option<AfterSignIn> {
        match self.grant {
            Some(grant) => Some(AfterSignIn::Grant(grant)),
            None => AfterSignIn::from_next(self.next.as_deref()?),
        }
    }
}

/// The decoded cookie of one request.
#[derive(Debug)]
pub struct UpstreamCookie {
    jar: PrivateCookieJar,
    entries: Vec<Pending>,
    secure: bool,
    changed: bool,
}

impl UpstreamCookie {
    /// The cookie of a request, read at the server's clock (secure when the issuer is https,
    /// like the session cookie).
    pub fn for_request(state: &AppState, jar: PrivateCookieJar) -> Self {
        Self::load(
            jar,
            state.storage.entropy().clock.now(),
            state.settings.issuer.scheme() == "https",
        )
    }

    /// Reads the cookie (a missing or undecryptable one is an empty list), dropping expired
    /// entries.
    pub fn load(jar: PrivateCookieJar, now: DateTime<Utc>, secure: bool) -> Self {
        let entries: Vec<Pending> = jar
            .get(COOKIE_NAME)
            .and_then(|c| serde_json::from_str(c.value()).ok())
            .unwrap_or_default();
        let before = entries.len();
        let entries: Vec<Pending> = entries
            .into_iter()
            .filter(|e| now.timestamp() - e.started < LIFETIME.num_seconds())
            .collect();
        let changed = entries.len() != before;
        Self {
            jar,
            entries,
            secure,
            changed,
        }
    }

    /// Records a login this browser starts.
    pub fn add(&mut self, entry: Pending) {
        self.entries.push(entry);
        let excess = self.entries.len().saturating_sub(MAX_ENTRIES);
        self.entries.drain(..excess);
        self.changed = true;
    }

    /// The login of an authorization session, if this browser started it.
    pub fn find(&self, session: Ulid) -> Option<&Pending> {
        self.entries.iter().find(|e| e.session == session)
    }

    /// Forgets a finished login.
    pub fn remove(&mut self, session: Ulid) {
        let before = self.entries.len();
        self.entries.retain(|e| e.session != session);
        self.changed |= self.entries.len() != before;
    }

    /// Is the cookie there at all (a cross-site `form_post` arrives without it)?
    pub fn is_present(&self) -> bool {
        self.jar.get(COOKIE_NAME).is_some()
    }

    /// The jar to return with the response: the cookie is rewritten only when it changed.
    pub fn into_jar(self) -> PrivateCookieJar {
        if !self.changed {
            return self.jar;
        }
        if self.entries.is_empty() {
            return self
                .jar
                .remove(Cookie::build(COOKIE_NAME).path("/").build());
        }
        let value = serde_json::to_string(&self.entries).unwrap_or_default();
        let cookie = Cookie::build((COOKIE_NAME, value))
            .path("/")
            .http_only(true)
            // Lax: sent on the provider's redirect back (a top-level GET). A `form_post`
            // callback is a cross-site POST without it; the callback then re-posts the form
            // from our own origin (see `super::callback`).
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .build();
        self.jar.add(cookie)
    }
}

#[cfg(test)]
mod tests {
    use axum_extra::extract::cookie::Key;

    use super::*;

    fn jar() -> PrivateCookieJar {
        PrivateCookieJar::new(Key::derive_from(&[5; 32]))
    }

    fn entry(n: u128, started: i64) -> Pending {
        Pending {
            session: Ulid(n),
            provider: Ulid(99),
            grant: None,
            next: Some("/account".into()),
            started,
        }
    }

    fn reload(jar: PrivateCookieJar, now: DateTime<Utc>) -> UpstreamCookie {
        let response = axum::response::IntoResponse::into_response(jar);
        let mut headers = axum::http::HeaderMap::new();
        for value in response.headers().get_all("set-cookie") {
            let pair = value
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            headers.append(axum::http::header::COOKIE, pair.parse().unwrap());
        }
        UpstreamCookie::load(
            PrivateCookieJar::from_headers(&headers, Key::derive_from(&[5; 32])),
            now,
            false,
        )
    }

    #[test]
    fn keeps_recent_logins_of_this_browser_only() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t = now.timestamp();
        let mut cookie = UpstreamCookie::load(jar(), now, false);
        assert!(!cookie.is_present());
        for n in 1..=7 {
            cookie.add(entry(n, t));
        }
        let again = reload(cookie.into_jar(), now);
        assert!(again.is_present());
        assert!(again.find(Ulid(1)).is_none(), "the oldest are dropped");
        assert!(again.find(Ulid(2)).is_none());
        assert_eq!(
            again.find(Ulid(7)).unwrap().next.as_deref(),
            Some("/account")
        );
        // Later, they have expired.
        let later = reload(
            {
                let mut c = again;
                c.remove(Ulid(3));
                c.into_jar()
            },
            now + LIFETIME,
        );
        assert!(later.find(Ulid(7)).is_none());
        assert!(later.find(Ulid(3)).is_none());
        // Another key can't read it (nor forge it).
        let other = PrivateCookieJar::new(Key::derive_from(&[6; 32]));
        assert!(UpstreamCookie::load(other, now, false)
            .find(Ulid(7))
            .is_none());
    }
}
