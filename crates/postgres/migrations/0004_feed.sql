-- runstore-postgres schema, version 4: the tenant change feed (CONTRACT §29).
--
-- PostgreSQL runs writers of different streams concurrently, so a counter
-- taken inside a transaction is not lossless: a transaction holding a lower
-- number may commit after a reader has read past it. Instead each record
-- row carries
--
--   tx         the writing transaction's id (txid_current(), 64 bits with
--              the epoch, never reused), and
--   feed_seq   a number from the feed_seq sequence, taken at insert (a
--              sequence does not serialise writers),
--
-- and the feed order is (tx, feed_seq). A reader reads only rows whose tx
-- is below the oldest transaction still in progress in the cluster
-- (txid_snapshot_xmin of its statement's snapshot): every transaction below
-- it has ended, so the rows it wrote are all visible and final, and any row
-- that becomes visible later has a larger tx. See docs/backends/postgres.md,
-- "Change feed".
--
-- tenant_key is the first 8 bytes of the stream's tenant_hash as a BIGINT:
-- the feed index's leading column. Reads also match the full tenant_hash
-- through the stream's row, so two tenants whose keys collide never see
-- each other's records.

-- Each session caches 100 numbers: feed_seq orders rows within one
-- transaction only (the transaction id orders the rest), and a session's
-- cached numbers are drawn in order, so a cache saves the sequence's lock
-- and WAL record per row; the numbers a closed session did not use are
-- skipped, never reused.
CREATE SEQUENCE feed_seq AS BIGINT CACHE 100;

ALTER TABLE events
    ADD COLUMN tenant_key BIGINT,
    ADD COLUMN tx BIGINT,
    ADD COLUMN feed_seq BIGINT;

ALTER SEQUENCE feed_seq OWNED BY events.feed_seq;

CREATE FUNCTION tenant_key(p_tenant_hash BYTEA) RETURNS BIGINT
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT ('x' || encode(substring(p_tenant_hash FROM 1 FOR 8), 'hex'))::BIT(64)::BIGINT
$$;

-- Records written before this version: transaction 0 (below every real
-- transaction id, so before every later record), in (stream, seq) order,
-- which keeps each stream's seq order.
UPDATE events e
    SET tenant_key = tenant_key(s.tenant_hash), tx = 0, feed_seq = o.n
    FROM streams s,
         (SELECT stream_id, seq, row_number() OVER (ORDER BY stream_id, seq) AS n FROM events) o
    WHERE s.stream_id = e.stream_id AND o.stream_id = e.stream_id AND o.seq = e.seq;

SELECT setval('feed_seq', GREATEST((SELECT max(feed_seq) FROM events), 1),
              (SELECT max(feed_seq) FROM events) IS NOT NULL);

ALTER TABLE events
    ALTER COLUMN tenant_key SET NOT NULL,
    ALTER COLUMN tx SET NOT NULL,
    ALTER COLUMN tx SET DEFAULT txid_current(),
    ALTER COLUMN feed_seq SET NOT NULL,
    ALTER COLUMN feed_seq SET DEFAULT nextval('feed_seq');

-- read_feed: a tenant's records in feed order, from a position on.
CREATE INDEX events_feed ON events (tenant_key, tx, feed_seq);

-- The advisory lock key of a stream: 8 bytes of SHA-256 over the store's
-- schema and the stream's key_hash. Every transaction that writes a
-- stream's records takes pg_advisory_xact_lock on it before anything else:
-- an advisory lock assigns no transaction id, so the writer's id is taken
-- only once it holds the stream, and a later writer of the stream always
-- has a larger id (its records sort after the earlier writer's in the feed).
-- The schema keeps stores in other schemas of the database apart.
CREATE FUNCTION stream_lock_key(p_key_hash BYTEA) RETURNS BIGINT
LANGUAGE sql STABLE STRICT AS $$
    SELECT ('x' || encode(substring(
        sha256(convert_to(current_schema(), 'UTF8') || '\x00'::BYTEA || p_key_hash)
        FROM 1 FOR 8), 'hex'))::BIT(64)::BIGINT
$$;

-- The channel a store's handles notify after they committed records, with
-- the tenant's key as the payload; handles listening on it wake their feed
-- followers. One channel per schema, named after a hash of the schema. The
-- NOTIFY is sent after the commit, not inside the writing transaction: a
-- NOTIFY inside a transaction holds a database-wide lock through its commit
-- (docs/backends/postgres.md, "Change feed").
CREATE FUNCTION feed_channel() RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT 'runstore_feed_' || encode(substring(
        sha256(convert_to(current_schema(), 'UTF8')) FROM 1 FOR 16), 'hex')
$$;

-- append_one (migration 0002) with the stream's advisory lock taken first
-- and the tenant key written. Same signature, same answers.
CREATE OR REPLACE FUNCTION append_one(
    p_key_hash       BYTEA,
    p_tenant_hash    BYTEA,
    p_org_id         TEXT,
    p_workspace_id   TEXT,
    p_has_deployment BOOLEAN,
    p_deployment_id  TEXT,
    p_run_id         TEXT,
    p_event_id       TEXT,
    p_occurred_at_ms BIGINT,
    p_record_head    TEXT,
    p_record_tail    TEXT,
    p_expected       BIGINT,
    p_max_seq        BIGINT
) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_stream BIGINT;
    v_last   BIGINT;
BEGIN
    -- Before anything that assigns a transaction id (see stream_lock_key).
    PERFORM pg_advisory_xact_lock(stream_lock_key(p_key_hash));
    SELECT stream_id, last_seq INTO v_stream, v_last
        FROM streams WHERE key_hash = p_key_hash FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        IF p_expected IS NOT NULL AND p_expected <> 0 THEN
            RETURN NULL;
        END IF;
        INSERT INTO streams
            (key_hash, tenant_hash, org_id, workspace_id, has_deployment, deployment_id, run_id)
            VALUES (p_key_hash, p_tenant_hash, p_org_id, p_workspace_id, p_has_deployment,
                    p_deployment_id, p_run_id)
            ON CONFLICT (key_hash) DO NOTHING;
        SELECT stream_id, last_seq INTO v_stream, v_last
            FROM streams WHERE key_hash = p_key_hash FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> v_last THEN
        RETURN NULL;
    END IF;
    IF v_last >= p_max_seq THEN
        RETURN NULL;
    END IF;
    IF v_last > 0 AND (
        EXISTS (SELECT 1 FROM events WHERE stream_id = v_stream AND event_id = p_event_id)
        OR EXISTS (SELECT 1 FROM compacted_ids WHERE stream_id = v_stream AND event_id = p_event_id)
    ) THEN
        RETURN NULL;
    END IF;
    INSERT INTO events (stream_id, seq, event_id, is_marker, occurred_at_ms, record, tenant_key)
        VALUES (v_stream, v_last + 1, p_event_id, false, p_occurred_at_ms,
                p_record_head || (v_last + 1)::TEXT || p_record_tail, tenant_key(p_tenant_hash));
    UPDATE streams SET last_seq = v_last + 1 WHERE stream_id = v_stream;
    RETURN v_last + 1;
END
$$;
