use std::time::Duration as StdDuration;

use chrono::Duration;
use provider::{
    backend_tests,
    domain::protocol::{Prompt, Prompts, ResponseMode},
    storage::{
        normalize_user_code, AuthorizationGrant, BoxRepository, Client, Consent, DeviceCodeGrant,
        DeviceCodeGrantState, NewAuthorizationGrant, NewDeviceCodeGrant, NewOAuth2Session,
        StorageError, TokenHash, User,
    },
    test_harness::TestDb,
};
use ulid::Ulid;

use crate::fixtures::{
    assert_invalid, browser_session, hash, session_for, user_and_client, write_by_hand,
};

/// A browser session of the user and an OAuth 2.0 session started from it.
async fn approval(repo: &mut BoxRepository, user: &User, client: &Client) -> (Ulid, Ulid) {
    let browser = browser_session(repo, user).await;
    let session = repo
        .oauth2_sessions()
        .add(NewOAuth2Session {
            browser_session_id: Some(browser),
            scope: "openid",
            ..session_for(user, client)
        })
        .await
        .unwrap()
        .id;
    (browser, session)
}

fn request(client: &Client, code: Option<TokenHash>) -> NewAuthorizationGrant<'static> {
    NewAuthorizationGrant {
        client_id: client.id,
        redirect_uri: "https://app.example.org/cb",
        scope: "openid urn:matrix:client:api:*",
        state: None,
        nonce: None,
        response_mode: ResponseMode::Query,
        code_challenge: None,
        code_challenge_method: None,
        max_age: None,
        prompt: Prompts::NONE_GIVEN,
        login_hint: None,
        code_hash: code,
    }
}

