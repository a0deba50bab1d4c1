-- runstore-postgres schema, version 2: the lone append's fast path.
--
-- append_one writes one new event to one stream in a single call, so a lone
-- append costs one statement (one round trip, committed on its own) instead
-- of BEGIN, lock, id look-up, insert and COMMIT. It follows the protocol of
-- every other writer of a stream (docs/backends/postgres.md): it locks the
-- stream's row with FOR NO KEY UPDATE first, and reads the ids only after
-- the lock is held. A VOLATILE PL/pgSQL function takes a fresh snapshot for
-- each statement under READ COMMITTED, so the id look-up sees every event
-- and compacted id committed by earlier holders of the lock, exactly as the
-- look-up statement of the general path does.
--
-- It handles the common case only: the event is new to the stream (live
-- and compacted ids), the expected last seq (if any) holds, and the stream
-- has room for one more seq. Otherwise it returns NULL having written
-- nothing, and the store answers the request on the general path, which
-- plans it with the shared rules. It creates the stream's row only when it
-- will also write the event into it.
--
-- The record's JSON text holds its seq, which only the lock decides: the
-- store sends the text before and after the seq's digits (record_head,
-- record_tail) and the new seq is written between them.
CREATE FUNCTION append_one(
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
    SELECT stream_id, last_seq INTO v_stream, v_last
        FROM streams WHERE key_hash = p_key_hash FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        -- A new stream's last seq is 0: create its row only if the append
        -- will then be written.
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
    -- Ids are only ever stored in a stream that has a last seq.
    IF v_last > 0 AND (
        EXISTS (SELECT 1 FROM events WHERE stream_id = v_stream AND event_id = p_event_id)
        OR EXISTS (SELECT 1 FROM compacted_ids WHERE stream_id = v_stream AND event_id = p_event_id)
    ) THEN
        RETURN NULL;
    END IF;
    INSERT INTO events (stream_id, seq, event_id, is_marker, occurred_at_ms, record)
        VALUES (v_stream, v_last + 1, p_event_id, false, p_occurred_at_ms,
                p_record_head || (v_last + 1)::TEXT || p_record_tail);
    UPDATE streams SET last_seq = v_last + 1 WHERE stream_id = v_stream;
    RETURN v_last + 1;
END
$$;
