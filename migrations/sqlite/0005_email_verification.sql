-- Mail: codes that confirm an address, links that reset a password, and registrations waiting
-- for the code mailed to their address. Codes and tickets are kept as SHA-256 hashes only.

-- A 6-digit code mailed to confirm an address added on the account page. The newest one of an
-- address counts; it works once, until `expires_at`, for a few attempts.
CREATE TABLE user_email_verifications (
    id            TEXT PRIMARY KEY,
    user_email_id TEXT NOT NULL REFERENCES user_emails (id) ON DELETE CASCADE,
    code_hash     BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    -- Codes tried against it (right or wrong), counted before each comparison.
    attempts      INTEGER NOT NULL DEFAULT 0,
    consumed_at   INTEGER
);
CREATE INDEX user_email_verifications_user_email_id_idx
    ON user_email_verifications (user_email_id);

-- A password recovery link ("Forgot password?"), mailed to a confirmed address of the user. It
-- works once, until `expires_at`; removing the address voids it.
CREATE TABLE user_recovery_tickets (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_email_id TEXT NOT NULL REFERENCES user_emails (id) ON DELETE CASCADE,
    ticket_hash   BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    consumed_at   INTEGER
);
CREATE UNIQUE INDEX user_recovery_tickets_ticket_hash_key ON user_recovery_tickets (ticket_hash);
CREATE INDEX user_recovery_tickets_user_id_idx ON user_recovery_tickets (user_id);
CREATE INDEX user_recovery_tickets_user_email_id_idx ON user_recovery_tickets (user_email_id);

-- A registration waiting for the code mailed to its address (`account:
-- password_registration_email_required`). No user exists and no username is taken until the
-- code is entered: an abandoned registration leaves nothing usable behind.
CREATE TABLE pending_registrations (
    id               TEXT PRIMARY KEY,
    username         TEXT NOT NULL,
    email            TEXT NOT NULL,
    -- The chosen password, hashed as user_passwords keeps it.
    hashed_password  TEXT NOT NULL,
    password_version INTEGER NOT NULL,
    code_hash        BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- Set when the account was created from it.
    completed_at     INTEGER,
    -- What the registration form took besides (registration token, accepted terms), applied
    -- when the account is created.
    registration_token_id TEXT,
    accepted_terms_url    TEXT
);
