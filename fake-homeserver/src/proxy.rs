//! The reverse proxy for the legacy login API (MSC3861 deployments route `/login`, `/logout`,
//! `/logout/all` and `/refresh` to the provider's compatibility layer; spec notes "legacy login
//! through the provider"). Only active with `proxy_login`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT,
};
use axum::http::{HeaderName, Uri};
use axum::response::{IntoResponse, Response};
use url::Url;

use crate::error::MatrixError;
use crate::json_body::read_body;
use crate::AppState;

/// Request headers passed to the provider.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 4] =
    [CONTENT_TYPE, AUTHORIZATION, USER_AGENT, ACCEPT];
/// Response headers passed back to the client.
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 4] =
    [CONTENT_TYPE, LOCATION, RETRY_AFTER, CACHE_CONTROL];

/// `{provider_endpoint}` + the same path and query. Dot segments (also percent-encoded ones,
/// which URL parsing would resolve) are refused so a path cannot climb out of the endpoint.
fn upstream_url(endpoint: &Url, uri: &Uri) -> Result<Url, MatrixError> {
    let path = uri.path();
    let climbs = path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    });
    if climbs {
        return Err(MatrixError::unrecognized());
    }
    let mut url = endpoint
        .join(path.trim_start_matches('/'))
        .map_err(|_| MatrixError::unrecognized())?;
    url.set_query(uri.query());
    Ok(url)
}

/// Forwards the request as a reverse proxy would: same method, path, query, body and the
/// headers in [`FORWARDED_REQUEST_HEADERS`]; answers with the upstream status, the headers in
/// [`FORWARDED_RESPONSE_HEADERS`] and the body, unchanged. Redirects are passed through, never
/// followed. Provider unreachable → 502 `M_UNKNOWN`.
pub(crate) async fn forward(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, MatrixError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body).await?;
    let url = upstream_url(state.upstream().endpoint(), &parts.uri)?;

    let mut upstream = state.upstream().http().request(parts.method.clone(), url);
    for name in FORWARDED_REQUEST_HEADERS {
        for value in parts.headers.get_all(&name) {
            upstream = upstream.header(&name, value);
        }
    }
    if !body.is_empty() {
        upstream = upstream.body(body);
    }
    let answer = upstream.send().await.map_err(|error| {
        tracing::warn!(%error, path = parts.uri.path(), "proxying to the provider failed");
        MatrixError::bad_gateway("The authentication service could not be reached")
    })?;

    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.map_err(|error| {
        tracing::warn!(%error, "reading the provider's answer failed");
        MatrixError::bad_gateway("The authentication service answer could not be read")
    })?;
    tracing::info!(method = %parts.method, path = parts.uri.path(), status = status.as_u16(), "proxied");

    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for name in FORWARDED_RESPONSE_HEADERS {
        for value in headers.get_all(&name) {
            response.headers_mut().append(&name, value.clone());
        }
    }
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_path_and_query_under_the_endpoint() {
        let endpoint = Url::parse("http://auth.test/prefix/").unwrap();
        let uri: Uri =
            "/_matrix/client/v3/login/sso/redirect/oidc-x?redirectUrl=http%3A%2F%2Fapp%2F"
                .parse()
                .unwrap();
        assert_eq!(
            upstream_url(&endpoint, &uri).unwrap().as_str(),
            "http://auth.test/prefix/_matrix/client/v3/login/sso/redirect/oidc-x?redirectUrl=http%3A%2F%2Fapp%2F"
        );
    }

    #[test]
    fn refuses_dot_segments() {
        let endpoint = Url::parse("http://auth.test/").unwrap();
        for path in [
            "/_matrix/client/v3/login/sso/redirect/..",
            "/_matrix/client/v3/login/sso/redirect/%2E%2e",
            "/_matrix/client/v3/login/sso/redirect/.%2e",
        ] {
            let uri: Uri = path.parse().unwrap();
            assert!(upstream_url(&endpoint, &uri).is_err(), "{path}");
        }
    }
}
