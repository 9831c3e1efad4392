//! Client authentication at the token endpoint (RFC 6749 §2.3, OIDC Core §9).
//!
//! Supported: `none` (public clients send only `client_id`), `client_secret_basic` (HTTP Basic,
//! with the form-urlencoded id and secret of RFC 6749 §2.3.1), `client_secret_post`, and the JWT
//! assertions of RFC 7523 §2.2 / OIDC Core §9: `client_secret_jwt` (HS256 keyed with the client
//! secret) and `private_key_jwt` (RS256 or ES256 with a key of the client's inline `jwks`). A
//! client must use the method it registered, and only one method per request (RFC 6749 §2.3).
//!
//! Failed authentications (`invalid_client`, RFC 6749 §5.2) are rate limited per client IP
//! ([`Limit::ClientAuthPerIp`]): RFC 6749 §10.10, "The authorization server MUST prevent
//! attackers from guessing [...] client credentials" (kept by RFC 9700). Only failures spend.
//! An address whose bucket is empty is answered 429 `temporarily_unavailable` with
//! `Retry-After` without its credentials being checked: were they checked, a right secret would
//! still be told from a wrong one, and the limit would bound nothing. That look costs one read,
//! batched with the other requests' (`Storage::peek_rate_limit`); nothing is spent on success.
//!
//! Nothing is limited per `client_id`: such a bucket is spent by whoever names the client, so
//! anyone sending wrong secrets from anywhere would keep the client itself out. Guessing from
//! many addresses is bounded by the secrets themselves (~256 bits for registered clients) and
//! the assertions' signatures. Credentials holding control characters are refused before any
//! query (`invalid_client`).

use axum::http::HeaderMap;
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use subtle::ConstantTimeEq as _;

use super::api::TokenError;
use crate::http::kit::params::{authorization, Authorization, Params};
use crate::{
    core::rate_limit::{ClientIp, Limit},
    crypto::Encrypter,
    domain::{
        client_metadata::RegisteredMetadata,
        protocol::{ClientAuthMethod, ErrorCode},
    },
    endpoints,
    http::{kit::params::has_control, AppState},
    storage::{
        ActiveAccessToken, Client, ClientWithBucketKey, PresentedRefreshToken, StorageError,
        TokenRead,
    },
};

use crate::domain::protocol::JWT_BEARER;
/// The signature algorithms accepted in client assertions (`HS256` for `client_secret_jwt`,
/// the others for `private_key_jwt`), as advertised in discovery.
pub const ASSERTION_SIGNING_ALGS: &[&str] = &["HS256", "RS256", "ES256"];
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECS: i64 = 60;
/// The longest an assertion may stay valid from now, in seconds: short-lived assertions keep
/// the table of used `jti`s small (RFC 7523 §3 item 4 lets the server limit it).
const MAX_LIFETIME_SECS: i64 = 5 * 60;

/// A client that proved who it is (or, for `none`, said who it is).
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    pub client: Client,
    pub metadata: RegisteredMetadata,
}

/// The credentials a request carries.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    Basic {
        id: String,
        secret: String,
    },
    Post {
        id: String,
        secret: String,
    },
    None {
        id: String,
    },
    /// RFC 7523 §2.2: a JWT in `client_assertion`, with the optional body `client_id`.
    Assertion {
        assertion: String,
        body_id: Option<String>,
    },
}

impl Credentials {
    /// The `client_id` whose stored row checks these credentials (not an assertion's: its
    /// client is read from the JWT once it parses).
    fn secret_client_id(&self) -> Option<&str> {
        match self {
            Self::Basic { id, .. } | Self::Post { id, .. } | Self::None { id } => Some(id),
            Self::Assertion { .. } => None,
        }
    }
}

