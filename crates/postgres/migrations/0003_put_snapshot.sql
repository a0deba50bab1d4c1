-- runstore-postgres schema, version 3: a snapshot put in one statement.
--
-- put_snapshot stores one snapshot in a single call, so a put costs one
-- statement (one round trip, committed on its own) instead of the stream
-- row's look-up followed by the upsert. It does exactly what those two
-- statements did, in the same order and with the same locks:
--
-- 1. find the stream's row by key_hash without locking it, creating it
--    (INSERT ... ON CONFLICT DO NOTHING, which waits for a concurrent
--    inserter) and finding it again if it is missing;
-- 2. upsert the snapshot on (stream_id, snapshot_id). The foreign key's
--    check takes KEY SHARE on the stream's row, which does not wait for the
--    FOR NO KEY UPDATE lock of an append, a compaction or a deletion; the
--    upsert locks the snapshot's row, so it waits for a prune holding it.
--
-- A compaction thus reads a put's snapshot in its floor if the put
-- committed before the compaction's floor statement, as before. The one
-- difference: the stream row a first put creates now commits with the
-- snapshot, atomically, instead of in a statement of its own.
--
-- A VOLATILE PL/pgSQL function takes a fresh snapshot for each statement
-- under READ COMMITTED, so the look-up after the insert sees a row a
-- concurrent inserter committed. If the row is still missing (stream rows
-- are never deleted, so this does not happen) it returns NULL having
-- written nothing, and the store takes the two-statement path.
CREATE FUNCTION put_snapshot(
    p_key_hash       BYTEA,
    p_tenant_hash    BYTEA,
    p_org_id         TEXT,
    p_workspace_id   TEXT,
    p_has_deployment BOOLEAN,
    p_deployment_id  TEXT,
    p_run_id         TEXT,
    p_snapshot_id    TEXT,
    p_seq            BIGINT,
    p_created_at_ms  BIGINT,
    p_record         TEXT
) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_stream BIGINT;
BEGIN
    SELECT stream_id INTO v_stream FROM streams WHERE key_hash = p_key_hash;
    IF NOT FOUND THEN
        INSERT INTO streams
            (key_hash, tenant_hash, org_id, workspace_id, has_deployment, deployment_id, run_id)
            VALUES (p_key_hash, p_tenant_hash, p_org_id, p_workspace_id, p_has_deployment,
                    p_deployment_id, p_run_id)
            ON CONFLICT (key_hash) DO NOTHING;
        SELECT stream_id INTO v_stream FROM streams WHERE key_hash = p_key_hash;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO snapshots (stream_id, snapshot_id, seq, created_at_ms, record)
        VALUES (v_stream, p_snapshot_id, p_seq, p_created_at_ms, p_record)
        ON CONFLICT (stream_id, snapshot_id) DO UPDATE
        SET seq = EXCLUDED.seq, created_at_ms = EXCLUDED.created_at_ms, record = EXCLUDED.record;
    RETURN v_stream;
END
$$;
