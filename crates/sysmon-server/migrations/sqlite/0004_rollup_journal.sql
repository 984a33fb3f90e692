-- Rollups are no longer updated in the transaction that stores samples:
-- that transaction appends one row here, naming the samples it stored,
-- and the server sums them into the rollup tables every few seconds from
-- memory, deleting the row in the same transaction. A row still here
-- after a crash names samples whose rollups are missing; the server folds
-- them from the samples themselves when it starts.
CREATE TABLE rollup_journal (
    seq         INTEGER PRIMARY KEY,
    -- The server process that wrote the row (random per start).
    instance_id INTEGER NOT NULL,
    -- The stored samples' (client_id, time_us), 16 bytes each, little-endian.
    keys        BLOB    NOT NULL
);
