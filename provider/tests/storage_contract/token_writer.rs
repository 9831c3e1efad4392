//! The group commit of token issuance (`Storage::add_session_with_token`): nothing is lost,
//! nothing is answered before it is committed, and a failed batch fails each of its requests.

use std::collections::HashSet;

use provider::{
    clock::Clock as _,
    core::rate_limit::Quota,
    storage::{
        BatchedSpend, Client, NewSessionToken, RefreshToken, Rotated, Rotation, Spent,
        StorageError, MAX_TOKEN_BATCH,
    },
    test_harness::TestDb,
};
use ulid::Ulid;

use crate::fixtures::{oauth2_session, user_and_client};

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

/// A distinct token hash per `n` (the fixtures' `hash` has only 256).
fn hash_of(n: usize) -> [u8; 32] {
    let mut hash = [0xA5; 32];
    hash[..8].copy_from_slice(&(n as u64).to_be_bytes());
    hash
}

fn item(client_id: Ulid, n: usize) -> NewSessionToken {
    NewSessionToken {
        user_id: None,
        client_id,
        scope: format!("read scope-{n}"),
        device_id: None,
        token_hash: hash_of(n),
        expires_at: None,
    }
}

/// What a write answers when its unit was granted (or none was asked for).
fn done<T: std::fmt::Debug>(spent: Spent<T>) -> T {
    match spent {
        Spent::Done(written) => written,
        refused => panic!("a write without a spend was refused: {refused:?}"),
    }
}

/// More concurrent requests than one batch holds: each answer comes after its rows are
/// committed (another connection sees them at once), every request gets its own rows, none
/// is lost or written twice.
async fn concurrent_requests_are_all_committed(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "alice").await;
    repo.commit().await.unwrap();

    let n = MAX_TOKEN_BATCH * 2 + 7;
    let answers = join_all((0..n).map(|i| {
        let storage = db.storage.clone();
        async move {
            let (session, token) = done(
                storage
                    .add_session_with_token(item(client.id, i), None)
                    .await?,
            );
            // Answered: committed, so a fresh connection sees it now.
            let mut reader = storage.reader().await?;
            let stored = reader.access_tokens().find_by_hash(&hash_of(i)).await?;
            let stored_session = reader.oauth2_sessions().lookup(session.id).await?;
            Ok::<_, StorageError>((i, session, token, stored, stored_session))
        }
    }))
    .await;

    let mut sessions = HashSet::new();
    for answer in answers {
        let (i, session, token, stored, stored_session) = answer.unwrap();
        assert_eq!(
            stored.as_ref(),
            Some(&token),
            "token {i} not committed when answered"
        );
        assert_eq!(stored_session.as_ref(), Some(&session), "session {i}");
        assert_eq!(token.session_id, session.id);
        assert_eq!(session.client_id, client.id);
        assert_eq!(session.scope, format!("read scope-{i}"));
        assert!(sessions.insert(session.id), "session {i} handed out twice");
    }
    assert_eq!(sessions.len(), n);
}

/// A batch holding an item that can't be written (its client does not exist) fails that item
/// alone; the others are written and answered as usual. Half the items carry a unit of one
/// bucket (the token endpoint's limit, spent by the writer): each unit is spent once, however
/// the batch was retried around the bad item (the clock doesn't move, so the bucket's time is
/// exactly one interval per unit).
async fn a_bad_item_fails_alone(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "bob").await;
    repo.commit().await.unwrap();

    let missing = Ulid::from_parts(1, 1);
    let quota = Quota::new(1000, 0.001).unwrap();
    let answers = join_all((0..20).map(|i| {
        let storage = db.storage.clone();
        let client_id = if i % 5 == 0 { missing } else { client.id };
        let spend = (i % 2 == 0).then(|| unit("bad-item", quota));
        async move {
            (
                i,
                storage
                    .add_session_with_token(item(client_id, 1000 + i), spend)
                    .await
                    .map(done),
            )
        }
    }))
    .await;
    let mut reader = db.storage.reader().await.unwrap();
    assert_eq!(
        reader.rate_limits().peek("bad-item").await.unwrap(),
        Some(db.clock.now().timestamp_micros() + 10 * quota.interval_micros()),
        "ten units, each spent once"
    );
    for (i, answer) in answers {
        let stored = reader
            .access_tokens()
            .find_by_hash(&hash_of(1000 + i))
            .await
            .unwrap();
        if i % 5 == 0 {
            assert!(
                answer.is_err(),
                "item {i} of a missing client was answered {answer:?}"
            );
            assert_eq!(stored, None, "item {i} failed but was written");
        } else {
            let (_, token) = answer.unwrap_or_else(|e| panic!("item {i}: {e}"));
            assert_eq!(stored, Some(token));
        }
    }
}

