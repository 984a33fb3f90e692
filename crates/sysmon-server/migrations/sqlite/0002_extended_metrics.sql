-- What agents measure beyond the original three; units are in the names.
ALTER TABLE samples ADD COLUMN load_average_1m REAL;
ALTER TABLE samples ADD COLUMN load_average_5m REAL;
ALTER TABLE samples ADD COLUMN load_average_15m REAL;
ALTER TABLE samples ADD COLUMN memory_used_bytes INTEGER;
ALTER TABLE samples ADD COLUMN memory_available_bytes INTEGER;
ALTER TABLE samples ADD COLUMN memory_total_bytes INTEGER;
ALTER TABLE samples ADD COLUMN swap_used_bytes INTEGER;
ALTER TABLE samples ADD COLUMN swap_total_bytes INTEGER;
ALTER TABLE samples ADD COLUMN disk_read_bytes_per_second REAL;
ALTER TABLE samples ADD COLUMN disk_write_bytes_per_second REAL;
ALTER TABLE samples ADD COLUMN network_receive_bytes_per_second REAL;
ALTER TABLE samples ADD COLUMN network_transmit_bytes_per_second REAL;
ALTER TABLE samples ADD COLUMN uptime_seconds INTEGER;
ALTER TABLE samples ADD COLUMN temperature_celsius REAL;

-- Usage of each mounted file system, per sample.
CREATE TABLE sample_filesystems (
    client_id   INTEGER NOT NULL,
    time_us     INTEGER NOT NULL,
    mount_point TEXT NOT NULL,
    used_bytes  INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL,
    PRIMARY KEY (client_id, time_us, mount_point),
    FOREIGN KEY (client_id, time_us) REFERENCES samples (client_id, time_us)
) WITHOUT ROWID;
