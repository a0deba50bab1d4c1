#!/usr/bin/env python3
"""The peer side of the checkpoint benchmark (scripts/peer-bench.sh).

LangGraph's checkpointers on the workload runstore's snapshot figure runs
(benches/src/checkpoints.rs): one thread gets COUNT checkpoints of about 300
bytes one after another (each naming the previous as its parent), then 100
threads get 100 checkpoints each, then the latest checkpoint of a random one
of those threads is loaded LATEST times. Prints one JSON line:

    {"peer": "...", "puts_per_s": ..., "put_secs": ..., "latest_p50_us": ...}

Usage:
    langgraph_checkpoints.py sqlite DIR        (langgraph-checkpoint-sqlite)
    langgraph_checkpoints.py postgres URL      (langgraph-checkpoint-postgres, psycopg)
    langgraph_checkpoints.py sqlite DIR chunks (puts only, in chunks: reads a count
                                                per line from stdin, puts that many
                                                checkpoints one after another into one
                                                thread, prints the seconds they took;
                                                for comparisons alternated in chunks)

SqliteSaver runs SQLite in WAL mode with the library default
synchronous=FULL; PostgresSaver uses an autocommit connection, so each put
is committed (and, with synchronous_commit on, flushed) before it returns.
"""
import json
import os
import random
import statistics
import sys
import time

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

COUNT = int(os.environ.get("PEER_PUTS", "2000"))
THREADS = 100
PER_THREAD = 100
LATEST = 1000
NOTE = "x" * 250


def saver_for(kind, where):
    if kind == "sqlite":
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        os.makedirs(where, exist_ok=True)
        conn = sqlite3.connect(os.path.join(where, "peer.db"), check_same_thread=False)
        return SqliteSaver(conn), "LangGraph SqliteSaver"
    if kind == "postgres":
        from psycopg import Connection
        from psycopg.rows import dict_row

        from langgraph.checkpoint.postgres import PostgresSaver

        conn = Connection.connect(where, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        return PostgresSaver(conn), "LangGraph PostgresSaver"
    raise SystemExit(f"unknown peer {kind!r}: sqlite or postgres")


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["chunks"]):
        raise SystemExit(__doc__)
    saver, name = saver_for(sys.argv[1], sys.argv[2])
    saver.setup()
    run_tag = f"{os.getpid()}-{time.time_ns()}"

    def put(thread, step, parent):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=step))
        checkpoint["channel_values"] = {"state": {"step": step, "note": NOTE}}
        checkpoint["channel_versions"] = {"state": step}
        config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        if parent:
            config["configurable"]["checkpoint_id"] = parent
        saved = saver.put(config, checkpoint, {"step": step, "source": "loop"}, {"state": step})
        return saved["configurable"]["checkpoint_id"]

    if sys.argv[3:] == ["chunks"]:
        parent, step = None, 0
        for line in sys.stdin:
            count = int(line)
            start = time.perf_counter()
            for _ in range(count):
                parent = put(f"chunks-{run_tag}", step, parent)
                step += 1
            print(time.perf_counter() - start, flush=True)
        return

    parent = None
    start = time.perf_counter()
    for step in range(COUNT):
        parent = put(f"solo-{run_tag}", step, parent)
    put_secs = time.perf_counter() - start

    for thread in range(THREADS):
        parent = None
        for step in range(PER_THREAD):
            parent = put(f"t{thread}-{run_tag}", step, parent)

    rng = random.Random(7)
    latencies = []
    for _ in range(LATEST):
        thread = f"t{rng.randrange(THREADS)}-{run_tag}"
        began = time.perf_counter()
        found = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
        latencies.append((time.perf_counter() - began) * 1e6)
        assert found.checkpoint["channel_values"]["state"]["step"] == PER_THREAD - 1

    print(json.dumps({
        "peer": name,
        "puts_per_s": COUNT / put_secs,
        "put_secs": put_secs,
        "latest_p50_us": statistics.median(latencies),
    }))


if __name__ == "__main__":
    main()
