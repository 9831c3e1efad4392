-- A device a token exchange (or a login) is upserting on the homeserver, written and committed
-- before the call and removed by the transaction that gives the device its session. A device
-- deletion or a device sync queued before that commit would otherwise read "no session holds
-- this device", then delete on the homeserver the device the exchange just upserted; while a
-- row here is fresh those jobs leave the device alone and retry later, and after their
-- homeserver call they check again (provider/src/core/matrix/provisioning.rs).
CREATE TABLE devices_in_provisioning (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
