//! The client credentials grant over HTTP (RFC 6749 §4.4).

use provider::{
    backend_tests,
    test_harness::{TestDb, TestProvider},
};
use serde_json::Value;

async fn token(
    provider: &TestProvider,
    basic: (&str, &str),
    form: &[(&str, &str)],
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(provider.url("/oauth2/token"))
        .basic_auth(basic.0, Some(basic.1))
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn client_credentials(db: TestDb) {
    let provider = TestProvider::start_with(
        &db,
        &[(
            "PROVIDER__CLIENTS__0__GRANT_TYPES",
            "[authorization_code, refresh_token, client_credentials]",
        )],
    )
    .await;
    let client = &provider.settings.clients[0];
    let creds = (client.client_id.as_str(), client.secret.as_deref().unwrap());

    // With openidconnect as the client.
    let http = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata = openidconnect::core::CoreProviderMetadata::discover_async(
        openidconnect::IssuerUrl::new(provider.base_url.to_string()).unwrap(),
        &http,
    )
    .await
    .unwrap();
    let oidc = openidconnect::core::CoreClient::from_provider_metadata(
        metadata,
        openidconnect::ClientId::new(creds.0.to_owned()),
        Some(openidconnect::ClientSecret::new(creds.1.to_owned())),
    );
    let granted = oidc
        .exchange_client_credentials()
        .unwrap()
        .add_scope(openidconnect::Scope::new("urn:example:reports".into()))
        .request_async(&http)
        .await
        .unwrap();
    {
        use openidconnect::OAuth2TokenResponse as _;
        assert!(granted.access_token().secret().starts_with("mat_"));
        assert!(granted.refresh_token().is_none(), "RFC 6749 §4.4.3");
    }

    let (status, body) = token(
        &provider,
        creds,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "urn:example:reports"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].as_str().unwrap().starts_with("mat_"));
    assert_eq!(body["scope"], "urn:example:reports");
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("refresh_token").is_none(), "RFC 6749 §4.4.3");
    assert!(body.get("id_token").is_none());

    // No scope is fine; user scopes are not, nor the admin API's for a client not listed in
    // `admin.clients` (tests/admin_api.rs covers the listed ones).
    let (status, _) = token(&provider, creds, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 200);
    for scope in ["openid", "urn:matrix:client:api:*", "urn:mas:admin"] {
        let (status, body) = token(
            &provider,
            creds,
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_scope")),
            "{scope}"
        );
    }
    let (status, body) = token(
        &provider,
        (creds.0, "wrong secret"),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    provider.stop().await;
}

async fn only_for_clients_registered_for_it(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let client = &provider.settings.clients[0];
    let (status, body) = token(
        &provider,
        (client.client_id.as_str(), client.secret.as_deref().unwrap()),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    provider.stop().await;
}

backend_tests!(client_credentials, only_for_clients_registered_for_it);