/// RFC 6749 §2.3.1: the Basic user name and password are form-urlencoded first.
fn form_decode(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn credentials(headers: &HeaderMap, params: &Params) -> Result<Credentials, TokenError> {
    // RFC 6749 §2.3.1: HTTP Basic, read by the kit's one header reader (the scheme is
    // case-insensitive, RFC 9110 §11.1; several `Authorization` headers are malformed).
    let basic = match authorization(headers) {
        Authorization::Absent => None,
        Authorization::Malformed => {
            return Err(TokenError::invalid_client(
                "the Authorization header is malformed",
                true,
            ))
        }
        Authorization::Bearer(_) | Authorization::Other => {
            return Err(TokenError::invalid_client(
                "only HTTP Basic authentication is accepted here",
                true,
            ))
        }
        Authorization::Basic(encoded) => {
            let decoded = STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| {
                    TokenError::invalid_client(
                        "the Basic credentials are not valid base64 of id:secret",
                        true,
                    )
                })?;
            let (id, secret) = decoded.split_once(':').ok_or_else(|| {
                TokenError::invalid_client("the Basic credentials have no `:`", true)
            })?;
            let (id, secret) = (form_decode(id), form_decode(secret));
            // RFC 6749 §2.3.1 / Appendix A.1: client_id and client_secret are VSCHARs.
            if has_control(&id) || has_control(&secret) {
                return Err(TokenError::invalid_client(
                    "the Basic credentials hold control characters",
                    true,
                ));
            }
            Some((id, secret))
        }
    };
    let body_id = params.get("client_id").map(str::to_owned);
    let body_secret = params.get("client_secret").map(str::to_owned);
    let assertion_type = params.get("client_assertion_type");
    let assertion = params.get("client_assertion");
    if assertion_type.is_some() || assertion.is_some() {
        // RFC 6749 §2.3: one authentication method per request.
        if basic.is_some() || body_secret.is_some() {
            return Err(TokenError::invalid_request(
                "the client authenticated twice (a client assertion and a secret): use one method",
            ));
        }
        // RFC 7523 §2.2: the type MUST be jwt-bearer and the assertion a single JWT.
        if assertion_type != Some(JWT_BEARER) {
            return Err(TokenError::invalid_client(
                &format!("client_assertion_type must be `{JWT_BEARER}`"),
                false,
            ));
        }
        let Some(assertion) = assertion.filter(|a| !a.is_empty()) else {
            return Err(TokenError::invalid_client(
                "client_assertion_type was sent without a client_assertion",
                false,
            ));
        };
        return Ok(Credentials::Assertion {
            assertion: assertion.to_owned(),
            body_id,
        });
    }
    match (basic, body_id, body_secret) {
        // RFC 6749 §2.3: one authentication method per request.
        (Some(_), _, Some(_)) => Err(TokenError::invalid_request(
            "the client authenticated twice (Basic and client_secret): use one method",
        )),
        (Some((id, secret)), body_id, None) => {
            if body_id.is_some_and(|b| b != id) {
                return Err(TokenError::invalid_request(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            Ok(Credentials::Basic { id, secret })
        }
        (None, Some(id), Some(secret)) => Ok(Credentials::Post { id, secret }),
        (None, Some(id), None) => Ok(Credentials::None { id }),
        (None, None, _) => Err(TokenError::invalid_client(
            "the client did not say who it is (client_id)",
            false,
        )),
    }
}

/// Authenticates the client of a request to the token endpoint or an endpoint built like it
/// (device authorization, introspection, revocation), behind the limits on failures (see the
/// module documentation).
pub async fn authenticate(
    state: &AppState,
    client_ip: &ClientIp,
    headers: &HeaderMap,
    params: &Params,
) -> Result<AuthenticatedClient, TokenError> {
    authenticate_reading(state, client_ip, headers, params, None)
        .await
        .map(|(client, _)| client)
}

/// What [`authenticate_reading`] read with the client's row: the token its caller named.
#[derive(Debug, Default)]
pub struct ReadAlong {
    /// For [`TokenRead::Access`]: the token, if active at the time given.
    pub access: Option<ActiveAccessToken>,
    /// For [`TokenRead::Refresh`]: the token, its session and its user's state, if it exists.
    pub refresh: Option<PresentedRefreshToken>,
}

/// [`authenticate`], reading with the client's row the token `token` names, for an endpoint
/// that looks it up once its caller is authenticated (introspection: an access token; the
/// refresh grant: the presented refresh token): one statement for both. The second value is
/// that read, or `None` when it could not ride along (a client assertion, which names its
/// client inside the JWT; the failure limit turned off; a request without an address to
/// limit): the caller reads the token itself. The token is read before the credentials are
/// checked, and is only handed back once they are.
pub async fn authenticate_reading(
    state: &AppState,
    client_ip: &ClientIp,
    headers: &HeaderMap,
    params: &Params,
    token: Option<TokenRead>,
) -> Result<(AuthenticatedClient, Option<ReadAlong>), TokenError> {
    let credentials = credentials(headers, params)?;
    // Per address only (see the module): whoever fails elsewhere, this address is let in.
    let Some(ip) = client_ip.bucket_key() else {
        return Ok((check_credentials(state, &credentials, None).await?, None));
    };
    // RFC 6749 §10.10: an address over its failures is refused before its credentials are
    // checked, so that it can't go on guessing: 429 `temporarily_unavailable` with
    // `Retry-After`, as the token endpoint's own limit. The client's row is read with the
    // address's bucket (and the token, when asked), in one batched statement (issue 16: one
    // round trip instead of two or three); its secret is compared only once the address is
    // let in.
    let limit = Limit::ClientAuthPerIp;
    let (peeked, client, token) = match (
        credentials.secret_client_id(),
        state.limiter.peek_key(limit, &ip),
    ) {
        (Some(id), Some(bucket)) => {
            let key = ClientWithBucketKey {
                client_id: id.to_owned(),
                bucket,
                token,
            };
            let asked = key.token.is_some();
            match state.storage.find_client_with_bucket(key).await {
                Ok(found) => (
                    state.limiter.judge_peek(limit, found.bucket_tat),
                    Some(Ok(found.client)),
                    asked.then_some(ReadAlong {
                        access: found.token,
                        refresh: found.refresh,
                    }),
                ),
                Err(e) => return Err(TokenError::server(e)),
            }
        }
        (Some(id), None) => (Ok(()), Some(find_client(state, id).await), None),
        // An assertion names its client inside the JWT, read once the address is let in.
        (None, _) => (state.limiter.peek(limit, &ip).await, None, None),
    };
    peeked.map_err(|e| TokenError::limited("failed client authentications", e))?;
    let result = check_credentials(state, &credentials, client).await;
    // RFC 6749 §5.2: only `invalid_client` is a failed authentication.
    if result
        .as_ref()
        .is_err_and(|e| e.error == ErrorCode::InvalidClient)
    {
        if let Err(e) = state
            .limiter
            .count_failure(Limit::ClientAuthPerIp, &ip)
            .await
        {
            tracing::warn!(error = %e, "client authentication: can't count the failure");
        }
    }
    result.map(|client| (client, token))
}

/// The credentials' check itself, with the client's row when it was read already (`None`: read
/// here).
async fn check_credentials(
    state: &AppState,
    credentials: &Credentials,
    client: Option<Result<Option<Client>, StorageError>>,
) -> Result<AuthenticatedClient, TokenError> {
    let (id, secret, used, basic) = match credentials {
        Credentials::Basic { id, secret } => {
            (id, Some(secret), ClientAuthMethod::ClientSecretBasic, true)
        }
        Credentials::Post { id, secret } => {
            (id, Some(secret), ClientAuthMethod::ClientSecretPost, false)
        }
        Credentials::None { id } => (id, None, ClientAuthMethod::None, false),
        Credentials::Assertion { assertion, body_id } => {
            return authenticate_assertion(state, assertion, body_id.as_deref()).await;
        }
    };
    let client = match client {
        Some(read) => read,
        None => find_client(state, id).await,
    }
    .map_err(TokenError::server)?
    .ok_or_else(|| TokenError::invalid_client("unknown client", basic))?;
    if client.token_endpoint_auth_method != used {
        return Err(TokenError::invalid_client(
            &format!(
                "this client is registered for `{}`, not `{used}`",
                client.token_endpoint_auth_method
            ),
            basic,
        ));
    }
    if let Some(secret) = secret {
        let stored = client
            .encrypted_client_secret
            .as_deref()
            .and_then(|enc| {
                Encrypter::new(&state.settings.encryption_key)
                    .decrypt(enc)
                    .ok()
            })
            .ok_or_else(|| TokenError::invalid_client("this client has no usable secret", basic))?;
        if !bool::from(stored.as_bytes().ct_eq(secret.as_bytes())) {
            return Err(TokenError::invalid_client("wrong client secret", basic));
        }
    }
    let metadata = RegisteredMetadata::from_json(&client.metadata);
    Ok(AuthenticatedClient { client, metadata })
}

/// The client named `client_id`, read in one statement with the other requests' lookups of
/// that moment (`Storage::find_client`: batched, on a kept connection, never cached).
async fn find_client(state: &AppState, client_id: &str) -> Result<Option<Client>, StorageError> {
    state.storage.find_client(client_id).await
}

fn assertion_error(description: &str) -> TokenError {
    TokenError::invalid_client(description, false)
}

/// The claims of a JWT, read without checking its signature (only to find the client whose key
/// checks it).
fn unverified_claims(jwt: &str) -> Option<serde_json::Map<String, Value>> {
    let mut parts = jwt.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The key a `private_key_jwt` assertion must verify with: from the client's inline `jwks`, the
/// key its `kid` names, or the only key when the header names none (OIDC Core §10.1).
fn client_public_key(
    metadata: &Value,
    header: &jsonwebtoken::Header,
) -> Result<jsonwebtoken::DecodingKey, TokenError> {
    let Some(jwks) = metadata.get("jwks") else {
        if metadata.get("jwks_uri").is_some() {
            return Err(assertion_error(
                "jwks_uri is not supported yet; register jwks inline",
            ));
        }
        return Err(assertion_error(
            "this client registered no keys (jwks) to verify private_key_jwt assertions",
        ));
    };
    let keys: Vec<&Value> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().collect())
        .unwrap_or_default();
    let key =
        match &header.kid {
            Some(kid) => keys
                .iter()
                .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid.as_str()))
                .ok_or_else(|| {
                    assertion_error(&format!("the client's jwks has no key with kid `{kid}`"))
                })?,
            None => match keys.as_slice() {
                [only] => only,
                _ => return Err(assertion_error(
                    "the client's jwks holds several keys: name one with `kid` in the JWT header",
                )),
            },
        };
    let member = |name: &str| key.get(name).and_then(Value::as_str).unwrap_or_default();
    // RFC 7518 §3.3 / §3.4: RS256 takes an RSA key, ES256 a P-256 key.
    let decoding = match (header.alg, member("kty")) {
        (jsonwebtoken::Algorithm::RS256, "RSA") => {
            jsonwebtoken::DecodingKey::from_rsa_components(member("n"), member("e")).ok()
        }
        (jsonwebtoken::Algorithm::ES256, "EC") if member("crv") == "P-256" => {
            jsonwebtoken::DecodingKey::from_ec_components(member("x"), member("y")).ok()
        }
        _ => {
            return Err(assertion_error(&format!(
                "the client's key does not fit the assertion's alg `{:?}` (RS256 needs an RSA \
                 key, ES256 a P-256 key)",
                header.alg
            )))
        }
    };
    decoding.ok_or_else(|| assertion_error("the client's key in jwks is not a valid public key"))
}

/// A client assertion as read before any key is trusted: its header, its claims and the
/// client it names. Nothing in it is believed until the signature verifies.
#[derive(Debug, Clone)]
pub struct UnverifiedAssertion {
    pub header: jsonwebtoken::Header,
    pub claims: serde_json::Map<String, Value>,
    /// `iss` and `sub`, which must be equal: the client_id whose key checks the signature.
    pub client_id: String,
}

/// Reads a client assertion without checking its signature (RFC 7523 §2.2, §3 items 1 and 2):
/// a JWT whose `iss` and `sub` both name the client, and the same client as a `client_id`
/// sent alongside. Pure: the key comes afterwards, from the client this names.
pub fn read_assertion(
    assertion: &str,
    body_id: Option<&str>,
) -> Result<UnverifiedAssertion, TokenError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| assertion_error("client_assertion is not a JWT (RFC 7523 §2.2)"))?;
    let claims = unverified_claims(assertion)
        .ok_or_else(|| assertion_error("client_assertion has no JSON claims set"))?;
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);

    // RFC 7523 §3 items 1 and 2 / OIDC Core §9: `iss` and `sub` are both the client_id.
    let (Some(iss), Some(sub)) = (claim("iss"), claim("sub")) else {
        return Err(assertion_error(
            "client_assertion must have `iss` and `sub` claims, both the client_id",
        ));
    };
    if iss != sub {
        return Err(assertion_error(
            "client_assertion `iss` and `sub` must both be the client_id",
        ));
    }
    // RFC 6749 Appendix A.1: a client_id is VSCHARs; refused before it reaches a query.
    if has_control(sub) {
        return Err(assertion_error(
            "client_assertion `sub` holds control characters",
        ));
    }
    // RFC 7523 §3: a client_id sent alongside must name the same client.
    if body_id.is_some_and(|id| id != sub) {
        return Err(assertion_error(
            "client_id differs from the client_assertion's `sub`",
        ));
    }
    let client_id = sub.to_owned();
    Ok(UnverifiedAssertion {
        header,
        claims,
        client_id,
    })
}