async fn authorization_grants(db: TestDb) {
    let t0 = db.clock.now_db();
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let grant = repo
        .authorization_grants()
        .add(NewAuthorizationGrant {
            client_id: client.id,
            redirect_uri: "http://127.0.0.1:4321/cb",
            scope: "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ",
            state: Some("st4te"),
            nonce: Some("n0nce"),
            response_mode: ResponseMode::Fragment,
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            code_challenge_method: Some("S256"),
            max_age: Some(3600),
            prompt: [Prompt::Login, Prompt::Consent].into_iter().collect(),
            login_hint: Some("mxid:@alice:example.org"),
            code_hash: Some(hash(1)),
        })
        .await
        .unwrap();
    assert_eq!(
        grant,
        AuthorizationGrant {
            id: grant.id,
            client_id: client.id,
            redirect_uri: "http://127.0.0.1:4321/cb".to_owned(),
            scope: "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ".to_owned(),
            state: Some("st4te".to_owned()),
            nonce: Some("n0nce".to_owned()),
            response_mode: ResponseMode::Fragment,
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()),
            code_challenge_method: Some("S256".to_owned()),
            max_age: Some(3600),
            prompt: [Prompt::Login, Prompt::Consent].into_iter().collect(),
            login_hint: Some("mxid:@alice:example.org".to_owned()),
            code_hash: Some(hash(1)),
            created_at: t0,
            browser_session_id: None,
            session_id: None,
            fulfilled_at: None,
            exchanged_at: None,
            cancelled_at: None,
        }
    );
    // A code hash is unique (the transaction stays usable); grants without a code are many.
    assert!(matches!(
        repo.authorization_grants()
            .add(request(&client, Some(hash(1))))
            .await,
        Err(StorageError::Conflict("authorization code"))
    ));
    let no_code_1 = repo
        .authorization_grants()
        .add(request(&client, None))
        .await
        .unwrap();
    let no_code_2 = repo
        .authorization_grants()
        .add(request(&client, None))
        .await
        .unwrap();
    assert_eq!(no_code_1.code_hash, None);
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.authorization_grants().lookup(grant.id).await.unwrap(),
        Some(grant.clone())
    );
    assert_eq!(
        repo.authorization_grants()
            .lookup(no_code_2.id)
            .await
            .unwrap(),
        Some(no_code_2.clone())
    );
    assert_eq!(
        repo.authorization_grants()
            .find_by_code_hash(&hash(1))
            .await
            .unwrap(),
        Some(grant.clone())
    );
    assert_eq!(
        repo.authorization_grants()
            .find_by_code_hash(&hash(9))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.authorization_grants()
            .lookup(Ulid::new())
            .await
            .unwrap(),
        None
    );

    // No exchange before the user approved.
    assert!(!repo
        .authorization_grants()
        .exchange(grant.id)
        .await
        .unwrap());

    db.clock.advance(Duration::seconds(20));
    let fulfilled_at = db.clock.now_db();
    let (browser, session) = approval(&mut repo, &alice, &client).await;
    assert!(repo
        .authorization_grants()
        .fulfill(grant.id, browser, session, &hash(1))
        .await
        .unwrap());
    // Approving twice loses, and a fulfilled grant can't be cancelled.
    assert!(!repo
        .authorization_grants()
        .fulfill(grant.id, browser, session, &hash(1))
        .await
        .unwrap());
    assert!(!repo.authorization_grants().cancel(grant.id).await.unwrap());

    // RFC 6749 §4.1.2: the code is single use.
    db.clock.advance(Duration::seconds(5));
    let exchanged_at = db.clock.now_db();
    assert!(repo
        .authorization_grants()
        .exchange(grant.id)
        .await
        .unwrap());
    db.clock.advance(Duration::seconds(5));
    assert!(!repo
        .authorization_grants()
        .exchange(grant.id)
        .await
        .unwrap());
    assert_eq!(
        repo.authorization_grants()
            .find_by_code_hash(&hash(1))
            .await
            .unwrap(),
        Some(AuthorizationGrant {
            browser_session_id: Some(browser),
            session_id: Some(session),
            fulfilled_at: Some(fulfilled_at),
            exchanged_at: Some(exchanged_at),
            ..grant.clone()
        })
    );

    // Cancelling: once, and only a pending grant; a cancelled grant can't go further.
    let cancelled_at = db.clock.now_db();
    assert!(repo
        .authorization_grants()
        .cancel(no_code_1.id)
        .await
        .unwrap());
    db.clock.advance(Duration::seconds(1));
    assert!(!repo
        .authorization_grants()
        .cancel(no_code_1.id)
        .await
        .unwrap());
    assert!(!repo
        .authorization_grants()
        .fulfill(no_code_1.id, browser, session, &hash(9))
        .await
        .unwrap());
    assert!(!repo
        .authorization_grants()
        .exchange(no_code_1.id)
        .await
        .unwrap());
    assert_eq!(
        repo.authorization_grants()
            .lookup(no_code_1.id)
            .await
            .unwrap(),
        Some(AuthorizationGrant {
            cancelled_at: Some(cancelled_at),
            ..no_code_1.clone()
        })
    );

    // A grant made without a code gets the one made at approval.
    assert_eq!(
        repo.authorization_grants()
            .find_by_code_hash(&hash(7))
            .await
            .unwrap(),
        None
    );
    assert!(repo
        .authorization_grants()
        .fulfill(no_code_2.id, browser, session, &hash(7))
        .await
        .unwrap());
    let found = repo
        .authorization_grants()
        .find_by_code_hash(&hash(7))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, no_code_2.id);
    assert_eq!(found.code_hash, Some(hash(7)));

    for missing in [
        repo.authorization_grants()
            .fulfill(Ulid::new(), browser, session, &hash(8))
            .await,
        repo.authorization_grants().exchange(Ulid::new()).await,
        repo.authorization_grants().cancel(Ulid::new()).await,
    ] {
        assert!(matches!(
            missing,
            Err(StorageError::NotFound("authorization grant"))
        ));
    }
    repo.commit().await.unwrap();
}

/// Two token requests with the same code in concurrent transactions: exactly one redeems it.
/// A grant's `response_mode` and `prompt` are read back typed (issue 12, item 4: parsed at the
/// edge, carried typed): a stored value their parsers refuse (written by hand, or by an older
/// or newer version) is a data error when read, never a silent default such as answering in
/// the query instead of the form post the client asked for.
async fn unknown_stored_grant_values_are_invalid(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "alice").await;
    let grant = repo
        .authorization_grants()
        .add(request(&client, None))
        .await
        .unwrap();
    repo.commit().await.unwrap();
    let id = grant.id;
    // (response_mode, prompt, what the error names)
    for (mode, prompt, refused) in [
        ("'web_message'", "NULL", "response_mode"),
        ("'query'", "'consent popup'", "prompt"),
        ("'query'", "'none login'", "prompt"),
    ] {
        write_by_hand(
            &db,
            &format!(
                "UPDATE oauth2_authorization_grants SET response_mode = {mode}, prompt = {prompt}"
            ),
        )
        .await;
        let mut repo = db.storage.reader().await.unwrap();
        assert_invalid(repo.authorization_grants().lookup(id).await, refused);
    }
    // Back to values the parsers take: read back typed.
    write_by_hand(
        &db,
        "UPDATE oauth2_authorization_grants SET response_mode = 'form_post', \
         prompt = 'consent login'",
    )
    .await;
    let mut repo = db.storage.reader().await.unwrap();
    let read = repo
        .authorization_grants()
        .lookup(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.response_mode, ResponseMode::FormPost);
    assert_eq!(
        read.prompt,
        [Prompt::Login, Prompt::Consent].into_iter().collect()
    );
}

