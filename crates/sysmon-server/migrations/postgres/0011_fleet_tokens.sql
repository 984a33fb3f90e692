-- Fleet tokens: an admin's token for many hosts at once, any host or
-- those whose names match `hosts` (a pattern with * and ?). A push token
-- (InfluxDB line protocol, Prometheus remote write) writes the hosts
-- fleet tokens created, optionally creating hosts not seen before; an
-- export token reads every host it covers from /metrics/fleet. Stored as
-- SHA-256 hashes, like client tokens; revoking one deletes it and bumps
-- the auth epoch.
CREATE TABLE fleet_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    BYTEA   NOT NULL UNIQUE,
    note          TEXT    NOT NULL,
    hosts         TEXT    NOT NULL,
    create_hosts  BOOLEAN NOT NULL,
    export        BOOLEAN NOT NULL,
    created_at_us BIGINT  NOT NULL
);

-- Hosts a push token created: fleet tokens write these only, never a host
-- that registered itself or an admin added (whose name a token's pattern
-- may happen to match).
ALTER TABLE clients ADD COLUMN created_by_fleet BOOLEAN NOT NULL DEFAULT FALSE;
