-- Fleet tokens: an admin's token that may push samples for many hosts
-- (Prometheus remote write, InfluxDB line protocol): any host, or those
-- whose names match `hosts` (a pattern with * and ?), optionally creating
-- hosts not seen before. Stored as SHA-256 hashes, like client tokens;
-- revoking one deletes it and bumps the auth epoch.
CREATE TABLE fleet_tokens (
    id            INTEGER PRIMARY KEY,
    token_hash    BLOB    NOT NULL UNIQUE,
    note          TEXT    NOT NULL,
    hosts         TEXT    NOT NULL,
    create_hosts  BOOLEAN NOT NULL,
    created_at_us INTEGER NOT NULL
);
