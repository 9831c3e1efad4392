-- The token exchange holds no transaction across its call to the homeserver (the device of a
-- grant is upserted there before the tokens are given): it first claims the grant (a random
-- claim ID and when it was taken), commits, calls the homeserver with no connection held, then
-- completes the exchange only if its claim still holds, or releases the claim when the
-- homeserver failed, so the client may retry. A later exchange of the same code takes the claim
-- over (a retry after the database or a replica failed mid-exchange is never locked out); only
-- the latest claim can complete, so the tokens are issued once.
ALTER TABLE oauth2_authorization_grants ADD COLUMN exchange_claim TEXT;
ALTER TABLE oauth2_authorization_grants ADD COLUMN exchange_claimed_at INTEGER;
ALTER TABLE oauth2_device_code_grants ADD COLUMN exchange_claim TEXT;
ALTER TABLE oauth2_device_code_grants ADD COLUMN exchange_claimed_at INTEGER;
