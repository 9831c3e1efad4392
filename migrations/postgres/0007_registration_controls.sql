-- Registration controls: registration tokens, and which terms of service each user accepted.

-- Tokens an operator hands out so that only their holders can register (`account:
-- registration_token_required`). Only the SHA-256 of the token is kept: the operator sees the
-- token once, when it is issued.
CREATE TABLE registration_tokens (
    id           UUID PRIMARY KEY,
    token_hash   BYTEA NOT NULL,
    -- How many registrations it allows; NULL: no limit.
    usage_limit  BIGINT,
    -- Registrations it was used for (counted in the registration's own transaction).
    times_used   BIGINT NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    CONSTRAINT registration_tokens_usage_limit_check CHECK (usage_limit IS NULL OR usage_limit >= 0)
);
CREATE UNIQUE INDEX registration_tokens_token_hash_key ON registration_tokens (token_hash);

-- The terms of service a user accepted (`account: terms_of_service_url`), and when: one row per
-- user and terms URL, the first acceptance kept.
CREATE TABLE user_terms (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    terms_url   TEXT NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX user_terms_user_id_terms_url_key ON user_terms (user_id, terms_url);
