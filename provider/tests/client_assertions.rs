//! JWT client assertions over HTTP (RFC 7523 §2.2 and §3, OIDC Core §9): `client_secret_jwt`
//! for a static client at the token endpoint, `private_key_jwt` for a registered client at the
//! revocation endpoint (which authenticates clients the same way).

mod support;

use chrono::Duration;
use provider::{
    backend_tests,
    clock::Clock as _,
    endpoints,
    keys::{PrivateKey, SigningKey},
    test_harness::{TestDb, TestProvider},
};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::{json, Value};
use support::{http, static_client};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Assertion claims for `client_id`, valid for two minutes from the provider's clock.
fn claims(db: &TestDb, client_id: &str, aud: &str, jti: &str) -> Value {
    let now = db.clock.now().timestamp();
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "jti": jti,
        "iat": now,
        "exp": now + 120,
    })
}

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// POSTs a form; returns the status and the JSON answer (`null` for an empty body).
async fn post(provider: &TestProvider, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = http()
        .post(provider.url(path))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn client_credentials(provider: &TestProvider, assertion: &str) -> (u16, Value) {
    post(
        provider,
        endpoints::TOKEN,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
    .await
}

fn assert_invalid_client(answer: (u16, Value), containing: &str) {
    let (status, body) = answer;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(containing),
        "`{description}` should mention `{containing}`"
    );
}

async fn client_secret_jwt(db: TestDb) {
    let provider = TestProvider::start_with(
        &db,
        &[
            (
                "PROVIDER__CLIENTS__0__CLIENT_AUTH_METHOD",
                "client_secret_jwt",
            ),
            (
                "PROVIDER__CLIENTS__0__GRANT_TYPES",
                "[authorization_code, refresh_token, client_credentials]",
            ),
        ],
    )
    .await;
    let (client_id, secret) = static_client(&provider);
    let token_endpoint = provider.url(endpoints::TOKEN);

    let assertion = hs256(&secret, &claims(&db, &client_id, &token_endpoint, "jti-1"));
    let (status, body) = client_credentials(&provider, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].as_str().unwrap().starts_with("mat_"));

    // RFC 7523 §3 item 7: an assertion is used once.
    assert_invalid_client(
        client_credentials(&provider, &assertion).await,
        "already used",
    );

    // RFC 7523 §3 item 3: the issuer is an accepted audience too, in an array.
    let issuer = provider.settings.issuer.to_string();
    let mut by_issuer = claims(&db, &client_id, &issuer, "jti-2");
    by_issuer["aud"] = json!(["https://elsewhere.example.com/", issuer]);
    let (status, body) = client_credentials(&provider, &hs256(&secret, &by_issuer)).await;
    assert_eq!(status, 200, "{body}");

    // RFC 7523 §3 item 9: signed with another secret.
    let forged = hs256(
        "not the secret",
        &claims(&db, &client_id, &token_endpoint, "jti-3"),
    );
    assert_invalid_client(client_credentials(&provider, &forged).await, "signature");

    // RFC 7523 §3 item 3: another audience.
    let elsewhere = hs256(
        &secret,
        &claims(
            &db,
            &client_id,
            "https://elsewhere.example.com/token",
            "jti-4",
        ),
    );
    assert_invalid_client(client_credentials(&provider, &elsewhere).await, "aud");

    // RFC 7523 §3 item 4: expired by the provider's clock (beyond the leeway).
    let soon_expired = hs256(&secret, &claims(&db, &client_id, &token_endpoint, "jti-5"));
    db.clock.advance(Duration::minutes(5));
    assert_invalid_client(
        client_credentials(&provider, &soon_expired).await,
        "expired",
    );

    // Too long-lived, missing `jti` or `exp`, `iss` ≠ `sub`.
    let mut long = claims(&db, &client_id, &token_endpoint, "jti-6");
    long["exp"] = json!(db.clock.now().timestamp() + 3600);
    assert_invalid_client(
        client_credentials(&provider, &hs256(&secret, &long)).await,
        "too long",
    );
    for (member, mention) in [("jti", "jti"), ("exp", "exp")] {
        let mut missing = claims(&db, &client_id, &token_endpoint, "jti-7");
        missing.as_object_mut().unwrap().remove(member);
        assert_invalid_client(
            client_credentials(&provider, &hs256(&secret, &missing)).await,
            mention,
        );
    }
    let mut other_iss = claims(&db, &client_id, &token_endpoint, "jti-8");
    other_iss["iss"] = json!("someone-else");
    assert_invalid_client(
        client_credentials(&provider, &hs256(&secret, &other_iss)).await,
        "iss",
    );

    // A body client_id must match; the wrong assertion type and garbage are refused.
    let fresh = hs256(&secret, &claims(&db, &client_id, &token_endpoint, "jti-9"));
    assert_invalid_client(
        post(
            &provider,
            endpoints::TOKEN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "someone-else"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &fresh),
            ],
        )
        .await,
        "client_id",
    );
    assert_invalid_client(
        post(
            &provider,
            endpoints::TOKEN,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:example:saml"),
                ("client_assertion", &fresh),
            ],
        )
        .await,
        "client_assertion_type",
    );
    for garbage in ["", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.x"] {
        let (status, body) = client_credentials(&provider, garbage).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{garbage}: {body}"
        );
    }
    // The fresh assertion was never accepted above, so it still works.
    let (status, body) = client_credentials(&provider, &fresh).await;
    assert_eq!(status, 200, "{body}");

    // Basic authentication is no longer this client's method.
    let response = http()
        .post(&token_endpoint)
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    provider.stop().await;
}

