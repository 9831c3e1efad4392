//! The batched reads of the hot paths (`Storage::find_active_access_token`,
//! `Storage::find_client`, `Storage::peek_rate_limit`, and the repositories' batched
//! statements behind them): each waiter gets its own answer, misses included, whatever else
//! shares its batch; a revocation is seen by the next read; a batch whose kept connection broke
//! runs again on a pooled one.

use chrono::Duration;
use provider::{
    backend_tests,
    core::rate_limit::Quota,
    storage::{ActiveAccessToken, ClientWithBucketKey, Storage, TokenHash, TokenRead},
    test_harness::TestDb,
};

use crate::fixtures::{hash, oauth2_session, session_for, user_and_client};

/// Runs the futures concurrently (each a task, as concurrent requests are) and returns their
/// outputs in order.
async fn join_all<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("the task finished"));
    }
    out
}

/// The scope of the session an active token belongs to: what tells the tokens apart.
fn scope(found: &Option<ActiveAccessToken>) -> Option<&str> {
    found.as_ref().map(|a| a.session.scope.as_str())
}

/// Tokens: 1 and 2 active in sessions of their own (scopes "one", "two"), 3 revoked, 4 expiring
/// in a minute (scope "four"), 9 unknown; refresh token 11 in the session of 1, 12 revoked in
/// the session of 2. Clients `client-alice` and `client-bob`; bucket "b" spent once.
async fn setup(db: &TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    user_and_client(&mut repo, "bob").await;
    let now = db.storage.entropy().clock.now();
    for (n, scope, expires) in [
        (1, "one", None),
        (2, "two", None),
        (3, "three", None),
        (4, "four", Some(now + Duration::seconds(60))),
    ] {
        let session = repo
            .oauth2_sessions()
            .add(provider::storage::NewOAuth2Session {
                scope,
                ..session_for(&alice, &client)
            })
            .await
            .unwrap();
        let token = repo
            .access_tokens()
            .add(session.id, &hash(n), expires)
            .await
            .unwrap();
        if n == 3 {
            assert!(repo.access_tokens().revoke(token.id).await.unwrap());
        }
        if n <= 2 {
            let refresh = repo
                .refresh_tokens()
                .add(session.id, &hash(10 + n), Some(token.id))
                .await
                .unwrap();
            if n == 2 {
                assert!(repo.refresh_tokens().revoke(refresh.id).await.unwrap());
            }
        }
    }
    let quota = Quota::new(5, 1.0).unwrap();
    repo.rate_limits().spend("b", quota).await.unwrap();
    repo.commit().await.unwrap();
}

