use std::collections::BTreeSet;

use chrono::Duration;
use provider::{
    backend_tests,
    clock::Clock,
    storage::{DatabaseKind, Job, JobState, StorageError},
    test_harness::TestDb,
};
use serde_json::json;
use ulid::Ulid;

async fn jobs_claim(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let t0 = db.clock.now_db();
    let payload = json!({"localpart": "alice", "emails": ["a@example.org"], "locked": false});
    let a = repo
        .jobs()
        .enqueue("provision", &payload, 5, db.clock.now())
        .await
        .unwrap();
    assert_eq!(
        a,
        Job {
            id: a.id,
            queue: "provision".to_owned(),
            payload: payload.clone(),
            attempts: 0,
            max_attempts: 5,
            run_at: t0,
            created_at: t0,
            locked_by: None,
            locked_until: None,
            last_error: None,
            completed_at: None,
            failed_at: None,
        }
    );
    assert_eq!(a.state(db.clock.now()), JobState::Pending);
    // Due in a minute (run_at is kept at the database's precision).
    let b = repo
        .jobs()
        .enqueue(
            "provision",
            &json!({"localpart": "bob"}),
            5,
            db.clock.now() + Duration::minutes(1) + Duration::microseconds(10),
        )
        .await
        .unwrap();
    assert_eq!(b.run_at, t0 + Duration::minutes(1));
    let mail = repo
        .jobs()
        .enqueue("mail", &json!("hello"), 1, db.clock.now())
        .await
        .unwrap();
    assert!(matches!(
        repo.jobs()
            .enqueue("provision", &json!(null), 0, db.clock.now())
            .await,
        Err(StorageError::Invalid(_))
    ));
    repo.commit().await.unwrap();

    let mut repo = db.storage.begin().await.unwrap();
    assert_eq!(repo.jobs().lookup(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(repo.jobs().lookup(Ulid::new()).await.unwrap(), None);
    assert_eq!(repo.jobs().count_pending(None).await.unwrap(), 3);
    assert_eq!(
        repo.jobs().count_pending(Some("provision")).await.unwrap(),
        2
    );
    assert_eq!(repo.jobs().count_pending(Some("mail")).await.unwrap(), 1);
    assert_eq!(repo.jobs().count_pending(Some("other")).await.unwrap(), 0);

    // Nothing to claim from no queue, or with no room.
    assert!(repo
        .jobs()
        .claim("w1", &[], 10, Duration::minutes(5))
        .await
        .unwrap()
        .is_empty());
    assert!(repo
        .jobs()
        .claim("w1", &["provision"], 0, Duration::minutes(5))
        .await
        .unwrap()
        .is_empty());

    // Only due jobs of the asked queues.
    let held_a = Job {
        locked_by: Some("w1".to_owned()),
        locked_until: Some(t0 + Duration::minutes(5)),
        ..a.clone()
    };
    assert_eq!(
        repo.jobs()
            .claim("w1", &["provision"], 10, Duration::minutes(5))
            .await
            .unwrap(),
        vec![held_a.clone()]
    );
    assert_eq!(held_a.state(db.clock.now()), JobState::Held);
    assert_eq!(
        repo.jobs().lookup(a.id).await.unwrap(),
        Some(held_a.clone())
    );
    // A held job is not claimed again while its lock runs, not even by the same worker.
    assert!(repo
        .jobs()
        .claim("w2", &["provision"], 10, Duration::minutes(5))
        .await
        .unwrap()
        .is_empty());
    assert!(repo
        .jobs()
        .claim("w1", &["provision"], 10, Duration::minutes(5))
        .await
        .unwrap()
        .is_empty());
    // Held jobs still count as pending.
    assert_eq!(
        repo.jobs().count_pending(Some("provision")).await.unwrap(),
        2
    );

    // b becomes due.
    db.clock.advance(Duration::minutes(1));
    let held_b = Job {
        locked_by: Some("w2".to_owned()),
        locked_until: Some(t0 + Duration::minutes(6)),
        ..b.clone()
    };
    assert_eq!(
        repo.jobs()
            .claim("w2", &["provision"], 10, Duration::minutes(5))
            .await
            .unwrap(),
        vec![held_b.clone()]
    );

    // At the end of a's lock (t0 + 5 min) it may be claimed again, by anyone.
    db.clock
        .advance(Duration::minutes(4) - Duration::milliseconds(1));
    assert!(repo
        .jobs()
        .claim("w3", &["provision"], 10, Duration::minutes(5))
        .await
        .unwrap()
        .is_empty());
    db.clock.advance(Duration::milliseconds(1));
    let reclaimed = Job {
        locked_by: Some("w3".to_owned()),
        locked_until: Some(t0 + Duration::minutes(10)),
        ..a.clone()
    };
    assert_eq!(
        repo.jobs()
            .claim("w3", &["provision"], 10, Duration::minutes(5))
            .await
            .unwrap(),
        vec![reclaimed.clone()]
    );

    // complete: only by the worker holding it, once.
    assert!(!repo.jobs().complete(a.id, "w1").await.unwrap());
    assert!(repo.jobs().complete(a.id, "w3").await.unwrap());
    assert!(!repo.jobs().complete(a.id, "w3").await.unwrap());
    let done = Job {
        locked_until: None,
        completed_at: Some(db.clock.now_db()),
        ..reclaimed
    };
    assert_eq!(done.state(db.clock.now()), JobState::Completed);
    assert_eq!(repo.jobs().lookup(a.id).await.unwrap(), Some(done));
    assert!(matches!(
        repo.jobs().complete(Ulid::new(), "w3").await,
        Err(StorageError::NotFound("job"))
    ));
    // A worker whose lock expired may still complete the job while nobody else took it.
    db.clock.advance(Duration::hours(1));
    assert_eq!(
        repo.jobs()
            .lookup(b.id)
            .await
            .unwrap()
            .unwrap()
            .state(db.clock.now()),
        JobState::Pending
    );
    assert!(repo.jobs().complete(b.id, "w2").await.unwrap());
    assert_eq!(
        repo.jobs().count_pending(Some("provision")).await.unwrap(),
        0
    );
    // A completed job is never claimed again.
    assert!(repo
        .jobs()
        .claim("w1", &["provision"], 10, Duration::minutes(5))
        .await
        .unwrap()
        .is_empty());

    // Several queues at once, limit and order (earliest run_at first).
    let now = db.clock.now();
    let late = repo
        .jobs()
        .enqueue("provision", &json!(1), 3, now - Duration::seconds(10))
        .await
        .unwrap();
    let early = repo
        .jobs()
        .enqueue("provision", &json!(2), 3, now - Duration::seconds(30))
        .await
        .unwrap();
    let claimed = repo
        .jobs()
        .claim("w4", &["provision", "mail"], 2, Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![mail.id, early.id]
    );
    assert!(claimed.iter().all(|j| j.locked_by.as_deref() == Some("w4")
        && j.locked_until == Some(db.clock.now_db() + Duration::seconds(30))));
    assert_eq!(
        repo.jobs()
            .claim("w4", &["provision", "mail"], 2, Duration::seconds(30))
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        vec![late.id]
    );
    repo.commit().await.unwrap();
}

async fn jobs_retry_and_fail(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let t0 = db.clock.now_db();
    let job = repo
        .jobs()
        .enqueue(
            "provision",
            &json!({"localpart": "carol"}),
            3,
            db.clock.now(),
        )
        .await
        .unwrap();
    let claimed = repo
        .jobs()
        .claim("w1", &["provision"], 1, Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    // First failure: rescheduled to the given time, lock released.
    db.clock.advance(Duration::seconds(5));
    let retry_at = db.clock.now() + Duration::seconds(30);
    let failed_once = repo
        .jobs()
        .fail(job.id, "w1", "homeserver unreachable", retry_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        failed_once,
        Job {
            attempts: 1,
            run_at: t0 + Duration::seconds(35),
            locked_by: Some("w1".to_owned()),
            locked_until: None,
            last_error: Some("homeserver unreachable".to_owned()),
            ..job.clone()
        }
    );
    assert_eq!(failed_once.state(db.clock.now()), JobState::Pending);
    assert_eq!(
        repo.jobs().lookup(job.id).await.unwrap(),
        Some(failed_once.clone())
    );
    // The worker no longer holds it: a second fail or a complete does nothing.
    assert_eq!(
        repo.jobs()
            .fail(job.id, "w1", "again", retry_at)
            .await
            .unwrap(),
        None
    );
    assert!(!repo.jobs().complete(job.id, "w1").await.unwrap());
    assert!(matches!(
        repo.jobs().fail(Ulid::new(), "w1", "x", retry_at).await,
        Err(StorageError::NotFound("job"))
    ));
    // Not due before its new run_at.
    assert!(repo
        .jobs()
        .claim("w1", &["provision"], 1, Duration::minutes(1))
        .await
        .unwrap()
        .is_empty());
    db.clock.advance(Duration::seconds(30));

    // Second failure, by another worker.
    let claimed = repo
        .jobs()
        .claim("w2", &["provision"], 1, Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        claimed,
        vec![Job {
            locked_by: Some("w2".to_owned()),
            locked_until: Some(db.clock.now_db() + Duration::minutes(1)),
            ..failed_once
        }]
    );
    let retry_at = db.clock.now() + Duration::minutes(2);
    let failed_twice = repo
        .jobs()
        .fail(job.id, "w2", "HTTP 502", retry_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed_twice.attempts, 2);
    assert_eq!(
        failed_twice.run_at,
        db.clock.now_db() + Duration::minutes(2)
    );
    assert_eq!(failed_twice.last_error.as_deref(), Some("HTTP 502"));
    assert_eq!(failed_twice.failed_at, None);

    // Third failure reaches max_attempts: failed for good, run_at left as it was.
    db.clock.advance(Duration::minutes(2));
    assert_eq!(
        repo.jobs()
            .claim("w2", &["provision"], 1, Duration::minutes(1))
            .await
            .unwrap()
            .len(),
        1
    );
    let failed = repo
        .jobs()
        .fail(
            job.id,
            "w2",
            "HTTP 500",
            db.clock.now() + Duration::minutes(4),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        failed,
        Job {
            attempts: 3,
            locked_by: Some("w2".to_owned()),
            locked_until: None,
            last_error: Some("HTTP 500".to_owned()),
            failed_at: Some(db.clock.now_db()),
            ..failed_twice.clone()
        }
    );
    assert_eq!(failed.state(db.clock.now()), JobState::Failed);
    assert_eq!(repo.jobs().count_pending(None).await.unwrap(), 0);
    db.clock.advance(Duration::hours(1));
    assert!(repo
        .jobs()
        .claim("w2", &["provision"], 1, Duration::minutes(1))
        .await
        .unwrap()
        .is_empty());
    assert!(!repo.jobs().complete(job.id, "w2").await.unwrap());

    // max_attempts = 1: the first failure is final.
    let once = repo
        .jobs()
        .enqueue("provision", &json!({}), 1, db.clock.now())
        .await
        .unwrap();
    repo.jobs()
        .claim("w1", &["provision"], 1, Duration::minutes(1))
        .await
        .unwrap();
    let once_failed = repo
        .jobs()
        .fail(once.id, "w1", "bad payload", db.clock.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (once_failed.attempts, once_failed.failed_at),
        (1, Some(db.clock.now_db()))
    );
    repo.commit().await.unwrap();

    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(repo.jobs().lookup(job.id).await.unwrap(), Some(failed));
    assert_eq!(
        repo.jobs().lookup(once.id).await.unwrap(),
        Some(once_failed)
    );
}

/// Two workers claiming at the same time never get the same job. On PostgreSQL the second one
/// skips the row the first one's open transaction holds (and does not wait); on SQLite the
/// second transaction waits for the first to commit, then sees the job held.
async fn jobs_concurrent_claims(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let first = repo
        .jobs()
        .enqueue("q", &json!(1), 3, db.clock.now() - Duration::seconds(2))
        .await
        .unwrap();
    let second = repo
        .jobs()
        .enqueue("q", &json!(2), 3, db.clock.now() - Duration::seconds(1))
        .await
        .unwrap();
    repo.commit().await.unwrap();

    let mut tx1 = db.storage.begin().await.unwrap();
    let got1 = tx1
        .jobs()
        .claim("w1", &["q"], 1, Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(
        got1.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![first.id]
    );

    let storage = db.storage.clone();
    let mut other = tokio::spawn(async move {
        let mut tx2 = storage.begin().await.unwrap();
        let got = tx2
            .jobs()
            .claim("w2", &["q"], 1, Duration::minutes(5))
            .await
            .unwrap();
        tx2.commit().await.unwrap();
        got
    });
    let early = tokio::time::timeout(std::time::Duration::from_millis(500), &mut other).await;
    if db.storage.kind() == DatabaseKind::Postgres {
        assert!(early.is_ok(), "SKIP LOCKED: the second claim must not wait");
    }
    tx1.commit().await.unwrap();
    let got2 = match early {
        Ok(joined) => joined.unwrap(),
        Err(_) => other.await.unwrap(),
    };
    assert_eq!(
        got2.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![second.id]
    );

    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.jobs()
            .lookup(first.id)
            .await
            .unwrap()
            .unwrap()
            .locked_by
            .as_deref(),
        Some("w1")
    );
    assert_eq!(
        repo.jobs()
            .lookup(second.id)
            .await
            .unwrap()
            .unwrap()
            .locked_by
            .as_deref(),
        Some("w2")
    );
}

/// `claim_one` takes one pending job, due or not, and never a held or ended one.
async fn jobs_claim_one(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let later = db.clock.now() + Duration::hours(1);
    let job = repo
        .jobs()
        .enqueue("homeserver", &json!({"n": 1}), 3, later)
        .await
        .unwrap();
    // Not due for an hour, yet claimed by id.
    let held = repo
        .jobs()
        .claim_one(job.id, "w1", Duration::minutes(1))
        .await
        .unwrap()
        .expect("a pending job is claimed");
    assert_eq!(held.locked_by.as_deref(), Some("w1"));
    assert_eq!(held.state(db.clock.now()), JobState::Held);
    // Held: neither the same nor another worker gets it again.
    for worker in ["w1", "w2"] {
        assert_eq!(
            repo.jobs()
                .claim_one(job.id, worker, Duration::minutes(1))
                .await
                .unwrap(),
            None
        );
    }
    // Once its lock expires, it may be taken again.
    db.clock.advance(Duration::minutes(2));
    assert!(repo
        .jobs()
        .claim_one(job.id, "w2", Duration::minutes(1))
        .await
        .unwrap()
        .is_some());
    assert!(repo.jobs().complete(job.id, "w2").await.unwrap());
    // Ended jobs and unknown ids: nothing.
    assert_eq!(
        repo.jobs()
            .claim_one(job.id, "w3", Duration::minutes(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.jobs()
            .claim_one(Ulid::nil(), "w3", Duration::minutes(1))
            .await
            .unwrap(),
        None
    );
    repo.commit().await.unwrap();
}

/// The marks of devices being provisioned by a token exchange (the device deletion race of
/// `provider::core::matrix::provisioning`): listed per user while fresh, moved to now when
/// marked again, gone when cleared.
async fn devices_in_provisioning(db: TestDb) {
    let mut repo = db.storage.begin().await.unwrap();
    let alice = repo.users().add("alice").await.unwrap().id;
    let bob = repo.users().add("bob").await.unwrap().id;
    let t0 = db.clock.now_db();
    let jobs = repo.jobs();
    assert!(jobs
        .devices_in_provisioning(alice, t0)
        .await
        .unwrap()
        .is_empty());
    jobs.mark_device_provisioning(alice, "DEV1").await.unwrap();
    jobs.mark_device_provisioning(bob, "DEV1").await.unwrap();
    db.clock.advance(Duration::seconds(10));
    let t1 = db.clock.now_db();
    jobs.mark_device_provisioning(alice, "DEV2").await.unwrap();
    let listed = |devices: BTreeSet<String>| devices.into_iter().collect::<Vec<_>>();
    assert_eq!(
        listed(jobs.devices_in_provisioning(alice, t0).await.unwrap()),
        ["DEV1", "DEV2"]
    );
    assert_eq!(
        listed(jobs.devices_in_provisioning(alice, t1).await.unwrap()),
        ["DEV2"],
        "DEV1's mark is older than `since`"
    );
    // Marked again: fresh again.
    jobs.mark_device_provisioning(alice, "DEV1").await.unwrap();
    assert_eq!(
        listed(jobs.devices_in_provisioning(alice, t1).await.unwrap()),
        ["DEV1", "DEV2"]
    );
    assert!(jobs.clear_device_provisioning(alice, "DEV1").await.unwrap());
    assert!(!jobs.clear_device_provisioning(alice, "DEV1").await.unwrap());
    assert_eq!(
        listed(jobs.devices_in_provisioning(alice, t0).await.unwrap()),
        ["DEV2"]
    );
    assert_eq!(
        listed(jobs.devices_in_provisioning(bob, t0).await.unwrap()),
        ["DEV1"],
        "another user's mark of the same device ID is their own"
    );
    repo.commit().await.unwrap();
}

backend_tests!(
    jobs_claim,
    jobs_retry_and_fail,
    jobs_concurrent_claims,
    jobs_claim_one,
    devices_in_provisioning,
);
