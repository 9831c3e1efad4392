//! The scripted journeys: each runs one complete client story against a homeserver (and the
//! provider it delegates to), writes every request and response to the transcript, and stops
//! with a clear [`Error`] at the first step that does not behave as the specs say.
//!
//! - [`oidc_native`]: an OAuth 2.0-native Matrix client (MSC3861 family): discovery,
//!   registration, code flow with PKCE and a device scope, whoami, refresh, revocation,
//!   RP-initiated logout.
//! - [`oidc_aware`]: a legacy client that logs in through `m.login.sso` (MSC3824).
//! - [`legacy`]: `m.login.password`, with and without refresh tokens.
//! - [`device`]: the device authorization grant (RFC 8628, MSC4341).
//!
//! They need a homeserver URL and account options only. Randomness (PKCE, `state`, device IDs)
//! comes from the [`SharedRng`] in the options, so a seeded run is repeatable.

mod aware;
mod device;
mod legacy;
mod native;

use std::sync::{Arc, Mutex};

use rand::{rngs::StdRng, Rng as _, RngCore, SeedableRng};
use serde_json::Value;
use url::Url;

use crate::{http::Http, transcript::Transcript, Error};

pub use aware::{oidc_aware, AwareOptions, AwareReport, SSO_REDIRECT};
pub use device::{device, DeviceOptions, DeviceReport, Sleeper, DEVICE_CODE_GRANT};
pub use legacy::{legacy, LegacyOptions, LegacyReport};
pub use native::{oidc_native, NativeOptions, NativeReport, POST_LOGOUT_REDIRECT};

/// A random number generator the options of a journey share (cloning shares it): seeded in
/// tests, from the OS in the binary.
#[derive(Clone)]
pub struct SharedRng(Arc<Mutex<StdRng>>);

impl std::fmt::Debug for SharedRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRng")
    }
}

impl SharedRng {
    pub fn new(rng: StdRng) -> Self {
        Self(Arc::new(Mutex::new(rng)))
    }

    /// Seeded: the same seed gives the same run.
    pub fn seeded(seed: u64) -> Self {
        Self::new(StdRng::seed_from_u64(seed))
    }

    /// Draws from it (the lock is held for `f` only, never across an `await`).
    pub fn with<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut rng = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut rng)
    }
}

/// A device ID as a client chooses it (MSC2967: unreserved characters, ≥ 10 recommended): ten
/// random upper-case letters.
pub fn random_device_id<R: RngCore>(rng: &mut R) -> String {
    (0..10)
        .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
        .collect()
}

/// Whether a device ID may go in a device scope (MSC2967: RFC 3986 unreserved characters).
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// A client-server API URL on the homeserver: `/_matrix/client/v3{path}`.
pub(crate) fn client_api(homeserver: &Url, path: &str) -> Url {
    let mut url = homeserver.clone();
    url.set_path(&format!("/_matrix/client/v3{path}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Who the homeserver says a token belongs to.
pub(crate) struct Whoami {
    pub(crate) user_id: String,
    pub(crate) device_id: Option<String>,
}

/// `GET /_matrix/client/v3/account/whoami` with a token that must work.
pub(crate) async fn whoami(
    http: &Http,
    homeserver: &Url,
    token: &str,
    what: &str,
) -> Result<Whoami, Error> {
    let url = client_api(homeserver, "/account/whoami");
    let body = http
        .get_bearer(url.as_str(), token)
        .await?
        .expect(&format!("whoami {what} (Matrix spec)"), 200)?
        .json()?;
    let user_id = required_str(&body, "user_id", "the whoami answer")?;
    Ok(Whoami {
        user_id,
        device_id: body["device_id"].as_str().map(str::to_owned),
    })
}

/// `whoami` with this token must answer 401 `M_UNKNOWN_TOKEN` (Matrix spec §"Using access
/// tokens": a token that is not, or no longer, valid).
pub(crate) async fn expect_unknown_token(
    http: &Http,
    homeserver: &Url,
    token: &str,
    what: &str,
) -> Result<(), Error> {
    let url = client_api(homeserver, "/account/whoami");
    let reply = http
        .get_bearer(url.as_str(), token)
        .await?
        .expect(&format!("whoami {what} must be refused"), 401)?;
    expect_errcode(&reply.json()?, "M_UNKNOWN_TOKEN", what)
}

/// A Matrix error answer must carry this `errcode`.
pub(crate) fn expect_errcode(body: &Value, errcode: &str, what: &str) -> Result<(), Error> {
    if body["errcode"] == errcode {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "{what}: the errcode is {}, not {errcode}",
            body["errcode"]
        )))
    }
}

/// A string member that must be there.
pub(crate) fn required_str(body: &Value, name: &str, what: &str) -> Result<String, Error> {
    match body[name].as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(Error::Protocol(format!("{what} has no `{name}`"))),
    }
}

/// The checks a journey passed, noted in the transcript as they pass.
pub(crate) struct Checks {
    transcript: Transcript,
    passed: Vec<String>,
}

impl Checks {
    pub(crate) fn new(transcript: &Transcript) -> Self {
        Self {
            transcript: transcript.clone(),
            passed: Vec::new(),
        }
    }

    pub(crate) fn pass(&mut self, check: impl Into<String>) {
        let check = check.into();
        self.transcript.note(format!("✓ {check}"));
        self.passed.push(check);
    }

    pub(crate) fn into_vec(self) -> Vec<String> {
        self.passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        let rng = SharedRng::seeded(1);
        let a = rng.with(random_device_id);
        let b = rng.with(random_device_id);
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 10);
            assert!(id.bytes().all(|c| c.is_ascii_uppercase()), "{id}");
            assert!(valid_device_id(id));
        }
        assert_eq!(SharedRng::seeded(1).with(random_device_id), a);
        assert!(!valid_device_id("") && !valid_device_id("a b") && !valid_device_id("a/b"));
        assert!(valid_device_id("MY-PHONE.1~x_"));
    }

    #[test]
    fn client_api_urls_are_at_the_root() {
        let hs = Url::parse("https://hs.test/some/path?x=1").unwrap();
        assert_eq!(
            client_api(&hs, "/account/whoami").as_str(),
            "https://hs.test/_matrix/client/v3/account/whoami"
        );
    }
}
