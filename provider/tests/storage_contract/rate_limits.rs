use std::{sync::Arc, time::Duration};

use provider::{
    backend_tests,
    clock::{Clock, Entropy, SeededRngSource},
    core::rate_limit::Quota,
    storage::{BatchedSpend, PoolSettings, Spend, Storage},
    test_harness::TestDb,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// The clock's time as buckets store it (microseconds since the Unix epoch).
fn now_micros(db: &TestDb) -> i64 {
    db.clock.now().timestamp_micros()
}

async fn spend(db: &TestDb, key: &str, quota: Quota) -> Spend {
    let mut repo = db.storage.reader().await.unwrap();
    repo.rate_limits().spend(key, quota).await.unwrap()
}

fn refused(millis: u64) -> Spend {
    Spend::Refused {
        retry_after: Duration::from_millis(millis),
    }
}

async fn rate_limits_spend_refill_and_refund(db: TestDb) {
    // 3 at once, then one a second.
    let quota = Quota::new(3, 1.0).unwrap();
    for _ in 0..3 {
        assert_eq!(spend(&db, "a", quota).await, Spend::Granted);
    }
    assert_eq!(spend(&db, "a", quota).await, refused(1000));
    // Refusals change nothing; other keys have their own buckets.
    assert_eq!(spend(&db, "a", quota).await, refused(1000));
    assert_eq!(spend(&db, "b", quota).await, Spend::Granted);
    db.clock.advance(chrono::Duration::milliseconds(400));
    assert_eq!(spend(&db, "a", quota).await, refused(600));
    db.clock.advance(chrono::Duration::milliseconds(600));
    assert_eq!(spend(&db, "a", quota).await, Spend::Granted);
    assert_eq!(spend(&db, "a", quota).await, refused(1000));

    // A refund gives one unit back, once per refund.
    let mut repo = db.storage.reader().await.unwrap();
    repo.rate_limits().refund("a", quota).await.unwrap();
    // Refunding a bucket that doesn't exist does nothing.
    repo.rate_limits().refund("nobody", quota).await.unwrap();
    drop(repo);
    assert_eq!(spend(&db, "a", quota).await, Spend::Granted);
    assert_eq!(spend(&db, "a", quota).await, refused(1000));

    // Idle for long: full again, and never fuller than the burst (refunds included).
    db.clock.advance(chrono::Duration::hours(1));
    let mut repo = db.storage.reader().await.unwrap();
    for _ in 0..5 {
        repo.rate_limits().refund("a", quota).await.unwrap();
    }
    drop(repo);
    for _ in 0..3 {
        assert_eq!(spend(&db, "a", quota).await, Spend::Granted);
    }
    assert_eq!(spend(&db, "a", quota).await, refused(1000));
}

/// The database computes exactly [`Quota::spend`]: a seeded random walk of spends, refunds and
/// clock moves over a few keys, compared with the pure function step by step.
async fn rate_limits_follow_the_gcra_model(db: TestDb) {
    let quota = Quota::new(4, 2.5).unwrap();
    let interval = quota.interval_micros();
    let keys = ["k0", "k1", "k2"];
    let mut model: [Option<i64>; 3] = [None; 3];
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..300 {
        let k = rng.gen_range(0..keys.len());
        match rng.gen_range(0..10) {
            0..=5 => {
                let now = now_micros(&db);
                let expected = match quota.spend(model[k], now) {
                    Ok(tat) => {
                        model[k] = Some(tat);
                        Spend::Granted
                    }
                    Err(wait) => Spend::Refused {
                        retry_after: Duration::from_micros(wait),
                    },
                };
                assert_eq!(spend(&db, keys[k], quota).await, expected);
            }
            6 => {
                let mut repo = db.storage.reader().await.unwrap();
                repo.rate_limits().refund(keys[k], quota).await.unwrap();
                model[k] = model[k].map(|tat| tat - interval);
            }
            _ => db
                .clock
                .advance(chrono::Duration::microseconds(rng.gen_range(0..600_000))),
        }
    }
}

async fn rate_limits_delete_full_buckets(db: TestDb) {
    let slow = Quota::new(2, 0.01).unwrap(); // refilled in 100 s a unit
    let fast = Quota::new(2, 10.0).unwrap(); // in 0.1 s
    for i in 0..5 {
        assert_eq!(spend(&db, &format!("fast{i}"), fast).await, Spend::Granted);
    }
    assert_eq!(spend(&db, "slow", slow).await, Spend::Granted);
    assert_eq!(spend(&db, "slow", slow).await, Spend::Granted);
    let mut repo = db.storage.reader().await.unwrap();
    // Nothing is full yet.
    assert_eq!(repo.rate_limits().delete_full(100).await.unwrap(), 0);
    db.clock.advance(chrono::Duration::seconds(1));
    // The fast buckets are full again, in batches of at most `limit`.
    assert_eq!(repo.rate_limits().delete_full(3).await.unwrap(), 3);
    assert_eq!(repo.rate_limits().delete_full(3).await.unwrap(), 2);
    assert_eq!(repo.rate_limits().delete_full(3).await.unwrap(), 0);
    drop(repo);
    // The slow one is kept: still empty.
    assert_eq!(spend(&db, "slow", slow).await, refused(99_000));
}

/// Concurrent spends of one key, on a pool of several connections, are granted exactly the
/// burst (the clock doesn't move, so nothing refills).
async fn rate_limits_concurrent_spends_never_exceed_the_burst(db: TestDb) {
    let entropy = Entropy {
        clock: db.clock.clone(),
        rng: Arc::new(SeededRngSource::new(3)),
    };
    let pool = PoolSettings {
        max_connections: 8,
        ..PoolSettings::default()
    };
    let storage = Storage::connect(&db.url, &pool, entropy).await.unwrap();
    let quota = Quota::new(10, 0.001).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let storage = storage.clone();
        tasks.spawn(async move {
            let mut repo = storage.reader().await.unwrap();
            repo.rate_limits().spend("hot", quota).await.unwrap()
        });
    }
    let mut granted = 0;
    while let Some(outcome) = tasks.join_next().await {
        if outcome.unwrap() == Spend::Granted {
            granted += 1;
        }
    }
    assert_eq!(granted, 10);
    storage.close().await;
}

