-- JWT client assertions (RFC 7523 §3 item 7, OIDC Core §9): the `jti` of every assertion a client
-- authenticated with, kept until the assertion expires, so none is accepted twice.
CREATE TABLE oauth2_client_assertion_jtis (
    client_id  TEXT NOT NULL REFERENCES oauth2_clients (id) ON DELETE CASCADE,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX oauth2_client_assertion_jtis_expires_at_idx ON oauth2_client_assertion_jtis (expires_at);
