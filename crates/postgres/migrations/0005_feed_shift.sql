-- runstore-postgres schema, version 5: feed positions that survive a move
-- to another cluster (docs/backends/postgres.md, "Change feed").
--
-- A record's position is (tx + shift, feed_seq): tx is the raw id of the
-- writing transaction (migration 0004) and shift this table's one value,
-- 0 until the store is found on a cluster whose transaction counter is
-- behind the ids its rows carry (a pg_dump and restore, or logical
-- replication, copies tx as it was). The store is then re-based once: in
-- one transaction that excludes every writer, every row's tx goes down and
-- shift goes up by the same amount, so that every row is below the new
-- cluster's oldest running transaction (readable) while every position,
-- and thus what followers read, stays the same, and records written after
-- it take positions above every earlier one.
--
-- system_identifier is the cluster's (pg_control_system()) that the store
-- was last checked on: a connect looks at every row's tx only when it
-- differs.
CREATE TABLE feed_shift (
    one               BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    shift             BIGINT NOT NULL CHECK (shift >= 0),
    system_identifier BIGINT
);

INSERT INTO feed_shift (shift) VALUES (0);