/// A batch of spends ([`RateLimitRepository::spend_many`]: one statement on PostgreSQL, one
/// transaction on SQLite, for the spends of concurrent requests) spends each unit exactly as [`Quota::spend`] does one after the other:
/// a seeded random walk of batches over a few keys (a key several times in a batch, keys of
/// different quotas, buckets spent alone in between, clock moves), compared with the pure
/// function unit by unit, and the stored TATs with the model's.
async fn rate_limits_batched_spends_follow_the_gcra_model(db: TestDb) {
    let quotas = [
        Quota::new(4, 2.5).unwrap(),
        Quota::new(1, 1.0).unwrap(),
        Quota::new(7, 1000.0).unwrap(),
    ];
    let keys = ["b0", "b1", "b2", "b3"];
    // Each key has one quota, as each limit has.
    let quota_of = |k: usize| quotas[k % quotas.len()];
    let mut model: [Option<i64>; 4] = [None; 4];
    let mut rng = StdRng::seed_from_u64(29);
    for _ in 0..120 {
        match rng.gen_range(0..10) {
            0..=5 => {
                let len = rng.gen_range(1..12);
                let picks: Vec<usize> = (0..len).map(|_| rng.gen_range(0..keys.len())).collect();
                let now = now_micros(&db);
                let expected: Vec<Spend> = picks
                    .iter()
                    .map(|&k| match quota_of(k).spend(model[k], now) {
                        Ok(tat) => {
                            model[k] = Some(tat);
                            Spend::Granted
                        }
                        Err(wait) => Spend::Refused {
                            retry_after: Duration::from_micros(wait),
                        },
                    })
                    .collect();
                let items: Vec<BatchedSpend> = picks
                    .iter()
                    .map(|&k| BatchedSpend {
                        key: keys[k].to_owned(),
                        quota: quota_of(k),
                    })
                    .collect();
                // Its own transaction, on a plain connection.
                let mut repo = db.storage.reader().await.unwrap();
                let spent = repo.rate_limits().spend_many(&items).await.unwrap();
                assert_eq!(spent, expected, "batch {picks:?}");
            }
            6 => {
                // A lone spend between batches sees what the batches left.
                let k = rng.gen_range(0..keys.len());
                let now = now_micros(&db);
                let expected = match quota_of(k).spend(model[k], now) {
                    Ok(tat) => {
                        model[k] = Some(tat);
                        Spend::Granted
                    }
                    Err(wait) => Spend::Refused {
                        retry_after: Duration::from_micros(wait),
                    },
                };
                assert_eq!(spend(&db, keys[k], quota_of(k)).await, expected);
            }
            _ => db
                .clock
                .advance(chrono::Duration::microseconds(rng.gen_range(0..900_000))),
        }
        // The stored buckets are the model's (a bucket created full may hold `now` where the
        // model has none: the same bucket).
        let mut repo = db.storage.reader().await.unwrap();
        for (k, key) in keys.iter().enumerate() {
            let stored = repo.rate_limits().peek(key).await.unwrap();
            let now = now_micros(&db);
            assert_eq!(
                quota_of(k).spend(stored, now),
                quota_of(k).spend(model[k], now),
                "bucket {key}"
            );
        }
    }
}