/// What the claims of a verified assertion allow: the `jti` to record and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionUse {
    pub jti: String,
    /// When the `jti` may be forgotten: `exp` plus the leeway.
    pub expires_at: DateTime<Utc>,
}

/// Checks the claims of an assertion whose signature verified (RFC 7523 §3 items 3 to 7,
/// OIDC Core §9) against the time `now` (Unix seconds) and this server's token endpoint and
/// issuer. Pure: recording the `jti` is the caller's.
pub fn check_claims(
    claims: &serde_json::Map<String, Value>,
    now: i64,
    token_endpoint: &str,
    issuer: &str,
) -> Result<AssertionUse, TokenError> {
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    // RFC 7523 §3 item 4: `exp` is required and the assertion must not have expired.
    let exp = number("exp")
        .ok_or_else(|| assertion_error("client_assertion must have a numeric `exp` claim"))?;
    // Saturating: `exp`, `nbf` and `iat` are the client's numbers, i64::MAX included.
    if exp.saturating_add(LEEWAY_SECS) < now {
        return Err(assertion_error("the client_assertion has expired"));
    }
    // The server may refuse assertions valid unreasonably far into the future (RFC 7523 §3
    // item 4); this bounds how long used `jti`s are kept.
    if exp > now.saturating_add(MAX_LIFETIME_SECS + LEEWAY_SECS) {
        return Err(assertion_error(&format!(
            "the client_assertion lives too long: `exp` may be at most {MAX_LIFETIME_SECS} \
             seconds from now"
        )));
    }
    // RFC 7523 §3 item 5: not before `nbf`.
    if number("nbf").is_some_and(|nbf| nbf.saturating_sub(LEEWAY_SECS) > now) {
        return Err(assertion_error(
            "the client_assertion is not valid yet (nbf)",
        ));
    }
    // RFC 7523 §3 item 6: `iat` in the future is refused.
    if number("iat").is_some_and(|iat| iat.saturating_sub(LEEWAY_SECS) > now) {
        return Err(assertion_error(
            "the client_assertion was issued in the future (iat)",
        ));
    }

    // RFC 7523 §3 item 3 / OIDC Core §9: the audience must name this authorization server:
    // the token endpoint URL or the issuer.
    let accepted =
        |aud: &str| aud == token_endpoint || aud == issuer || aud == issuer.trim_end_matches('/');
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => accepted(aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
        _ => false,
    };
    if !audience_ok {
        return Err(assertion_error(&format!(
            "the client_assertion `aud` must contain the token endpoint `{token_endpoint}` or \
             the issuer `{issuer}`"
        )));
    }

    // RFC 7523 §3 item 7 / OIDC Core §9: `jti` is required and an assertion is used only once.
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .ok_or_else(|| assertion_error("client_assertion must have a `jti` claim"))?;
    let expires_at = DateTime::<Utc>::from_timestamp(exp.saturating_add(LEEWAY_SECS), 0)
        .ok_or_else(|| assertion_error("client_assertion `exp` is out of range"))?;
    Ok(AssertionUse {
        jti: jti.to_owned(),
        expires_at,
    })
}

