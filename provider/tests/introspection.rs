//! Introspection (RFC 7662), revocation (RFC 7009) and userinfo (OIDC Core §5.3) over HTTP, on
//! both databases, with tokens obtained through the real flow (pages + token endpoint): the
//! homeserver contract (shared secret, `X-MAS-Supports-Device-Id`), confidential and public
//! clients, and every way a token stops being active.

mod support;

use chrono::Duration;
use openidconnect::PkceCodeChallenge;
use provider::{
    backend_tests,
    clock::Clock,
    crypto::sha256,
    domain::token::TokenKind,
    endpoints,
    test_harness::{TestDb, TestProvider},
};
use serde_json::{json, Value};
use support::{add_user, authorize, browser, param, REDIRECT};
use url::Url;

const PASSWORD: &str = "correct horse battery";
const DEVICE: &str = "ABCDEFGHIJ";
const MATRIX_SCOPE: &str = "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ";
/// Well formed, right checksum, never issued.
const UNKNOWN_ACCESS: &str = "mat_000000000000000000000000000000_3ExMZI";
const UNKNOWN_REFRESH: &str = "mar_abcdefghijklmnopqrstuvwxyzABCD_26uB93";

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Nothing,
    /// `client_secret_basic`.
    Basic(&'a str, &'a str),
    /// `none`: just the client_id in the body.
    Public(&'a str),
    /// `Authorization: Bearer …` (the homeserver's shared secret).
    Bearer(&'a str),
}

/// One client's way through the token endpoint and the two token-management endpoints.
struct Tokens {
    access: String,
    refresh: String,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn static_client(provider: &TestProvider) -> (String, String) {
    let client = &provider.settings.clients[0];
    (client.client_id.clone(), client.secret.clone().unwrap())
}

/// POSTs a form with the given authentication; returns status, headers and the body as JSON
/// (`Value::Null` when empty).
async fn post_form(
    provider: &TestProvider,
    path: &str,
    auth: Auth<'_>,
    form: &[(&str, &str)],
    device_header: bool,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut form: Vec<(&str, &str)> = form.to_vec();
    let mut request = http().post(provider.url(path));
    match auth {
        Auth::Nothing => {}
        Auth::Basic(id, secret) => request = request.basic_auth(id, Some(secret)),
        Auth::Public(id) => form.push(("client_id", id)),
        Auth::Bearer(secret) => request = request.bearer_auth(secret),
    }
    if device_header {
        request = request.header("X-MAS-Supports-Device-Id", "1");
    }
    let response = request.form(&form).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, headers, body)
}

async fn introspect(provider: &TestProvider, auth: Auth<'_>, token: &str) -> Value {
    let (status, headers, body) = post_form(
        provider,
        endpoints::INTROSPECTION,
        auth,
        &[("token", token)],
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // RFC 7662 §2.2 / RFC 6749 §5.1.
    assert_eq!(headers["cache-control"], "no-store");
    body
}

async fn revoke(provider: &TestProvider, auth: Auth<'_>, token: &str) -> u16 {
    let (status, _, body) = post_form(
        provider,
        endpoints::REVOCATION,
        auth,
        &[("token", token)],
        false,
    )
    .await;
    assert!(status == 200 || body.get("error").is_some(), "{body}");
    status
}

async fn userinfo(provider: &TestProvider, token: Option<&str>) -> (u16, String, Value) {
    let mut request = http().get(provider.url(endpoints::USERINFO));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, challenge, body)
}

/// Through the pages (signed in as alice, consenting) and the token endpoint.
async fn obtain(
    provider: &TestProvider,
    browser: &reqwest::Client,
    auth: Auth<'_>,
    client_id: &str,
    scope: &str,
) -> Tokens {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut url = Url::parse(&provider.url(endpoints::AUTHORIZE)).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", scope),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let back = authorize(browser, &provider.base_url, url.as_str(), PASSWORD).await;
    let code = param(&back, "code").expect("a code");
    let (status, _, body) = post_form(
        provider,
        endpoints::TOKEN,
        auth,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ],
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    Tokens {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// Registers a public (`none`) web client with the static client's redirect URI.
async fn register_public_client(provider: &TestProvider) -> String {
    let response = http()
        .post(provider.url(endpoints::REGISTRATION))
        .json(&json!({
            "client_name": "Public web client",
            "client_uri": "https://client.example.com",
            "application_type": "web",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "response_types": ["code"],
            "grant_types": ["authorization_code", "refresh_token"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["client_id"].as_str().unwrap().to_owned()
}

async fn alice_id(db: &TestDb) -> String {
    let mut repo = db.storage.reader().await.unwrap();
    let user = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    user.id.to_string()
}

async fn start(db: &TestDb) -> TestProvider {
    add_user(db, "alice", PASSWORD).await;
    TestProvider::start(db).await
}

fn inactive() -> Value {
    json!({ "active": false })
}

/// What the homeserver and a confidential client learn about active tokens.
async fn introspection_of_active_tokens(db: TestDb) {
    let provider = start(&db).await;
    let (id, secret) = static_client(&provider);
    let client = Auth::Basic(&id, &secret);
    let homeserver_secret = provider.settings.matrix.secret.clone();
    let homeserver = Auth::Bearer(&homeserver_secret);
    let tokens = obtain(&provider, &browser(), client, &id, MATRIX_SCOPE).await;
    let sub = alice_id(&db).await;

    // A confidential client (client_secret_basic).
    let body = introspect(&provider, client, &tokens.access).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["client_id"], id.as_str());
    assert_eq!(body["username"], "alice");
    assert_eq!(body["sub"], sub.as_str());
    assert_eq!(body["token_type"], "access_token");
    let scope: Vec<&str> = body["scope"].as_str().unwrap().split(' ').collect();
    for wanted in MATRIX_SCOPE.split(' ') {
        assert!(scope.contains(&wanted), "{body}");
    }
    let (exp, iat) = (body["exp"].as_i64().unwrap(), body["iat"].as_i64().unwrap());
    assert_eq!(exp - iat, 300);
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("device_id").is_none(), "no header, no device_id");

    // The homeserver, as Synapse calls it: the shared secret and the device header.
    let (status, headers, with_header) = post_form(
        &provider,
        endpoints::INTROSPECTION,
        homeserver,
        &[
            ("token", &tokens.access),
            ("token_type_hint", "access_token"),
        ],
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(with_header["active"], true);
    assert_eq!(with_header["device_id"], DEVICE);
    assert_eq!(with_header["username"], "alice");
    assert_eq!(with_header["client_id"], id.as_str());
    assert_eq!(with_header["expires_in"], 300);
    // Without the header, the device is in the scope (where Synapse then looks for it).
    let without = introspect(&provider, homeserver, &tokens.access).await;
    assert_eq!(without["active"], true);
    assert!(without.get("device_id").is_none());
    assert!(without["scope"]
        .as_str()
        .unwrap()
        .split(' ')
        .any(|s| s == "urn:matrix:client:device:ABCDEFGHIJ"));

    // RFC 7662 §2.1: a wrong hint doesn't hide the token.
    let (_, _, hinted) = post_form(
        &provider,
        endpoints::INTROSPECTION,
        client,
        &[
            ("token", &tokens.access),
            ("token_type_hint", "refresh_token"),
        ],
        false,
    )
    .await;
    assert_eq!(hinted["active"], true);

    // Refresh tokens: active for their client while usable; never for the homeserver.
    let refresh = introspect(&provider, client, &tokens.refresh).await;
    assert_eq!(refresh["active"], true, "{refresh}");
    assert_eq!(refresh["token_type"], "refresh_token");
    assert_eq!(refresh["username"], "alice");
    assert!(refresh.get("exp").is_none());
    assert_eq!(
        introspect(&provider, homeserver, &tokens.refresh).await,
        inactive()
    );

    // Garbage and unknown tokens: exactly {"active": false} (§2.2).
    for token in ["garbage", "", UNKNOWN_ACCESS, UNKNOWN_REFRESH] {
        let (status, _, body) = post_form(
            &provider,
            endpoints::INTROSPECTION,
            homeserver,
            &[("token", token)],
            true,
        )
        .await;
        if token.is_empty() {
            // §2.1: `token` is REQUIRED.
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_request"))
            );
        } else {
            assert_eq!((status, body), (200, inactive()), "{token}");
        }
    }
    provider.stop().await;
}

/// Who may not introspect, and how they are told.
async fn introspection_refusals(db: TestDb) {
    let provider = start(&db).await;
    let (id, secret) = static_client(&provider);
    let tokens = obtain(
        &provider,
        &browser(),
        Auth::Basic(&id, &secret),
        &id,
        MATRIX_SCOPE,
    )
    .await;
    let form = [("token", tokens.access.as_str())];

    // §2.1: the caller must authenticate.
    let (status, headers, body) = post_form(
        &provider,
        endpoints::INTROSPECTION,
        Auth::Nothing,
        &form,
        true,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert_eq!(headers["cache-control"], "no-store");
    // §2.3 / RFC 6750 §3: a wrong bearer secret.
    let (status, headers, body) = post_form(
        &provider,
        endpoints::INTROSPECTION,
        Auth::Bearer("not-the-secret"),
        &form,
        true,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
    // §2.3 / RFC 6749 §5.2: wrong client credentials.
    let (status, headers, body) = post_form(
        &provider,
        endpoints::INTROSPECTION,
        Auth::Basic(&id, "wrong"),
        &form,
        false,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(headers.contains_key("www-authenticate"));
    // A public client proves nothing: it may not introspect.
    let public = register_public_client(&provider).await;
    let (status, _, body) = post_form(
        &provider,
        endpoints::INTROSPECTION,
        Auth::Public(&public),
        &form,
        false,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // Not a form.
    let response = http()
        .post(provider.url(endpoints::INTROSPECTION))
        .bearer_auth(&provider.settings.matrix.secret)
        .json(&json!({ "token": tokens.access }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Nothing above spent or changed the token.
    let body = introspect(&provider, Auth::Basic(&id, &secret), &tokens.access).await;
    assert_eq!(body["active"], true);
    provider.stop().await;
}

/// Every way a token stops being active: revocation of the access token or of the refresh
/// token (either ends the whole session), expiry, a locked user.
async fn tokens_become_inactive(db: TestDb) {
    let provider = start(&db).await;
    let (id, secret) = static_client(&provider);
    let client = Auth::Basic(&id, &secret);
    let homeserver_secret = provider.settings.matrix.secret.clone();
    let homeserver = Auth::Bearer(&homeserver_secret);
    let browser = browser();

    // Revoking the access token ends the whole session (MSC4254: revoking either token logs
    // the device out): both tokens are inactive.
    let first = obtain(&provider, &browser, client, &id, MATRIX_SCOPE).await;
    assert_eq!(revoke(&provider, client, &first.access).await, 200);
    assert_eq!(
        introspect(&provider, homeserver, &first.access).await,
        inactive()
    );
    assert_eq!(
        introspect(&provider, client, &first.refresh).await,
        inactive()
    );
    // Revoking it again is still a 200 (RFC 7009 §2.2).
    assert_eq!(revoke(&provider, client, &first.access).await, 200);

    // Revoking the refresh token ends the session: both are inactive, and the refresh token
    // can't be exchanged any more.
    let second = obtain(&provider, &browser, client, &id, MATRIX_SCOPE).await;
    // Another device (a new session on the same device would end the second: a Matrix device
    // is one session).
    let other_scope = MATRIX_SCOPE.replace("ABCDEFGHIJ", "OTHERDEVICE");
    let other = obtain(&provider, &browser, client, &id, &other_scope).await;
    assert_eq!(
        introspect(&provider, homeserver, &second.access).await["active"],
        true
    );
    let (status, _, _) = post_form(
        &provider,
        endpoints::REVOCATION,
        client,
        &[
            ("token", &second.refresh),
            ("token_type_hint", "refresh_token"),
        ],
        false,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        introspect(&provider, homeserver, &second.access).await,
        inactive()
    );
    assert_eq!(
        introspect(&provider, client, &second.access).await,
        inactive()
    );
    assert_eq!(
        introspect(&provider, client, &second.refresh).await,
        inactive()
    );
    let (status, _, body) = post_form(
        &provider,
        endpoints::TOKEN,
        client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &second.refresh),
        ],
        false,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Another session was not touched by ending the second.
    assert_eq!(
        introspect(&provider, client, &other.refresh).await["active"],
        true
    );

    // Expiry: access tokens live 300 s and are expired from `exp` on.
    let third = obtain(&provider, &browser, client, &id, MATRIX_SCOPE).await;
    db.clock.advance(Duration::seconds(299));
    let body = introspect(&provider, homeserver, &third.access).await;
    assert_eq!(
        (body["active"].as_bool(), body["expires_in"].as_i64()),
        (Some(true), Some(1))
    );
    db.clock.advance(Duration::seconds(1));
    assert_eq!(
        introspect(&provider, homeserver, &third.access).await,
        inactive()
    );
    assert_eq!(
        introspect(&provider, client, &third.access).await,
        inactive()
    );
    // The refresh token doesn't expire with it.
    assert_eq!(
        introspect(&provider, client, &third.refresh).await["active"],
        true
    );

    // A locked user's tokens are inactive; unlocked, they are back.
    let fourth = obtain(&provider, &browser, client, &id, MATRIX_SCOPE).await;
    let user_id = alice_id(&db).await.parse().unwrap();
    let mut repo = db.storage.begin().await.unwrap();
    repo.users().set_locked(user_id, true).await.unwrap();
    repo.commit().await.unwrap();
    assert_eq!(
        introspect(&provider, homeserver, &fourth.access).await,
        inactive()
    );
    assert_eq!(
        introspect(&provider, client, &fourth.refresh).await,
        inactive()
    );
    let (status, _, _) = userinfo(&provider, Some(&fourth.access)).await;
    assert_eq!(status, 401);
    let mut repo = db.storage.begin().await.unwrap();
    repo.users().set_locked(user_id, false).await.unwrap();
    repo.commit().await.unwrap();
    assert_eq!(
        introspect(&provider, homeserver, &fourth.access).await["active"],
        true
    );
    // Deactivated: the same.
    let mut repo = db.storage.begin().await.unwrap();
    repo.users().set_deactivated(user_id, true).await.unwrap();
    repo.commit().await.unwrap();
    assert_eq!(
        introspect(&provider, homeserver, &fourth.access).await,
        inactive()
    );
    provider.stop().await;
}

/// RFC 7009: who may revoke what, and that the answer never tells.
async fn revocation_rules(db: TestDb) {
    let provider = start(&db).await;
    let (id, secret) = static_client(&provider);
    let client = Auth::Basic(&id, &secret);
    let browser = browser();
    let tokens = obtain(&provider, &browser, client, &id, MATRIX_SCOPE).await;

    // §2.2: unknown and malformed tokens are a 200.
    for token in [UNKNOWN_ACCESS, UNKNOWN_REFRESH, "garbage"] {
        assert_eq!(revoke(&provider, client, token).await, 200, "{token}");
    }
    // §2.1: `token` is required; the client must authenticate (§2.2.1: RFC 6749 §5.2 errors).
    let (status, headers, body) =
        post_form(&provider, endpoints::REVOCATION, client, &[], false).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(headers["cache-control"], "no-store");
    let (status, _, body) = post_form(
        &provider,
        endpoints::REVOCATION,
        Auth::Nothing,
        &[("token", &tokens.access)],
        false,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, _, body) = post_form(
        &provider,
        endpoints::REVOCATION,
        Auth::Basic(&id, "wrong"),
        &[("token", &tokens.access)],
        false,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // The homeserver's secret is not a client's credential.
    let (status, _, _) = post_form(
        &provider,
        endpoints::REVOCATION,
        Auth::Bearer(&provider.settings.matrix.secret),
        &[("token", &tokens.access)],
        false,
    )
    .await;
    assert_eq!(status, 401);

    // A public client (§5: it authenticates with its client_id alone) revoking another
    // client's tokens: 200, and nothing happens.
    let public = register_public_client(&provider).await;
    for token in [&tokens.access, &tokens.refresh] {
        assert_eq!(revoke(&provider, Auth::Public(&public), token).await, 200);
    }
    assert_eq!(
        introspect(&provider, client, &tokens.access).await["active"],
        true
    );
    assert_eq!(
        introspect(&provider, client, &tokens.refresh).await["active"],
        true
    );

    // Its own tokens it may revoke.
    let own = obtain(
        &provider,
        &browser,
        Auth::Public(&public),
        &public,
        MATRIX_SCOPE,
    )
    .await;
    // (Asked by the homeserver: another client may not introspect them, RFC 7662 §4.)
    let homeserver = Auth::Bearer(&provider.settings.matrix.secret);
    assert_eq!(
        introspect(&provider, homeserver, &own.access).await["active"],
        true
    );
    assert_eq!(
        revoke(&provider, Auth::Public(&public), &own.refresh).await,
        200
    );
    assert_eq!(
        introspect(&provider, homeserver, &own.access).await,
        inactive()
    );
    provider.stop().await;
}

/// OIDC Core §5.3 with RFC 6750 errors.
async fn userinfo_endpoint(db: TestDb) {
    let provider = start(&db).await;
    let (id, secret) = static_client(&provider);
    let client = Auth::Basic(&id, &secret);
    let browser = browser();
    let sub = alice_id(&db).await;
    let tokens = obtain(&provider, &browser, client, &id, MATRIX_SCOPE).await;

    let (status, _, body) = userinfo(&provider, Some(&tokens.access)).await;
    assert_eq!((status, body), (200, json!({ "sub": sub })));
    // POST with the token in the form body (RFC 6750 §2.2).
    let (status, headers, body) = post_form(
        &provider,
        endpoints::USERINFO,
        Auth::Nothing,
        &[("access_token", &tokens.access)],
        false,
    )
    .await;
    assert_eq!((status, body), (200, json!({ "sub": sub })));
    assert_eq!(headers["cache-control"], "no-store");

    // RFC 6750 §3.1: no token: 401 and a bare challenge.
    let (status, challenge, _) = userinfo(&provider, None).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer"));
    // Garbage, a refresh token, a revoked token: invalid_token.
    for token in ["garbage", tokens.refresh.as_str(), UNKNOWN_ACCESS] {
        let (status, challenge, body) = userinfo(&provider, Some(token)).await;
        assert_eq!(status, 401, "{token}");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{challenge}"
        );
        assert_eq!(body["error"], "invalid_token");
    }
    assert_eq!(revoke(&provider, client, &tokens.access).await, 200);
    let (status, challenge, _) = userinfo(&provider, Some(&tokens.access)).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"));

    // Without the openid scope: 403 insufficient_scope.
    let matrix_only = obtain(
        &provider,
        &browser,
        client,
        &id,
        "urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ",
    )
    .await;
    let (status, challenge, body) = userinfo(&provider, Some(&matrix_only.access)).await;
    assert_eq!(status, 403);
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"openid\""), "{challenge}");
    assert_eq!(body["error"], "insufficient_scope");

    // The email scope: the confirmed address only.
    let user_id = sub.parse().unwrap();
    let mut repo = db.storage.begin().await.unwrap();
    repo.user_emails()
        .add(user_id, "unconfirmed@example.com")
        .await
        .unwrap();
    let email = repo
        .user_emails()
        .add(user_id, "alice@example.com")
        .await
        .unwrap();
    repo.user_emails().confirm(email.id).await.unwrap();
    repo.commit().await.unwrap();
    let with_email = obtain(&provider, &browser, client, &id, "openid email").await;
    let (status, _, body) = userinfo(&provider, Some(&with_email.access)).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({ "sub": sub, "email": "alice@example.com", "email_verified": true })
        )
    );
    // Without the email scope, no email.
    let (_, _, body) = userinfo(
        &provider,
        Some(
            &obtain(&provider, &browser, client, &id, "openid")
                .await
                .access,
        ),
    )
    .await;
    assert_eq!(body, json!({ "sub": sub }));
    provider.stop().await;
}

/// Compat tokens (legacy login, MSC3824) answer the homeserver the same way. No HTTP flow
/// issues them yet, so the session and token are stored directly.
async fn compat_tokens(db: TestDb) {
    use rand::SeedableRng as _;

    let provider = start(&db).await;
    let (id, secret) = static_client(&provider);
    let homeserver_secret = provider.settings.matrix.secret.clone();
    let homeserver = Auth::Bearer(&homeserver_secret);
    let token = TokenKind::CompatAccessToken.generate(&mut rand::rngs::StdRng::seed_from_u64(3));
    let user_id = alice_id(&db).await.parse().unwrap();
    let mut repo = db.storage.begin().await.unwrap();
    let session = repo
        .compat_sessions()
        .add(user_id, "COMPATDEV", None, true, None)
        .await
        .unwrap();
    repo.compat_tokens()
        .add_access(session.id, &sha256(&token), None)
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let (_, _, body) = post_form(
        &provider,
        endpoints::INTROSPECTION,
        homeserver,
        &[("token", &token)],
        true,
    )
    .await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["device_id"], "COMPATDEV");
    assert_eq!(body["username"], "alice");
    // Both MSC2967 forms, so a homeserver knowing either reads the API scope and the device.
    assert_eq!(
        body["scope"],
        "urn:matrix:client:api:* urn:matrix:client:device:COMPATDEV urn:synapse:admin:* \
         urn:matrix:org.matrix.msc2967.client:api:* \
         urn:matrix:org.matrix.msc2967.client:device:COMPATDEV"
    );
    // It never expires (issued without a refresh token) and belongs to no OAuth 2.0 client.
    assert!(body.get("expires_in").is_none() && body.get("exp").is_none());
    assert!(body.get("client_id").is_none());
    let without = introspect(&provider, homeserver, &token).await;
    assert!(without.get("device_id").is_none());
    assert!(without["scope"]
        .as_str()
        .unwrap()
        .contains("urn:matrix:client:device:COMPATDEV"));

    // Not an OAuth 2.0 client's to revoke: 200, and it stays active.
    assert_eq!(
        revoke(&provider, Auth::Basic(&id, &secret), &token).await,
        200
    );
    assert_eq!(
        introspect(&provider, homeserver, &token).await["active"],
        true
    );
    // The legacy logout finishes the session: inactive.
    let mut repo = db.storage.begin().await.unwrap();
    repo.compat_sessions().finish(session.id).await.unwrap();
    repo.commit().await.unwrap();
    assert_eq!(introspect(&provider, homeserver, &token).await, inactive());
    provider.stop().await;
}

/// Registers a confidential (`client_secret_basic`) client anonymously (RFC 7591): a stranger
/// to every token. Its client_id and secret.
async fn register_confidential_client(provider: &TestProvider) -> (String, String) {
    let response = http()
        .post(provider.url(endpoints::REGISTRATION))
        .json(&json!({
            "client_name": "Stranger",
            "client_uri": "https://stranger.example.com",
            "application_type": "web",
            "redirect_uris": ["https://stranger.example.com/cb"],
            "token_endpoint_auth_method": "client_secret_basic",
            "response_types": ["code"],
            "grant_types": ["authorization_code"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["client_id"].as_str().unwrap().to_owned(),
        body["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// When an access token's first use is recorded (`None`: never, or the token is not active).
async fn first_used_at(db: &TestDb, token: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut repo = db.storage.reader().await.unwrap();
    repo.access_tokens()
        .find_active_by_hash(&sha256(token), db.clock.now())
        .await
        .unwrap()
        .expect("an active token")
        .token
        .first_used_at
}

async fn refresh(provider: &TestProvider, auth: Auth<'_>, refresh: &str) -> (u16, Value) {
    let (status, _, body) = post_form(
        provider,
        endpoints::TOKEN,
        auth,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        false,
    )
    .await;
    (status, body)
}

/// A client asking about a token that isn't its own learns nothing and changes nothing: the
/// token's first use is not recorded, so the refresh that issued it keeps its retry grace
/// (client-server API "Refreshing access tokens"). The homeserver introspecting a token is its
/// use, and records it.
async fn only_a_use_records_a_first_use(db: TestDb) {
    let provider = start(&db).await;
    let (id, secret) = static_client(&provider);
    let client = Auth::Basic(&id, &secret);
    let homeserver_secret = provider.settings.matrix.secret.clone();
    let homeserver = Auth::Bearer(&homeserver_secret);
    let first = obtain(&provider, &browser(), client, &id, MATRIX_SCOPE).await;
    let (status, second) = refresh(&provider, client, &first.refresh).await;
    assert_eq!(status, 200, "{second}");
    let access = second["access_token"].as_str().unwrap();

    // A stranger (not an admin client) introspects the new access token.
    let (stranger_id, stranger_secret) = register_confidential_client(&provider).await;
    let stranger = Auth::Basic(&stranger_id, &stranger_secret);
    assert_eq!(introspect(&provider, stranger, access).await, inactive());
    assert_eq!(first_used_at(&db, access).await, None);
    // So the response was "lost" for all the server knows: the old refresh token still works.
    let (status, retried) = refresh(&provider, client, &first.refresh).await;
    assert_eq!(status, 200, "{retried}");
    let access = retried["access_token"].as_str().unwrap();

    // The homeserver introspects the retried token: its use, recorded at once.
    let used_at = db.clock.now();
    assert_eq!(
        introspect(&provider, homeserver, access).await["active"],
        true
    );
    assert_eq!(
        first_used_at(&db, access).await.map(|t| t.timestamp()),
        Some(used_at.timestamp())
    );
    // The grace is closed: the old refresh token again is a replay.
    let (status, body) = refresh(&provider, client, &first.refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    provider.stop().await;
}

/// The refresh grant spends its unit of the per-client token limit in the rotation's writer
/// (issue 16): over the limit it answers 429 and writes nothing, so the refresh token presented
/// still works once the bucket has refilled; a refresh refused earlier (an unknown token)
/// spends its unit too.
async fn refresh_is_limited_per_client(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start_with(
        &db,
        &[
            ("PROVIDER__RATE_LIMITING__TOKEN__PER_CLIENT__BURST", "3"),
            (
                "PROVIDER__RATE_LIMITING__TOKEN__PER_CLIENT__PER_SECOND",
                "1",
            ),
        ],
    )
    .await;
    let (id, secret) = static_client(&provider);
    let client = Auth::Basic(&id, &secret);
    // Units: the code exchange, then a refresh.
    let first = obtain(&provider, &browser(), client, &id, MATRIX_SCOPE).await;
    let (status, second) = refresh(&provider, client, &first.refresh).await;
    assert_eq!(status, 200, "{second}");
    let second = second["refresh_token"].as_str().unwrap().to_owned();
    // The third unit, spent by a refusal before any write.
    let unknown = format!("mar_{}_000000", "a".repeat(30));
    let (status, body) = refresh(&provider, client, &unknown).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // The bucket is empty: 429, and the rotation wrote nothing.
    let (status, body) = refresh(&provider, client, &second).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("temporarily_unavailable")),
        "{body}"
    );
    db.clock.advance(Duration::seconds(1));
    let (status, third) = refresh(&provider, client, &second).await;
    assert_eq!(
        status, 200,
        "the refused refresh left its token usable: {third}"
    );
    let access = third["access_token"].as_str().unwrap();
    let homeserver_secret = provider.settings.matrix.secret.clone();
    assert_eq!(
        introspect(&provider, Auth::Bearer(&homeserver_secret), access).await["active"],
        true
    );
    provider.stop().await;
}

backend_tests!(
    introspection_of_active_tokens,
    compat_tokens,
    introspection_refusals,
    tokens_become_inactive,
    revocation_rules,
    userinfo_endpoint,
    only_a_use_records_a_first_use,
    refresh_is_limited_per_client,
);
