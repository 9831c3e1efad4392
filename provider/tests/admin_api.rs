//! The admin API over HTTP, on both databases: how a token for it is obtained (an admin user
//! through the authorization code flow, an admin client with client credentials) and who is
//! refused; every route family's answers and errors (problem JSON); paging; the homeserver's
//! view after locks, deactivations and ended sessions; the OpenAPI document (an insta snapshot)
//! and the router serving every route it lists.

mod support;

use provider::{
    backend_tests,
    http::admin,
    test_harness::{TestDb, TestProvider},
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{
    add_user, authorize, authorize_url, browser, client_credentials, get_text, http,
    introspect_as_homeserver, json_of, location, param, start_with_admin_robot, submit,
    OTHER_SECRET, REDIRECT, ROBOT_SECRET, VERIFIER, WEB_APP_SECRET,
};

const PASSWORD: &str = "a password nobody guesses";
/// An admin token of the admin robot.
async fn robot_token(provider: &TestProvider) -> String {
    let (status, body) =
        client_credentials(provider, "admin-robot", ROBOT_SECRET, "urn:mas:admin").await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A call to the admin API; the status and the JSON body (`Null` when empty).
struct Api<'a> {
    provider: &'a TestProvider,
    token: Option<String>,
}

impl Api<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, body) = self.call_full(method, path, body).await;
        (status, body)
    }

    async fn call_full(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = format!("{}{path}", self.provider.url(admin::PREFIX));
        let mut request = http().request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        if status >= 400 {
            assert_problem(status, &headers, &body);
        }
        (status, headers, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
}

/// Every error is an RFC 9457 problem detail.
fn assert_problem(status: u16, headers: &reqwest::header::HeaderMap, body: &Value) {
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{status} {body}"
    );
    assert_eq!(body["type"], "about:blank", "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

fn api<'a>(provider: &'a TestProvider, token: &str) -> Api<'a> {
    Api {
        provider,
        token: Some(token.to_owned()),
    }
}

