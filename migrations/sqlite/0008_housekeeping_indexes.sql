-- Indexes for the housekeeping deletes (provider/src/housekeeping.rs): each run deletes a bounded
-- batch of expired rows per table, found through these instead of a scan of the whole table.
CREATE INDEX user_email_verifications_expires_at_idx ON user_email_verifications (expires_at);
CREATE INDEX user_recovery_tickets_expires_at_idx ON user_recovery_tickets (expires_at);
CREATE INDEX pending_registrations_expires_at_idx ON pending_registrations (expires_at);
CREATE INDEX oauth2_device_code_grants_expires_at_idx ON oauth2_device_code_grants (expires_at);
CREATE INDEX upstream_oauth_authorization_sessions_created_at_idx
    ON upstream_oauth_authorization_sessions (created_at);
