-- runstore SQLite schema, version 3: the tenant change feed (CONTRACT §29).
--
-- Every record (event, compaction or erasure marker) takes the next
-- position of its tenant's feed in the write transaction that stores it.
-- SQLite serialises write transactions (across processes too), so positions
-- follow commit order and a reader can never be handed a position below one
-- it has already read: the feed is lossless.
--
-- A tenant's last position is the larger of its highest `feed_pos` in
-- `events` (one seek at the end of its `events_by_feed` range) and its
-- `feed_heads` row. Appends only read them. Rows are deleted (compaction,
-- erasure), so a trigger raises `feed_heads` to the position of every row
-- deleted: the deleted rows' positions are never handed out again, whoever
-- deletes them.
--
-- A store written before this version gets its positions here, once: each
-- tenant's records in (run_id, seq) order, which keeps every stream's seq
-- order, and its `feed_heads` row at the last of them. The migration runs in
-- one transaction, like every migration. ALTER TABLE has no IF NOT EXISTS:
-- a second process opening the same file at the same moment fails on the
-- duplicate column (or on SQLite's write lock), rolls back and retries, and
-- then finds this version applied.
ALTER TABLE events ADD COLUMN feed_pos INTEGER;

CREATE TABLE IF NOT EXISTS feed_heads (
    org_id        TEXT    NOT NULL,
    workspace_id  TEXT    NOT NULL,
    deployment_id TEXT    NOT NULL DEFAULT '',
    last_position INTEGER NOT NULL CHECK (last_position >= 0),
    PRIMARY KEY (org_id, workspace_id, deployment_id)
) WITHOUT ROWID;

-- The window's order is the primary key's, so numbering needs no sort.
UPDATE events SET feed_pos = numbered.position
FROM (SELECT org_id, workspace_id, deployment_id, run_id, seq,
             ROW_NUMBER() OVER (PARTITION BY org_id, workspace_id, deployment_id
                                ORDER BY run_id, seq) AS position
      FROM events) AS numbered
WHERE events.org_id = numbered.org_id
  AND events.workspace_id = numbered.workspace_id
  AND events.deployment_id = numbered.deployment_id
  AND events.run_id = numbered.run_id
  AND events.seq = numbered.seq;

INSERT OR REPLACE INTO feed_heads (org_id, workspace_id, deployment_id, last_position)
SELECT org_id, workspace_id, deployment_id, MAX(feed_pos) FROM events
GROUP BY org_id, workspace_id, deployment_id;

-- A tenant's feed in position order: read_feed is one range scan of it.
-- Built after the numbering, so that the update does not maintain it row by
-- row.
CREATE INDEX IF NOT EXISTS events_by_feed
    ON events (org_id, workspace_id, deployment_id, feed_pos);

-- Whatever deletes a record, its position stays taken.
CREATE TRIGGER IF NOT EXISTS events_keep_feed_head AFTER DELETE ON events
WHEN OLD.feed_pos IS NOT NULL
BEGIN
    INSERT INTO feed_heads (org_id, workspace_id, deployment_id, last_position)
    VALUES (OLD.org_id, OLD.workspace_id, OLD.deployment_id, OLD.feed_pos)
    ON CONFLICT (org_id, workspace_id, deployment_id)
    DO UPDATE SET last_position = max(last_position, excluded.last_position);
END;

-- A row inserted without a position (by a process of the previous version
-- still running when the file was upgraded, which lists the columns it
-- knows) takes its tenant's next one, inside the same write transaction.
-- This version's inserts always give one, and skip the body.
CREATE TRIGGER IF NOT EXISTS events_give_feed_pos AFTER INSERT ON events
WHEN NEW.feed_pos IS NULL
BEGIN
    UPDATE events SET feed_pos = 1 + max(
        coalesce((SELECT feed_pos FROM events INDEXED BY events_by_feed
                  WHERE org_id = NEW.org_id AND workspace_id = NEW.workspace_id
                    AND deployment_id = NEW.deployment_id
                  ORDER BY feed_pos DESC LIMIT 1), 0),
        coalesce((SELECT last_position FROM feed_heads
                  WHERE org_id = NEW.org_id AND workspace_id = NEW.workspace_id
                    AND deployment_id = NEW.deployment_id), 0))
    WHERE org_id = NEW.org_id AND workspace_id = NEW.workspace_id
      AND deployment_id = NEW.deployment_id AND run_id = NEW.run_id AND seq = NEW.seq;
END;
