-- Enrolment tokens (registration.mode: token): an admin creates one
-- (`sysmon-server enroll-token create`, or the API), and a new client may
-- register with POST /client only by presenting it. Stored as SHA-256
-- hashes, like client tokens. `uses_left` NULL: reusable until it expires
-- or is revoked; `expires_at_us` NULL: never expires.
CREATE TABLE enrollment_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    BYTEA NOT NULL UNIQUE,
    note          TEXT  NOT NULL,
    created_at_us BIGINT NOT NULL,
    expires_at_us BIGINT,
    uses_left     BIGINT,
    used          BIGINT NOT NULL DEFAULT 0
);
