-- Initial schema (SQLite). The PostgreSQL twin is migrations/postgres/0001_initial.sql: same tables,
-- same columns, same meaning. IDs are ULIDs (26-character text here, UUID in PostgreSQL);
-- timestamps are UTC (Unix milliseconds here, TIMESTAMPTZ in PostgreSQL). Every token and code is stored
-- as the SHA-256 of its value (`*_hash`), never in plain text. Lifecycle is kept as nullable
-- timestamps (`finished_at`, `revoked_at`, ...), so a row's state is derivable and auditable.

-- Accounts -----------------------------------------------------------------------------------

CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    username          TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    locked_at         INTEGER,
    deactivated_at    INTEGER,
    -- May this user be granted `urn:synapse:admin:*` (MSC2967)?
    can_request_admin BOOLEAN NOT NULL DEFAULT FALSE
);
-- A username is never issued twice, not even after deactivation.
CREATE UNIQUE INDEX users_username_key ON users (username);

CREATE TABLE user_passwords (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- PHC string (argon2id), or a bcrypt hash imported from elsewhere
    hashed_password TEXT NOT NULL,
    -- which hashing scheme of the config produced it, for upgrade on login
    version         INTEGER NOT NULL,
    upgraded_from_id TEXT REFERENCES user_passwords (id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX user_passwords_user_id_idx ON user_passwords (user_id, created_at);

CREATE TABLE user_emails (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER
);
CREATE UNIQUE INDEX user_emails_user_email_key ON user_emails (user_id, email);
CREATE INDEX user_emails_email_idx ON user_emails (email);

-- Clients (static ones from the config, dynamic ones from RFC 7591 / MSC2966 registration) ---

CREATE TABLE oauth2_clients (
    id                         TEXT PRIMARY KEY,
    client_id                  TEXT NOT NULL,
    -- true for clients written by `config sync` (the config owns them)
    is_static                  BOOLEAN NOT NULL,
    -- client secret encrypted with the configured encryption key (never hashed: client_secret_jwt
    -- needs the plain value), NULL for public and private_key_jwt clients
    encrypted_client_secret    TEXT,
    token_endpoint_auth_method TEXT NOT NULL,
    -- the registered client metadata (RFC 7591 §2) as a JSON object
    metadata                   TEXT NOT NULL,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL
);
CREATE UNIQUE INDEX oauth2_clients_client_id_key ON oauth2_clients (client_id);

-- Browser sessions (the login cookie) ---------------------------------------------------------

CREATE TABLE browser_sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    last_active_at INTEGER,
    user_agent     TEXT,
    ip_address     TEXT
);
CREATE INDEX browser_sessions_user_id_idx ON browser_sessions (user_id, created_at);

-- Each time the user proved who they are in a browser session (for auth_time and max_age).
CREATE TABLE browser_session_authentications (
    id                 TEXT PRIMARY KEY,
    browser_session_id TEXT NOT NULL REFERENCES browser_sessions (id) ON DELETE CASCADE,
    -- "password" or "upstream:<link id>"
    method             TEXT NOT NULL,
    created_at         INTEGER NOT NULL
);
CREATE INDEX browser_session_authentications_session_idx
    ON browser_session_authentications (browser_session_id, created_at);

-- OAuth 2.0 sessions and tokens -----------------------------------------------------------------

CREATE TABLE oauth2_sessions (
    id                 TEXT PRIMARY KEY,
    -- NULL for client_credentials sessions
    user_id            TEXT REFERENCES users (id) ON DELETE CASCADE,
    client_id          TEXT NOT NULL REFERENCES oauth2_clients (id) ON DELETE CASCADE,
    browser_session_id TEXT REFERENCES browser_sessions (id) ON DELETE SET NULL,
    -- space-separated granted scope (RFC 6749 §3.3)
    scope              TEXT NOT NULL,
    -- the Matrix device of the device scope (MSC2967), if any
    device_id          TEXT,
    created_at         INTEGER NOT NULL,
    finished_at        INTEGER,
    last_active_at     INTEGER,
    user_agent         TEXT
);
CREATE INDEX oauth2_sessions_user_id_idx ON oauth2_sessions (user_id, created_at);
CREATE INDEX oauth2_sessions_client_id_idx ON oauth2_sessions (client_id);
CREATE INDEX oauth2_sessions_browser_session_idx ON oauth2_sessions (browser_session_id);

CREATE TABLE oauth2_access_tokens (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES oauth2_sessions (id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX oauth2_access_tokens_hash_key ON oauth2_access_tokens (token_hash);
CREATE INDEX oauth2_access_tokens_session_idx ON oauth2_access_tokens (session_id);

CREATE TABLE oauth2_refresh_tokens (
    id                    TEXT PRIMARY KEY,
    session_id            TEXT NOT NULL REFERENCES oauth2_sessions (id) ON DELETE CASCADE,
    token_hash            BLOB NOT NULL,
    -- the access token issued together with this refresh token
    access_token_id       TEXT REFERENCES oauth2_access_tokens (id) ON DELETE SET NULL,
    created_at            INTEGER NOT NULL,
    -- set when this token was exchanged (rotation, RFC 6749 §6 / RFC 9700 §4.14.2)
    consumed_at           INTEGER,
    -- the token that replaced it; a replay of a consumed token whose successor was already used
    -- means the session is compromised
    next_refresh_token_id TEXT REFERENCES oauth2_refresh_tokens (id) ON DELETE SET NULL,
    revoked_at            INTEGER
);
CREATE UNIQUE INDEX oauth2_refresh_tokens_hash_key ON oauth2_refresh_tokens (token_hash);
CREATE INDEX oauth2_refresh_tokens_session_idx ON oauth2_refresh_tokens (session_id);

-- Authorization code grants (RFC 6749 §4.1, RFC 7636 PKCE)
CREATE TABLE oauth2_authorization_grants (
    id                    TEXT PRIMARY KEY,
    client_id             TEXT NOT NULL REFERENCES oauth2_clients (id) ON DELETE CASCADE,
    redirect_uri          TEXT NOT NULL,
    scope                 TEXT NOT NULL,
    state                 TEXT,
    nonce                 TEXT,
    -- query | fragment | form_post
    response_mode         TEXT NOT NULL,
    code_challenge        TEXT,
    code_challenge_method TEXT,
    max_age               INTEGER,
    -- space-separated prompt values (login, create, consent, none)
    prompt                TEXT,
    login_hint            TEXT,
    code_hash             BLOB,
    created_at            INTEGER NOT NULL,
    -- set when the user approved: the browser session and the OAuth session it created
    browser_session_id    TEXT REFERENCES browser_sessions (id) ON DELETE SET NULL,
    session_id            TEXT REFERENCES oauth2_sessions (id) ON DELETE SET NULL,
    fulfilled_at          INTEGER,
    -- single use (RFC 6749 §4.1.2): set when the code was exchanged
    exchanged_at          INTEGER,
    cancelled_at          INTEGER
);
CREATE UNIQUE INDEX oauth2_authorization_grants_code_key ON oauth2_authorization_grants (code_hash);

-- Consent remembered per user, client and scope set
CREATE TABLE oauth2_consents (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES oauth2_clients (id) ON DELETE CASCADE,
    -- the scope tokens, sorted and space-separated
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX oauth2_consents_key ON oauth2_consents (user_id, client_id, scope);

-- Device authorization grants (RFC 8628)
CREATE TABLE oauth2_device_code_grants (
    id                 TEXT PRIMARY KEY,
    client_id          TEXT NOT NULL REFERENCES oauth2_clients (id) ON DELETE CASCADE,
    scope              TEXT NOT NULL,
    device_code_hash   BLOB NOT NULL,
    -- normalised (upper case, no separators); short-lived, so stored as is
    user_code          TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    -- for slow_down (RFC 8628 §3.5)
    last_polled_at     INTEGER,
    browser_session_id TEXT REFERENCES browser_sessions (id) ON DELETE SET NULL,
    fulfilled_at       INTEGER,
    rejected_at        INTEGER,
    session_id         TEXT REFERENCES oauth2_sessions (id) ON DELETE SET NULL,
    exchanged_at       INTEGER,
    ip_address         TEXT,
    user_agent         TEXT
);
CREATE UNIQUE INDEX oauth2_device_code_grants_device_code_key ON oauth2_device_code_grants (device_code_hash);
CREATE UNIQUE INDEX oauth2_device_code_grants_user_code_key ON oauth2_device_code_grants (user_code);

-- Compatibility layer (legacy Matrix login API, MSC3824) ---------------------------------------

CREATE TABLE compat_sessions (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id         TEXT NOT NULL,
    human_name        TEXT,
    is_synapse_admin  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    last_active_at    INTEGER,
    user_agent        TEXT
);
CREATE INDEX compat_sessions_user_id_idx ON compat_sessions (user_id, created_at);
-- one active session per device of a user, even when two logins race
CREATE UNIQUE INDEX compat_sessions_active_device_key
    ON compat_sessions (user_id, device_id) WHERE finished_at IS NULL;

CREATE TABLE compat_access_tokens (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES compat_sessions (id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    -- NULL: never expires (compat tokens issued without a refresh token)
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX compat_access_tokens_hash_key ON compat_access_tokens (token_hash);
CREATE INDEX compat_access_tokens_session_idx ON compat_access_tokens (session_id);

CREATE TABLE compat_refresh_tokens (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES compat_sessions (id) ON DELETE CASCADE,
    token_hash      BLOB NOT NULL,
    access_token_id TEXT REFERENCES compat_access_tokens (id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL,
    consumed_at     INTEGER,
    revoked_at      INTEGER
);
CREATE UNIQUE INDEX compat_refresh_tokens_hash_key ON compat_refresh_tokens (token_hash);
CREATE INDEX compat_refresh_tokens_session_idx ON compat_refresh_tokens (session_id);

-- m.login.sso → loginToken → m.login.token
CREATE TABLE compat_sso_logins (
    id               TEXT PRIMARY KEY,
    redirect_uri     TEXT NOT NULL,
    login_token_hash BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    session_id       TEXT REFERENCES compat_sessions (id) ON DELETE CASCADE,
    fulfilled_at     INTEGER,
    exchanged_at     INTEGER
);
CREATE UNIQUE INDEX compat_sso_logins_token_key ON compat_sso_logins (login_token_hash);

-- Upstream OIDC providers --------------------------------------------------------------------

CREATE TABLE upstream_oauth_providers (
    id                         TEXT PRIMARY KEY,
    issuer                     TEXT,
    human_name                 TEXT,
    brand_name                 TEXT,
    client_id                  TEXT NOT NULL,
    encrypted_client_secret    TEXT,
    token_endpoint_auth_method TEXT NOT NULL,
    scope                      TEXT NOT NULL,
    -- discovery mode, PKCE mode, explicit endpoints, claim imports... as a JSON object
    settings                   TEXT NOT NULL,
    created_at                 INTEGER NOT NULL,
    disabled_at                INTEGER
);

CREATE TABLE upstream_oauth_links (
    id                 TEXT PRIMARY KEY,
    provider_id        TEXT NOT NULL REFERENCES upstream_oauth_providers (id) ON DELETE CASCADE,
    -- NULL until the upstream identity is linked to a local account
    user_id            TEXT REFERENCES users (id) ON DELETE CASCADE,
    subject            TEXT NOT NULL,
    human_account_name TEXT,
    created_at         INTEGER NOT NULL
);
CREATE UNIQUE INDEX upstream_oauth_links_subject_key ON upstream_oauth_links (provider_id, subject);
CREATE INDEX upstream_oauth_links_user_idx ON upstream_oauth_links (user_id);

CREATE TABLE upstream_oauth_authorization_sessions (
    id                 TEXT PRIMARY KEY,
    provider_id        TEXT NOT NULL REFERENCES upstream_oauth_providers (id) ON DELETE CASCADE,
    state_hash         BLOB NOT NULL,
    code_verifier      TEXT,
    nonce              TEXT,
    link_id            TEXT REFERENCES upstream_oauth_links (id) ON DELETE SET NULL,
    id_token           TEXT,
    -- claims received from the upstream (ID token and userinfo), as a JSON object
    claims             TEXT,
    created_at         INTEGER NOT NULL,
    completed_at       INTEGER,
    consumed_at        INTEGER
);
CREATE UNIQUE INDEX upstream_oauth_authorization_sessions_state_key
    ON upstream_oauth_authorization_sessions (state_hash);

-- Job queue (homeserver provisioning, mail, cleanup): durable, retried with backoff --------------

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    -- a worker holds the job until locked_until; past that another worker may take it over
    locked_by    TEXT,
    locked_until INTEGER,
    last_error   TEXT,
    completed_at INTEGER,
    failed_at    INTEGER
);
-- the queue's hot index: pending jobs by due time
CREATE INDEX jobs_pending_idx ON jobs (run_at) WHERE completed_at IS NULL AND failed_at IS NULL;
