//! The authorization endpoint over HTTP: which errors are shown as a page and which go back to
//! the client (RFC 6749 §4.1.2.1), in each response mode.

mod support;

use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};
use support::{authorize_url, http, REDIRECT, STATE};
use url::Url;

/// The error parameters of a redirect back to the client.
fn redirected_error(response: &reqwest::Response, in_fragment: bool) -> Vec<(String, String)> {
    assert_eq!(response.status(), 303, "expected a redirect to the client");
    let location = Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(REDIRECT), "{location}");
    let pairs = if in_fragment {
        url::form_urlencoded::parse(location.fragment().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    } else {
        location.query_pairs().into_owned().collect::<Vec<_>>()
    };
    pairs
}

fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn errors_before_the_redirect_uri_is_trusted_are_pages(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let http = http();
    for (extra, needle) in [
        (vec![("client_id", "")], "client_id is missing"),
        (
            vec![("client_id", "nobody")],
            "No application is registered",
        ),
        (vec![("redirect_uri", "")], "redirect_uri is missing"),
        (
            vec![("redirect_uri", "https://evil.example/callback")],
            "not a return address registered",
        ),
        (
            vec![("redirect_uri", "https://client.example.com/callback/")],
            "not a return address registered",
        ),
    ] {
        let response = http
            .get(authorize_url(&provider, &extra))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{extra:?}");
        assert!(
            response.headers().get("location").is_none(),
            "never redirected: {extra:?}"
        );
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert!(response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{extra:?}: {body}");
    }
    // A repeated client_id is refused on a page too.
    let doubled = format!("{}&client_id=other", authorize_url(&provider, &[]));
    let response = http.get(doubled).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    provider.stop().await;
}

async fn errors_after_go_back_to_the_client(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let http = http();
    let issuer = provider.base_url.to_string();
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "")], "invalid_scope"),
        (
            vec![("request", "eyJhbGciOiJub25lIn0.e30.")],
            "request_not_supported",
        ),
        (vec![("response_mode", "jwt")], "invalid_request"),
        (vec![("prompt", "none")], "login_required"),
    ] {
        let response = http
            .get(authorize_url(&provider, &extra))
            .send()
            .await
            .unwrap();
        let pairs = redirected_error(&response, false);
        assert_eq!(value(&pairs, "error"), Some(error), "{extra:?}: {pairs:?}");
        assert_eq!(value(&pairs, "state"), Some(STATE));
        // RFC 9207: the issuer comes back with the response.
        assert_eq!(value(&pairs, "iss"), Some(issuer.as_str()));
        assert!(value(&pairs, "error_description").is_some());
    }

    // A request that passes every check is stored, and the browser goes to sign in.
    let response = http
        .get(authorize_url(&provider, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap();
    // Absolute, on the public base (which may carry a path).
    let grant = location
        .strip_prefix(&provider.url("/login?grant="))
        .expect(location);
    assert!(ulid::Ulid::from_string(grant).is_ok(), "{location}");

    // response_mode=fragment puts the parameters in the fragment.
    let response = http
        .get(authorize_url(
            &provider,
            &[("response_mode", "fragment"), ("prompt", "none")],
        ))
        .send()
        .await
        .unwrap();
    let pairs = redirected_error(&response, true);
    assert_eq!(value(&pairs, "error"), Some("login_required"));

    // response_mode=form_post answers a self-submitting form to the redirect URI.
    let response = http
        .get(authorize_url(
            &provider,
            &[("response_mode", "form_post"), ("prompt", "none")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action https://client.example.com"),
        "{csp}"
    );
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    let body = response.text().await.unwrap();
    assert!(
        body.contains(r#"name="error" value="login_required""#),
        "{body}"
    );
    assert!(
        body.contains(&format!(r#"name="state" value="{STATE}""#)),
        "{body}"
    );
    provider.stop().await;
}

backend_tests!(
    errors_before_the_redirect_uri_is_trusted_are_pages,
    errors_after_go_back_to_the_client,
);