async fn concurrent_code_exchange(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let grant = repo
        .authorization_grants()
        .add(request(&client, Some(hash(1))))
        .await
        .unwrap();
    let (browser, session) = approval(&mut repo, &alice, &client).await;
    assert!(repo
        .authorization_grants()
        .fulfill(grant.id, browser, session, &hash(1))
        .await
        .unwrap());
    repo.commit().await.unwrap();

    let mut first = db.storage.begin().await.unwrap();
    assert!(first
        .authorization_grants()
        .exchange(grant.id)
        .await
        .unwrap());
    let storage = db.storage.clone();
    let grant_id = grant.id;
    let racer = tokio::spawn(async move {
        let mut second = storage.begin().await.unwrap();
        second
            .authorization_grants()
            .exchange(grant_id)
            .await
            .unwrap()
    });
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    first.commit().await.unwrap();
    assert!(!racer.await.unwrap());
}

async fn consents(db: TestDb) {
    let t0 = db.clock.now_db();
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let (bob, other_client) = user_and_client(&mut repo, "bob").await;

    // Stored sorted and de-duplicated; the same set again is not an error.
    assert!(repo
        .consents()
        .record(
            alice.id,
            client.id,
            "urn:matrix:client:api:*  openid openid"
        )
        .await
        .unwrap());
    db.clock.advance(Duration::seconds(1));
    assert!(!repo
        .consents()
        .record(alice.id, client.id, "openid urn:matrix:client:api:*")
        .await
        .unwrap());
    assert!(repo
        .consents()
        .record(alice.id, client.id, "email")
        .await
        .unwrap());
    let consents = repo.consents().list(alice.id, client.id).await.unwrap();
    assert_eq!(
        consents,
        vec![
            Consent {
                id: consents[0].id,
                user_id: alice.id,
                client_id: client.id,
                scope: "email".to_owned(),
                created_at: db.clock.now_db(),
            },
            Consent {
                id: consents[1].id,
                user_id: alice.id,
                client_id: client.id,
                scope: "openid urn:matrix:client:api:*".to_owned(),
                created_at: t0,
            },
        ]
    );

    let has = |scope: &'static str| (alice.id, client.id, scope);
    for ((user, client_id, scope), expected) in [
        // The same set, in any order, or a subset of one recorded set.
        (has("openid urn:matrix:client:api:*"), true),
        (has("urn:matrix:client:api:* openid"), true),
        (has("openid"), true),
        (has("email email"), true),
        (has(""), true),
        // Tokens are not pooled across separate consents, and unknown tokens are not covered.
        (has("openid email"), false),
        (has("openid urn:synapse:admin:*"), false),
        // Other users and other clients have their own consents.
        ((bob.id, client.id, "openid"), false),
        ((alice.id, other_client.id, "openid"), false),
        ((bob.id, other_client.id, ""), false),
    ] {
        assert_eq!(
            repo.consents()
                .has_consent(user, client_id, scope)
                .await
                .unwrap(),
            expected,
            "{scope:?}"
        );
    }

    repo.consents()
        .record(bob.id, client.id, "openid")
        .await
        .unwrap();
    assert_eq!(
        repo.consents()
            .revoke_all(alice.id, client.id)
            .await
            .unwrap(),
        2
    );
    assert!(repo
        .consents()
        .list(alice.id, client.id)
        .await
        .unwrap()
        .is_empty());
    assert!(!repo
        .consents()
        .has_consent(alice.id, client.id, "openid")
        .await
        .unwrap());
    assert!(repo
        .consents()
        .has_consent(bob.id, client.id, "openid")
        .await
        .unwrap());
    assert_eq!(
        repo.consents()
            .revoke_all(alice.id, client.id)
            .await
            .unwrap(),
        0
    );
    repo.commit().await.unwrap();
}

