//! The suite must judge a provider it was not written for, honestly: here a deliberately broken
//! one (wiremock) whose metadata and endpoints break the specs in known ways. The right checks
//! must fail, with evidence, and the run must fail.

use conformance::{Options, Outcome, Profile};
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, Request, Respond, ResponseTemplate,
};

/// `/authorize` that sends a code back to whatever redirect URI it is given: no client check,
/// no redirect URI check, no PKCE check, any response type.
struct AcceptEverything;

impl Respond for AcceptEverything {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let get = |name: &str| {
            request
                .url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let Some(redirect) = get("redirect_uri") else {
            return ResponseTemplate::new(400);
        };
        let Ok(mut target) = url::Url::parse(&redirect) else {
            return ResponseTemplate::new(400);
        };
        target.query_pairs_mut().append_pair("code", "broken-code");
        if let Some(state) = get("state") {
            target.query_pairs_mut().append_pair("state", &state);
        }
        ResponseTemplate::new(302).insert_header("location", target.as_str())
    }
}

/// Registration that accepts any body and echoes it with a client_id (201).
struct RegisterAnything;

impl Respond for RegisterAnything {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut body: Value = serde_json::from_slice(&request.body).unwrap_or_else(|_| json!({}));
        if let Some(map) = body.as_object_mut() {
            map.insert("client_id".into(), json!("broken-client"));
        }
        ResponseTemplate::new(201).set_body_json(body)
    }
}

async fn broken_provider() -> MockServer {
    let server = MockServer::start().await;
    let base = server.uri();
    let metadata = json!({
        // Not the URL it is served for.
        "issuer": "https://wrong.example/",
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "registration_endpoint": format!("{base}/register"),
        "introspection_endpoint": format!("{base}/introspect"),
        "jwks_uri": format!("{base}/jwks"),
        // No revocation_endpoint (Matrix clients need one).
        "response_types_supported": ["code", "token"],
        // No refresh_token grant.
        "grant_types_supported": ["authorization_code"],
        // No fragment mode.
        "response_modes_supported": ["query"],
        // plain only, no S256.
        "code_challenge_methods_supported": ["plain"],
        "prompt_values_supported": ["create"],
    });
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(metadata))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/authorize"))
        .respond_with(AcceptEverything)
        .mount(&server)
        .await;
    // Any code, any verifier, any grant type, any client: tokens, cacheable, never rotated.
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "broken-access-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "refresh_token": "broken-refresh-token",
        })))
        .mount(&server)
        .await;
    // Tells anyone about any token.
    Mock::given(method("POST"))
        .and(path("/introspect"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "active": true,
            "scope": "openid",
            "client_id": "broken-client",
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/register"))
        .respond_with(RegisterAnything)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": [] })))
        .mount(&server)
        .await;
    server
}

/// Each of these must fail against the broken provider.
const MUST_FAIL: &[&str] = &[
    // metadata
    "oauth2.metadata.issuer_matches",
    "oauth2.metadata.s256",
    "oauth2.metadata.no_plain",
    "matrix.metadata.issuer",
    "matrix.metadata.revocation_endpoint",
    "matrix.metadata.grant_types",
    "matrix.metadata.response_modes",
    "matrix.metadata.s256",
    // the authorization endpoint accepts everything
    "oauth2.authorize.pkce_required",
    "oauth2.authorize.plain_refused",
    "oauth2.authorize.unknown_client_not_redirected",
    "oauth2.authorize.unregistered_redirect_not_redirected",
    "oauth2.authorize.redirect_exact_match",
    "oauth2.authorize.response_type_token_refused",
    "oauth2.authorize.response_type_required",
    "matrix.scope.two_devices_refused",
    "matrix.scope.device_needs_api",
    "matrix.scope.mixed_forms_refused",
    "matrix.scope.invalid_device_id_refused",
    // the token endpoint accepts everything
    "oauth2.token.no_store",
    "oauth2.token.wrong_verifier",
    "oauth2.token.missing_verifier",
    "oauth2.token.redirect_mismatch",
    "oauth2.token.code_replay",
    "oauth2.token.code_bound_to_client",
    "oauth2.token.invalid_code",
    "oauth2.token.unsupported_grant_type",
    "oauth2.token.unknown_client",
    "oauth2.token.refresh_rotation",
    "oauth2.token.refresh_reuse_refused",
    // introspection answers anyone
    "oauth2.introspection.requires_auth",
    "oauth2.introspection.public_client_refused",
    "matrix.introspection.wrong_secret",
    // registration accepts anything
    "oauth2.registration.redirect_fragment",
    "oauth2.registration.not_json",
    "oauth2.registration.secret_issued",
    "matrix.registration.default_web",
    "matrix.registration.post_logout_foreign_refused",
    "matrix.registration.client_uri_required",
    "matrix.registration.client_uri_https",
    "matrix.registration.client_uri_userinfo",
    "matrix.registration.logo_uri_host",
    "matrix.registration.tos_uri_host",
    "matrix.registration.policy_uri_host",
    "matrix.registration.web_redirect_https",
    "matrix.registration.web_redirect_host",
    "matrix.registration.native_scheme_reversed",
    "matrix.registration.native_no_authority",
];

/// What the broken provider does right: these must not be reported as failures.
const MUST_PASS: &[&str] = &[
    "oauth2.metadata.reachable",
    "oauth2.metadata.content_type",
    "oauth2.metadata.authorization_endpoint",
    "oauth2.metadata.token_endpoint",
    "oauth2.registration.created",
    "matrix.metadata.registration_endpoint",
    "matrix.metadata.response_types",
    "matrix.registration.device_only",
    "matrix.registration.none_auth",
];

#[tokio::test]
async fn a_broken_provider_fails_the_right_checks() {
    let server = broken_provider().await;
    let mut options = Options::new(format!("{}/", server.uri()).parse().unwrap());
    options.profiles = vec![Profile::OAuth2, Profile::MatrixProvider];
    let report = conformance::run(&options).await;

    if std::env::var_os("SHOW_REPORT").is_some() {
        eprintln!("{}", report.render_text());
    }
    let failed = report.failed_ids();
    let missing: Vec<&&str> = MUST_FAIL.iter().filter(|id| !failed.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "these checks should have failed: {missing:?}\n\n{}",
        report.render_text()
    );
    for id in MUST_PASS {
        let finding = report
            .finding(id)
            .unwrap_or_else(|| panic!("{id} did not run"));
        assert!(
            finding.outcome.is_pass(),
            "{id}: {:?}\n\n{}",
            finding.outcome,
            report.render_text()
        );
    }
    assert!(!report.passed_all_musts());
    assert_eq!(report.exit_code(), 1);
    assert!(report.unreachable.is_none());
    // Only the selected profiles ran.
    assert!(report
        .findings
        .iter()
        .all(|f| matches!(f.profile, Profile::OAuth2 | Profile::MatrixProvider)));

    // A failure carries its own exchanges: the wrong verifier accepted at the token endpoint.
    let Outcome::Fail { reason, evidence } = &report
        .finding("oauth2.token.wrong_verifier")
        .unwrap()
        .outcome
    else {
        unreachable!()
    };
    assert!(reason.contains("accepted"), "{reason}");
    assert!(
        evidence
            .iter()
            .any(|e| e.method == "POST" && e.url.ends_with("/token") && e.status == 200),
        "{evidence:#?}"
    );
    // ... and not the suite's sign-in through the pages.
    assert!(
        evidence.iter().all(|e| !e.url.contains("/authorize")),
        "{evidence:#?}"
    );

    // The metadata failures carry the metadata exchange.
    let Outcome::Fail { evidence, .. } = &report
        .finding("oauth2.metadata.issuer_matches")
        .unwrap()
        .outcome
    else {
        unreachable!()
    };
    assert!(evidence[0]
        .url
        .ends_with("/.well-known/openid-configuration"));

    // The reports render this run.
    assert!(report
        .render_junit()
        .contains("oauth2.token.wrong_verifier"));
    assert!(report.render_markdown().contains("❌"));
}

/// A server whose legacy Matrix login API lists `flows`; its SSO redirect leads to a page that
/// fails (HTTP 500).
async fn compat_server(flows: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "flows": flows })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/login/sso/redirect"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", "/sso/broken-page".to_owned()),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/sso/broken-page"))
        .respond_with(ResponseTemplate::new(500).set_body_string("the SSO page broke"))
        .mount(&server)
        .await;
    server
}

