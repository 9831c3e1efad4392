-- Indexes for the housekeeping deletes of what was never completed (provider/src/core/housekeeping.rs):
-- abandoned authorization grants and legacy SSO logins never exchanged (partial: exchanged rows,
-- kept for good, are never looked at), and dynamically registered clients that never got a
-- session (oauth2_sessions (client_id) is indexed since 0001; the grants' and device codes'
-- (client_id) since 0003, for the check that nobody is signing in with the client).
CREATE INDEX oauth2_authorization_grants_abandoned_idx ON oauth2_authorization_grants (created_at) WHERE exchanged_at IS NULL;
CREATE INDEX compat_sso_logins_abandoned_idx ON compat_sso_logins (created_at) WHERE exchanged_at IS NULL;
CREATE INDEX oauth2_clients_dynamic_created_at_idx ON oauth2_clients (created_at) WHERE is_static = FALSE;
