-- runstore SQLite schema, version 2: the keys of `events` by seq.
--
-- A seek in `events` (a WITHOUT ROWID table: its rows live in its primary
-- key's B-tree) compares the key sought with the rows on its way, and SQLite
-- reads a row whose record spills onto overflow pages in full to compare
-- it. A compaction marker's record holds every id it remembers (tens of
-- megabytes at a million ids), so finding a stream's last seq in `events`
-- read its marker whole. This index holds only the keys: the last-seq
-- lookups of appends and `next_seq` go through it and never read a record.
-- Built once, when a store written before it is opened.
CREATE INDEX IF NOT EXISTS events_by_seq
    ON events (org_id, workspace_id, deployment_id, run_id, seq);
