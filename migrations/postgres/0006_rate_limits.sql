-- Rate limits (provider/src/rate_limit.rs): one bucket per limit and key, spent and refilled by
-- GCRA, so that every replica on this database shares the same limits.
--
-- UNLOGGED: a bucket is disposable state. Its changes write no WAL, so the one-statement
-- transaction of a check commits without waiting for a WAL flush while it holds the row lock: a
-- busy key (a client's token bucket under load) is not serialised on disk flushes. The price: a
-- crash or a failover to a standby starts every bucket full again, which a limit tolerates.
-- fillfactor 70 leaves room in each page for the updates to stay HOT (`tat` is not indexed).
CREATE UNLOGGED TABLE rate_limits (
    -- `<limit>:<hex SHA-256 of the key>`: the keys come from requests (IP addresses, usernames,
    -- email addresses, client IDs), so they are stored hashed and bounded in length.
    key TEXT PRIMARY KEY,
    -- The bucket's theoretical arrival time (GCRA), in microseconds since the Unix epoch: the
    -- bucket is full again at `tat`, and a row with `tat` in the past is the same as no row.
    tat BIGINT NOT NULL
) WITH (fillfactor = 70);
