-- What agents measure beyond the original three; units are in the names.
ALTER TABLE samples ADD COLUMN load_average_1m DOUBLE PRECISION;
ALTER TABLE samples ADD COLUMN load_average_5m DOUBLE PRECISION;
ALTER TABLE samples ADD COLUMN load_average_15m DOUBLE PRECISION;
ALTER TABLE samples ADD COLUMN memory_used_bytes BIGINT;
ALTER TABLE samples ADD COLUMN memory_available_bytes BIGINT;
ALTER TABLE samples ADD COLUMN memory_total_bytes BIGINT;
ALTER TABLE samples ADD COLUMN swap_used_bytes BIGINT;
ALTER TABLE samples ADD COLUMN swap_total_bytes BIGINT;
ALTER TABLE samples ADD COLUMN disk_read_bytes_per_second DOUBLE PRECISION;
ALTER TABLE samples ADD COLUMN disk_write_bytes_per_second DOUBLE PRECISION;
ALTER TABLE samples ADD COLUMN network_receive_bytes_per_second DOUBLE PRECISION;
ALTER TABLE samples ADD COLUMN network_transmit_bytes_per_second DOUBLE PRECISION;
ALTER TABLE samples ADD COLUMN uptime_seconds BIGINT;
ALTER TABLE samples ADD COLUMN temperature_celsius DOUBLE PRECISION;

-- Usage of each mounted file system, per sample.
CREATE TABLE sample_filesystems (
    client_id   BIGINT NOT NULL,
    time_us     BIGINT NOT NULL,
    mount_point TEXT NOT NULL,
    used_bytes  BIGINT NOT NULL,
    total_bytes BIGINT NOT NULL,
    PRIMARY KEY (client_id, time_us, mount_point),
    FOREIGN KEY (client_id, time_us) REFERENCES samples (client_id, time_us)
);