/// A token hash already taken fails that request with a conflict, the rest go through.
async fn a_taken_hash_is_a_conflict(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "carol").await;
    repo.commit().await.unwrap();
    db.storage
        .add_session_with_token(item(client.id, 7), None)
        .await
        .unwrap();
    let answers = join_all([7, 8, 9].map(|i| {
        let storage = db.storage.clone();
        async move {
            (
                i,
                storage
                    .add_session_with_token(item(client.id, i), None)
                    .await,
            )
        }
    }))
    .await;
    for (i, answer) in answers {
        match i {
            7 => assert!(
                matches!(answer, Err(StorageError::Conflict(_))),
                "{answer:?}"
            ),
            _ => assert!(answer.is_ok(), "{i}: {answer:?}"),
        }
    }
}

/// When the database can't be reached, every request of the batch gets an error: none is
/// answered as if written.
async fn a_closed_database_fails_every_request(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "dave").await;
    repo.commit().await.unwrap();
    db.storage.close().await;
    let answers = join_all((0..10).map(|i| {
        let storage = db.storage.clone();
        async move {
            storage
                .add_session_with_token(item(client.id, 2000 + i), None)
                .await
        }
    }))
    .await;
    for answer in answers {
        assert!(answer.is_err(), "answered {answer:?} on a closed database");
    }
}

/// A unit of the bucket `key`, for a write that spends it first.
fn unit(key: &str, quota: Quota) -> BatchedSpend {
    BatchedSpend {
        key: key.to_owned(),
        quota,
    }
}

/// A new user and client (`name`), and one session of theirs holding `n` refresh tokens (of
/// hashes `hash_of(first)` on), committed.
async fn session_with_refresh_tokens(
    db: &TestDb,
    name: &str,
    first: usize,
    n: usize,
) -> (Client, Vec<RefreshToken>) {
    let mut repo = db.storage.begin().await.unwrap();
    let (user, client) = user_and_client(&mut repo, name).await;
    let session = oauth2_session(&mut repo, &user, &client).await;
    let mut tokens = Vec::new();
    for n in first..first + n {
        tokens.push(
            repo.refresh_tokens()
                .add(session.id, &hash_of(n), None)
                .await
                .unwrap(),
        );
    }
    repo.commit().await.unwrap();
    (client, tokens)
}

/// A rotation of `presented` (a refresh token of `session_id`) issuing the pair `n`.
fn rotation(presented: &RefreshToken, n: usize) -> Rotation {
    Rotation {
        refresh_token_id: presented.id,
        session_id: presented.session_id,
        access_token_hash: hash_of(5000 + n),
        access_expires_at: None,
        refresh_token_hash: hash_of(6000 + n),
    }
}

