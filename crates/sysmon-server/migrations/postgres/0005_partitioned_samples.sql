-- The samples and their file systems, partitioned by time: one partition
-- of each table per UTC day, named after it (samples_p20261202,
-- sample_filesystems_p20261202) and covering
-- [day * 86400000000, (day + 1) * 86400000000) in time_us.
--
-- Why partitions: raw retention then drops whole partitions instead of
-- deleting rows one by one (no dead rows left for vacuum, no index churn).
-- Why a day: it is the unit retention is configured in
-- (retention.raw_days), so a partition expires at most a day after its
-- oldest row would have; a day of a large fleet is a partition of a
-- comfortable size; and a year is 365 partitions per table: reads within
-- a time range touch only its days, and the few that look through every
-- day (a client's first and latest sample) measured 60 ms for a year of
-- days, against 3 ms unpartitioned. Wider partitions would make those
-- cheaper and retention later.
--
-- No foreign keys: their triggers ran for every row stored, and neither is
-- needed. Clients are never deleted, and file systems are written in the
-- same statement as their sample (and dropped with its partition).
--
-- The server creates later partitions itself (src/store/partitions.rs),
-- ahead of time and for any older day a batch brings; this migration
-- creates those the rows stored so far need, with the same names and
-- bounds, and moves the rows.

-- The old tables step aside, their primary keys' names too, which the new
-- tables take.
ALTER TABLE sample_filesystems RENAME TO sample_filesystems_unpartitioned;
ALTER INDEX sample_filesystems_pkey RENAME TO sample_filesystems_unpartitioned_pkey;
ALTER TABLE samples RENAME TO samples_unpartitioned;
ALTER INDEX samples_pkey RENAME TO samples_unpartitioned_pkey;

-- LIKE keeps every column in its order (the metric columns of 0001 and
-- 0002 included) with NOT NULL, and copies no foreign key. The partition
-- key, time_us, is part of each primary key, as PostgreSQL requires, so
-- ON CONFLICT (client_id, time_us) still finds replays.
CREATE TABLE samples (
    LIKE samples_unpartitioned,
    PRIMARY KEY (client_id, time_us)
) PARTITION BY RANGE (time_us);

CREATE TABLE sample_filesystems (
    LIKE sample_filesystems_unpartitioned,
    PRIMARY KEY (client_id, time_us, mount_point)
) PARTITION BY RANGE (time_us);

DO $$
DECLARE
    day_us CONSTANT BIGINT := 86400000000;
    day BIGINT;
    suffix TEXT;
BEGIN
    FOR day IN
        -- floor, not integer division, which rounds towards zero.
        SELECT floor(time_us::NUMERIC / day_us)::BIGINT FROM samples_unpartitioned
        UNION
        SELECT floor(time_us::NUMERIC / day_us)::BIGINT FROM sample_filesystems_unpartitioned
    LOOP
        suffix := to_char(to_timestamp(day * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD');
        EXECUTE format('CREATE TABLE %I PARTITION OF samples FOR VALUES FROM (%s) TO (%s)',
                       'samples_p' || suffix, day * day_us, (day + 1) * day_us);
        EXECUTE format('CREATE TABLE %I PARTITION OF sample_filesystems FOR VALUES FROM (%s) TO (%s)',
                       'sample_filesystems_p' || suffix, day * day_us, (day + 1) * day_us);
    END LOOP;
END
$$;

INSERT INTO samples SELECT * FROM samples_unpartitioned;
INSERT INTO sample_filesystems SELECT * FROM sample_filesystems_unpartitioned;

-- File systems first: their foreign key points at the old samples.
DROP TABLE sample_filesystems_unpartitioned;
DROP TABLE samples_unpartitioned;
