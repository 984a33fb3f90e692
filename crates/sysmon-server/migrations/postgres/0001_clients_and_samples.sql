-- One row per registered client (a user of the original API, or an agent host).
CREATE TABLE clients (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT   NOT NULL UNIQUE,
    -- argon2id PHC string; the password itself is never stored.
    password_hash TEXT   NOT NULL,
    created_at_us BIGINT NOT NULL
);

-- Issued tokens, stored only as SHA-256 hashes.
CREATE TABLE tokens (
    token_hash    BYTEA  PRIMARY KEY,
    client_id     BIGINT NOT NULL REFERENCES clients (id),
    created_at_us BIGINT NOT NULL
);
CREATE INDEX tokens_client_id ON tokens (client_id);

-- Every sample of every client, keyed so a retried sample is stored once.
CREATE TABLE samples (
    client_id BIGINT NOT NULL REFERENCES clients (id),
    time_us   BIGINT NOT NULL,
    cpu_load  DOUBLE PRECISION,
    mem       DOUBLE PRECISION,
    storage   DOUBLE PRECISION,
    PRIMARY KEY (client_id, time_us)
);
