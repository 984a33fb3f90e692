-- One row per registered client (a user of the original API, or an agent host).
CREATE TABLE clients (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    -- argon2id PHC string; the password itself is never stored.
    password_hash TEXT    NOT NULL,
    created_at_us INTEGER NOT NULL
);

-- Issued tokens, stored only as SHA-256 hashes.
CREATE TABLE tokens (
    token_hash    BLOB    PRIMARY KEY,
    client_id     INTEGER NOT NULL REFERENCES clients (id),
    created_at_us INTEGER NOT NULL
) WITHOUT ROWID;

-- Every sample of every client, keyed so a retried sample is stored once.
CREATE TABLE samples (
    client_id INTEGER NOT NULL REFERENCES clients (id),
    time_us   INTEGER NOT NULL,
    cpu_load  REAL,
    mem       REAL,
    storage   REAL,
    PRIMARY KEY (client_id, time_us)
) WITHOUT ROWID;
