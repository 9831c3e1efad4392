//! The provider, seen from the homeserver (homeserver contract, "Synapse → provider"):
//! `GET {endpoint}.well-known/openid-configuration` and `POST {endpoint}oauth2/introspect`,
//! both cached in memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use url::Url;

/// How long the provider's metadata is reused before it is fetched again. (Synapse keeps it
/// for the life of the process; five minutes lets a test or playground change the provider.)
pub(crate) const METADATA_TTL: Duration = Duration::from_secs(5 * 60);

/// How long an introspection answer is reused: Synapse's `mas_token_introspection` cache
/// (`synapse/api/auth/mas.py`, a `ResponseCache` with a 2-minute timeout) keeps every
/// well-formed answer that long, active or not and whatever its `expires_in` (expiry is checked
/// on each use by [`Introspection::is_active`]). Only a missing device drops an entry early
/// ([`Upstream::forget`]).
pub(crate) const INTROSPECTION_TTL: Duration = Duration::from_secs(120);

/// At most this many tokens are cached; beyond it, expired entries are purged and, if still
/// full, new answers are simply not cached.
const MAX_CACHED_TOKENS: usize = 10_000;

/// Time limit on every request to the provider.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest document accepted from the provider.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why the provider could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("request to the provider failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the provider answered HTTP {0}")]
    Status(StatusCode),
    #[error("the provider sent an unusable document: {0}")]
    Invalid(String),
}

/// The provider's metadata: the raw document (served to clients byte for byte) and the two
/// fields the homeserver reads itself.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub(crate) raw: Bytes,
    pub(crate) issuer: String,
    pub(crate) account_management_uri: Option<String>,
}

impl Metadata {
    /// Parses the metadata document: a JSON object with a string `issuer` (RFC 8414 §2);
    /// `account_management_uri` (MSC4191) is read when it is a string.
    pub(crate) fn parse(raw: Bytes) -> Result<Self, UpstreamError> {
        let value: Value = serde_json::from_slice(&raw)
            .map_err(|e| UpstreamError::Invalid(format!("metadata is not JSON: {e}")))?;
        let issuer = value
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or_else(|| UpstreamError::Invalid("metadata has no string issuer".into()))?
            .to_owned();
        let account_management_uri = value
            .get("account_management_uri")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            raw,
            issuer,
            account_management_uri,
        })
    }
}

/// The introspection fields a homeserver reads (homeserver contract; RFC 7662 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct IntrospectionBody {
    pub(crate) active: bool,
    #[serde(default)]
    pub(crate) scope: Option<String>,
    #[serde(default)]
    pub(crate) username: Option<String>,
    #[serde(default)]
    pub(crate) device_id: Option<String>,
    #[serde(default)]
    pub(crate) expires_in: Option<i64>,
}

/// An introspection answer and when it was received.
#[derive(Debug, Clone)]
pub(crate) struct Introspection {
    pub(crate) body: IntrospectionBody,
    pub(crate) retrieved_at: Instant,
}

impl Introspection {
    /// Active, and not past `expires_in` counted from when the answer was received (as
    /// Synapse's `IntrospectionResponse.is_active`; compat tokens have no `expires_in`).
    pub(crate) fn is_active(&self, now: Instant) -> bool {
        if !self.body.active {
            return false;
        }
        match self.body.expires_in {
            None => true,
            Some(secs) if secs <= 0 => false,
            Some(secs) => now < self.retrieved_at + Duration::from_secs(secs.unsigned_abs()),
        }
    }
}

/// A plain map with an expiry per entry. Time is passed in, so tests are exact.
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The value, unless it expired (then it is dropped).
    pub(crate) fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((value, expires_at)) if now < *expires_at => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores a value until `expires_at`. When full, expired entries are purged first; if it
    /// is still full the value is not stored.
    pub(crate) fn insert(&mut self, key: K, value: V, expires_at: Instant, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expiry)| now < *expiry);
            if self.entries.len() >= self.capacity {
                return;
            }
        }
        self.entries.insert(key, (value, expires_at));
    }

    pub(crate) fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

type TokenKey = [u8; 32];

/// Tokens are cached under their SHA-256, so the cache never holds a usable token.
fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// The HTTP side of the homeserver towards the provider.
#[derive(Debug)]
pub(crate) struct Upstream {
    http: reqwest::Client,
    endpoint: Url,
    secret: String,
    /// A tokio mutex, held across the fetch on purpose: concurrent requests wait for one fetch.
    metadata: tokio::sync::Mutex<Option<(Metadata, Instant)>>,
    tokens: Mutex<TtlCache<TokenKey, Arc<Introspection>>>,
}

