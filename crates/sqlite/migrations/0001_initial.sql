-- runstore SQLite schema, version 1.
--
-- Every table is keyed by the tenant (org_id, workspace_id, deployment_id)
-- and the run. An absent deployment is stored as '' (empty string): a
-- present deployment id is never empty (the id rule), so '' cannot collide
-- with one, and unlike NULL it takes part in every unique key.
--
-- Statements use IF NOT EXISTS so that two processes opening a new database
-- file at the same moment can both run this migration; the loser's attempt
-- is retried and then finds it applied.

-- Every record of every stream: events and compaction markers.
-- `record` is the serde_json text of the EventRecord; reads parse it. The
-- other columns are copies of its fields, for keys, ordering and compaction.
-- The primary key is the stream and seq (CONTRACT §1, §3): rows of a stream
-- are stored together in seq order, so a tail read is one range scan.
CREATE TABLE IF NOT EXISTS events (
    org_id         TEXT    NOT NULL,
    workspace_id   TEXT    NOT NULL,
    deployment_id  TEXT    NOT NULL DEFAULT '',
    run_id         TEXT    NOT NULL,
    seq            INTEGER NOT NULL CHECK (seq > 0),
    event_id       TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    is_marker      INTEGER NOT NULL DEFAULT 0 CHECK (is_marker IN (0, 1)),
    record         TEXT    NOT NULL,
    PRIMARY KEY (org_id, workspace_id, deployment_id, run_id, seq)
) WITHOUT ROWID;

-- Idempotency by event id within a stream (CONTRACT §2).
CREATE UNIQUE INDEX IF NOT EXISTS events_by_event_id
    ON events (org_id, workspace_id, deployment_id, run_id, event_id);

-- The ids compaction markers remember (CONTRACT §2, §10): a duplicate check
-- after compaction is one lookup in this table. The marker's payload stays
-- the record of truth; this table is its index, written in the same
-- transaction as the marker.
CREATE TABLE IF NOT EXISTS compacted_ids (
    org_id        TEXT    NOT NULL,
    workspace_id  TEXT    NOT NULL,
    deployment_id TEXT    NOT NULL DEFAULT '',
    run_id        TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    PRIMARY KEY (org_id, workspace_id, deployment_id, run_id, event_id)
) WITHOUT ROWID;

-- One row per stream that holds at least one record, written with the
-- stream's first record; streams never become empty (compaction leaves a
-- marker), so rows are never deleted. Serves list_runs and streams without
-- scanning events.
CREATE TABLE IF NOT EXISTS streams (
    org_id        TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    deployment_id TEXT NOT NULL DEFAULT '',
    run_id        TEXT NOT NULL,
    PRIMARY KEY (org_id, workspace_id, deployment_id, run_id)
) WITHOUT ROWID;

-- Snapshots keyed by (tenant, run_id, snapshot_id) (CONTRACT §12).
-- `record` is the serde_json text of the SnapshotRecord.
CREATE TABLE IF NOT EXISTS snapshots (
    org_id        TEXT    NOT NULL,
    workspace_id  TEXT    NOT NULL,
    deployment_id TEXT    NOT NULL DEFAULT '',
    run_id        TEXT    NOT NULL,
    snapshot_id   TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    record        TEXT    NOT NULL,
    UNIQUE (org_id, workspace_id, deployment_id, run_id, snapshot_id)
);

-- A stream's snapshots in snapshot order (seq, created_at_ms, snapshot_id;
-- TEXT compares bytewise under the default BINARY collation), CONTRACT §13.
CREATE INDEX IF NOT EXISTS snapshots_in_order
    ON snapshots (org_id, workspace_id, deployment_id, run_id, seq, created_at_ms, snapshot_id);