/// Registers a device-only client with `private_key_jwt` and these extra members.
async fn register(provider: &TestProvider, extra: Value) -> (u16, Value) {
    let mut body = json!({
        "client_name": "Living-room TV",
        "client_uri": "https://tv.example.com/",
        "grant_types": [DEVICE_CODE, "refresh_token"],
        "response_types": [],
        "token_endpoint_auth_method": "private_key_jwt",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let response = http()
        .post(provider.url(endpoints::REGISTRATION))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn revoke(provider: &TestProvider, assertion: &str) -> (u16, Value) {
    post(
        provider,
        endpoints::REVOCATION,
        &[
            ("token", "not-a-token"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
    .await
}

async fn private_key_jwt(db: TestDb) {
    let provider = TestProvider::start(&db).await;
    let key = SigningKey::new(
        PrivateKey::generate_p256(&mut StdRng::seed_from_u64(11)),
        Some("tv-key".into()),
    );
    let (status, body) =
        register(&provider, json!({ "jwks": { "keys": [key.public_jwk()] } })).await;
    assert_eq!(status, 201, "{body}");
    assert!(body.get("client_secret").is_none(), "{body}");
    let client_id = body["client_id"].as_str().unwrap().to_owned();
    let token_endpoint = provider.url(endpoints::TOKEN);

    // Signed with the registered key (ES256, named by kid): authenticated, so the revocation
    // of an unknown token is answered 200 (RFC 7009 §2.2).
    let assertion = key
        .sign(&claims(&db, &client_id, &token_endpoint, "pk-1"))
        .unwrap();
    let (status, body) = revoke(&provider, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_invalid_client(revoke(&provider, &assertion).await, "already used");

    // Another key, even under the registered kid.
    let other = SigningKey::new(
        PrivateKey::generate_p256(&mut StdRng::seed_from_u64(12)),
        Some("tv-key".into()),
    );
    let forged = other
        .sign(&claims(&db, &client_id, &token_endpoint, "pk-2"))
        .unwrap();
    assert_invalid_client(revoke(&provider, &forged).await, "signature");
    // An unknown kid.
    let unknown = SigningKey::new(
        PrivateKey::generate_p256(&mut StdRng::seed_from_u64(12)),
        Some("other-key".into()),
    );
    let unknown = unknown
        .sign(&claims(&db, &client_id, &token_endpoint, "pk-3"))
        .unwrap();
    assert_invalid_client(revoke(&provider, &unknown).await, "kid");
    // No HMAC for a private_key_jwt client (no algorithm confusion).
    let hmac = hs256("x", &claims(&db, &client_id, &token_endpoint, "pk-4"));
    assert_invalid_client(revoke(&provider, &hmac).await, "RS256 or ES256");

    // A client_secret_basic client can't switch to assertions.
    let (static_id, secret) = static_client(&provider);
    let hs = hs256(&secret, &claims(&db, &static_id, &token_endpoint, "pk-5"));
    assert_invalid_client(revoke(&provider, &hs).await, "client_secret_basic");

    // jwks_uri is not fetched (yet).
    let (status, body) = register(
        &provider,
        json!({ "jwks_uri": "https://tv.example.com/jwks.json" }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let by_uri = body["client_id"].as_str().unwrap().to_owned();
    let assertion = key
        .sign(&claims(&db, &by_uri, &token_endpoint, "pk-6"))
        .unwrap();
    assert_invalid_client(
        revoke(&provider, &assertion).await,
        "jwks_uri is not supported yet; register jwks inline",
    );
    provider.stop().await;
}

backend_tests!(client_secret_jwt, private_key_jwt);
