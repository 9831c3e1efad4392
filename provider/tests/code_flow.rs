//! The authorization code flow end to end, with `openidconnect` as the client: discovery, PKCE,
//! the login and consent pages (driven like a browser), the code exchange, the ID token verified
//! against the JWKS, refresh rotation with its grace and reuse detection, and the refusals of
//! RFC 6749 §4.1.3 / §5.2.

mod support;

use chrono::Duration;
use openidconnect::{
    core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata},
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, Scope, TokenResponse as _,
};
use provider::{
    backend_tests,
    clock::Clock as _,
    test_harness::{TestDb, TestProvider},
};
use serde_json::Value;
use support::{add_user, authorize, browser, oidc_http, param, static_client, REDIRECT};
use url::Url;

/// A raw token request, for the refusals `openidconnect` won't let us make.
async fn token_request(
    provider: &TestProvider,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(provider.url("/oauth2/token"))
        .form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

async fn code_flow_with_openidconnect(db: TestDb) {
    add_user(&db, "alice", "correct horse battery").await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let (client_id, secret) = static_client(&provider);

    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(base.to_string()).unwrap(),
        &oidc_http(),
    )
    .await
    .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.clone()),
        Some(ClientSecret::new(secret.clone())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("urn:matrix:client:api:*".into()))
        .set_pkce_challenge(challenge)
        .url();
    let browser = browser();
    let back = authorize(&browser, &base, url.as_str(), "correct horse battery").await;
    assert_eq!(
        param(&back, "state").as_deref(),
        Some(csrf.secret().as_str())
    );
    let code = param(&back, "code").unwrap();

    // A wrong verifier is refused, and doesn't burn the code.
    let wrong = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(PkceCodeVerifier::new("x".repeat(43)))
        .request_async(&oidc_http())
        .await;
    assert!(format!("{wrong:?}").contains("invalid_grant"), "{wrong:?}");

    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&oidc_http())
        .await
        .unwrap();
    assert!(tokens.access_token().secret().starts_with("mat_"));
    assert_eq!(
        tokens.expires_in(),
        Some(std::time::Duration::from_secs(300))
    );
    let scopes: Vec<String> = tokens
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(
        scopes.contains(&"openid".to_owned())
            && scopes.contains(&"urn:matrix:client:api:*".to_owned())
    );

    // The ID token: signed with a published key, for this client, with the nonce and at_hash.
    let now = db.clock.now();
    let verifier = client.id_token_verifier().set_time_fn(move || now);
    let id_token = tokens.id_token().unwrap();
    let claims = id_token.claims(&verifier, &nonce).unwrap();
    assert_eq!(claims.issuer().as_str(), base.as_str());
    assert!(claims.auth_time().is_some());
    let expected_at_hash = openidconnect::AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected_at_hash));

    // Refresh: rotation.
    let first_refresh = tokens.refresh_token().unwrap().clone();
    let second = client
        .exchange_refresh_token(&first_refresh)
        .unwrap()
        .request_async(&oidc_http())
        .await
        .unwrap();
    let second_refresh = second.refresh_token().unwrap().clone();
    assert_ne!(second_refresh.secret(), first_refresh.secret());
    // The response was "lost": replaying the previous token while the new one is unused (and
    // within the grace time) works, and the unused one is revoked.
    let third = client
        .exchange_refresh_token(&first_refresh)
        .unwrap()
        .request_async(&oidc_http())
        .await
        .unwrap();
    let third_refresh = third.refresh_token().unwrap().clone();
    let revoked = client
        .exchange_refresh_token(&second_refresh)
        .unwrap()
        .request_async(&oidc_http())
        .await;
    assert!(
        format!("{revoked:?}").contains("invalid_grant"),
        "{revoked:?}"
    );
    // The pair that retry replaced was presented: two parties hold the session's tokens, so
    // the session ended (RFC 9700 §4.14.2) and the retry's pair is dead too.
    let after = client
        .exchange_refresh_token(&RefreshToken::new(third_refresh.secret().clone()))
        .unwrap()
        .request_async(&oidc_http())
        .await;
    assert!(
        format!("{after:?}").contains("invalid_grant"),
        "the session ended: {after:?}"
    );

    // Replaying the (already redeemed) code is refused, per RFC 6749 §4.1.2.
    let (status, headers, body) = token_request(
        &provider,
        Some((&client_id, &secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &"x".repeat(43)),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(headers["cache-control"], "no-store");
    provider.stop().await;
}

async fn token_endpoint_refusals(db: TestDb) {
    add_user(&db, "alice", "correct horse battery").await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let (client_id, secret) = static_client(&provider);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut url = Url::parse(&provider.url("/authorize")).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let back = authorize(&browser(), &base, url.as_str(), "correct horse battery").await;
    let code = param(&back, "code").unwrap();
    let good = |extra: &[(&'static str, String)]| {
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.into()),
            ("code_verifier", verifier.secret().clone()),
        ];
        for (k, v) in extra {
            form.retain(|(name, _)| name != k);
            form.push((k, v.clone()));
        }
        form
    };
    let call = |form: Vec<(&'static str, String)>, basic: Option<(String, String)>| {
        let provider = &provider;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token_request(
                provider,
                basic.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                &form,
            )
            .await
        }
    };
    let creds = Some((client_id.clone(), secret.clone()));

    // Wrong secret: 401 with a Basic challenge (RFC 6749 §5.2).
    let (status, headers, body) = call(good(&[]), Some((client_id.clone(), "wrong".into()))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(headers.contains_key("www-authenticate"));
    // The registered method only: this client uses client_secret_basic, not _post.
    let mut post = good(&[]);
    post.push(("client_id", client_id.clone()));
    post.push(("client_secret", secret.clone()));
    let (status, _, body) = call(post, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (_, _, body) = call(good(&[("grant_type", "password".into())]), creds.clone()).await;
    assert_eq!(body["error"], "unsupported_grant_type");
    let (_, _, body) = call(
        good(&[("redirect_uri", "https://client.example.com/other".into())]),
        creds.clone(),
    )
    .await;
    assert_eq!(body["error"], "invalid_grant");
    let (_, _, body) = call(good(&[("code", "not-a-code".into())]), creds.clone()).await;
    assert_eq!(body["error"], "invalid_grant");
    let (_, _, body) = call(good(&[("code_verifier", "".into())]), creds.clone()).await;
    assert_eq!(body["error"], "invalid_grant");
    let (status, _, body) = call(
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", "garbage".into()),
        ],
        creds.clone(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Expired: codes live 10 minutes (RFC 6749 §4.1.2).
    db.clock.advance(Duration::minutes(11));
    let (_, _, body) = call(good(&[]), creds.clone()).await;
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    provider.stop().await;
}

backend_tests!(code_flow_with_openidconnect, token_endpoint_refusals);
