-- The token exchange no longer claims its grant before calling the homeserver (0011): it checks
-- the grant read-only, upserts the device (idempotent, no connection held), then marks the grant
-- exchanged with a compare-and-set (`exchanged_at IS NULL`) in the transaction that issues the
-- tokens, so only one of two concurrent redemptions gets them (RFC 6749 §4.1.2, RFC 8628 §3.5).
-- The claim columns 0011 added go.
ALTER TABLE oauth2_authorization_grants DROP COLUMN exchange_claim;
ALTER TABLE oauth2_authorization_grants DROP COLUMN exchange_claimed_at;
ALTER TABLE oauth2_device_code_grants DROP COLUMN exchange_claim;
ALTER TABLE oauth2_device_code_grants DROP COLUMN exchange_claimed_at;
