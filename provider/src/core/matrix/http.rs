//! The HTTP plumbing both homeserver connections share ([`super::synapse`] and
//! [`super::synapse_legacy`]): building the URL of an API path under the configured endpoint,
//! sending a request with the shared secret, and mapping the answer to [`HomeserverError`]
//! (the homeserver contract, SPEC-NOTES.md).
//!
//! The rules, in the order they apply:
//! - no answer (connection refused, timeout, broken stream) → [`HomeserverError::Unreachable`];
//! - 5xx → [`HomeserverError::Server`], with an excerpt of the body;
//! - 401/403 → [`HomeserverError::Unauthorized`] (the two configurations disagree on the secret);
//! - 404 on a call about a user → [`HomeserverError::UserNotFound`], unless the errcode is
//!   `M_UNRECOGNIZED` (the endpoint itself is missing: treating that as "no such user" would
//!   make deletions look done);
//! - any other non-2xx (other 4xx, and 3xx since redirects are not followed) →
//!   [`HomeserverError::Refused`];
//! - a 2xx whose body doesn't parse where one is needed → [`HomeserverError::InvalidResponse`].
//!
//! Callers that give some answers a meaning of their own (404 → `None` in `query_user`,
//! 400 `M_USER_IN_USE` → `false` in `is_localpart_available`) look at the [`Reply`] from
//! [`HomeserverHttp::send`] before [`Reply::check`] maps the rest.

use std::{error::Error as _, fmt, time::Duration};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use super::HomeserverError;
use crate::config::MatrixSettings;

/// Connecting gives up after this long.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error body goes into a [`HomeserverError`].
const EXCERPT_CHARS: usize = 200;

/// The errcode Synapse answers for a path it has no handler for (with 404).
const M_UNRECOGNIZED: &str = "M_UNRECOGNIZED";

/// An HTTP client for the homeserver's APIs: the endpoint and the shared secret.
#[derive(Clone)]
pub(super) struct HomeserverHttp {
    client: reqwest::Client,
    endpoint: Url,
    secret: String,
}

// Never print the shared secret (it is an admin token on the legacy API).
impl fmt::Debug for HomeserverHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HomeserverHttp")
            .field("endpoint", &self.endpoint.as_str())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl HomeserverHttp {
    pub(super) fn new(settings: &MatrixSettings) -> Self {
        Self::with_timeouts(settings, settings.request_timeout, CONNECT_TIMEOUT)
    }

    /// Never fails: when the client can't be built with these settings, falls back to the
    /// default client (which only fails where every client would).
    pub(super) fn with_timeouts(
        settings: &MatrixSettings,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            // A redirect means the endpoint is misconfigured; following it could carry the
            // secret elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "can't build the homeserver HTTP client; using the default one");
                reqwest::Client::new()
            });
        Self {
            client,
            endpoint: settings.endpoint.clone(),
            secret: settings.secret.clone(),
        }
    }

    /// The URL of `segments` under the endpoint, keeping the endpoint's own path
    /// (`https://hs.example/synapse/` + `_synapse/mas/query_user`).
    ///
    /// Each segment is percent-encoded whole: everything but the URL-unreserved characters
    /// (`A-Z a-z 0-9 - . _ ~`), so `@alice:hs` becomes `%40alice%3Ahs` and no user input can
    /// add a segment, a query or a fragment. `url`'s `path_segments_mut().push` leaves `@` and
    /// `:` as they are and silently drops `.` and `..`, hence this. `.`, `..` and the empty
    /// segment can't be sent at all (URL parsers resolve `%2E%2E` like `..`), so they are
    /// refused without a request.
    pub(super) fn url(&self, segments: &[&str]) -> Result<Url, HomeserverError> {
        let mut url = self.endpoint.clone();
        if url.cannot_be_a_base() {
            return Err(HomeserverError::Unreachable(format!(
                "the homeserver endpoint `{url}` can't have paths under it; check matrix.endpoint"
            )));
        }
        let mut path = url.path().to_owned();
        for segment in segments {
            if matches!(*segment, "" | "." | "..") {
                return Err(HomeserverError::Refused {
                    status: 0,
                    body: format!("not sent: `{segment}` can't be a path segment"),
                });
            }
            if !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(&encode_segment(segment));
        }
        url.set_path(&path);
        url.set_query(None);
        url.set_fragment(None);
        Ok(url)
    }

    /// [`Self::url`] with a query string (form-encoded).
    pub(super) fn url_with_query(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Url, HomeserverError> {
        let mut url = self.url(segments)?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(url)
    }

    /// Sends a request with `Authorization: Bearer <secret>` (the homeserver contract,
    /// SPEC-NOTES.md; the legacy admin API takes the secret as the admin token) and a JSON
    /// body when given. Errors for no answer, 5xx and 401/403; every other answer is the
    /// caller's to read (usually with [`Reply::check`]).
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Reply, HomeserverError> {
        let path = url.path().to_owned();
        let mut request = self
            .client
            .request(method.clone(), url)
            .bearer_auth(&self.secret);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let error = describe(&e);
                tracing::debug!(%method, %path, %error, "homeserver call failed");
                return Err(HomeserverError::Unreachable(error));
            }
        };
        let status = response.status();
        tracing::debug!(%method, %path, status = status.as_u16(), "homeserver call");
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(e) => return Err(HomeserverError::Unreachable(describe(&e))),
        };
        let reply = Reply { status, body };
        if status.is_server_error() {
            return Err(HomeserverError::Server {
                status: status.as_u16(),
                body: reply.excerpt(),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(HomeserverError::Unauthorized {
                status: status.as_u16(),
            });
        }
        Ok(reply)
    }
}

/// A homeserver answer that is neither 5xx nor 401/403.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: StatusCode,
    body: Vec<u8>,
}

