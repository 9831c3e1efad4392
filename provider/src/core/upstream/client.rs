//! The relying-party side of the upstream login, over `reqwest`: the provider's metadata
//! (OIDC Discovery 1.0, or the configured endpoints), its keys (JWKS), the code exchange with
//! the configured client authentication (RFC 6749 §4.1.3, OIDC Core §9) and the userinfo
//! request (OIDC Core §5.3).
//!
//! Metadata and keys are cached in memory, per process, for [`CACHE_TTL`]: losing the cache
//! costs one fetch, so replicas need not share it. A token signed with a key the cached JWKS
//! lacks makes one refetch (key rotation), at most every [`JWKS_REFETCH_COOLDOWN`], so tokens
//! with made-up key IDs can't make us hammer the provider. Answers are read up to
//! [`MAX_BODY_BYTES`]; no redirect is followed (a redirected token request would carry the
//! client's credentials elsewhere).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::jwk::Jwk;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use ulid::Ulid;
use url::Url;

use super::UpstreamError;
use crate::{
    config::upstream::{is_loopback, DiscoveryMode, PkceMethod, StoredSettings},
    crypto::Encrypter,
    domain::{
        pkce,
        protocol::{ClientAuthMethod, GrantType, JWT_BEARER},
        token::random_code,
    },
    keys::{Algorithm, Keystore},
    storage::{BoxRepository, UpstreamProvider},
};

/// How long fetched metadata and keys are used before they are fetched again.
pub const CACHE_TTL: Duration = Duration::minutes(15);
/// The shortest time between two JWKS fetches made because a token named an unknown key.
pub const JWKS_REFETCH_COOLDOWN: Duration = Duration::seconds(30);
/// The largest answer read from a provider.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// A whole call gives up after this long.
const TIMEOUT: StdDuration = StdDuration::from_secs(10);
const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(5);
/// How long a client assertion (RFC 7523) is valid.
const ASSERTION_LIFETIME: Duration = Duration::minutes(5);

/// A provider as the login uses it: its row, the secret decrypted, the settings parsed.
#[derive(Clone)]
pub struct Provider {
    pub id: Ulid,
    pub issuer: String,
    /// The name shown on buttons and pages.
    pub name: String,
    pub client_id: String,
    client_secret: Option<String>,
    pub auth_method: ClientAuthMethod,
    pub scope: String,
    pub settings: StoredSettings,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The name a provider goes by: its `human_name`, else its issuer's host.
pub fn display_name(row: &UpstreamProvider) -> String {
    row.human_name.clone().unwrap_or_else(|| {
        row.issuer
            .as_deref()
            .and_then(|i| Url::parse(i).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| row.client_id.clone())
    })
}

impl Provider {
    /// Reads an enabled provider; [`UpstreamError::UnknownProvider`] when there is no such
    /// provider or it is disabled.
    pub async fn load_enabled(
        repo: &mut BoxRepository,
        id: Ulid,
        encryption_key: &[u8; 32],
    ) -> Result<Self, UpstreamError> {
        let row = repo
            .upstream_providers()
            .lookup(id)
            .await?
            .filter(UpstreamProvider::is_enabled)
            .ok_or(UpstreamError::UnknownProvider)?;
        Self::from_row(&row, &Encrypter::new(encryption_key))
    }

    /// Reads a stored provider.
    pub fn from_row(row: &UpstreamProvider, encrypter: &Encrypter) -> Result<Self, UpstreamError> {
        let settings: StoredSettings = serde_json::from_value(row.settings.clone())
            .map_err(|e| UpstreamError::Misconfigured(format!("stored settings: {e}")))?;
        let client_secret = row
            .encrypted_client_secret
            .as_deref()
            .map(|enc| encrypter.decrypt(enc))
            .transpose()
            .map_err(|e| UpstreamError::Misconfigured(format!("client secret: {e}")))?;
        let issuer = row
            .issuer
            .clone()
            .ok_or_else(|| UpstreamError::Misconfigured("no issuer".into()))?;
        Ok(Self {
            id: row.id,
            issuer,
            name: display_name(row),
            client_id: row.client_id.clone(),
            client_secret,
            auth_method: row.token_endpoint_auth_method,
            scope: row.scope.clone(),
            settings,
        })
    }
}

/// Where a provider is reached, and what it supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: Url,
    pub token: Url,
    pub jwks: Url,
    pub userinfo: Option<Url>,
    /// Whether to send a PKCE challenge (S256).
    pub pkce: bool,
    /// RFC 9207 §3: the provider promises `iss` in its authorization responses.
    pub iss_parameter: bool,
}