/// A legacy login of `username` with `device`; its access token.
async fn compat_login(provider: &TestProvider, username: &str, device: &str) -> String {
    let (status, _, body) = json_of(
        http()
            .post(provider.url("/_matrix/client/v3/login"))
            .json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": username},
                "password": PASSWORD,
                "device_id": device,
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn set_admin(db: &TestDb, username: &str, admin: bool) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo
        .users()
        .find_by_username(username)
        .await
        .unwrap()
        .unwrap();
    repo.users()
        .set_can_request_admin(user.id, admin)
        .await
        .unwrap();
    repo.commit().await.unwrap();
}

/// The code flow for `scope`, signed in as alice; the token response.
async fn user_token(provider: &TestProvider, scope: &str) -> Value {
    let back = authorize(
        &browser(),
        &provider.base_url,
        &authorize_url(provider, &[("scope", scope)]),
        PASSWORD,
    )
    .await;
    let code = param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let (status, _, tokens) = json_of(
        http()
            .post(provider.url("/oauth2/token"))
            .basic_auth("web-app", Some(WEB_APP_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

// ---------------------------------------------------------------------------------------------

/// Who gets a token for the admin API, and who is refused, and how.
async fn admin_tokens(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = start_with_admin_robot(&db).await;
    let base = provider.base_url.clone();

    // Alice may not administer: the code flow ends with access_denied, no consent page.
    let browser = browser();
    let login = location(
        &browser
            .get(authorize_url(
                &provider,
                &[("scope", "openid urn:mas:admin")],
            ))
            .send()
            .await
            .unwrap(),
        &base,
    );
    let page = get_text(&browser, login).await;
    let consent = location(
        &submit(
            &browser,
            &base,
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await,
        &base,
    );
    let back = location(&browser.get(consent).send().await.unwrap(), &base);
    assert!(back.as_str().starts_with(REDIRECT), "{back}");
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));

    // A token of hers without the admin scope: 403 insufficient_scope.
    let plain = user_token(&provider, "openid").await;
    let plain = plain["access_token"].as_str().unwrap();
    let (status, headers, _) = api(&provider, plain)
        .call_full(Method::GET, "/users", None)
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"urn:mas:admin\""
    );

    // Once she may, she gets the scope, and the API answers her.
    set_admin(&db, "alice", true).await;
    let tokens = user_token(&provider, "openid urn:mas:admin").await;
    assert!(tokens["scope"].as_str().unwrap().contains("urn:mas:admin"));
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let (status, page) = api(&provider, &token).get("/users").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"][0]["username"], "alice");
    assert_eq!(page["data"][0]["admin"], true);

    // The admin client gets it by client credentials; another confidential client doesn't.
    let robot = robot_token(&provider).await;
    let (status, me) = api(&provider, &robot).get("/users/by-username/alice").await;
    assert_eq!(status, 200, "{me}");
    let (status, body) =
        client_credentials(&provider, "other-robot", OTHER_SECRET, "urn:mas:admin").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_scope");
    let (status, body) = client_credentials(&provider, "other-robot", OTHER_SECRET, "read").await;
    assert_eq!(status, 200, "{body}");
    let other = body["access_token"].as_str().unwrap();
    assert_eq!(api(&provider, other).get("/users").await.0, 403);

    // No token, a malformed one, an unknown one: 401 with a Bearer challenge.
    let anonymous = Api {
        provider: &provider,
        token: None,
    };
    let (status, headers, _) = anonymous.call_full(Method::GET, "/users", None).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    for garbage in ["not-a-token", "mat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_000000"] {
        let (status, headers, _) = api(&provider, garbage)
            .call_full(Method::GET, "/users", None)
            .await;
        assert_eq!(status, 401, "{garbage}");
        assert_eq!(
            headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }

    // Demoted: the sessions holding the admin scope end, her token stops working at once.
    let alice_id = me["id"].as_str().unwrap().to_owned();
    let (status, body) = api(&provider, &robot)
        .post(
            &format!("/users/{alice_id}/set-admin"),
            json!({"admin": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["admin"], false);
    assert_eq!(api(&provider, &token).get("/users").await.0, 401);
    assert_eq!(
        introspect_as_homeserver(&provider, &token).await["active"],
        false
    );
    provider.stop().await;
}

/// The device flow (RFC 8628) grants `urn:mas:admin` to administrators only: a user who may
/// not administer approving such a request denies it.
async fn device_flow_admin_scope(db: TestDb) {
    const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
    add_user(&db, "alice", PASSWORD).await;
    let provider = start_with_admin_robot(&db).await;
    let base = provider.base_url.clone();
    let (status, _, client) = json_of(
        http()
            .post(provider.url("/oauth2/registration"))
            .json(&json!({
                "client_uri": "https://tv.example.com/",
                "application_type": "native",
                "grant_types": [DEVICE_CODE],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().unwrap();
    let (status, _, started) = json_of(
        http()
            .post(provider.url("/oauth2/device"))
            .form(&[("client_id", client_id), ("scope", "urn:mas:admin")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{started}");

    // Alice signs in through the link and approves: refused, and the request is denied.
    let browser = browser();
    let link = started["verification_uri_complete"].as_str().unwrap();
    let login = location(&browser.get(link).send().await.unwrap(), &base);
    let page = get_text(&browser, login).await;
    let back = location(
        &submit(
            &browser,
            &base,
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await,
        &base,
    );
    let page = get_text(&browser, back).await;
    let approval = submit(&browser, &base, &page, &[]).await;
    let approval = approval.text().await.unwrap();
    let answered = submit(&browser, &base, &approval, &[("action", "allow")]).await;
    assert_eq!(answered.status(), StatusCode::FORBIDDEN);
    let (status, _, polled) = json_of(
        http()
            .post(provider.url("/oauth2/token"))
            .form(&[
                ("grant_type", DEVICE_CODE),
                ("device_code", started["device_code"].as_str().unwrap()),
                ("client_id", client_id),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, polled["error"].as_str()),
        (400, Some("access_denied")),
        "{polled}"
    );
    provider.stop().await;
}

/// Users: create, get, the errors, paging and filters, password, lock, deactivation, with
/// the homeserver's view of each.
async fn users(db: TestDb) {
    let provider = start_with_admin_robot(&db).await;
    let token = robot_token(&provider).await;
    let api = api(&provider, &token);
    let homeserver = provider.homeserver.store();

    let (status, alice) = api
        .post(
            "/users",
            json!({
                "username": "alice",
                "password": PASSWORD,
                "emails": [{"email": "alice@example.com", "verified": true},
                           {"email": "alice@work.example", "verified": false}],
                "admin": true,
                "display_name": "Alice Liddell",
            }),
        )
        .await;
    assert_eq!(status, 201, "{alice}");
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["status"], "active");
    assert_eq!(alice["admin"], true);
    assert_eq!(alice["display_name"], "Alice Liddell");
    let id = alice["id"].as_str().unwrap().to_owned();
    // Provisioned after the commit, with the verified address only.
    let record = homeserver.user("alice").expect("alice provisioned");
    assert_eq!(record.displayname.as_deref(), Some("Alice Liddell"));
    assert_eq!(record.emails, ["alice@example.com"]);

    assert_eq!(
        api.get(&format!("/users/{id}")).await.1["username"],
        "alice"
    );
    assert_eq!(
        api.get("/users/by-username/alice").await.1["id"],
        id.as_str()
    );

    // Refusals.
    let taken = api.post("/users", json!({"username": "alice"})).await;
    assert_eq!(taken.0, 409, "{}", taken.1);
    homeserver.insert_user("carol");
    let taken_there = api.post("/users", json!({"username": "carol"})).await;
    assert_eq!(taken_there.0, 409, "{}", taken_there.1);
    for bad in [
        json!({"username": "Bad Name"}),
        json!({"username": "dave", "password": "short"}),
        json!({"username": "dave", "emails": [{"email": "not an address"}]}),
        json!({"username": "dave", "display_name": "   "}),
        json!({"username": "dave", "display_name": "Dave\nDavidson"}),
        json!({"username": "dave", "colour": "blue"}),
        json!(["not", "an", "object"]),
    ] {
        let (status, body) = api.post("/users", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let short = api
        .post(
            "/users",
            json!({"username": "dave", "password": "short", "skip_password_check": true}),
        )
        .await;
    assert_eq!(short.0, 201, "{}", short.1);
    assert_eq!(api.get("/users/01ARZ3NDEKTSV4RRFFQ69G5FAV").await.0, 404);
    assert_eq!(api.get("/users/not-a-ulid").await.0, 404);
    assert_eq!(api.get("/users/by-username/nobody").await.0, 404);
    assert_eq!(api.get("/nothing/here").await.0, 404);

    // Paging: 12 users in all, walked 5 at a time, in ID order, each once.
    for i in 0..10 {
        // IDs order by time first: a tick apart, creation order is ID order.
        db.clock.advance(chrono::Duration::seconds(1));
        let (status, body) = api
            .post("/users", json!({"username": format!("user{i:02}")}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/users?page[first]=5&page[after]={a}"),
            None => "/users?page[first]=5".to_owned(),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for user in page["data"].as_array().unwrap() {
            seen.push(user["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 12);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen);
    for bad in [
        "/users?page[first]=0",
        "/users?page[first]=101",
        "/users?page[first]=many",
        "/users?page[after]=nope",
        "/users?filter[status]=sleeping",
        "/users?filter[admin]=maybe",
    ] {
        assert_eq!(api.get(bad).await.0, 400, "{bad}");
    }
    let names = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&api.get("/users?filter[admin]=true").await.1),
        ["alice"]
    );
    assert_eq!(
        names(&api.get("/users?filter[search]=user0&page[first]=3").await.1),
        ["user00", "user01", "user02"]
    );
    assert!(names(&api.get("/users?filter[search]=User").await.1).is_empty());

    // A legacy login of alice (device ALICEPHONE), to watch her token and device.
    let alice_token = compat_login(&provider, "alice", "ALICEPHONE").await;
    assert!(homeserver.has_device("alice", "ALICEPHONE"));

    // New password: the old one stops working, the new one works.
    let (status, _) = api
        .post(
            &format!("/users/{id}/set-password"),
            json!({"password": "another long password"}),
        )
        .await;
    assert_eq!(status, 204);
    let refused = http()
        .post(provider.url("/_matrix/client/v3/login"))
        .json(&json!({"type": "m.login.password", "user": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let (status, _) = api
        .post(
            &format!("/users/{id}/set-password"),
            json!({"password": "x"}),
        )
        .await;
    assert_eq!(status, 400);

    // Lock: her token is inactive, the homeserver knows; unlock brings it back.
    let (status, body) = api.post(&format!("/users/{id}/lock"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "locked");
    assert_eq!(
        introspect_as_homeserver(&provider, &alice_token).await["active"],
        false
    );
    assert!(homeserver.user("alice").unwrap().locked);
    assert_eq!(
        names(&api.get("/users?filter[status]=locked").await.1),
        ["alice"]
    );
    let (status, again) = api.post(&format!("/users/{id}/lock"), json!({})).await;
    assert_eq!((status, &again["locked_at"]), (200, &body["locked_at"]));
    let (status, body) = api.post(&format!("/users/{id}/unlock"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(
        introspect_as_homeserver(&provider, &alice_token).await["active"],
        true
    );
    assert!(!homeserver.user("alice").unwrap().locked);

    // Deactivation: her device is deleted, the homeserver deactivates her; reactivation.
    let (status, body) = api
        .call(Method::POST, &format!("/users/{id}/deactivate"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "deactivated");
    assert!(!homeserver.has_device("alice", "ALICEPHONE"));
    assert!(homeserver.user("alice").unwrap().deactivated);
    assert_eq!(
        introspect_as_homeserver(&provider, &alice_token).await["active"],
        false
    );
    assert_eq!(
        names(&api.get("/users?filter[status]=deactivated").await.1),
        ["alice"]
    );
    let (status, body) = api
        .post(&format!("/users/{id}/reactivate"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert!(!homeserver.user("alice").unwrap().deactivated);

    // end-sessions: a new login of dave, ended.
    let dave = api.get("/users/by-username/dave").await.1;
    let dave_id = dave["id"].as_str().unwrap();
    let login = http()
        .post(provider.url("/_matrix/client/v3/login"))
        .json(&json!({"type": "m.login.password", "user": "dave", "password": "short", "device_id": "DAVEDEV"}))
        .send()
        .await
        .unwrap();
    let dave_token = login.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = api
        .post(&format!("/users/{dave_id}/end-sessions"), json!({}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        introspect_as_homeserver(&provider, &dave_token).await["active"],
        false
    );
    assert!(!homeserver.has_device("dave", "DAVEDEV"));

    // Unknown users on every action.
    for action in ["lock", "unlock", "deactivate", "reactivate", "end-sessions"] {
        let path = format!("/users/01ARZ3NDEKTSV4RRFFQ69G5FAV/{action}");
        assert_eq!(api.post(&path, json!({})).await.0, 404, "{action}");
    }
    provider.stop().await;
}

/// Email addresses: add (verified or not), list, get, verify, remove; the homeserver gets the
/// verified ones.
async fn emails(db: TestDb) {
    let provider = start_with_admin_robot(&db).await;
    let token = robot_token(&provider).await;
    let api = api(&provider, &token);
    let homeserver = provider.homeserver.store();
    let (_, bob) = api.post("/users", json!({"username": "bob"})).await;
    let id = bob["id"].as_str().unwrap();

    let (status, unverified) = api
        .post(
            &format!("/users/{id}/emails"),
            json!({"email": "bob@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{unverified}");
    assert!(unverified["verified_at"].is_null());
    assert!(homeserver.user("bob").unwrap().emails.is_empty());
    let (status, verified) = api
        .post(
            &format!("/users/{id}/emails"),
            json!({"email": "bob@work.example", "verified": true}),
        )
        .await;
    assert_eq!(status, 201, "{verified}");
    assert!(verified["verified_at"].is_string());
    assert_eq!(homeserver.user("bob").unwrap().emails, ["bob@work.example"]);

    let (status, list) = api.get(&format!("/users/{id}/emails")).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);

    let email_id = unverified["id"].as_str().unwrap();
    let (status, body) = api
        .post(&format!("/user-emails/{email_id}/verify"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["verified_at"].is_string());
    assert_eq!(
        api.get(&format!("/user-emails/{email_id}")).await.1["email"],
        "bob@example.com"
    );
    let mut emails = homeserver.user("bob").unwrap().emails;
    emails.sort();
    assert_eq!(emails, ["bob@example.com", "bob@work.example"]);

    let (status, _) = api
        .call(Method::DELETE, &format!("/user-emails/{email_id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(homeserver.user("bob").unwrap().emails, ["bob@work.example"]);
    assert_eq!(api.get(&format!("/user-emails/{email_id}")).await.0, 404);
    assert_eq!(
        api.call(Method::DELETE, &format!("/user-emails/{email_id}"), None)
            .await
            .0,
        404
    );

    let dup = api
        .post(
            &format!("/users/{id}/emails"),
            json!({"email": "bob@work.example"}),
        )
        .await;
    assert_eq!(dup.0, 409);
    let bad = api
        .post(&format!("/users/{id}/emails"), json!({"email": "bob"}))
        .await;
    assert_eq!(bad.0, 400);
    let no_body = api
        .call(Method::POST, &format!("/users/{id}/emails"), None)
        .await;
    assert_eq!(no_body.0, 400);
    let unknown = api
        .post(
            "/users/01ARZ3NDEKTSV4RRFFQ69G5FAV/emails",
            json!({"email": "x@example.com"}),
        )
        .await;
    assert_eq!(unknown.0, 404);
    provider.stop().await;
}

/// Sessions of every kind: listed by user and status, fetched, finished (devices deleted).
async fn sessions(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = start_with_admin_robot(&db).await;
    let token = robot_token(&provider).await;
    let api = api(&provider, &token);
    let homeserver = provider.homeserver.store();
    let alice = api.get("/users/by-username/alice").await.1;
    let alice_id = alice["id"].as_str().unwrap().to_owned();

    // An OAuth 2.0 session with a device (code flow, signs a browser session in too) and two
    // legacy logins.
    let tokens = user_token(
        &provider,
        "openid urn:matrix:client:api:* urn:matrix:client:device:OAUTHDEV01",
    )
    .await;
    let oauth_token = tokens["access_token"].as_str().unwrap().to_owned();
    assert!(homeserver.has_device("alice", "OAUTHDEV01"));
    db.clock.advance(chrono::Duration::seconds(1));
    let compat_one = compat_login(&provider, "alice", "COMPATONE").await;
    db.clock.advance(chrono::Duration::seconds(1));
    let _compat_two = compat_login(&provider, "alice", "COMPATTWO").await;

    // OAuth 2.0 sessions: alice's, and the robot's own (client credentials).
    let (status, page) = api
        .get(&format!("/oauth2-sessions?filter[user]={alice_id}"))
        .await;
    assert_eq!(status, 200, "{page}");
    let mine = page["data"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["device_id"], "OAUTHDEV01");
    let all = api.get("/oauth2-sessions?filter[status]=active").await.1;
    assert!(all["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["user_id"].is_null()));
    let oauth_id = mine[0]["id"].as_str().unwrap().to_owned();
    let client_id = mine[0]["client_id"].as_str().unwrap().to_owned();
    let by_client = api
        .get(&format!("/oauth2-sessions?filter[client]={client_id}"))
        .await
        .1;
    assert_eq!(by_client["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get(&format!("/oauth2-sessions/{oauth_id}")).await.1["scope"],
        mine[0]["scope"]
    );
    let (status, body) = api
        .post(&format!("/oauth2-sessions/{oauth_id}/finish"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["finished_at"].is_string());
    assert_eq!(
        introspect_as_homeserver(&provider, &oauth_token).await["active"],
        false
    );
    assert!(!homeserver.has_device("alice", "OAUTHDEV01"));
    assert_eq!(
        api.post(&format!("/oauth2-sessions/{oauth_id}/finish"), json!({}))
            .await
            .0,
        409
    );
    let finished = api
        .get(&format!(
            "/oauth2-sessions?filter[user]={alice_id}&filter[status]=finished"
        ))
        .await
        .1;
    assert_eq!(finished["data"][0]["id"], oauth_id.as_str());

    // Compat sessions: paged one at a time.
    let (_, first) = api
        .get(&format!(
            "/compat-sessions?filter[user]={alice_id}&page[first]=1"
        ))
        .await;
    assert_eq!(first["data"][0]["device_id"], "COMPATONE");
    let next = first["next_cursor"].as_str().unwrap();
    let (_, second) = api
        .get(&format!(
            "/compat-sessions?filter[user]={alice_id}&page[first]=1&page[after]={next}"
        ))
        .await;
    assert_eq!(second["data"][0]["device_id"], "COMPATTWO");
    assert!(second["next_cursor"].is_null());
    let compat_id = first["data"][0]["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/compat-sessions/{compat_id}")).await.1["device_id"],
        "COMPATONE"
    );
    let (status, body) = api
        .post(&format!("/compat-sessions/{compat_id}/finish"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        introspect_as_homeserver(&provider, &compat_one).await["active"],
        false
    );
    assert!(!homeserver.has_device("alice", "COMPATONE"));
    assert!(homeserver.has_device("alice", "COMPATTWO"));
    assert_eq!(
        api.post(&format!("/compat-sessions/{compat_id}/finish"), json!({}))
            .await
            .0,
        409
    );

    // Browser sessions: the one of the code flow.
    let (status, page) = api
        .get(&format!(
            "/browser-sessions?filter[user]={alice_id}&filter[status]=active"
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    let browser_id = page["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        api.get(&format!("/browser-sessions/{browser_id}")).await.1["user_id"],
        alice_id.as_str()
    );
    let (status, body) = api
        .post(&format!("/browser-sessions/{browser_id}/finish"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["finished_at"].is_string());
    assert_eq!(
        api.post(&format!("/browser-sessions/{browser_id}/finish"), json!({}))
            .await
            .0,
        409
    );

    for path in [
        "/oauth2-sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "/compat-sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "/browser-sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ] {
        assert_eq!(api.get(path).await.0, 404, "{path}");
    }
    for bad in [
        "/oauth2-sessions?filter[user]=x",
        "/oauth2-sessions?filter[client]=x",
        "/compat-sessions?filter[status]=paused",
        "/browser-sessions?page[first]=1000",
    ] {
        assert_eq!(api.get(bad).await.0, 400, "{bad}");
    }
    provider.stop().await;
}

/// Clients: created with the registration rules (plus client credentials), used, updated,
/// deleted with their sessions; static ones are read-only.
async fn clients(db: TestDb) {
    let provider = start_with_admin_robot(&db).await;
    let token = robot_token(&provider).await;
    let api = api(&provider, &token);

    let (status, page) = api.get("/clients").await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let robot = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "admin-robot")
        .unwrap();
    assert_eq!(robot["static"], true);
    assert_eq!(robot["admin"], true);
    let robot_id = robot["id"].as_str().unwrap();
    assert_eq!(
        api.call(
            Method::PUT,
            &format!("/clients/{robot_id}"),
            Some(json!({
                "client_uri": "https://robot.example.com/",
                "grant_types": ["client_credentials"],
            }))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        api.call(Method::DELETE, &format!("/clients/{robot_id}"), None)
            .await
            .0,
        409
    );

    // A web client: the registration rules apply, a secret is made and shown once.
    let (status, web) = api
        .post(
            "/clients",
            json!({
                "client_name": "Dashboard",
                "client_uri": "https://dash.example.com/",
                "redirect_uris": ["https://dash.example.com/callback"],
                "token_endpoint_auth_method": "client_secret_post",
            }),
        )
        .await;
    assert_eq!(status, 201, "{web}");
    assert_eq!(web["static"], false);
    assert_eq!(web["metadata"]["client_name"], "Dashboard");
    assert_eq!(
        web["metadata"]["grant_types"],
        json!(["authorization_code"])
    );
    assert!(web["client_secret"].as_str().unwrap().len() >= 32);
    let web_id = web["id"].as_str().unwrap().to_owned();
    let (_, fetched) = api.get(&format!("/clients/{web_id}")).await;
    assert!(fetched.get("client_secret").is_none());
    assert_eq!(fetched["client_id"], web["client_id"]);

    for bad in [
        json!({"redirect_uris": ["https://dash.example.com/callback"]}),
        json!({"client_uri": "https://dash.example.com/", "redirect_uris": ["https://elsewhere.example.org/cb"]}),
        json!({"client_uri": "https://dash.example.com/", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
        json!("metadata"),
    ] {
        let (status, body) = api.post("/clients", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // A service client: client credentials only, no redirect URI; it gets tokens.
    let (status, service) = api
        .post(
            "/clients",
            json!({
                "client_uri": "https://jobs.example.com/",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_basic",
            }),
        )
        .await;
    assert_eq!(status, 201, "{service}");
    assert_eq!(
        service["metadata"]["grant_types"],
        json!(["client_credentials"])
    );
    assert_eq!(service["metadata"]["response_types"], json!([]));
    let service_client = service["client_id"].as_str().unwrap().to_owned();
    let service_secret = service["client_secret"].as_str().unwrap().to_owned();
    let (status, body) =
        client_credentials(&provider, &service_client, &service_secret, "jobs").await;
    assert_eq!(status, 200, "{body}");
    let service_token = body["access_token"].as_str().unwrap().to_owned();
    // ... but not the admin scope: it is not in admin.clients.
    let (status, _) =
        client_credentials(&provider, &service_client, &service_secret, "urn:mas:admin").await;
    assert_eq!(status, 400);

    // Update: the metadata is replaced, the secret kept while the method uses one.
    let service_id = service["id"].as_str().unwrap().to_owned();
    let (status, updated) = api
        .call(
            Method::PUT,
            &format!("/clients/{service_id}"),
            Some(json!({
                "client_name": "Nightly jobs",
                "client_uri": "https://jobs.example.com/",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_post",
            })),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["metadata"]["client_name"], "Nightly jobs");
    assert_eq!(updated["token_endpoint_auth_method"], "client_secret_post");
    assert!(updated.get("client_secret").is_none());
    let (status, _, body) = json_of(
        http()
            .post(provider.url("/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", service_client.as_str()),
                ("client_secret", service_secret.as_str()),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bad_update = api
        .call(
            Method::PUT,
            &format!("/clients/{service_id}"),
            Some(json!({"grant_types": ["client_credentials"]})),
        )
        .await;
    assert_eq!(bad_update.0, 400);

    // Delete: its sessions end (tokens inactive), then it is gone.
    let (status, _) = api
        .call(Method::DELETE, &format!("/clients/{service_id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        introspect_as_homeserver(&provider, &service_token).await["active"],
        false
    );
    assert_eq!(api.get(&format!("/clients/{service_id}")).await.0, 404);
    assert_eq!(
        api.call(Method::DELETE, &format!("/clients/{service_id}"), None)
            .await
            .0,
        404
    );
    let (status, _) = client_credentials(&provider, &service_client, &service_secret, "jobs").await;
    assert_eq!(status, 401);
    provider.stop().await;
}

/// Upstream providers and links: listed, fetched, links deleted.
async fn upstream(db: TestDb) {
    let provider = start_with_admin_robot(&db).await;
    let token = robot_token(&provider).await;
    let api = api(&provider, &token);
    let (_, alice) = api.post("/users", json!({"username": "alice"})).await;
    let alice_id = ulid::Ulid::from_string(alice["id"].as_str().unwrap()).unwrap();
    let (idp, link, other) = {
        let mut repo = db.storage.begin().await.unwrap();
        let idp = repo
            .upstream_providers()
            .add(provider::storage::UpstreamProviderParams {
                issuer: Some("https://idp.example.com/".into()),
                human_name: Some("Example IdP".into()),
                brand_name: None,
                client_id: "provider-at-idp".into(),
                encrypted_client_secret: Some("secret-ciphertext".into()),
                token_endpoint_auth_method:
                    provider::domain::protocol::ClientAuthMethod::ClientSecretBasic,
                scope: "openid".into(),
                settings: json!({}),
            })
            .await
            .unwrap();
        let link = repo
            .upstream_links()
            .add(idp.id, "subject-1", Some("alice@idp"))
            .await
            .unwrap();
        repo.upstream_links()
            .associate(link.id, alice_id)
            .await
            .unwrap();
        db.clock.advance(chrono::Duration::seconds(1));
        let other = repo
            .upstream_links()
            .add(idp.id, "subject-2", None)
            .await
            .unwrap();
        repo.commit().await.unwrap();
        (idp, link, other)
    };

    let (status, providers) = api.get("/upstream-providers").await;
    assert_eq!(status, 200, "{providers}");
    assert_eq!(providers[0]["id"], idp.id.to_string());
    assert_eq!(providers[0]["enabled"], true);
    assert!(providers[0].get("encrypted_client_secret").is_none());
    assert!(!providers.to_string().contains("secret-ciphertext"));
    assert_eq!(
        api.get(&format!("/upstream-providers/{}", idp.id)).await.1["human_name"],
        "Example IdP"
    );
    assert_eq!(
        api.get("/upstream-providers/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .await
            .0,
        404
    );

    let (status, links) = api.get("/upstream-links").await;
    assert_eq!(status, 200, "{links}");
    assert_eq!(links["data"].as_array().unwrap().len(), 2);
    let (_, mine) = api
        .get(&format!("/upstream-links?filter[user]={alice_id}"))
        .await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
    assert_eq!(mine["data"][0]["subject"], "subject-1");
    let (_, by_provider) = api
        .get(&format!(
            "/upstream-links?filter[provider]={}&page[first]=1",
            idp.id
        ))
        .await;
    assert_eq!(by_provider["data"][0]["id"], link.id.to_string());
    assert_eq!(by_provider["next_cursor"], link.id.to_string());
    assert_eq!(
        api.get(&format!("/upstream-links/{}", other.id)).await.1["user_id"],
        Value::Null
    );

    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/upstream-links/{}", link.id),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        api.get(&format!("/upstream-links/{}", link.id)).await.0,
        404
    );
    assert_eq!(
        api.call(
            Method::DELETE,
            &format!("/upstream-links/{}", link.id),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(api.get("/upstream-links?filter[provider]=x").await.0, 400);
    provider.stop().await;
}

/// Registration tokens: issued (the value once), listed by validity, revoked, unrevoked.
async fn registration_tokens(db: TestDb) {
    let provider = start_with_admin_robot(&db).await;
    let token = robot_token(&provider).await;
    let api = api(&provider, &token);

    let (status, limited) = api
        .post(
            "/registration-tokens",
            json!({"usage_limit": 3, "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 201, "{limited}");
    assert_eq!(limited["usage_limit"], 3);
    assert_eq!(limited["times_used"], 0);
    assert_eq!(limited["valid"], true);
    assert!(limited["token"].as_str().unwrap().len() >= 16);
    let limited_id = limited["id"].as_str().unwrap().to_owned();
    let (status, chosen) = api.call(Method::POST, "/registration-tokens", None).await;
    assert_eq!(status, 201, "{chosen}");
    assert!(chosen["usage_limit"].is_null());
    let (status, named) = api
        .post("/registration-tokens", json!({"token": "spring-2026"}))
        .await;
    assert_eq!(status, 201, "{named}");
    assert_eq!(named["token"], "spring-2026");
    assert_eq!(
        api.post("/registration-tokens", json!({"token": "spring-2026"}))
            .await
            .0,
        409
    );
    for bad in [
        json!({"usage_limit": 0}),
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"token": "with space"}),
        json!({"usage_limit": "many"}),
    ] {
        assert_eq!(
            api.post("/registration-tokens", bad.clone()).await.0,
            400,
            "{bad}"
        );
    }

    let (status, fetched) = api.get(&format!("/registration-tokens/{limited_id}")).await;
    assert_eq!(status, 200);
    assert!(fetched.get("token").is_none(), "the value is shown once");

    let (status, revoked) = api
        .post(
            &format!("/registration-tokens/{limited_id}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["valid"], false);
    assert!(revoked["revoked_at"].is_string());
    let (_, invalid) = api.get("/registration-tokens?filter[valid]=false").await;
    let ids: Vec<&str> = invalid["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [limited_id.as_str()]);
    let (_, valid) = api.get("/registration-tokens?filter[valid]=true").await;
    assert_eq!(valid["data"].as_array().unwrap().len(), 2);
    let (status, back) = api
        .post(
            &format!("/registration-tokens/{limited_id}/unrevoke"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(back["valid"], true);
    assert_eq!(
        api.post(
            "/registration-tokens/01ARZ3NDEKTSV4RRFFQ69G5FAV/revoke",
            json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        api.get("/registration-tokens?filter[valid]=yes").await.0,
        400
    );
    provider.stop().await;
}

/// Every route of the document is served (without a token: 401, not 404 or 405), the
/// document is the one at `/api/spec.json` (with the server added), and the documentation page
/// loads Swagger UI from the pinned CDN under a CSP that allows only it.
async fn document_and_routes(db: TestDb) {
    let provider = start_with_admin_robot(&db).await;
    let routes = documented_routes();
    assert_eq!(routes.len(), EXPECTED_ROUTES.len(), "{routes:#?}");
    for (method, path) in EXPECTED_ROUTES {
        let path = format!("{}{path}", admin::PREFIX);
        assert!(
            routes.iter().any(|(m, p)| m == method && *p == path),
            "{method} {path} is not in the document"
        );
    }
    let anonymous = Api {
        provider: &provider,
        token: None,
    };
    for (method, path) in &routes {
        let concrete = path
            .replace("{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{username}", "alice");
        let relative = concrete.strip_prefix(admin::PREFIX).unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, _) = anonymous.call(method.clone(), relative, None).await;
        assert_eq!(status, 401, "{method} {path}");
    }

    let response = http().get(provider.url(admin::SPEC)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut served: Value = response.json().await.unwrap();
    assert_eq!(
        served["servers"],
        json!([{"url": provider.base_url.as_str().trim_end_matches('/')}])
    );
    served.as_object_mut().unwrap().remove("servers");
    assert_eq!(served, serde_json::to_value(admin::openapi()).unwrap());

    let response = http().get(provider.url(admin::DOCS)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src https://cdn.jsdelivr.net 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = response.text().await.unwrap();
    assert!(
        page.contains("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0/swagger-ui-bundle.js")
    );
    assert!(page.contains("integrity=\"sha384-"));
    assert!(page.contains("url: 'spec.json'"));
    provider.stop().await;
}

/// Every operation of the admin API's document, as `(METHOD, path)`: what the router serves
/// (both are built from the same handlers).
fn documented_routes() -> Vec<(String, String)> {
    let document = serde_json::to_value(admin::openapi()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// The admin API's surface, relative to the prefix: the document must list exactly these.
const EXPECTED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/users/{id}"),
    ("GET", "/users/by-username/{username}"),
    ("POST", "/users/{id}/set-password"),
    ("POST", "/users/{id}/lock"),
    ("POST", "/users/{id}/unlock"),
    ("POST", "/users/{id}/deactivate"),
    ("POST", "/users/{id}/reactivate"),
    ("POST", "/users/{id}/set-admin"),
    ("POST", "/users/{id}/end-sessions"),
    ("GET", "/users/{id}/emails"),
    ("POST", "/users/{id}/emails"),
    ("GET", "/user-emails/{id}"),
    ("DELETE", "/user-emails/{id}"),
    ("POST", "/user-emails/{id}/verify"),
    ("GET", "/oauth2-sessions"),
    ("GET", "/oauth2-sessions/{id}"),
    ("POST", "/oauth2-sessions/{id}/finish"),
    ("GET", "/compat-sessions"),
    ("GET", "/compat-sessions/{id}"),
    ("POST", "/compat-sessions/{id}/finish"),
    ("GET", "/browser-sessions"),
    ("GET", "/browser-sessions/{id}"),
    ("POST", "/browser-sessions/{id}/finish"),
    ("GET", "/clients"),
    ("POST", "/clients"),
    ("GET", "/clients/{id}"),
    ("PUT", "/clients/{id}"),
    ("DELETE", "/clients/{id}"),
    ("GET", "/upstream-providers"),
    ("GET", "/upstream-providers/{id}"),
    ("GET", "/upstream-links"),
    ("GET", "/upstream-links/{id}"),
    ("DELETE", "/upstream-links/{id}"),
    ("GET", "/registration-tokens"),
    ("POST", "/registration-tokens"),
    ("GET", "/registration-tokens/{id}"),
    ("POST", "/registration-tokens/{id}/revoke"),
    ("POST", "/registration-tokens/{id}/unrevoke"),
];

/// The OpenAPI document, as a snapshot: a change to the API shows up in review.
#[test]
fn openapi_document_snapshot() {
    insta::assert_json_snapshot!("admin-openapi", admin::openapi(), {
        ".info.version" => "[version]",
    });
}

backend_tests!(
    admin_tokens,
    device_flow_admin_scope,
    users,
    emails,
    sessions,
    clients,
    upstream,
    registration_tokens,
    document_and_routes
);