/// One batched statement of each kind, its keys mixed: hits, misses, the same key twice, and
/// one token asked at two times (active at the first, expired at the second). Each entry
/// answers its own key, in order.
async fn a_mixed_batch_answers_each_key(db: TestDb) {
    setup(&db).await;
    let now = db.storage.entropy().clock.now();
    let later = now + Duration::seconds(61);
    let mut repo = db.storage.reader().await.unwrap();

    let keys: Vec<(TokenHash, _)> = vec![
        (hash(9), now),
        (hash(2), now),
        (hash(3), now),
        (hash(1), now),
        (hash(4), later),
        (hash(2), now),
        (hash(4), now),
    ];
    let found = repo
        .batch_reads()
        .find_active_access_tokens(&keys)
        .await
        .unwrap();
    let scopes: Vec<_> = found.iter().map(scope).collect();
    assert_eq!(
        scopes,
        [
            None,
            Some("two"),
            None,
            Some("one"),
            None,
            Some("two"),
            Some("four")
        ]
    );
    assert_eq!(found[1].as_ref().unwrap().client_id, "client-alice");
    assert_eq!(
        found[1].as_ref().unwrap().user.as_ref().unwrap().username,
        "alice"
    );
    for (key, found) in keys.iter().zip(&found) {
        // The same as the lookup of one token.
        let one = repo
            .access_tokens()
            .find_active_by_hash(&key.0, key.1)
            .await
            .unwrap();
        assert_eq!(&one, found);
    }

    let ids: Vec<String> = ["client-bob", "nobody", "client-alice", "client-bob"]
        .map(str::to_owned)
        .to_vec();
    let clients = repo.batch_reads().find_clients(&ids).await.unwrap();
    let names: Vec<_> = clients
        .iter()
        .map(|c| c.as_ref().map(|c| c.client_id.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            Some("client-bob"),
            None,
            Some("client-alice"),
            Some("client-bob")
        ]
    );

    let keys: Vec<String> = ["a", "b", "c", "b"].map(str::to_owned).to_vec();
    let tats = repo.batch_reads().peek_rate_limits(&keys).await.unwrap();
    let b = repo.rate_limits().peek("b").await.unwrap();
    assert!(b.is_some());
    assert_eq!(tats, [None, b, None, b]);

    // Clients with buckets: every pairing of a client (or none) with a bucket (or none), with a
    // token (active, revoked, unknown, expired at the key's time) or none.
    let keys: Vec<ClientWithBucketKey> = [
        ("client-bob", "b", Some((1, now))),
        ("nobody", "b", None),
        ("client-alice", "a", Some((3, now))),
        ("nobody", "a", Some((2, now))),
        ("client-bob", "b", Some((9, now))),
        ("client-alice", "b", Some((4, later))),
        ("client-alice", "b", Some((4, now))),
    ]
    .map(|(c, k, t)| ClientWithBucketKey {
        client_id: c.to_owned(),
        bucket: k.to_owned(),
        token: t.map(|(n, at)| TokenRead::Access(hash(n), at)),
    })
    .to_vec();
    let found = repo
        .batch_reads()
        .find_clients_with_buckets(&keys)
        .await
        .unwrap();
    let triples: Vec<_> = found
        .iter()
        .map(|f| {
            let f = f.as_ref().expect("every key has its row");
            (
                f.client.as_ref().map(|c| c.client_id.as_str()),
                f.bucket_tat,
                scope(&f.token),
            )
        })
        .collect();
    assert_eq!(
        triples,
        [
            (Some("client-bob"), b, Some("one")),
            (None, b, None),
            (Some("client-alice"), None, None),
            (None, None, Some("two")),
            (Some("client-bob"), b, None),
            (Some("client-alice"), b, None),
            (Some("client-alice"), b, Some("four")),
        ]
    );
    // The same client and token as the lookups of one.
    let bob = repo
        .clients()
        .find_by_client_id("client-bob")
        .await
        .unwrap();
    assert_eq!(found[0].as_ref().unwrap().client, bob);
    for (key, found) in keys.iter().zip(&found) {
        let one = match &key.token {
            Some(TokenRead::Access(hash, at)) => repo
                .access_tokens()
                .find_active_by_hash(hash, *at)
                .await
                .unwrap(),
            _ => None,
        };
        assert_eq!(found.as_ref().unwrap().token, one);
        assert_eq!(found.as_ref().unwrap().refresh, None);
    }

    // Clients with refresh tokens: a refresh token whatever its state (revoked too: the grant
    // decides on it), unknown, an access token's hash (not read by this kind), or none.
    let keys: Vec<ClientWithBucketKey> = [
        ("client-bob", "b", Some(TokenRead::Refresh(hash(11)))),
        ("nobody", "a", Some(TokenRead::Refresh(hash(12)))),
        ("client-alice", "a", Some(TokenRead::Refresh(hash(9)))),
        ("client-alice", "b", Some(TokenRead::Access(hash(1), now))),
        ("client-bob", "a", None),
        ("nobody", "b", Some(TokenRead::Refresh(hash(11)))),
    ]
    .map(|(c, k, token)| ClientWithBucketKey {
        client_id: c.to_owned(),
        bucket: k.to_owned(),
        token,
    })
    .to_vec();
    let found = repo
        .batch_reads()
        .find_clients_with_refresh_tokens(&keys)
        .await
        .unwrap();
    let rows: Vec<_> = found
        .iter()
        .map(|f| {
            let f = f.as_ref().expect("every key has its row");
            assert_eq!(f.token, None);
            (
                f.client.as_ref().map(|c| c.client_id.as_str()),
                f.bucket_tat,
                f.refresh.as_ref().map(|r| r.session.scope.as_str()),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (Some("client-bob"), b, Some("one")),
            (None, None, Some("two")),
            (Some("client-alice"), None, None),
            (Some("client-alice"), b, None),
            (Some("client-bob"), None, None),
            (None, b, Some("one")),
        ]
    );
    for (key, found) in keys.iter().zip(&found) {
        let one = match &key.token {
            Some(TokenRead::Refresh(hash)) => {
                repo.refresh_tokens().find_presented(hash).await.unwrap()
            }
            _ => None,
        };
        assert_eq!(found.as_ref().unwrap().refresh, one);
    }
    let revoked = found[1].as_ref().unwrap().refresh.as_ref().unwrap();
    assert!(revoked.token.revoked_at.is_some() && revoked.user_active);
    assert_eq!(
        repo.batch_reads()
            .find_clients_with_refresh_tokens(&[])
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        repo.batch_reads()
            .find_clients_with_buckets(&[])
            .await
            .unwrap(),
        []
    );

    assert_eq!(
        repo.batch_reads()
            .find_active_access_tokens(&[])
            .await
            .unwrap(),
        []
    );
}

/// Many concurrent lookups of every kind through the queues (so batches hold several requests
/// and several kinds of answers): each request gets the answer to its own key.
async fn concurrent_lookups_get_their_own_answers(db: TestDb) {
    setup(&db).await;
    let now = db.storage.entropy().clock.now();
    let tokens = join_all((0..300u32).map(|i| {
        let storage = db.storage.clone();
        let n = [1, 2, 3, 4, 9][i as usize % 5];
        async move {
            let found = storage.find_active_access_token(hash(n), now).await;
            (n, found.unwrap().map(|a| a.session.scope))
        }
    }))
    .await;
    for (n, scope) in tokens {
        let expected = match n {
            1 => Some("one"),
            2 => Some("two"),
            4 => Some("four"),
            _ => None,
        };
        assert_eq!(scope.as_deref(), expected, "token {n}");
    }

    let clients = join_all((0..200u32).map(|i| {
        let storage = db.storage.clone();
        let id = ["client-alice", "client-bob", "nobody"][i as usize % 3];
        async move { (id, storage.find_client(id).await.unwrap()) }
    }))
    .await;
    for (id, client) in clients {
        let expected = (id != "nobody").then_some(id);
        assert_eq!(client.as_ref().map(|c| c.client_id.as_str()), expected);
    }

    let b = db
        .storage
        .reader()
        .await
        .unwrap()
        .rate_limits()
        .peek("b")
        .await
        .unwrap();
    let peeks = join_all((0..200u32).map(|i| {
        let storage = db.storage.clone();
        let key = ["a", "b"][i as usize % 2];
        async move { (key, storage.peek_rate_limit(key).await.unwrap()) }
    }))
    .await;
    for (key, tat) in peeks {
        assert_eq!(tat, if key == "b" { b } else { None }, "bucket {key}");
    }
    let triples = join_all((0..300u32).map(|i| {
        let storage = db.storage.clone();
        // Access tokens 1–9 and refresh tokens 11–12, through both kinds' queues at once.
        let (id, key, token) = [
            ("client-alice", "a", None),
            ("client-bob", "b", Some(1)),
            ("nobody", "b", Some(9)),
            ("client-alice", "b", Some(2)),
            ("client-bob", "a", Some(3)),
            ("client-bob", "b", Some(11)),
            ("nobody", "a", Some(12)),
        ][i as usize % 7];
        async move {
            let read = token.map(|n| match n {
                11.. => TokenRead::Refresh(hash(n)),
                _ => TokenRead::Access(hash(n), now),
            });
            let found = storage
                .find_client_with_bucket(ClientWithBucketKey {
                    client_id: id.to_owned(),
                    bucket: key.to_owned(),
                    token: read,
                })
                .await
                .unwrap();
            (id, key, token, found)
        }
    }))
    .await;
    for (id, key, token, found) in triples {
        let wanted = (id != "nobody").then_some(id);
        assert_eq!(found.client.as_ref().map(|c| c.client_id.as_str()), wanted);
        assert_eq!(
            found.bucket_tat,
            if key == "b" { b } else { None },
            "bucket {key}"
        );
        let scope = found
            .token
            .map(|a| a.session.scope)
            .or(found.refresh.map(|r| r.session.scope));
        let expected = match token {
            Some(1 | 11) => Some("one"),
            Some(2 | 12) => Some("two"),
            _ => None,
        };
        assert_eq!(scope.as_deref(), expected, "token {token:?}");
    }
}

/// Nothing read is kept: a token revoked (or its session finished) reads inactive on the very
/// next lookup, batched or not.
async fn a_revocation_is_seen_at_once(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (alice, client) = user_and_client(&mut repo, "alice").await;
    let session = oauth2_session(&mut repo, &alice, &client).await;
    let token = repo
        .access_tokens()
        .add(session.id, &hash(1), None)
        .await
        .unwrap();
    let other = oauth2_session(&mut repo, &alice, &client).await;
    repo.access_tokens()
        .add(other.id, &hash(2), None)
        .await
        .unwrap();
    repo.commit().await.unwrap();
    let now = db.storage.entropy().clock.now();
    let active = |storage: &Storage, n| {
        let storage = storage.clone();
        async move {
            storage
                .find_active_access_token(hash(n), now)
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(active(&db.storage, 1).await);
    assert!(active(&db.storage, 2).await);

    let mut repo = db.storage.begin().await.unwrap();
    assert!(repo.access_tokens().revoke(token.id).await.unwrap());
    repo.commit().await.unwrap();
    assert!(!active(&db.storage, 1).await, "revoked: inactive at once");

    let mut repo = db.storage.begin().await.unwrap();
    assert!(repo.oauth2_sessions().finish(other.id).await.unwrap());
    repo.commit().await.unwrap();
    assert!(
        !active(&db.storage, 2).await,
        "session over: inactive at once"
    );
}

backend_tests!(
    a_mixed_batch_answers_each_key,
    concurrent_lookups_get_their_own_answers,
    a_revocation_is_seen_at_once,
);

/// Client authentication's read of `client-bob` with bucket "b".
fn bob_key() -> ClientWithBucketKey {
    ClientWithBucketKey {
        client_id: "client-bob".to_owned(),
        bucket: "b".to_owned(),
        token: None,
    }
}

/// PostgreSQL: the kept connections the batches ran on are cut (as by a server restart); the
/// next batched reads are answered all the same, run again on pooled connections, without an
/// error. (SQLite has no server whose connections could be cut.)
#[tokio::test]
async fn a_broken_batch_connection_is_retried_on_the_pool() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    setup(&db).await;
    let now = db.storage.entropy().clock.now();
    // Each kind's readers take kept connections.
    let warm = join_all((0..32u32).map(|_| {
        let storage = db.storage.clone();
        async move {
            storage
                .find_active_access_token(hash(1), now)
                .await
                .unwrap();
            storage.find_client("client-bob").await.unwrap();
            storage.peek_rate_limit("b").await.unwrap();
            storage.find_client_with_bucket(bob_key()).await.unwrap();
        }
    }))
    .await;
    assert_eq!(warm.len(), 32);

    // Every other connection of this database is cut, the kept ones included.
    db.storage
        .execute_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();

    for _ in 0..4 {
        let found = db.storage.find_active_access_token(hash(1), now).await;
        assert_eq!(scope(&found.unwrap()), Some("one"));
        let client = db.storage.find_client("client-bob").await.unwrap();
        assert_eq!(client.unwrap().client_id, "client-bob");
        assert!(db.storage.peek_rate_limit("b").await.unwrap().is_some());
        let found = db.storage.find_client_with_bucket(bob_key()).await.unwrap();
        assert_eq!(found.client.unwrap().client_id, "client-bob");
        assert!(found.bucket_tat.is_some());
    }
}

/// The rows a plan read (`EXPLAIN (ANALYZE, FORMAT JSON)`): for every node, the rows it
/// returned and the rows its filters threw away, times its loops.
fn rows_read(plan: &serde_json::Value) -> f64 {
    let count = |key: &str| {
        plan.get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let own = count("Actual Loops")
        * (count("Actual Rows")
            + count("Rows Removed by Filter")
            + count("Rows Removed by Join Filter")
            + count("Rows Removed by Index Recheck"));
    let children = plan
        .get("Plans")
        .and_then(serde_json::Value::as_array)
        .map_or(0.0, |plans| plans.iter().map(rows_read).sum());
    own + children
}

/// PostgreSQL plans a prepared statement once for its later executions (the generic plan),
/// from what it knows of the tables then. The batched statements, planned while the tables are
/// empty and run once they hold thousands of rows, still read a few rows per key, never a
/// table: the plain join they replaced was planned on empty tables as a nested loop of two
/// sequential scans, and one introspection took 229 s on 80,000 tokens (issue 16).
#[tokio::test]
async fn batched_statements_planned_on_empty_tables_read_per_key() {
    use sqlx::Connection as _;

    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let statements = [
        (
            "tokens",
            "bytea[], timestamptz[]",
            provider::storage::ACTIVE_ACCESS_TOKENS_SQL,
            "ARRAY['\\x0001'::bytea, '\\x0002', '\\x00'], ARRAY[now(), now(), now()]",
        ),
        (
            "clients",
            "text[]",
            provider::storage::CLIENTS_SQL,
            "ARRAY['client-1', 'client-2', 'unknown']",
        ),
        (
            "buckets",
            "text[]",
            provider::storage::RATE_LIMITS_SQL,
            "ARRAY['bucket-1', 'bucket-2', 'unknown']",
        ),
        (
            "clients_with_refresh_tokens",
            "text[], text[], bytea[]",
            provider::storage::CLIENTS_WITH_REFRESH_TOKENS_SQL,
            "ARRAY['client-1', 'client-2', 'unknown'], ARRAY['bucket-1', 'unknown', 'bucket-2'], \
             ARRAY[decode(md5('r1'), 'hex'), NULL, decode(md5('unknown'), 'hex')]",
        ),
        (
            "clients_with_buckets",
            "text[], text[], bytea[], timestamptz[]",
            provider::storage::CLIENTS_WITH_BUCKETS_SQL,
            "ARRAY['client-1', 'client-2', 'unknown'], ARRAY['bucket-1', 'unknown', 'bucket-2'], \
             ARRAY['\\x0001'::bytea, NULL, '\\x00'], ARRAY[now(), NULL, now()]",
        ),
        // Not batched reads, but statements of the hot paths that join or update by key.
        (
            "presented_refresh_token",
            "bytea",
            provider::storage::PRESENTED_REFRESH_TOKEN_SQL,
            "decode(md5('r1'), 'hex')",
        ),
        (
            "rotation",
            "uuid[], uuid[], uuid[], bytea[], timestamptz[], uuid[], bytea[], timestamptz",
            provider::storage::ROTATE_SQL,
            "ARRAY[md5('r1')::uuid, md5('r2')::uuid, md5('unknown')::uuid], \
             ARRAY[md5('s1')::uuid, md5('s2')::uuid, md5('s3')::uuid], \
             ARRAY[md5('a1')::uuid, md5('a2')::uuid, md5('a3')::uuid], \
             ARRAY[decode(md5('a1'), 'hex'), decode(md5('a2'), 'hex'), decode(md5('a3'), 'hex')], \
             ARRAY[now(), NULL, now()], \
             ARRAY[md5('n1')::uuid, md5('n2')::uuid, md5('n3')::uuid], \
             ARRAY[decode(md5('n1'), 'hex'), decode(md5('n2'), 'hex'), decode(md5('n3'), 'hex')], \
             now()",
        ),
        (
            "spends",
            "text[], int[], bigint[], bigint[], bigint",
            provider::storage::SPEND_MANY_SQL,
            "ARRAY['bucket-1', 'bucket-2', 'unknown'], ARRAY[1, 2, 1], \
             ARRAY[1000, 1000, 1000], ARRAY[5000, 5000, 5000], 100000",
        ),
    ];
    // Planned once for all executions, on the empty tables of a new database.
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    for (name, types, sql, _) in &statements {
        sqlx::raw_sql(&format!("PREPARE {name}({types}) AS {sql}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // Then the tables grow: 3,000 clients, sessions, tokens of each kind and buckets.
    sqlx::raw_sql(
        "INSERT INTO oauth2_clients (id, client_id, is_static, token_endpoint_auth_method, \
           metadata, created_at, updated_at) \
         SELECT md5(n::text)::uuid, 'client-' || n, false, 'none', '{}', now(), now() \
         FROM generate_series(1, 3000) n; \
         INSERT INTO oauth2_sessions (id, client_id, scope, created_at) \
         SELECT md5('s' || n)::uuid, md5(n::text)::uuid, 'scope', now() \
         FROM generate_series(1, 3000) n; \
         INSERT INTO oauth2_access_tokens (id, session_id, token_hash, created_at) \
         SELECT md5('t' || n)::uuid, md5('s' || n)::uuid, int2send(n::int2), now() \
         FROM generate_series(1, 3000) n; \
         INSERT INTO oauth2_refresh_tokens (id, session_id, token_hash, created_at) \
         SELECT md5('r' || n)::uuid, md5('s' || n)::uuid, decode(md5('r' || n), 'hex'), now() \
         FROM generate_series(1, 3000) n; \
         INSERT INTO rate_limits (key, tat) SELECT 'bucket-' || n, n FROM generate_series(1, 3000) n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    for (name, _, _, args) in &statements {
        let (plan,): (serde_json::Value,) = sqlx::query_as(&format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({args})"
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let plan = &plan[0]["Plan"];
        let read = rows_read(plan);
        // Three keys, at most one row per table and key, counted at each level of the plan
        // (about 45); a plan that reads a table reads thousands.
        assert!(
            read <= 100.0,
            "{name}: the cached plan read {read} rows for three keys:\n{plan:#}"
        );
        // The two keys that exist are found (every key has its row in the left joins; the
        // presented refresh token is one key).
        let rows = match *name {
            // Every key of the spends answers (the unknown bucket is made).
            "clients_with_buckets" | "clients_with_refresh_tokens" | "spends" => 3,
            "presented_refresh_token" => 1,
            _ => 2,
        };
        assert_eq!(plan["Actual Rows"], rows, "{name}:\n{plan:#}");
    }
}
