-- Indexes behind the foreign keys that cascade or set null, so deleting a client, a user, a
-- browser session or an OAuth 2.0 session (config sync --prune, account deletion, logout) finds
-- the dependent rows through an index instead of scanning their tables.
CREATE INDEX oauth2_authorization_grants_client_idx ON oauth2_authorization_grants (client_id);
CREATE INDEX oauth2_authorization_grants_browser_session_idx ON oauth2_authorization_grants (browser_session_id);
CREATE INDEX oauth2_authorization_grants_session_idx ON oauth2_authorization_grants (session_id);
CREATE INDEX oauth2_device_code_grants_client_idx ON oauth2_device_code_grants (client_id);
CREATE INDEX oauth2_device_code_grants_browser_session_idx ON oauth2_device_code_grants (browser_session_id);
CREATE INDEX oauth2_device_code_grants_session_idx ON oauth2_device_code_grants (session_id);
CREATE INDEX oauth2_consents_client_idx ON oauth2_consents (client_id);
CREATE INDEX oauth2_refresh_tokens_access_token_idx ON oauth2_refresh_tokens (access_token_id);
CREATE INDEX oauth2_refresh_tokens_next_idx ON oauth2_refresh_tokens (next_refresh_token_id);
CREATE INDEX compat_refresh_tokens_access_token_idx ON compat_refresh_tokens (access_token_id);
CREATE INDEX compat_sso_logins_session_idx ON compat_sso_logins (session_id);
CREATE INDEX user_passwords_upgraded_from_idx ON user_passwords (upgraded_from_id);
CREATE INDEX upstream_oauth_authorization_sessions_provider_idx ON upstream_oauth_authorization_sessions (provider_id);
CREATE INDEX upstream_oauth_authorization_sessions_link_idx ON upstream_oauth_authorization_sessions (link_id);
