//! `Storage::hot_read`, the kept connections of the hot read paths: a read cancelled mid-query
//! (its future dropped while the statement runs on the server) leaves nothing behind for the
//! next read to wait on.

use std::time::Duration;

use provider::{backend_tests, core::rate_limit::Quota, storage::Spend, test_harness::TestDb};

async fn a_cancelled_hot_read_does_not_stall_the_next(db: TestDb) {
    let quota = Quota::new(5, 1.0).unwrap();
    let spend = |key: &'static str| {
        db.storage
            .hot_read(key, move |repo, key| repo.rate_limits().spend(key, quota))
    };
    let peek = |key: &'static str| {
        db.storage
            .hot_read(key, |repo, key| repo.rate_limits().peek(key))
    };
    assert_eq!(spend("known").await.unwrap(), Spend::Granted);
    let tat = peek("known").await.unwrap();
    assert!(tat.is_some());

    // A transaction holds the bucket "busy" (PostgreSQL: its new row; SQLite: the write lock).
    let mut tx = db.storage.begin().await.unwrap();
    assert_eq!(
        tx.rate_limits().spend("busy", quota).await.unwrap(),
        Spend::Granted
    );
    // A spend of it waits for that lock, and is cancelled there.
    let cancelled = tokio::time::timeout(Duration::from_millis(300), spend("busy")).await;
    assert!(cancelled.is_err(), "the spend waits for the transaction");

    // While that statement still waits on the server, the next reads answer at once, and right
    // (before the fix the connection was kept, and the next read on it queued behind it).
    for _ in 0..3 {
        let read = tokio::time::timeout(Duration::from_secs(5), peek("known"))
            .await
            .expect("a read doesn't wait behind a cancelled one")
            .unwrap();
        assert_eq!(read, tat);
    }
    drop(tx);
}

backend_tests!(a_cancelled_hot_read_does_not_stall_the_next);
