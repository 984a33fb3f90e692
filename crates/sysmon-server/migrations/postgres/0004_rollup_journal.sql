-- Rollups are no longer updated in the transaction that stores samples:
-- that transaction appends one row here, naming the samples it stored,
-- and the server sums them into the rollup tables every few seconds from
-- memory, deleting the row in the same transaction. A row still here once
-- its server is gone (its advisory lock on instance_id released) names
-- samples whose rollups are missing; any server folds them from the
-- samples themselves.
CREATE TABLE rollup_journal (
    seq         BIGINT   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The server process that wrote the row (random per start).
    instance_id BIGINT   NOT NULL,
    client_ids  BIGINT[] NOT NULL,
    times_us    BIGINT[] NOT NULL
);
CREATE INDEX rollup_journal_instance ON rollup_journal (instance_id);