impl Reply {
    /// The `errcode` of a Matrix error body (`{"errcode": "M_…", "error": "…"}`), if it is one.
    pub(super) fn errcode(&self) -> Option<String> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(mut object)) => match object.remove("errcode") {
                Some(Value::String(errcode)) => Some(errcode),
                _ => None,
            },
            _ => None,
        }
    }

    /// A 404 that says "no such thing" rather than "no such endpoint".
    pub(super) fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND && self.errcode().as_deref() != Some(M_UNRECOGNIZED)
    }

    /// The reply when it is a 2xx, else the error it means. `user` is the localpart of a call
    /// about a user: a 404 there means the homeserver has no such user (homeserver contract,
    /// SPEC-NOTES.md).
    pub(super) fn check(self, user: Option<&str>) -> Result<Self, HomeserverError> {
        if self.status.is_success() {
            return Ok(self);
        }
        match user {
            Some(localpart) if self.is_not_found() => {
                Err(HomeserverError::UserNotFound(localpart.to_owned()))
            }
            _ => Err(HomeserverError::Refused {
                status: self.status.as_u16(),
                body: self.excerpt(),
            }),
        }
    }

    /// The body, as the JSON the contract says it is.
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, HomeserverError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HomeserverError::InvalidResponse(format!(
                "HTTP {} with a body that isn't what the API says ({e}): {}",
                self.status.as_u16(),
                self.excerpt()
            ))
        })
    }

    /// The start of the body, for error messages.
    fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let mut chars = text.chars();
        let mut excerpt: String = chars.by_ref().take(EXCERPT_CHARS).collect();
        if chars.next().is_some() {
            excerpt.push('…');
        }
        excerpt
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986 §2.3.
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A transport error with its causes ("error sending request: … connection refused"); the
/// secret travels in a header, so it is never part of it.
fn describe(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        format!("timed out: {error}")
    } else {
        error.to_string()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// What the tests of both connections share.
#[cfg(test)]
pub(super) mod test_support {
    use std::time::Duration;

    use url::Url;

    use crate::config::{HomeserverKind, MatrixSettings};

    pub(in crate::core::matrix) const SECRET: &str = "s3cret-shared";
    pub(in crate::core::matrix) const BEARER: &str = "Bearer s3cret-shared";

    pub(in crate::core::matrix) fn settings(
        kind: HomeserverKind,
        endpoint: &str,
    ) -> MatrixSettings {
        MatrixSettings {
            kind,
            homeserver: "example.com".into(),
            endpoint: Url::parse(endpoint).expect("a test URL"),
            secret: SECRET.into(),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// An endpoint nothing listens on: a port bound, then released.
    pub(in crate::core::matrix) fn refused_endpoint() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        drop(listener);
        format!("http://127.0.0.1:{port}/")
    }

    pub(in crate::core::matrix) const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

    /// Whether an error is the one a test case expects.
    pub(in crate::core::matrix) type ErrorCheck = fn(&super::HomeserverError) -> bool;
}

#[cfg(test)]
mod tests {
    use super::{test_support::*, *};
    use crate::config::HomeserverKind;

    fn http(endpoint: &str) -> HomeserverHttp {
        HomeserverHttp::new(&settings(HomeserverKind::Synapse, endpoint))
    }

    #[test]
    fn url_keeps_the_endpoint_path_and_encodes_segments() {
        let segments = ["_synapse", "admin", "v2", "users", "@alice:example.com"];
        for endpoint in ["http://hs.example/synapse/", "http://hs.example/synapse"] {
            let url = http(endpoint).url(&segments).expect("a URL");
            assert_eq!(
                url.as_str(),
                "http://hs.example/synapse/_synapse/admin/v2/users/%40alice%3Aexample.com"
            );
        }
        let url = http("http://hs.example")
            .url(&["a", "b/c?d#e f%"])
            .expect("a URL");
        assert_eq!(url.as_str(), "http://hs.example/a/b%2Fc%3Fd%23e%20f%25");
        let url = http("http://hs.example/?x=1#frag")
            .url(&["é"])
            .expect("a URL");
        assert_eq!(url.as_str(), "http://hs.example/%C3%A9");
    }

    #[test]
    fn url_refuses_segments_that_cannot_be_sent() {
        for segment in ["", ".", ".."] {
            let error = http("http://hs.example/").url(&["devices", segment]);
            assert!(
                matches!(error, Err(HomeserverError::Refused { status: 0, .. })),
                "{segment:?}: {error:?}"
            );
        }
    }

    #[test]
    fn url_with_query_form_encodes() {
        let url = http("http://hs.example/")
            .url_with_query(&["q"], &[("localpart", "a&b=c d")])
            .expect("a URL");
        assert_eq!(url.as_str(), "http://hs.example/q?localpart=a%26b%3Dc+d");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", http("http://hs.example/"));
        assert!(!shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn excerpts_are_truncated_on_a_char_boundary() {
        let reply = Reply {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: "é".repeat(500).into_bytes(),
        };
        let excerpt = reply.excerpt();
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1);
        assert!(excerpt.ends_with('…'));
    }

    #[test]
    fn errcode_reads_matrix_errors_only() {
        let reply = |body: &str| Reply {
            status: StatusCode::NOT_FOUND,
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            reply(r#"{"errcode":"M_NOT_FOUND","error":"nope"}"#)
                .errcode()
                .as_deref(),
            Some("M_NOT_FOUND")
        );
        assert_eq!(reply("<html>not found</html>").errcode(), None);
        assert_eq!(reply(r#"{"errcode":4}"#).errcode(), None);
        assert!(reply("<html>").is_not_found());
        assert!(!reply(r#"{"errcode":"M_UNRECOGNIZED"}"#).is_not_found());
    }
}
