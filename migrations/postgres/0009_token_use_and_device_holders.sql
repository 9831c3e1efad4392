-- Refresh rotation (Matrix client-server API "Refreshing access tokens", RFC 9700 §4.14.2): the
-- previous refresh token stays usable for a retry only while neither token issued in its place
-- was used. Recording the first use of an access token is one conditional UPDATE (only while
-- the column is NULL), not a write per request.
ALTER TABLE oauth2_access_tokens ADD COLUMN first_used_at TIMESTAMPTZ;
ALTER TABLE compat_access_tokens ADD COLUMN first_used_at TIMESTAMPTZ;

-- Compat refresh tokens now know their successor, as OAuth 2.0 ones do.
ALTER TABLE compat_refresh_tokens
    ADD COLUMN next_refresh_token_id UUID REFERENCES compat_refresh_tokens (id) ON DELETE SET NULL;
CREATE INDEX compat_refresh_tokens_next_idx ON compat_refresh_tokens (next_refresh_token_id);

-- A Matrix device is one session: a new session claiming a device ID finds the live session that
-- holds it through this index.
CREATE INDEX oauth2_sessions_active_device_idx
    ON oauth2_sessions (user_id, device_id) WHERE finished_at IS NULL;
