-- The display name a user chose (account page, admin API, CLI, upstream claim import). The
-- provider owns it and pushes it to the homeserver's profile (`set_displayname` in
-- provision_user); NULL means none was set, and the homeserver's stays unset.
ALTER TABLE users ADD COLUMN display_name TEXT;
