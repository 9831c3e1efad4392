//! `GET|POST /oauth2/userinfo` (OIDC Core §5.3): the claims about the user an access token
//! stands for, to a client holding it.
//!
//! The token is a bearer token (RFC 6750): in the `Authorization` header (§2.1), or on a `POST`
//! in the `access_token` form parameter (§2.2); never in the query (§2.3 is not offered). Errors
//! are those of RFC 6750 §3, as a `WWW-Authenticate: Bearer` challenge (and the same error as
//! JSON in the body). The introspection endpoint answers a bad homeserver secret with the same
//! error ([`BearerError`]); both read the header with the kit's
//! [`authorization`].

use super::api::{no_store, BearerError};
use axum::{
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use crate::http::kit::params::{is_form_urlencoded, Params};
use crate::{
    core::accounts::emails as account_emails,
    core::tokens::{find_active_access_token, record_first_use, UnusedToken},
    domain::scope::Scope,
    http::AppState,
};

use crate::http::kit::params::{authorization, Authorization};

/// The access token of a userinfo request: from the header, or from a `POST` form body.
fn access_token(headers: &HeaderMap, body: Option<&[u8]>) -> Result<String, BearerError> {
    let from_header = match authorization(headers) {
        Authorization::Bearer(token) => Some(token),
        Authorization::Malformed => {
            return Err(BearerError::InvalidRequest(
                "the Authorization header is malformed",
            ))
        }
        Authorization::Absent | Authorization::Basic(_) | Authorization::Other => None,
    };
    // RFC 6750 §2.2: the form parameter counts only in an application/x-www-form-urlencoded
    // body.
    let params = match body {
        Some(body) if is_form_urlencoded(headers) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| BearerError::InvalidRequest("the body is not UTF-8"))?;
            Some(Params::parse(text))
        }
        _ => None,
    };
    if params
        .as_ref()
        .is_some_and(|p| p.repeated_names().iter().any(|n| n == "access_token"))
    {
        return Err(BearerError::InvalidRequest(
            "the access_token parameter is repeated",
        ));
    }
    let from_body = params.as_ref().and_then(|p| p.get("access_token"));
    match (from_header, from_body) {
        // RFC 6750 §2: "Clients MUST NOT use more than one method to transmit the token in each
        // request."
        (Some(_), Some(_)) => Err(BearerError::InvalidRequest(
            "the access token was sent both in the header and in the body",
        )),
        (Some(token), None) => Ok(token.to_owned()),
        (None, Some(token)) => Ok(token.to_owned()),
        (None, None) => Err(BearerError::Missing),
    }
}

/// The claims of OIDC Core §5.3.2 this provider returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct UserInfo {
    /// OIDC Core §5.3.2: REQUIRED, the same `sub` as in the ID token (the user's ULID).
    sub: String,
    /// OIDC Core §5.4: with the `email` scope, when the user has a confirmed address.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
}

/// `GET /oauth2/userinfo` (OIDC Core §5.3.1).
pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    respond(handle(&state, &headers, None).await)
}

/// `POST /oauth2/userinfo` (OIDC Core §5.3.1: "MUST support the use of the HTTP GET and HTTP
/// POST methods").
pub async fn post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    respond(handle(&state, &headers, Some(&body)).await)
}

fn respond(result: Result<UserInfo, BearerError>) -> Response {
    match result {
        // OIDC Core §5.3.2: a JSON object (the claims are not signed here).
        Ok(claims) => no_store(Json(claims).into_response()),
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Result<UserInfo, BearerError> {
    let token = access_token(headers, body)?;
    let now = state.storage.entropy().clock.now();
    // One query: the token, its session, client and user (the hot path, batched).
    let active = find_active_access_token(&state.storage, &token, now)
        .await?
        .ok_or(BearerError::InvalidToken(
            "the access token is unknown, expired or revoked",
        ))?;
    // Its holder presents it: a use, which closes the retry grace of the refresh that issued it
    // (client-server API "Refreshing access tokens"; `core::tokens`).
    if let Some(unused) = UnusedToken::oauth2(&active) {
        record_first_use(&state.storage, unused).await;
    }
    let user = active.user.ok_or(BearerError::InvalidToken(
        "the access token does not stand for a user",
    ))?;
    let scope = Scope::parse(&active.session.scope).unwrap_or_default();
    // OIDC Core §5.3: the UserInfo endpoint serves tokens granted with the `openid` scope;
    // RFC 6750 §3.1: otherwise insufficient_scope.
    if !scope.contains("openid") {
        return Err(BearerError::InsufficientScope {
            scope: "openid",
            description: "the access token was not granted the openid scope",
        });
    }
    let mut claims = UserInfo {
        sub: user.id.to_string(),
        email: None,
        email_verified: None,
    };
    if scope.contains("email") {
        let mut repo = state.storage.reader().await?;
        if let Some(email) = account_emails::released_email(&mut repo, user.id).await? {
            claims.email = Some(email);
            claims.email_verified = Some(true);
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    #[test]
    fn finds_the_access_token_in_one_place_only() {
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer tok")]);
        assert_eq!(access_token(&bearer, None).as_deref(), Ok("tok"));
        let form = headers(&[(header::CONTENT_TYPE, FORM)]);
        assert_eq!(
            access_token(&form, Some(b"access_token=t%2Bk")).as_deref(),
            Ok("t+k")
        );
        // §2.2: only a form body counts.
        let json = headers(&[(header::CONTENT_TYPE, "application/json")]);
        assert_eq!(
            access_token(&json, Some(b"access_token=tok")),
            Err(BearerError::Missing)
        );
        assert_eq!(
            access_token(&HeaderMap::new(), None),
            Err(BearerError::Missing)
        );
        let basic = headers(&[(header::AUTHORIZATION, "Basic YTpi")]);
        assert_eq!(access_token(&basic, None), Err(BearerError::Missing));
        let both = headers(&[
            (header::AUTHORIZATION, "Bearer tok"),
            (header::CONTENT_TYPE, FORM),
        ]);
        assert!(matches!(
            access_token(&both, Some(b"access_token=tok")),
            Err(BearerError::InvalidRequest(_))
        ));
        assert!(matches!(
            access_token(&form, Some(b"access_token=a&access_token=b")),
            Err(BearerError::InvalidRequest(_))
        ));
        assert!(matches!(
            access_token(&form, Some(b"access_token=\xff")),
            Err(BearerError::InvalidRequest(_))
        ));
        let malformed = headers(&[(header::AUTHORIZATION, "Bearer ")]);
        assert!(matches!(
            access_token(&malformed, None),
            Err(BearerError::InvalidRequest(_))
        ));
    }

    proptest! {
        #[test]
        fn request_parsing_never_panics(
            header in proptest::option::of("\\PC{0,60}"),
            body in proptest::collection::vec(any::<u8>(), 0..120),
            form in any::<bool>(),
        ) {
            let mut headers = HeaderMap::new();
            if let Some(value) = header.and_then(|h| HeaderValue::from_str(&h).ok()) {
                headers.insert(header::AUTHORIZATION, value);
            }
            if form {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FORM));
            }
            let _ = access_token(&headers, Some(&body));
        }
    }
}
