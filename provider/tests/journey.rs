//! The whole journey of a Matrix client through the provider, as one story, with
//! `openidconnect` as the client and the pages driven like a browser (no shortcuts into the
//! database except creating the user): discovery → dynamic registration (MSC2966, a public web
//! client) → authorization with PKCE, login and consent → code → tokens → ID token verified
//! against the JWKS → userinfo → refresh → introspection as the homeserver does it (active) →
//! revocation → introspection (inactive) → RP-initiated logout.

mod support;

use openidconnect::{
    core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims},
    AccessToken, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    RedirectUrl, Scope, TokenResponse as _,
};
use provider::{
    backend_tests,
    clock::Clock as _,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{
    add_user, authorize, browser, form, introspect_as_homeserver, location, oidc_http, param,
    REDIRECT,
};
use url::Url;

const SIGNED_OUT: &str = "https://client.example.com/signed-out";
const DEVICE: &str = "JOURNEYDEV1";

async fn the_journey(db: TestDb) {
    add_user(&db, "alice", "correct horse battery").await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();

    // Discovery.
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(base.to_string()).unwrap(),
        &oidc_http(),
    )
    .await
    .unwrap();

    // Dynamic registration: a public web client (Element Web-like).
    let registration = reqwest::Client::new()
        .post(provider.url("/oauth2/registration"))
        .json(&json!({
            "client_name": "Journey",
            "client_uri": "https://client.example.com/",
            "application_type": "web",
            "redirect_uris": [REDIRECT],
            "post_logout_redirect_uris": [SIGNED_OUT],
            "token_endpoint_auth_method": "none",
            "id_token_signed_response_alg": "ES256",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(registration.status(), 201);
    let registered: Value = registration.json().await.unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    assert!(
        registered.get("client_secret").is_none(),
        "a public client gets no secret"
    );

    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(client_id.clone()), None)
            .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());

    // Authorization with PKCE, through the login and consent pages.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("urn:matrix:client:api:*".into()))
        .add_scope(Scope::new(format!("urn:matrix:client:device:{DEVICE}")))
        .set_pkce_challenge(challenge)
        .url();
    let browser = browser();
    let back = authorize(&browser, &base, url.as_str(), "correct horse battery").await;
    assert_eq!(
        param(&back, "state").as_deref(),
        Some(csrf.secret().as_str())
    );
    let code = param(&back, "code").unwrap();

    // Tokens, and the ID token verified against the published keys.
    let tokens = client
        .exchange_code(openidconnect::AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&oidc_http())
        .await
        .unwrap();
    let now = db.clock.now();
    let id_verifier = client.id_token_verifier().set_time_fn(move || now);
    let id_token = tokens.id_token().unwrap();
    // ES256 was asked for at registration (OIDC Dynamic Client Registration §2).
    assert_eq!(
        id_token.signing_alg().unwrap(),
        &openidconnect::core::CoreJwsSigningAlgorithm::EcdsaP256Sha256
    );
    let id_verifier = id_verifier.set_allowed_algs(vec![
        openidconnect::core::CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    ]);
    let claims = id_token.claims(&id_verifier, &nonce).unwrap();
    let subject = claims.subject().clone();

    // Userinfo says the same subject.
    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), Some(subject.clone()))
        .unwrap()
        .request_async(&oidc_http())
        .await
        .unwrap();
    assert_eq!(info.subject(), &subject);

    // Refresh: a new pair.
    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .unwrap()
        .request_async(&oidc_http())
        .await
        .unwrap();
    let access = refreshed.access_token().secret().clone();
    assert_ne!(&access, tokens.access_token().secret());

    // Introspection as the homeserver does it: active, with the user and the device.
    let active = introspect_as_homeserver(&provider, &access).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["username"], "alice");
    assert_eq!(active["device_id"], DEVICE);
    assert_eq!(active["client_id"], client_id.as_str());
    assert_eq!(active["sub"], subject.as_str());
    assert!(active["scope"]
        .as_str()
        .unwrap()
        .contains("urn:matrix:client:api:*"));

    // Revoking the refresh token ends the session (RFC 7009 §2.1): the access token dies too.
    let revoked = reqwest::Client::new()
        .post(provider.url("/oauth2/revoke"))
        .form(&[
            (
                "token",
                refreshed.refresh_token().unwrap().secret().as_str(),
            ),
            ("token_type_hint", "refresh_token"),
            ("client_id", client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        introspect_as_homeserver(&provider, &access).await,
        json!({"active": false})
    );
    let userinfo = client
        .user_info(AccessToken::new(access.clone()), None)
        .unwrap()
        .request_async::<openidconnect::EmptyAdditionalClaims, _, openidconnect::core::CoreGenderClaim>(&oidc_http())
        .await;
    assert!(userinfo.is_err(), "a revoked token gets no userinfo");

    // RP-initiated logout back to the client, with its state.
    let mut logout = Url::parse(&provider.url("/oauth2/logout")).unwrap();
    logout
        .query_pairs_mut()
        .append_pair("id_token_hint", &id_token.to_string())
        .append_pair("post_logout_redirect_uri", SIGNED_OUT)
        .append_pair("state", "done");
    let page = browser
        .get(logout)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (action, fields) = form(&page);
    let response = browser
        .post(base.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&response, &base).as_str(),
        format!("{SIGNED_OUT}?state=done")
    );
    provider.stop().await;
}

backend_tests!(the_journey);
