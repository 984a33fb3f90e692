-- Bumped whenever tokens are revoked (`sysmon-server client revoke-tokens`,
-- or the API), by whichever process revokes them. Every server reads it
-- once a second and forgets the tokens it had cached when it changes, so a
-- revocation holds everywhere within a second.
CREATE TABLE auth_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT  NOT NULL
);
INSERT INTO auth_epoch (id, epoch) VALUES (1, 0);
