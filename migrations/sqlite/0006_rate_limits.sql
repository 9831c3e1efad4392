-- Rate limits (provider/src/rate_limit.rs): one bucket per limit and key, spent and refilled by
-- GCRA, so that every process on this database shares the same limits.
CREATE TABLE rate_limits (
    -- `<limit>:<hex SHA-256 of the key>`: the keys come from requests (IP addresses, usernames,
    -- email addresses, client IDs), so they are stored hashed and bounded in length.
    key TEXT PRIMARY KEY NOT NULL,
    -- The bucket's theoretical arrival time (GCRA), in microseconds since the Unix epoch: the
    -- bucket is full again at `tat`, and a row with `tat` in the past is the same as no row.
    tat INTEGER NOT NULL
) WITHOUT ROWID;