/// Authenticates a client by a JWT assertion (RFC 7523 §2.2 and §3, OIDC Core §9).
async fn authenticate_assertion(
    state: &AppState,
    assertion: &str,
    body_id: Option<&str>,
) -> Result<AuthenticatedClient, TokenError> {
    let UnverifiedAssertion {
        header,
        claims,
        client_id,
    } = read_assertion(assertion, body_id)?;

    let client = find_client(state, &client_id)
        .await
        .map_err(TokenError::server)?
        .ok_or_else(|| assertion_error("unknown client"))?;

    // OIDC Core §9: the client must use the method it registered.
    let (alg, key) = match client.token_endpoint_auth_method {
        ClientAuthMethod::ClientSecretJwt => {
            // OIDC Core §9: an HMAC (HS256) keyed with the client secret.
            if header.alg != jsonwebtoken::Algorithm::HS256 {
                return Err(assertion_error(
                    "client_secret_jwt assertions must be signed with HS256",
                ));
            }
            let secret = client
                .encrypted_client_secret
                .as_deref()
                .and_then(|enc| {
                    Encrypter::new(&state.settings.encryption_key)
                        .decrypt(enc)
                        .ok()
                })
                .ok_or_else(|| assertion_error("this client has no usable secret"))?;
            (
                jsonwebtoken::Algorithm::HS256,
                jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            )
        }
        ClientAuthMethod::PrivateKeyJwt => {
            // OIDC Core §9: signed with the client's private key; RS256 or ES256 here.
            if !matches!(
                header.alg,
                jsonwebtoken::Algorithm::RS256 | jsonwebtoken::Algorithm::ES256
            ) {
                return Err(assertion_error(
                    "private_key_jwt assertions must be signed with RS256 or ES256",
                ));
            }
            (header.alg, client_public_key(&client.metadata, &header)?)
        }
        other => {
            return Err(assertion_error(&format!(
                "this client is registered for `{other}`, not a JWT client assertion"
            )))
        }
    };

    // RFC 7523 §3 item 9: the signature must verify. jsonwebtoken checks times against the
    // system clock, so its time checks are off and done below against the injected clock.
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|_| assertion_error("the client_assertion signature does not verify"))?;

    let now = state.storage.entropy().clock.now().timestamp();
    let token_endpoint = endpoints::url(&state.settings.public_base, endpoints::TOKEN).to_string();
    let issuer = state.settings.issuer.to_string();
    let AssertionUse { jti, expires_at } = check_claims(&claims, now, &token_endpoint, &issuer)?;

    let mut repo = state.storage.begin().await.map_err(TokenError::server)?;
    let first_use = match repo
        .client_assertions()
        .record_jti(client.id, &jti, expires_at)
        .await
    {
        Ok(first) => first,
        // Deleted while this request ran (config sync --prune): it no longer exists.
        Err(crate::storage::StorageError::NotFound(_)) => {
            return Err(assertion_error("unknown client"))
        }
        Err(e) => return Err(TokenError::server(e)),
    };
    repo.commit().await.map_err(TokenError::server)?;
    if !first_use {
        return Err(assertion_error("the assertion was already used"));
    }

    let metadata = RegisteredMetadata::from_json(&client.metadata);
    Ok(AuthenticatedClient { client, metadata })
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderValue};

    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(value))).unwrap(),
        );
        headers
    }

    #[test]
    fn reads_each_method() {
        let none = Params::parse("client_id=abc");
        assert_eq!(
            credentials(&HeaderMap::new(), &none).unwrap(),
            Credentials::None { id: "abc".into() }
        );
        let post = Params::parse("client_id=abc&client_secret=s%20t");
        assert_eq!(
            credentials(&HeaderMap::new(), &post).unwrap(),
            Credentials::Post {
                id: "abc".into(),
                secret: "s t".into()
            }
        );
        // RFC 6749 §2.3.1: form-urlencoded inside Basic.
        assert_eq!(
            credentials(&basic("a%3Ab:p%2Bq+r"), &Params::parse("")).unwrap(),
            Credentials::Basic {
                id: "a:b".into(),
                secret: "p+q r".into()
            }
        );
        // RFC 9110 §11.1: the scheme is case-insensitive.
        let mut upper = HeaderMap::new();
        upper.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("BASIC {}", STANDARD.encode("abc:s"))).unwrap(),
        );
        assert_eq!(
            credentials(&upper, &Params::parse("")).unwrap(),
            Credentials::Basic {
                id: "abc".into(),
                secret: "s".into()
            }
        );
    }

    #[test]
    fn refuses_ambiguity_and_garbage() {
        let both = Params::parse("client_id=abc&client_secret=x");
        assert_eq!(
            credentials(&basic("abc:x"), &both)
                .unwrap_err()
                .error
                .as_str(),
            "invalid_request"
        );
        let other = Params::parse("client_id=zzz");
        assert_eq!(
            credentials(&basic("abc:x"), &other)
                .unwrap_err()
                .error
                .as_str(),
            "invalid_request"
        );
        assert_eq!(
            credentials(&basic("no-colon"), &Params::parse(""))
                .unwrap_err()
                .error
                .as_str(),
            "invalid_client"
        );
        // RFC 9110 §5.3: one Authorization header; two are refused, not the first one read.
        let mut two = basic("abc:x");
        two.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        assert_eq!(
            credentials(&two, &Params::parse(""))
                .unwrap_err()
                .error
                .as_str(),
            "invalid_client"
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            credentials(&bearer, &Params::parse(""))
                .unwrap_err()
                .error
                .as_str(),
            "invalid_client"
        );
        assert_eq!(
            credentials(&HeaderMap::new(), &Params::parse(""))
                .unwrap_err()
                .error
                .as_str(),
            "invalid_client"
        );
        // RFC 7523 §2.2: an assertion needs the jwt-bearer type, and is the only method used.
        let jwt = Params::parse("client_id=a&client_assertion=x");
        assert_eq!(
            credentials(&HeaderMap::new(), &jwt)
                .unwrap_err()
                .error
                .as_str(),
            "invalid_client"
        );
        let no_assertion = Params::parse(&format!("client_assertion_type={JWT_BEARER}"));
        assert_eq!(
            credentials(&HeaderMap::new(), &no_assertion)
                .unwrap_err()
                .error
                .as_str(),
            "invalid_client"
        );
        let jwt = format!("client_assertion_type={JWT_BEARER}&client_assertion=x.y.z");
        assert_eq!(
            credentials(&basic("abc:x"), &Params::parse(&jwt))
                .unwrap_err()
                .error
                .as_str(),
            "invalid_request"
        );
        assert_eq!(
            credentials(
                &HeaderMap::new(),
                &Params::parse(&format!("{jwt}&client_id=a"))
            )
            .unwrap(),
            Credentials::Assertion {
                assertion: "x.y.z".into(),
                body_id: Some("a".into())
            }
        );
        assert!(unverified_claims("garbage").is_none());
        assert!(unverified_claims("a.bm90IGpzb24.c").is_none());
    }

    /// Regression: the time claims are the client's numbers; at the ends of i64 they used to
    /// overflow `exp + leeway` and `nbf - leeway` (a panic in debug builds). Found reading the
    /// code for the client_assertion fuzz target, not by the fuzzer.
    #[test]
    fn extreme_time_claims_are_refused_without_overflow() {
        let now = 1_700_000_000;
        let claims = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({
                "iss": "c", "sub": "c", "aud": "https://auth.example/", "jti": "j",
                "exp": now + 60,
            });
            for (k, v) in extra.as_object().unwrap() {
                claims[k] = v.clone();
            }
            claims.as_object().unwrap().clone()
        };
        let check = |c| {
            check_claims(
                &c,
                now,
                "https://auth.example/oauth2/token",
                "https://auth.example/",
            )
        };
        assert!(check(claims(serde_json::json!({}))).is_ok());
        for extreme in [
            serde_json::json!({ "exp": i64::MAX }),
            serde_json::json!({ "exp": i64::MIN }),
            serde_json::json!({ "nbf": i64::MIN, "exp": i64::MAX }),
            serde_json::json!({ "iat": i64::MAX }),
            serde_json::json!({ "nbf": i64::MAX }),
        ] {
            let e = check(claims(extreme.clone())).expect_err("refused");
            assert_eq!(e.error.as_str(), "invalid_client", "{extreme}");
        }
        // Far in the past is merely early enough.
        assert!(check(claims(
            serde_json::json!({ "nbf": i64::MIN, "iat": i64::MIN })
        ))
        .is_ok());
    }
}
