-- runstore-postgres schema, version 1. Runs inside the store's schema: the
-- connection's search_path names it, so every name below is unqualified.
-- Ids are TEXT COLLATE "C": equality and order are bytewise, as in the
-- contract. Records are stored as the exact JSON text the store wrote (TEXT,
-- not JSONB, so key order and bytes survive); the columns next to them are
-- copies of the fields queries filter and sort on.

-- One row per stream (tenant + run): the append lock and the last seq.
-- key_hash is SHA-256 over org, workspace, a presence byte plus deployment,
-- and run, each NUL-terminated (ids hold no NUL, so the encoding is
-- injective, and an absent deployment differs from every present one). The
-- unique key is on the hash because the parts may be up to 4 KiB together,
-- beyond what a B-tree entry holds.
CREATE TABLE streams (
    stream_id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash       BYTEA NOT NULL,
    tenant_hash    BYTEA NOT NULL,
    org_id         TEXT COLLATE "C" NOT NULL,
    workspace_id   TEXT COLLATE "C" NOT NULL,
    has_deployment BOOLEAN NOT NULL,
    deployment_id  TEXT COLLATE "C" NOT NULL,
    run_id         TEXT COLLATE "C" NOT NULL,
    last_seq       BIGINT NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    CONSTRAINT streams_key UNIQUE (key_hash),
    CONSTRAINT streams_absent_deployment CHECK (has_deployment OR deployment_id = '')
);

-- list_runs: a tenant's runs in byte order.
CREATE INDEX streams_by_tenant ON streams (tenant_hash, run_id);

-- Live records (events and compaction markers) of each stream. No foreign
-- key to streams on the two hot tables: every row is written under its
-- stream row's lock with the stream_id that lock returned, stream rows are
-- never deleted, and a per-row key check would cost a lookup per event.
CREATE TABLE events (
    stream_id      BIGINT NOT NULL,
    seq            BIGINT NOT NULL CHECK (seq > 0),
    event_id       TEXT COLLATE "C" NOT NULL,
    is_marker      BOOLEAN NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    record         TEXT NOT NULL,
    -- A window read is a range scan of this key.
    CONSTRAINT events_pkey PRIMARY KEY (stream_id, seq),
    -- The duplicate check is a lookup of this key.
    CONSTRAINT events_event_id UNIQUE (stream_id, event_id)
);

-- Every id a stream's compaction marker remembers, with its original seq.
CREATE TABLE compacted_ids (
    stream_id BIGINT NOT NULL,
    event_id  TEXT COLLATE "C" NOT NULL,
    seq       BIGINT NOT NULL CHECK (seq > 0),
    CONSTRAINT compacted_ids_pkey PRIMARY KEY (stream_id, event_id)
);

-- Snapshots, keyed by stream and snapshot id.
CREATE TABLE snapshots (
    stream_id     BIGINT NOT NULL REFERENCES streams (stream_id),
    snapshot_id   TEXT COLLATE "C" NOT NULL,
    seq           BIGINT NOT NULL CHECK (seq >= 0),
    created_at_ms BIGINT NOT NULL,
    record        TEXT NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, snapshot_id)
);

-- list/latest read a stream's snapshots in snapshot order.
CREATE INDEX snapshots_order ON snapshots (stream_id, seq, created_at_ms, snapshot_id);