/// A batch of rotations in one transaction ([`RefreshTokenRepository::rotate_many`]), holding
/// a replay of a token beside its legitimate rotation: the first presentation consumes it and
/// gets its pair, the replay loses as it would right after the first one's commit and leaves
/// nothing behind; another session's rotation in the same batch is not disturbed; revoked and
/// consumed tokens lose.
async fn rotations_of_a_batch_decide_as_alone(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (user, client) = user_and_client(&mut repo, "erin").await;
    let first = oauth2_session(&mut repo, &user, &client).await;
    let second = oauth2_session(&mut repo, &user, &client).await;
    let a = repo
        .refresh_tokens()
        .add(first.id, &hash_of(1), None)
        .await
        .unwrap();
    let b = repo
        .refresh_tokens()
        .add(second.id, &hash_of(2), None)
        .await
        .unwrap();
    let revoked = repo
        .refresh_tokens()
        .add(second.id, &hash_of(3), None)
        .await
        .unwrap();
    repo.refresh_tokens().revoke(revoked.id).await.unwrap();
    repo.commit().await.unwrap();

    let items = [
        rotation(&a, 0),
        rotation(&a, 1), // the replay, in the same batch
        rotation(&b, 2),
        rotation(&revoked, 3),
    ];
    // Its own transaction, on a plain connection.
    let mut repo = db.storage.reader().await.unwrap();
    let rotated = repo.refresh_tokens().rotate_many(&items).await.unwrap();
    drop(repo);

    let issued = |r: &Rotated| match r {
        Rotated::Issued { access, refresh } => (access.clone(), refresh.clone()),
        Rotated::Lost => panic!("lost: {rotated:?}"),
    };
    let (access_a, refresh_a) = issued(&rotated[0]);
    assert_eq!(rotated[1], Rotated::Lost, "the replay in the same batch");
    let (_, refresh_b) = issued(&rotated[2]);
    assert_eq!(rotated[3], Rotated::Lost, "a revoked token");

    let mut reader = db.storage.reader().await.unwrap();
    let consumed = reader.refresh_tokens().lookup(a.id).await.unwrap().unwrap();
    assert!(consumed.consumed_at.is_some());
    assert_eq!(consumed.next_refresh_token_id, Some(refresh_a.id));
    assert_eq!(refresh_a.access_token_id, Some(access_a.id));
    assert_eq!(
        reader
            .refresh_tokens()
            .find_by_hash(&hash_of(6000))
            .await
            .unwrap(),
        Some(refresh_a)
    );
    assert_eq!(
        reader
            .access_tokens()
            .find_by_hash(&hash_of(5000))
            .await
            .unwrap(),
        Some(access_a)
    );
    let b_now = reader.refresh_tokens().lookup(b.id).await.unwrap().unwrap();
    assert_eq!(b_now.next_refresh_token_id, Some(refresh_b.id));
    for lost in [1, 3] {
        assert_eq!(
            reader
                .refresh_tokens()
                .find_by_hash(&hash_of(6000 + lost))
                .await
                .unwrap(),
            None,
            "the lost rotation {lost} left its refresh token"
        );
        assert_eq!(
            reader
                .access_tokens()
                .find_by_hash(&hash_of(5000 + lost))
                .await
                .unwrap(),
            None,
            "the lost rotation {lost} left its access token"
        );
    }
    let revoked_now = reader
        .refresh_tokens()
        .lookup(revoked.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked_now.consumed_at, None);
    // A taken hash fails the call and leaves nothing (its transaction rolled back), and the
    // connection is fit for the next batch.
    let c = reader
        .refresh_tokens()
        .add(first.id, &hash_of(4), None)
        .await
        .unwrap();
    let taken = Rotation {
        refresh_token_hash: hash_of(6000),
        ..rotation(&c, 9)
    };
    let failed = reader.refresh_tokens().rotate_many(&[taken]).await;
    assert!(
        matches!(failed, Err(StorageError::Conflict(_))),
        "{failed:?}"
    );
    assert_eq!(
        reader
            .access_tokens()
            .find_by_hash(&hash_of(5009))
            .await
            .unwrap(),
        None
    );
    let retried = reader
        .refresh_tokens()
        .rotate_many(&[rotation(&c, 10)])
        .await
        .unwrap();
    assert!(
        matches!(retried[..], [Rotated::Issued { .. }]),
        "{retried:?}"
    );
    for session in [first.id, second.id] {
        let touched = reader
            .oauth2_sessions()
            .lookup(session)
            .await
            .unwrap()
            .unwrap();
        assert!(
            touched.last_active_at.is_some(),
            "session {session} not touched"
        );
    }
}

/// PostgreSQL runs a batch of rotations as one statement that finds each presented token by
/// its index and updates it by its row's address (`ROTATE_SQL`). A token another transaction
/// changed while the statement waited for its lock (here its access token's link cleared, as
/// deleting that access token does) has moved to a new address: the statement passes it by,
/// and the rotation, finding the token still usable, runs again: it is issued, not lost.
#[tokio::test]
async fn a_token_changed_while_its_rotation_waits_is_still_rotated() {
    use sqlx::Connection as _;

    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut repo = db.storage.begin().await.unwrap();
    let (user, client) = user_and_client(&mut repo, "frank").await;
    let session = oauth2_session(&mut repo, &user, &client).await;
    let presented = repo
        .refresh_tokens()
        .add(session.id, &hash_of(7), None)
        .await
        .unwrap();
    repo.commit().await.unwrap();

    // Another transaction changes the token's row and holds its lock.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("UPDATE oauth2_refresh_tokens SET access_token_id = NULL WHERE token_hash = $1")
        .bind(&hash_of(7)[..])
        .execute(&mut other)
        .await
        .unwrap();
    let storage = db.storage.clone();
    let item = rotation(&presented, 70);
    let rotating = tokio::spawn(async move {
        let mut repo = storage.reader().await.unwrap();
        repo.refresh_tokens().rotate_many(&[item]).await
    });
    // Once the rotation's statement waits for the row's lock, the other transaction commits.
    assert!(
        crate::fixtures::a_statement_waits_for_a_lock(&db.url).await,
        "the rotation never waited for the row's lock"
    );
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();

    let rotated = rotating.await.unwrap().unwrap();
    let Rotated::Issued { refresh, .. } = &rotated[0] else {
        panic!("a usable token's rotation was lost: {rotated:?}");
    };
    let mut reader = db.storage.reader().await.unwrap();
    let consumed = reader
        .refresh_tokens()
        .lookup(presented.id)
        .await
        .unwrap()
        .unwrap();
    assert!(consumed.consumed_at.is_some());
    assert_eq!(consumed.next_refresh_token_id, Some(refresh.id));
    assert_eq!(
        consumed.access_token_id, None,
        "the other transaction's change stays"
    );
}

