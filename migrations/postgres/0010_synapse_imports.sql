-- `provider syn2mas migrate` (the import of a Synapse homeserver's accounts, e-mail addresses,
-- upstream links and logged-in devices): one row per import, written before its first batch and
-- finished after its last. It tells a database the import made (which a later run may resume or
-- confirm) from one where people already registered (which an import must not mix into), and
-- when the import was done. The imported rows themselves are found by their natural keys
-- (username, address, upstream subject, device, token hash), so a run again changes nothing.
CREATE TABLE synapse_imports (
    id          UUID PRIMARY KEY,
    -- Synapse's `server_name`: the imported accounts are the localparts of its user IDs
    server_name TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
