-- A later part of a sample (a Prometheus scrape split across remote-write
-- requests, a Telegraf tick across flushes) completes the stored sample,
-- which means reading the file systems stored with it. Hot rows are found
-- by rowid; their file systems had no index at all. By time, not by
-- (client, time): times grow, so a commit appends to the index's last
-- page instead of writing one page per host, which is what the hot table
-- exists to avoid.
CREATE INDEX hot_sample_filesystems_by_time ON hot_sample_filesystems (time_us);