/// The members of an OIDC Discovery document (§3) the login uses.
#[derive(Debug, Clone, Deserialize)]
struct Discovered {
    issuer: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: Option<bool>,
}

/// The answer of a successful code exchange (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// OIDC Core §3.1.3.3: REQUIRED in an OpenID Connect token response.
    #[serde(default)]
    pub id_token: Option<String>,
}

struct Cached<T> {
    value: Arc<T>,
    fetched_at: DateTime<Utc>,
}

/// The HTTP client of the upstream login and its caches; cheap to clone.
#[derive(Clone)]
pub struct UpstreamHttp {
    client: reqwest::Client,
    discovery: Arc<Mutex<HashMap<String, Cached<Discovered>>>>,
    jwks: Arc<Mutex<HashMap<String, Cached<Vec<Jwk>>>>>,
}

impl std::fmt::Debug for UpstreamHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamHttp(..)")
    }
}

impl Default for UpstreamHttp {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads an answer's body, up to [`MAX_BODY_BYTES`].
async fn body(
    mut response: reqwest::Response,
    endpoint: &'static str,
) -> Result<Vec<u8>, UpstreamError> {
    let mut out = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(UpstreamError::InvalidResponse {
                        endpoint,
                        detail: format!("the answer is larger than {MAX_BODY_BYTES} bytes"),
                    });
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(UpstreamError::Unreachable {
                    endpoint,
                    cause: e.to_string(),
                })
            }
        }
    }
}

fn unreachable(endpoint: &'static str) -> impl Fn(reqwest::Error) -> UpstreamError {
    move |e| {
        // The chain holds the reason (connection refused, timeout...).
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        UpstreamError::Unreachable { endpoint, cause }
    }
}

/// Sends a request asking for JSON; an answer other than 2xx is [`UpstreamError::BadStatus`].
async fn send_ok(
    request: reqwest::RequestBuilder,
    endpoint: &'static str,
) -> Result<reqwest::Response, UpstreamError> {
    let response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(unreachable(endpoint))?;
    let status = response.status();
    if !status.is_success() {
        return Err(UpstreamError::BadStatus {
            endpoint,
            status: status.as_u16(),
        });
    }
    Ok(response)
}

/// An http(s) URL; https unless `strict` is off or the host is the local machine.
fn endpoint_url(raw: &str, strict: bool, what: &str) -> Result<Url, UpstreamError> {
    let url = Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| UpstreamError::Discovery(format!("{what} `{raw}` is not an http(s) URL")))?;
    if strict && url.scheme() != "https" && !is_loopback(&url) {
        return Err(UpstreamError::Discovery(format!(
            "{what} `{raw}` is not https (use `discovery_mode: insecure` to allow it)"
        )));
    }
    Ok(url)
}