fn device_request(client: &Client, n: u8, user_code: &'static str) -> NewDeviceCodeGrant<'static> {
    NewDeviceCodeGrant {
        client_id: client.id,
        scope: "openid urn:matrix:client:api:*",
        device_code_hash: hash(n),
        user_code,
        expires_at: chrono::DateTime::UNIX_EPOCH,
        ip_address: None,
        user_agent: None,
    }
}

async fn device_code_grants(db: TestDb) {
    let t0 = db.clock.now_db();
    let expires = t0 + Duration::minutes(10);
    assert_eq!(normalize_user_code(" bcdf-ghjk "), "BCDFGHJK");

    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "alice").await;
    let grant = repo
        .device_code_grants()
        .add(NewDeviceCodeGrant {
            client_id: client.id,
            scope: "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ",
            device_code_hash: hash(1),
            user_code: "bcdf-ghjk",
            // Kept at database precision.
            expires_at: expires + Duration::microseconds(999),
            ip_address: Some("192.0.2.1"),
            user_agent: Some("Element X"),
        })
        .await
        .unwrap();
    assert_eq!(
        grant,
        DeviceCodeGrant {
            id: grant.id,
            client_id: client.id,
            scope: "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ".to_owned(),
            device_code_hash: hash(1),
            user_code: "BCDFGHJK".to_owned(),
            created_at: t0,
            expires_at: expires,
            last_polled_at: None,
            browser_session_id: None,
            fulfilled_at: None,
            rejected_at: None,
            session_id: None,
            exchanged_at: None,
            ip_address: Some("192.0.2.1".to_owned()),
            user_agent: Some("Element X".to_owned()),
        }
    );
    // Both the device code and the user code are unique (the transaction stays usable).
    for taken in [
        device_request(&client, 1, "XXXXXXXX"),
        device_request(&client, 2, "BCDF GHJK"),
    ] {
        assert!(matches!(
            repo.device_code_grants().add(taken).await,
            Err(StorageError::Conflict("device code grant"))
        ));
    }
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(
        repo.device_code_grants().lookup(grant.id).await.unwrap(),
        Some(grant.clone())
    );
    assert_eq!(
        repo.device_code_grants()
            .find_by_device_code_hash(&hash(1))
            .await
            .unwrap(),
        Some(grant.clone())
    );
    // RFC 8628 §6.1: case and separators do not matter.
    assert_eq!(
        repo.device_code_grants()
            .find_by_user_code("bcdfghjk")
            .await
            .unwrap(),
        Some(grant.clone())
    );
    assert_eq!(
        repo.device_code_grants()
            .find_by_user_code("BCDF-GHJL")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.device_code_grants()
            .find_by_device_code_hash(&hash(9))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.device_code_grants().lookup(Ulid::new()).await.unwrap(),
        None
    );

    // RFC 8628 §3.5 slow_down: each poll returns the previous poll's time.
    assert_eq!(
        repo.device_code_grants()
            .record_poll(grant.id)
            .await
            .unwrap(),
        None
    );
    let first_poll = db.clock.now_db();
    db.clock.advance(Duration::seconds(3));
    assert_eq!(
        repo.device_code_grants()
            .record_poll(grant.id)
            .await
            .unwrap(),
        Some(first_poll)
    );
    assert_eq!(
        repo.device_code_grants()
            .lookup(grant.id)
            .await
            .unwrap()
            .unwrap()
            .last_polled_at,
        Some(db.clock.now_db())
    );
    assert!(matches!(
        repo.device_code_grants().record_poll(Ulid::new()).await,
        Err(StorageError::NotFound("device code grant"))
    ));
    repo.commit().await.unwrap();
}

