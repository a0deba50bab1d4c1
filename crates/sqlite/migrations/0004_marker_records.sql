-- runstore SQLite schema, version 4: compaction markers' records in a table
-- of their own, and no second copy of the keys of `events`.
--
-- A compaction marker remembers every id its stream ever compacted, so its
-- record grows with the stream's history (tens of megabytes at a million
-- ids). `events` is a WITHOUT ROWID table: a row lives in the primary key's
-- B-tree, and SQLite reads a row that spills onto overflow pages in full
-- whenever a seek compares a key with it. Version 2 kept seeks for a
-- stream's last seq away from such rows with `events_by_seq`, a copy of the
-- keys that every insert wrote a second time. Here a marker's record moves
-- to `marker_records`, and its `events` row keeps its columns and an empty
-- record: every row of `events` is again about the size of an event, a seek
-- in `events` itself is cheap, and the copy of the keys goes.
--
-- `marker_records` is a rowid table: its B-tree is keyed by the rowid, so a
-- seek compares integers and reads only the record it lands on; the stream
-- and seq find the rowid through the unique key's index, which holds only
-- keys.
CREATE TABLE IF NOT EXISTS marker_records (
    org_id        TEXT    NOT NULL,
    workspace_id  TEXT    NOT NULL,
    deployment_id TEXT    NOT NULL DEFAULT '',
    run_id        TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    record        TEXT    NOT NULL,
    UNIQUE (org_id, workspace_id, deployment_id, run_id, seq)
);

INSERT OR REPLACE INTO marker_records
    (org_id, workspace_id, deployment_id, run_id, seq, record)
SELECT org_id, workspace_id, deployment_id, run_id, seq, record FROM events
WHERE is_marker = 1 AND record <> '';

UPDATE events SET record = '' WHERE is_marker = 1;

-- Whatever deletes a marker's row (compaction, erasure), its record goes
-- with it.
CREATE TRIGGER IF NOT EXISTS events_drop_marker_record AFTER DELETE ON events
WHEN OLD.is_marker = 1
BEGIN
    DELETE FROM marker_records
    WHERE org_id = OLD.org_id AND workspace_id = OLD.workspace_id
      AND deployment_id = OLD.deployment_id AND run_id = OLD.run_id AND seq = OLD.seq;
END;

DROP INDEX IF EXISTS events_by_seq;
