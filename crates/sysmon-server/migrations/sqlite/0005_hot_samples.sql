-- Where ingest appends samples. `samples` is clustered by (client_id,
-- time_us), so a commit of one sample from each of N hosts rewrote N leaf
-- pages, and WAL writes whole pages: about 4 KB per stored row. This table
-- has no key but its rowid, in commit order, so a commit writes the one
-- page it appends to. Its rows are also the rollup journal: the rollup fold
-- (every ingest.fold_interval_seconds, sooner when this table is large,
-- at shutdown, and at start for what a crash left) merges their summaries
-- and moves them into `samples` sorted by key (each host's page written
-- once for many rows) in one transaction. A sample is in exactly one of
-- the two tables, and here exactly while its summary is not in the rollups.
--
-- The same columns as `samples`, in the same order (the views below pair
-- them by position): a new metric's migration adds its column to both.
CREATE TABLE hot_samples (
    client_id INTEGER NOT NULL REFERENCES clients (id),
    time_us   INTEGER NOT NULL,
    cpu_load  REAL,
    mem       REAL,
    storage   REAL,
    load_average_1m REAL,
    load_average_5m REAL,
    load_average_15m REAL,
    memory_used_bytes INTEGER,
    memory_available_bytes INTEGER,
    memory_total_bytes INTEGER,
    swap_used_bytes INTEGER,
    swap_total_bytes INTEGER,
    disk_read_bytes_per_second REAL,
    disk_write_bytes_per_second REAL,
    network_receive_bytes_per_second REAL,
    network_transmit_bytes_per_second REAL,
    uptime_seconds INTEGER,
    temperature_celsius REAL
);

-- The file systems of the samples in hot_samples, moved with them.
CREATE TABLE hot_sample_filesystems (
    client_id   INTEGER NOT NULL,
    time_us     INTEGER NOT NULL,
    mount_point TEXT NOT NULL,
    used_bytes  INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL
);

-- Every stored sample wherever it is, for queries by hand and for tests.
-- The server reads the two tables separately: through a UNION ALL, SQLite
-- cannot answer MIN/MAX of a client's time from the primary key.
CREATE VIEW stored_samples AS
    SELECT * FROM samples UNION ALL SELECT * FROM hot_samples;

CREATE VIEW stored_sample_filesystems AS
    SELECT * FROM sample_filesystems UNION ALL SELECT * FROM hot_sample_filesystems;