async fn device_code_grant_steps(db: TestDb) {
    let t0 = db.clock.now_db();
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let (browser, session) = approval(&mut repo, &alice, &client).await;
    let add = |n: u8, code: &'static str| NewDeviceCodeGrant {
        expires_at: t0 + Duration::minutes(10),
        ..device_request(&client, n, code)
    };
    let approved = repo.device_code_grants().add(add(1, "AAAA")).await.unwrap();
    let denied = repo.device_code_grants().add(add(2, "BBBB")).await.unwrap();
    let late = repo.device_code_grants().add(add(3, "CCCC")).await.unwrap();
    let slow = repo.device_code_grants().add(add(4, "DDDD")).await.unwrap();
    assert_eq!(approved.state(t0), DeviceCodeGrantState::Pending);
    // Nothing to exchange before the user approved.
    assert!(!repo
        .device_code_grants()
        .exchange(approved.id, session)
        .await
        .unwrap());

    // RFC 8628 §3.3: the user approves once; an approved request can't be denied.
    db.clock.advance(Duration::minutes(1));
    let fulfilled_at = db.clock.now_db();
    assert!(repo
        .device_code_grants()
        .fulfill(approved.id, browser)
        .await
        .unwrap());
    assert!(!repo
        .device_code_grants()
        .fulfill(approved.id, browser)
        .await
        .unwrap());
    assert!(!repo
        .device_code_grants()
        .reject(approved.id, browser)
        .await
        .unwrap());
    let fulfilled = DeviceCodeGrant {
        browser_session_id: Some(browser),
        fulfilled_at: Some(fulfilled_at),
        ..approved.clone()
    };
    assert_eq!(
        repo.device_code_grants().lookup(approved.id).await.unwrap(),
        Some(fulfilled.clone())
    );
    assert_eq!(
        fulfilled.state(db.clock.now_db()),
        DeviceCodeGrantState::Fulfilled
    );

    // RFC 8628 §3.5: the device code gets tokens once.
    db.clock.advance(Duration::seconds(5));
    let exchanged_at = db.clock.now_db();
    assert!(repo
        .device_code_grants()
        .exchange(approved.id, session)
        .await
        .unwrap());
    db.clock.advance(Duration::seconds(5));
    assert!(!repo
        .device_code_grants()
        .exchange(approved.id, session)
        .await
        .unwrap());
    let exchanged = repo
        .device_code_grants()
        .lookup(approved.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        exchanged,
        DeviceCodeGrant {
            session_id: Some(session),
            exchanged_at: Some(exchanged_at),
            ..fulfilled
        }
    );
    assert_eq!(
        exchanged.state(db.clock.now_db()),
        DeviceCodeGrantState::Exchanged
    );

    // Denied (access_denied): once, and then it can't be approved or exchanged.
    let rejected_at = db.clock.now_db();
    assert!(repo
        .device_code_grants()
        .reject(denied.id, browser)
        .await
        .unwrap());
    assert!(!repo
        .device_code_grants()
        .reject(denied.id, browser)
        .await
        .unwrap());
    assert!(!repo
        .device_code_grants()
        .fulfill(denied.id, browser)
        .await
        .unwrap());
    assert!(!repo
        .device_code_grants()
        .exchange(denied.id, session)
        .await
        .unwrap());
    let rejected = repo
        .device_code_grants()
        .lookup(denied.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rejected,
        DeviceCodeGrant {
            browser_session_id: Some(browser),
            rejected_at: Some(rejected_at),
            ..denied
        }
    );
    assert_eq!(
        rejected.state(db.clock.now_db()),
        DeviceCodeGrantState::Rejected
    );

    // Approved in time, polled after expiry: expired_token, no tokens.
    assert!(repo
        .device_code_grants()
        .fulfill(slow.id, browser)
        .await
        .unwrap());

    // Expired from `expires_at` on: neither approval nor exchange.
    db.clock.advance(Duration::minutes(10));
    assert_eq!(late.state(db.clock.now_db()), DeviceCodeGrantState::Expired);
    assert_eq!(
        late.state(t0 + Duration::minutes(10) - Duration::milliseconds(1)),
        DeviceCodeGrantState::Pending
    );
    assert!(!repo
        .device_code_grants()
        .fulfill(late.id, browser)
        .await
        .unwrap());
    assert!(!repo
        .device_code_grants()
        .exchange(slow.id, session)
        .await
        .unwrap());
    let slow = repo
        .device_code_grants()
        .lookup(slow.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(slow.exchanged_at, None);
    assert_eq!(slow.state(db.clock.now_db()), DeviceCodeGrantState::Expired);
    // An expired request can still be denied (it changes nothing for the device).
    assert!(repo
        .device_code_grants()
        .reject(late.id, browser)
        .await
        .unwrap());

    for missing in [
        repo.device_code_grants()
            .fulfill(Ulid::new(), browser)
            .await,
        repo.device_code_grants().reject(Ulid::new(), browser).await,
        repo.device_code_grants()
            .exchange(Ulid::new(), session)
            .await,
    ] {
        assert!(matches!(
            missing,
            Err(StorageError::NotFound("device code grant"))
        ));
    }
    repo.commit().await.unwrap();
}

backend_tests!(
    authorization_grants,
    unknown_stored_grant_values_are_invalid,
    concurrent_code_exchange,
    consents,
    device_code_grants,
    device_code_grant_steps,
);
