//! Access tokens on requests, and the shared secret that guards the homeserver API.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::MatrixError;
use crate::json_body::query_param;
use crate::AppState;

/// The access token of a request, read as Synapse's `get_access_token_from_request` does
/// (Matrix client-server API, "Using access tokens"): `Authorization: Bearer <token>`, or the
/// deprecated `?access_token=` query parameter. Both at once, several `Authorization` headers,
/// or a header that is not `Bearer <token>` are 401 `M_MISSING_TOKEN`. `Ok(None)`: no token.
pub(crate) fn access_token(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<String>, MatrixError> {
    let mut auth_headers = headers.get_all(AUTHORIZATION).iter();
    let from_query = query_param(query, "access_token");
    let Some(first) = auth_headers.next() else {
        return Ok(from_query.filter(|t| !t.is_empty()));
    };
    if from_query.is_some() {
        return Err(MatrixError::missing_token(
            "Mixing Authorization headers and access_token query parameters.",
        ));
    }
    if auth_headers.next().is_some() {
        return Err(MatrixError::missing_token(
            "Too many Authorization headers.",
        ));
    }
    let value = first
        .to_str()
        .map_err(|_| MatrixError::missing_token("Invalid Authorization header."))?;
    match value.split(' ').collect::<Vec<_>>().as_slice() {
        ["Bearer", token] if !token.is_empty() => Ok(Some((*token).to_owned())),
        _ => Err(MatrixError::missing_token("Invalid Authorization header.")),
    }
}

/// Compares a presented token with the shared secret without short-circuiting: both are
/// hashed to SHA-256 first, so neither content nor length leaks through timing.
pub(crate) fn secret_matches(presented: &str, secret: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(secret.as_bytes());
    presented.ct_eq(&expected).into()
}

/// Route layer on every `/_synapse/*` route (homeserver contract: the provider authenticates
/// with `Authorization: Bearer <shared secret>`): no token → 401 `M_MISSING_TOKEN`, another
/// token → 403: `M_UNKNOWN` "This endpoint must only be called by MAS" on `/_synapse/mas/*`, as
/// Synapse's bare `SynapseError(403, …)` (`synapse/rest/synapse/mas/_base.py`); `M_FORBIDDEN`
/// on the legacy admin API.
pub(crate) async fn require_secret(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    state.wait_while_paused().await;
    if state.is_unavailable() {
        return MatrixError::unavailable("The homeserver is unavailable (simulated outage)")
            .into_response();
    }
    match access_token(request.headers(), request.uri().query()) {
        Err(error) => error.into_response(),
        Ok(None) => MatrixError::missing_token("Missing access token").into_response(),
        Ok(Some(token)) if secret_matches(&token, state.secret()) => next.run(request).await,
        Ok(Some(_)) if request.uri().path().starts_with("/_synapse/mas/") => {
            MatrixError::forbidden_unknown("This endpoint must only be called by MAS")
                .into_response()
        }
        Ok(Some(_)) => MatrixError::forbidden(
            "This endpoint must only be called by the authentication service",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_header_or_query() {
        assert_eq!(
            access_token(&headers(&["Bearer abc"]), None).unwrap(),
            Some("abc".into())
        );
        assert_eq!(
            access_token(&headers(&[]), Some("access_token=q%2B1")).unwrap(),
            Some("q+1".into())
        );
        assert_eq!(access_token(&headers(&[]), Some("x=1")).unwrap(), None);
        assert_eq!(
            access_token(&headers(&[]), Some("access_token=")).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_authorization_is_missing_token() {
        for bad in [
            access_token(&headers(&["Basic abc"]), None),
            access_token(&headers(&["Bearer"]), None),
            access_token(&headers(&["Bearer a b"]), None),
            access_token(&headers(&["Bearer a", "Bearer b"]), None),
            access_token(&headers(&["Bearer a"]), Some("access_token=b")),
        ] {
            assert_eq!(bad.unwrap_err().errcode(), "M_MISSING_TOKEN");
        }
    }

    #[test]
    fn secret_comparison() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cre", "s3cret"));
        assert!(!secret_matches("s3cret!", "s3cret"));
        assert!(!secret_matches("", "s3cret"));
    }
}
