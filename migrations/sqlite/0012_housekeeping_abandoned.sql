-- Indexes for the housekeeping deletes of what was never completed (provider/src/core/housekeeping.rs):
-- abandoned authorization grants, legacy SSO logins never exchanged, and dynamically registered
-- clients that never got a session (oauth2_sessions (client_id) is indexed since 0001).
CREATE INDEX oauth2_authorization_grants_created_at_idx ON oauth2_authorization_grants (created_at);
CREATE INDEX compat_sso_logins_created_at_idx ON compat_sso_logins (created_at);
CREATE INDEX oauth2_clients_dynamic_created_at_idx ON oauth2_clients (created_at) WHERE is_static = FALSE;