/// Many concurrent rotations of one refresh token through the group commit
/// (`Storage::rotate_refresh_token`), with rotations of other tokens among them: exactly one
/// of the first wins, every other token's rotation is issued, each answer is committed.
async fn concurrent_rotations_of_one_token_issue_one_pair(db: TestDb) {
    let (_, tokens) = session_with_refresh_tokens(&db, "frank", 100, 10).await;
    let answers = join_all((0..40).map(|i| {
        let storage = db.storage.clone();
        // Half present token 0, the others one each of tokens 1 to 9 (some twice).
        let presented = if i % 2 == 0 {
            tokens[0].clone()
        } else {
            tokens[1 + i % 9].clone()
        };
        async move {
            (
                presented.id,
                storage
                    .rotate_refresh_token(rotation(&presented, i), None)
                    .await
                    .map(done),
            )
        }
    }))
    .await;
    let mut reader = db.storage.reader().await.unwrap();
    for token in &tokens {
        let wins: Vec<RefreshToken> = answers
            .iter()
            .filter(|(id, _)| *id == token.id)
            .filter_map(|(_, answer)| match answer.as_ref().unwrap() {
                Rotated::Issued { refresh, .. } => Some(refresh.clone()),
                Rotated::Lost => None,
            })
            .collect();
        assert_eq!(
            wins.len(),
            1,
            "token {}: {} rotations won",
            token.id,
            wins.len()
        );
        let stored = reader
            .refresh_tokens()
            .lookup(token.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.next_refresh_token_id, Some(wins[0].id));
        assert_eq!(
            reader
                .refresh_tokens()
                .lookup(wins[0].id)
                .await
                .unwrap()
                .as_ref(),
            Some(&wins[0])
        );
    }
}

/// Writes that spend a unit first (the token endpoint's per-client limit, spent by the writer
/// with the rest of its batch): of concurrent requests on one bucket, exactly its burst is
/// written (the clock doesn't move), the others are refused for one interval and write
/// nothing; requests without a unit, in the same batches, are all written. The same for
/// refresh rotations: a refused rotation leaves its token usable.
async fn units_are_spent_by_the_writes(db: TestDb) {
    let (client, tokens) = session_with_refresh_tokens(&db, "grace", 300, 12).await;
    let quota = Quota::new(10, 0.001).unwrap();

    let answers = join_all((0..40).map(|i| {
        let storage = db.storage.clone();
        let spend = (i % 4 != 3).then(|| unit("tokens", quota));
        async move {
            let answer = storage.add_session_with_token(item(client.id, 3000 + i), spend.clone());
            (i, spend.is_some(), answer.await.unwrap())
        }
    }))
    .await;
    let mut reader = db.storage.reader().await.unwrap();
    let mut granted = 0;
    for (i, spent, answer) in answers {
        let stored = reader
            .access_tokens()
            .find_by_hash(&hash_of(3000 + i))
            .await
            .unwrap();
        match answer {
            Spent::Done((_, token)) => {
                granted += usize::from(spent);
                assert_eq!(stored, Some(token), "item {i}");
            }
            Spent::Refused { retry_after } => {
                assert!(spent, "item {i} asked for no unit and was refused");
                assert_eq!(
                    retry_after,
                    quota.interval(),
                    "an empty bucket: one interval"
                );
                assert_eq!(stored, None, "item {i} was refused but written");
            }
        }
    }
    assert_eq!(granted, 10, "the burst, and no more");

    let quota = Quota::new(4, 0.001).unwrap();
    let answers = join_all(tokens.iter().cloned().enumerate().map(|(i, presented)| {
        let storage = db.storage.clone();
        let spend = Some(unit("rotations", quota));
        async move {
            let answer = storage.rotate_refresh_token(rotation(&presented, 300 + i), spend);
            (presented, answer.await.unwrap())
        }
    }))
    .await;
    let mut issued = 0;
    for (presented, answer) in answers {
        let stored = reader
            .refresh_tokens()
            .lookup(presented.id)
            .await
            .unwrap()
            .unwrap();
        match answer {
            Spent::Done(Rotated::Issued { refresh, .. }) => {
                issued += 1;
                assert_eq!(stored.next_refresh_token_id, Some(refresh.id));
            }
            Spent::Done(Rotated::Lost) => panic!("token {} lost to nobody", presented.id),
            Spent::Refused { .. } => {
                assert!(stored.is_usable(), "a refused rotation consumed its token");
            }
        }
    }
    assert_eq!(issued, 4, "the burst, and no more");
}

provider::backend_tests!(
    rotations_of_a_batch_decide_as_alone,
    concurrent_rotations_of_one_token_issue_one_pair,
    concurrent_requests_are_all_committed,
    a_bad_item_fails_alone,
    a_taken_hash_is_a_conflict,
    a_closed_database_fails_every_request,
    units_are_spent_by_the_writes,
);
