//! Client authentication at the token endpoint (RFC 6749 §2.3, OIDC Core §9).
//!
//! Supported: `none` (public clients send only `client_id`), `client_secret_basic` (HTTP Basic,
//! with the form-urlencoded id and secret of RFC 6749 §2.3.1) and `client_secret_post`. A client
//! must use the method it registered, and only one method per request (RFC 6749 §2.3).

use axum::http::{header, HeaderMap};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use subtle::ConstantTimeEq as _;

use super::{authorize::Params, token::TokenError};
use crate::{
    app::AppState, crypto::Encrypter, domain::client_metadata::RegisteredMetadata, storage::Client,
};

/// A client that proved who it is (or, for `none`, said who it is).
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    pub client: Client,
    pub metadata: RegisteredMetadata,
}

/// The credentials a request carries.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    Basic { id: String, secret: String },
    Post { id: String, secret: String },
    None { id: String },
}

/// RFC 6749 §2.3.1: the Basic user name and password are form-urlencoded first.
fn form_decode(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn credentials(headers: &HeaderMap, params: &Params) -> Result<Credentials, TokenError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().unwrap_or_default();
            let encoded = value
                .strip_prefix("Basic ")
                .or_else(|| value.strip_prefix("basic "))
                .ok_or_else(|| {
                    TokenError::invalid_client(
                        "only HTTP Basic authentication is accepted here",
                        true,
                    )
                })?;
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
            Some((form_decode(id), form_decode(secret)))
        }
        None => None,
    };
    if params.get("client_assertion").is_some() || params.get("client_assertion_type").is_some() {
        return Err(TokenError::invalid_client(
            "JWT client assertions (client_secret_jwt, private_key_jwt) are not supported yet",
            false,
        ));
    }
    let body_id = params.get("client_id").map(str::to_owned);
    let body_secret = params.get("client_secret").map(str::to_owned);
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

/// Authenticates the client of a token request.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<AuthenticatedClient, TokenError> {
    let credentials = credentials(headers, params)?;
    let (id, secret, used, basic) = match &credentials {
        Credentials::Basic { id, secret } => (id, Some(secret), "client_secret_basic", true),
        Credentials::Post { id, secret } => (id, Some(secret), "client_secret_post", false),
        Credentials::None { id } => (id, None, "none", false),
    };
    let mut repo = state.storage.reader().await.map_err(TokenError::server)?;
    let client = repo
        .clients()
        .find_by_client_id(id)
        .await
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

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
    }

    #[test]
    fn refuses_ambiguity_and_garbage() {
        let both = Params::parse("client_id=abc&client_secret=x");
        assert_eq!(
            credentials(&basic("abc:x"), &both).unwrap_err().error,
            "invalid_request"
        );
        let other = Params::parse("client_id=zzz");
        assert_eq!(
            credentials(&basic("abc:x"), &other).unwrap_err().error,
            "invalid_request"
        );
        assert_eq!(
            credentials(&basic("no-colon"), &Params::parse(""))
                .unwrap_err()
                .error,
            "invalid_client"
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            credentials(&bearer, &Params::parse("")).unwrap_err().error,
            "invalid_client"
        );
        assert_eq!(
            credentials(&HeaderMap::new(), &Params::parse(""))
                .unwrap_err()
                .error,
            "invalid_client"
        );
        let jwt = Params::parse("client_id=a&client_assertion=x");
        assert_eq!(
            credentials(&HeaderMap::new(), &jwt).unwrap_err().error,
            "invalid_client"
        );
    }
}