impl UpstreamHttp {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("matrix-oidc-provider/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "can't build the upstream HTTP client; using the default one");
                reqwest::Client::new()
            });
        Self {
            client,
            discovery: Arc::default(),
            jwks: Arc::default(),
        }
    }

    async fn get_json(&self, url: &Url, endpoint: &'static str) -> Result<Value, UpstreamError> {
        let response = send_ok(self.client.get(url.clone()), endpoint).await?;
        let bytes = body(response, endpoint).await?;
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::InvalidResponse {
            endpoint,
            detail: format!("not JSON: {e}"),
        })
    }

    /// The discovery document of an issuer (OIDC Discovery §4: the issuer without its
    /// trailing `/`, then `/.well-known/openid-configuration`), cached.
    async fn discover(
        &self,
        issuer: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<Discovered>, UpstreamError> {
        if let Some(hit) = self.discovery.lock().ok().and_then(|c| {
            c.get(issuer)
                .filter(|c| now - c.fetched_at < CACHE_TTL)
                .map(|c| c.value.clone())
        }) {
            return Ok(hit);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let url = Url::parse(&url)
            .map_err(|e| UpstreamError::Discovery(format!("bad discovery URL {url}: {e}")))?;
        let value = self.get_json(&url, "discovery document").await?;
        let document: Discovered =
            serde_json::from_value(value).map_err(|e| UpstreamError::InvalidResponse {
                endpoint: "discovery document",
                detail: e.to_string(),
            })?;
        let document = Arc::new(document);
        if let Ok(mut cache) = self.discovery.lock() {
            cache.insert(
                issuer.to_owned(),
                Cached {
                    value: document.clone(),
                    fetched_at: now,
                },
            );
        }
        Ok(document)
    }

    /// The provider's endpoints: discovered (and checked, in `oidc` mode), with the configured
    /// ones taking precedence; or only the configured ones when discovery is disabled.
    pub async fn endpoints(
        &self,
        provider: &Provider,
        now: DateTime<Utc>,
    ) -> Result<Endpoints, UpstreamError> {
        let s = &provider.settings;
        let discovered = match s.discovery_mode {
            DiscoveryMode::Disabled => None,
            DiscoveryMode::Oidc | DiscoveryMode::Insecure => {
                Some(self.discover(&provider.issuer, now).await?)
            }
        };
        let strict = s.discovery_mode == DiscoveryMode::Oidc;
        if let Some(d) = &discovered {
            // OIDC Discovery §4.3: the issuer in the document MUST be identical to the one the
            // document was fetched for (mix-up defence).
            if strict && d.issuer != provider.issuer {
                return Err(UpstreamError::Discovery(format!(
                    "the document's issuer `{}` differs from the configured `{}`",
                    d.issuer, provider.issuer
                )));
            }
        }
        let pick = |configured: &Option<Url>,
                    found: Option<&String>,
                    what: &str|
         -> Result<Option<Url>, UpstreamError> {
            match (configured, found) {
                (Some(url), _) => Ok(Some(url.clone())),
                (None, Some(raw)) => endpoint_url(raw, strict, what).map(Some),
                (None, None) => Ok(None),
            }
        };
        let d = discovered.as_deref();
        let required = |url: Option<Url>, what: &str| {
            url.ok_or_else(|| UpstreamError::Discovery(format!("the provider has no {what}")))
        };
        let authorization = required(
            pick(
                &s.authorization_endpoint,
                d.and_then(|d| d.authorization_endpoint.as_ref()),
                "authorization_endpoint",
            )?,
            "authorization_endpoint",
        )?;
        let token = required(
            pick(
                &s.token_endpoint,
                d.and_then(|d| d.token_endpoint.as_ref()),
                "token_endpoint",
            )?,
            "token_endpoint",
        )?;
        let jwks = required(
            pick(&s.jwks_uri, d.and_then(|d| d.jwks_uri.as_ref()), "jwks_uri")?,
            "jwks_uri",
        )?;
        let userinfo = pick(
            &s.userinfo_endpoint,
            d.and_then(|d| d.userinfo_endpoint.as_ref()),
            "userinfo_endpoint",
        )?;
        if s.fetch_userinfo && userinfo.is_none() {
            return Err(UpstreamError::Discovery(
                "`fetch_userinfo` is on but the provider has no userinfo_endpoint".into(),
            ));
        }
        let pkce = match s.pkce_method {
            PkceMethod::Always => true,
            PkceMethod::Never => false,
            // RFC 8414 §2: `code_challenge_methods_supported`; absent means no PKCE support.
            PkceMethod::Auto => d
                .and_then(|d| d.code_challenge_methods_supported.as_ref())
                .is_some_and(|m| m.iter().any(|m| m == pkce::S256)),
        };
        Ok(Endpoints {
            authorization,
            token,
            jwks,
            userinfo,
            pkce,
            iss_parameter: d
                .and_then(|d| d.authorization_response_iss_parameter_supported)
                .unwrap_or(false),
        })
    }

    /// The provider's signing keys, cached; `refresh` fetches them again unless they were
    /// fetched less than [`JWKS_REFETCH_COOLDOWN`] ago. Keys this library can't read (other
    /// key types, encryption keys...) are skipped, not fatal.
    pub async fn keys(
        &self,
        jwks_uri: &Url,
        now: DateTime<Utc>,
        refresh: bool,
    ) -> Result<Arc<Vec<Jwk>>, UpstreamError> {
        let cached = self.jwks.lock().ok().and_then(|c| {
            c.get(jwks_uri.as_str())
                .map(|c| (c.value.clone(), now - c.fetched_at))
        });
        if let Some((keys, age)) = cached {
            let fresh = if refresh {
                age < JWKS_REFETCH_COOLDOWN
            } else {
                age < CACHE_TTL
            };
            if fresh {
                return Ok(keys);
            }
        }
        let value = self.get_json(jwks_uri, "JWKS").await?;
        let Some(list) = value.get("keys").and_then(Value::as_array) else {
            return Err(UpstreamError::InvalidResponse {
                endpoint: "JWKS",
                detail: "no `keys` array (RFC 7517 §5)".into(),
            });
        };
        let keys: Vec<Jwk> = list
            .iter()
            .filter_map(|k| serde_json::from_value(k.clone()).ok())
            .collect();
        let keys = Arc::new(keys);
        if let Ok(mut cache) = self.jwks.lock() {
            cache.insert(
                jwks_uri.to_string(),
                Cached {
                    value: keys.clone(),
                    fetched_at: now,
                },
            );
        }
        Ok(keys)
    }

    /// Exchanges the code at the token endpoint (RFC 6749 §4.1.3) with the provider's client
    /// authentication.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange(
        &self,
        provider: &Provider,
        endpoints: &Endpoints,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
        keystore: &Keystore,
        now: DateTime<Utc>,
        rng: &mut impl RngCore,
    ) -> Result<TokenResponse, UpstreamError> {
        const ENDPOINT: &str = "token endpoint";
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", GrantType::AuthorizationCode.as_str().into()),
            ("code", code.into()),
            ("redirect_uri", redirect_uri.into()),
        ];
        if let Some(verifier) = code_verifier {
            // RFC 7636 §4.5.
            form.push(("code_verifier", verifier.into()));
        }
        let secret = || {
            provider
                .client_secret
                .clone()
                .ok_or_else(|| UpstreamError::Misconfigured("the client secret is missing".into()))
        };
        let mut request = self.client.post(endpoints.token.clone());
        match provider.auth_method {
            // RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded id and secret.
            ClientAuthMethod::ClientSecretBasic => {
                let encode = |v: &str| -> String {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
                };
                let credentials = format!("{}:{}", encode(&provider.client_id), encode(&secret()?));
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(credentials)),
                );
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", provider.client_id.clone()));
                form.push(("client_secret", secret()?));
            }
            ClientAuthMethod::None => form.push(("client_id", provider.client_id.clone())),
            // RFC 7523 §2.2 / OIDC Core §9: a JWT assertion naming the client, for the token
            // endpoint, short-lived and unique.
            ClientAuthMethod::ClientSecretJwt | ClientAuthMethod::PrivateKeyJwt => {
                let claims = json!({
                    "iss": provider.client_id,
                    "sub": provider.client_id,
                    "aud": endpoints.token.as_str(),
                    "jti": random_code(rng, 32),
                    "iat": now.timestamp(),
                    "exp": (now + ASSERTION_LIFETIME).timestamp(),
                });
                let assertion = if provider.auth_method == ClientAuthMethod::ClientSecretJwt {
                    jsonwebtoken::encode(
                        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                        &claims,
                        &jsonwebtoken::EncodingKey::from_secret(secret()?.as_bytes()),
                    )
                    .map_err(|e| UpstreamError::Misconfigured(format!("client assertion: {e}")))?
                } else {
                    keystore
                        .sign(Algorithm::Rs256, &claims)
                        .ok_or_else(|| UpstreamError::Misconfigured("no RS256 key".into()))?
                        .map_err(|e| {
                            UpstreamError::Misconfigured(format!("client assertion: {e}"))
                        })?
                };
                form.push(("client_id", provider.client_id.clone()));
                form.push(("client_assertion_type", JWT_BEARER.into()));
                form.push(("client_assertion", assertion));
            }
        }
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(unreachable(ENDPOINT))?;
        let status = response.status();
        let bytes = body(response, ENDPOINT).await?;
        if !status.is_success() {
            // RFC 6749 §5.2: a 400 (or 401) with `error` and maybe `error_description`.
            let parsed: Option<Map<String, Value>> = serde_json::from_slice(&bytes).ok();
            let field = |name: &str| {
                parsed
                    .as_ref()
                    .and_then(|p| p.get(name))
                    .and_then(Value::as_str)
                    .map(|s| s.chars().take(300).collect::<String>())
            };
            return match field("error") {
                Some(error) if status.is_client_error() => Err(UpstreamError::TokenRefused {
                    status: status.as_u16(),
                    error,
                    description: field("error_description"),
                }),
                _ => Err(UpstreamError::BadStatus {
                    endpoint: ENDPOINT,
                    status: status.as_u16(),
                }),
            };
        }
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::InvalidResponse {
            endpoint: ENDPOINT,
            detail: e.to_string(),
        })
    }

    /// The userinfo claims for an access token (OIDC Core §5.3), whose `sub` must be the ID
    /// token's (§5.3.2).
    pub async fn userinfo(
        &self,
        endpoint: &Url,
        access_token: &str,
        subject: &str,
    ) -> Result<Map<String, Value>, UpstreamError> {
        const ENDPOINT: &str = "userinfo endpoint";
        let request = self.client.get(endpoint.clone()).bearer_auth(access_token);
        let response = send_ok(request, ENDPOINT).await?;
        let signed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/jwt"));
        if signed {
            return Err(UpstreamError::InvalidResponse {
                endpoint: ENDPOINT,
                detail: "signed userinfo responses (application/jwt) are not supported".into(),
            });
        }
        let bytes = body(response, ENDPOINT).await?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|e| UpstreamError::InvalidResponse {
                endpoint: ENDPOINT,
                detail: format!("not a JSON object: {e}"),
            })?;
        // OIDC Core §5.3.2: "The sub Claim in the UserInfo Response MUST be verified to exactly
        // match the sub Claim in the ID Token; if they do not match, the UserInfo Response
        // values MUST NOT be used."
        if claims.get("sub").and_then(Value::as_str) != Some(subject) {
            return Err(UpstreamError::InvalidResponse {
                endpoint: ENDPOINT,
                detail: "its `sub` is not the ID token's".into(),
            });
        }
        Ok(claims)
    }
}
/// The name of a link's provider: from `enabled` (already read), else read (a disabled one).
pub async fn provider_name(
    repo: &mut BoxRepository,
    enabled: &[UpstreamProvider],
    provider_id: Ulid,
) -> Result<String, crate::storage::StorageError> {
    if let Some(provider) = enabled.iter().find(|p| p.id == provider_id) {
        return Ok(display_name(provider));
    }
    let row = repo.upstream_providers().lookup(provider_id).await?;
    Ok(row
        .as_ref()
        .map_or_else(|| "A removed provider".to_owned(), display_name))
}