async fn sso_login_outcome(server: &MockServer) -> Outcome {
    let mut options = Options::new(format!("{}/", server.uri()).parse().unwrap());
    options.only = vec!["matrix.compat.sso_login".into()];
    options.account = Some(("alice".into(), "alice's password".into()));
    let report = conformance::run(&options).await;
    report
        .finding("matrix.compat.sso_login")
        .expect("the check ran")
        .outcome
        .clone()
}

/// Client-server API §"Client login via SSO": a server that offers `m.login.sso` but whose SSO
/// pages break fails the check (with the browser's exchanges as evidence); it is not skipped.
#[tokio::test]
async fn an_offered_sso_login_that_breaks_fails() {
    let server =
        compat_server(json!([{ "type": "m.login.sso" }, { "type": "m.login.token" }])).await;
    let outcome = sso_login_outcome(&server).await;
    let Outcome::Fail { reason, evidence } = &outcome else {
        panic!("the broken SSO login was not a failure: {outcome:?}");
    };
    assert!(reason.contains("HTTP 500"), "{reason}");
    assert!(
        evidence
            .iter()
            .any(|e| e.url.contains("/sso/broken-page") && e.status == 500),
        "{evidence:#?}"
    );
}

/// A server that lists no `m.login.sso` flow has nothing to check: skipped, saying so.
#[tokio::test]
async fn no_sso_flow_skips_the_sso_login() {
    let server = compat_server(json!([{ "type": "m.login.password" }])).await;
    let outcome = sso_login_outcome(&server).await;
    let Outcome::Skipped(why) = &outcome else {
        panic!("not skipped: {outcome:?}");
    };
    assert!(why.contains("no m.login.sso flow"), "{why}");
}