impl Upstream {
    /// `endpoint` must end with `/`.
    pub(crate) fn new(endpoint: Url, secret: String) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A reverse proxy passes redirects through; introspection never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("fake-homeserver/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            endpoint,
            secret,
            metadata: tokio::sync::Mutex::new(None),
            tokens: Mutex::new(TtlCache::new(MAX_CACHED_TOKENS)),
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn url(&self, path: &str) -> Result<Url, UpstreamError> {
        self.endpoint
            .join(path)
            .map_err(|e| UpstreamError::Invalid(format!("cannot build the provider URL: {e}")))
    }

    /// The provider's metadata, from the cache when fresh. Failures are not cached: the next
    /// request tries again (like Synapse's `RetryOnExceptionCachedCall`).
    pub(crate) async fn metadata(&self) -> Result<Metadata, UpstreamError> {
        let mut cached = self.metadata.lock().await;
        let now = Instant::now();
        if let Some((metadata, fetched_at)) = cached.as_ref() {
            if now.duration_since(*fetched_at) < METADATA_TTL {
                return Ok(metadata.clone());
            }
        }
        let metadata = self.fetch_metadata().await?;
        *cached = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// `GET {endpoint}.well-known/openid-configuration` (homeserver contract; OIDC Discovery
    /// 1.0 §4).
    async fn fetch_metadata(&self) -> Result<Metadata, UpstreamError> {
        let url = self.url(".well-known/openid-configuration")?;
        let response = self
            .http
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(UpstreamError::Status(status));
        }
        let raw = read_limited(response).await?;
        Metadata::parse(raw)
    }

    /// Introspects an access token, from the cache when possible. Errors (provider down, non-2xx,
    /// unusable JSON) are never cached.
    pub(crate) async fn introspect(
        &self,
        token: &str,
    ) -> Result<Arc<Introspection>, UpstreamError> {
        let key = token_key(token);
        if let Some(hit) = self.lock_tokens().get(&key, Instant::now()) {
            return Ok(hit);
        }
        let introspection = Arc::new(self.fetch_introspection(token).await?);
        let now = Instant::now();
        self.lock_tokens()
            .insert(key, introspection.clone(), now + INTROSPECTION_TTL, now);
        Ok(introspection)
    }

    /// Drops a token's cached answer (Synapse does this when the token's device is gone).
    pub(crate) fn forget(&self, token: &str) {
        self.lock_tokens().remove(&token_key(token));
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, TtlCache<TokenKey, Arc<Introspection>>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `POST {endpoint}oauth2/introspect` (RFC 7662 §2.1; homeserver contract): form body
    /// `token=…&token_type_hint=access_token`, authenticated with the shared secret as a bearer
    /// token, and `X-MAS-Supports-Device-Id: 1` so the provider names the device explicitly.
    async fn fetch_introspection(&self, token: &str) -> Result<Introspection, UpstreamError> {
        let url = self.url("oauth2/introspect")?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let response = self
            .http
            .post(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.secret))
            .header("X-MAS-Supports-Device-Id", "1")
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Status(status));
        }
        let raw = read_limited(response).await?;
        let body: IntrospectionBody = serde_json::from_slice(&raw)
            .map_err(|e| UpstreamError::Invalid(format!("introspection answer: {e}")))?;
        Ok(Introspection {
            body,
            retrieved_at: Instant::now(),
        })
    }
}

async fn read_limited(response: reqwest::Response) -> Result<Bytes, UpstreamError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(UpstreamError::Invalid("document too large".into()));
    }
    let bytes = response.bytes().await?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(UpstreamError::Invalid("document too large".into()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn introspection(active: bool, expires_in: Option<i64>, at: Instant) -> Introspection {
        Introspection {
            body: IntrospectionBody {
                active,
                scope: None,
                username: None,
                device_id: None,
                expires_in,
            },
            retrieved_at: at,
        }
    }

    #[test]
    fn expiry_counts_from_retrieval() {
        let t0 = Instant::now();
        let i = introspection(true, Some(60), t0);
        assert!(i.is_active(t0));
        assert!(i.is_active(t0 + Duration::from_secs(59)));
        assert!(!i.is_active(t0 + Duration::from_secs(60)));
        assert!(introspection(true, None, t0).is_active(t0 + Duration::from_secs(86_400)));
        assert!(!introspection(true, Some(0), t0).is_active(t0));
        assert!(!introspection(false, None, t0).is_active(t0));
    }

    #[test]
    fn ttl_cache_expires_and_bounds() {
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        let mut cache = TtlCache::new(2);
        cache.insert("a", 1, later(10), t0);
        assert_eq!(cache.get(&"a", later(9)), Some(1));
        assert_eq!(cache.get(&"a", later(10)), None);
        assert_eq!(cache.len(), 0, "expired entries are dropped on read");

        cache.insert("a", 1, later(5), t0);
        cache.insert("b", 2, later(50), t0);
        cache.insert("c", 3, later(50), t0);
        assert_eq!(cache.get(&"c", t0), None, "full: not stored");
        cache.insert("c", 3, later(50), later(6));
        assert_eq!(cache.get(&"c", later(6)), Some(3), "expired 'a' made room");
        cache.remove(&"c");
        assert_eq!(cache.get(&"c", later(6)), None);
    }

    #[test]
    fn metadata_needs_an_issuer() {
        let m = Metadata::parse(Bytes::from_static(
            br#"{"issuer":"https://auth.example.com","account_management_uri":"https://auth.example.com/account"}"#,
        ))
        .unwrap();
        assert_eq!(m.issuer, "https://auth.example.com");
        assert_eq!(
            m.account_management_uri.as_deref(),
            Some("https://auth.example.com/account")
        );
        assert!(Metadata::parse(Bytes::from_static(br#"{"issuer": 3}"#)).is_err());
        assert!(Metadata::parse(Bytes::from_static(b"<html>")).is_err());
    }

    #[test]
    fn introspection_fields_are_typed() {
        let body: IntrospectionBody = serde_json::from_str(
            r#"{"active":true,"scope":"a b","username":"alice","device_id":"D","expires_in":300,"sub":"x"}"#,
        )
        .unwrap();
        assert_eq!(body.username.as_deref(), Some("alice"));
        assert_eq!(body.expires_in, Some(300));
        assert!(serde_json::from_str::<IntrospectionBody>(r#"{"scope":"a"}"#).is_err());
        assert!(serde_json::from_str::<IntrospectionBody>(r#"{"active":"yes"}"#).is_err());
    }
}
