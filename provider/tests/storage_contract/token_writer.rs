//! The group commit of token issuance (`Storage::add_session_with_token`): nothing is lost,
//! nothing is answered before it is committed, and a failed batch fails each of its requests.

use std::collections::HashSet;

use provider::{
    storage::{NewSessionToken, StorageError, MAX_TOKEN_BATCH},
    test_harness::TestDb,
};
use ulid::Ulid;

use crate::fixtures::user_and_client;

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
            let (session, token) = storage.add_session_with_token(item(client.id, i)).await?;
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
/// alone; the others are written and answered as usual.
async fn a_bad_item_fails_alone(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let (_, client) = user_and_client(&mut repo, "bob").await;
    repo.commit().await.unwrap();

    let missing = Ulid::from_parts(1, 1);
    let answers = join_all((0..20).map(|i| {
        let storage = db.storage.clone();
        let client_id = if i % 5 == 0 { missing } else { client.id };
        async move {
            (
                i,
                storage
                    .add_session_with_token(item(client_id, 1000 + i))
                    .await,
            )
        }
    }))
    .await;
    let mut reader = db.storage.reader().await.unwrap();
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
        .add_session_with_token(item(client.id, 7))
        .await
        .unwrap();
    let answers = join_all([7, 8, 9].map(|i| {
        let storage = db.storage.clone();
        async move { (i, storage.add_session_with_token(item(client.id, i)).await) }
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
                .add_session_with_token(item(client.id, 2000 + i))
                .await
        }
    }))
    .await;
    for answer in answers {
        assert!(answer.is_err(), "answered {answer:?} on a closed database");
    }
}

provider::backend_tests!(
    concurrent_requests_are_all_committed,
    a_bad_item_fails_alone,
    a_taken_hash_is_a_conflict,
    a_closed_database_fails_every_request,
);
