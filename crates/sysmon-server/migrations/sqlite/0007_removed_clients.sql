-- A removed client (`sysmon-server client remove`, or the API) keeps its
-- row as a tombstone: renamed to a name no one can register (it starts with
-- a control character), with the time it was removed. Rows that reference
-- it (samples a request had in flight, summaries the rollup fold still
-- held) stay valid until the retention job purges them, so removing a
-- client never fails a commit of anyone else's.
ALTER TABLE clients ADD COLUMN removed_at_us INTEGER;