/// Concurrent spends through [`Storage::spend`] (group-committed: batches of several spends,
/// two writers taking turns) and lone spends of another replica, all of one key: exactly the
/// burst is granted (the clock doesn't move, so nothing refills), and each refusal says to wait
/// one interval.
async fn rate_limits_group_committed_spends_never_exceed_the_burst(db: TestDb) {
    let entropy = Entropy {
        clock: db.clock.clone(),
        rng: Arc::new(SeededRngSource::new(5)),
    };
    let pool = PoolSettings {
        max_connections: 8,
        ..PoolSettings::default()
    };
    let replica = Storage::connect(&db.url, &pool, entropy).await.unwrap();
    let quota = Quota::new(25, 0.001).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..150 {
        let storage = db.storage.clone();
        let replica = replica.clone();
        tasks.spawn(async move {
            if i % 5 == 0 {
                let mut repo = replica.reader().await.unwrap();
                repo.rate_limits().spend("hot", quota).await.unwrap()
            } else {
                storage.spend("hot".to_owned(), quota).await.unwrap()
            }
        });
    }
    let mut granted = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Spend::Granted => granted += 1,
            Spend::Refused { retry_after } => {
                assert_eq!(
                    retry_after,
                    quota.interval(),
                    "an empty bucket: one interval"
                )
            }
        }
    }
    assert_eq!(granted, 25);
    // Other keys are untouched by the batches.
    assert_eq!(spend(&db, "cold", quota).await, Spend::Granted);
    replica.close().await;
}

/// PostgreSQL's batched spend (`SPEND_MANY_SQL`) meets a bucket another transaction is
/// creating: its statement sees no row to lock, its insert waits for the other's and then
/// conflicts with a bucket it never read. It must not overwrite that bucket with one computed
/// from a full bucket: the key is spent again, from the bucket as the other left it.
#[tokio::test]
async fn a_bucket_created_while_a_batch_spends_is_spent_from() {
    use sqlx::Connection as _;

    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let quota = Quota::new(3, 0.001).unwrap();
    let now = now_micros(&db);
    // Another transaction creates the bucket with one unit left, and holds it.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("INSERT INTO rate_limits (key, tat) VALUES ('racing', $1)")
        .bind(now + 2 * quota.interval_micros())
        .execute(&mut other)
        .await
        .unwrap();
    let storage = db.storage.clone();
    let spending = tokio::spawn(async move {
        let items: Vec<BatchedSpend> = ["racing", "racing", "calm"]
            .map(|key| BatchedSpend {
                key: key.to_owned(),
                quota,
            })
            .to_vec();
        let mut repo = storage.reader().await.unwrap();
        repo.rate_limits().spend_many(&items).await
    });
    // Once the batch waits for the other's insert, the other commits.
    assert!(
        crate::fixtures::a_statement_waits_for_a_lock(&db.url).await,
        "the batch never waited for the other's insert"
    );
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    let spent = spending.await.unwrap().unwrap();
    // One unit was left: the first is granted, the second refused; the other key is untouched.
    assert_eq!(
        spent,
        vec![Spend::Granted, refused(1000 * 1000), Spend::Granted],
        "spent from the bucket the other transaction made"
    );
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(
        repo.rate_limits().peek("racing").await.unwrap(),
        Some(now + 3 * quota.interval_micros())
    );
}

backend_tests!(
    rate_limits_batched_spends_follow_the_gcra_model,
    rate_limits_group_committed_spends_never_exceed_the_burst,
    rate_limits_spend_refill_and_refund,
    rate_limits_follow_the_gcra_model,
    rate_limits_delete_full_buckets,
    rate_limits_concurrent_spends_never_exceed_the_burst,
);
