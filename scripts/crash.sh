#!/usr/bin/env bash
# The kill harness's full run (docs/reliability.md):
#
# - kills: writer processes SIGKILLed at random moments, the store checked
#   after each kill and the writers started again on it: CRASH_KILLS (default
#   200) per embedded backend (JSONL, SQLite, redb) in both durabilities, and
#   CRASH_SERVICE_KILLS (default 51) killed client processes, three writers
#   at a time, on S3 (SeaweedFS) and PostgreSQL (both durabilities);
# - server faults: three writers under load while the server is broken
#   under them and started again on the same data: SeaweedFS SIGKILLed,
#   PostgreSQL stopped with `pg_ctl stop -m immediate`, CRASH_FAULTS (default
#   3) times each.
#
# Starts SeaweedFS and PostgreSQL like scripts/test.sh and stops them on
# exit. Prints one JSON summary per run; exits non-zero at the first run that
# lost an acknowledged write or found any other problem, leaving its
# acknowledgement files under CRASH_DIR (default a fresh temporary directory)
# for inspection. `--quick` runs 25 kills per store and one fault per server.
# Naming parts after the options runs only those: `kills` (every store),
# one store's name (`jsonl`, `sqlite-relaxed`, `s3`, ...), `faults`.
set -euo pipefail
cd "$(dirname "$0")/.."

KILLS="${CRASH_KILLS:-200}"
SERVICE_KILLS="${CRASH_SERVICE_KILLS:-51}"
FAULTS="${CRASH_FAULTS:-3}"
if [ "${1:-}" = "--quick" ]; then
    KILLS=25 SERVICE_KILLS=25 FAULTS=1
    shift
fi
PARTS="${*:-kills faults}"
wants() { [[ " $PARTS " == *" $1 "* ]]; }
CRASH_DIR="${CRASH_DIR:-$(mktemp -d /tmp/runstore-crash.XXXXXX)}"
mkdir -p "$CRASH_DIR"

# shellcheck source=scripts/services/all.sh
source scripts/services/all.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -p runstore-crash -p runstore-cli --all-features
bin="$CARGO_TARGET_DIR/debug"
crash="$bin/runstore-crash"

start_services

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)" >&2; }

# kills NAME URL WRITERS KILLS [MAX_MS]: each writer is killed 20 ms to
# MAX_MS (default 400) after its start.
kills() {
    wants kills || wants "$1" || return 0
    step "kills: $1"
    "$crash" kills --store "$2" --dir "$CRASH_DIR/$1" --writers "$3" --kills "$4" \
        --max-ms "${5:-400}" --seed "${CRASH_SEED:-$RANDOM}" --runstore "$bin/runstore"
}

pg() { echo "${RUNSTORE_POSTGRES_URL}?schema=crash_$1_$$${2:-}"; }

kills jsonl "jsonl:$CRASH_DIR/jsonl/store" 1 "$KILLS"
kills jsonl-relaxed "jsonl:$CRASH_DIR/jsonl-relaxed/store?durability=relaxed" 1 "$KILLS"
kills sqlite "sqlite:$CRASH_DIR/sqlite/store.db" 2 "$KILLS"
kills sqlite-relaxed "sqlite:$CRASH_DIR/sqlite-relaxed/store.db?durability=relaxed" 2 "$KILLS"
kills redb "redb:$CRASH_DIR/redb/store.redb" 1 "$KILLS"
kills redb-relaxed "redb:$CRASH_DIR/redb-relaxed/store.redb?durability=relaxed" 1 "$KILLS"
# A request to a server takes milliseconds, not microseconds: the writers
# of S3 and PostgreSQL live up to 1.2 s, so that each gets work done.
kills s3 "s3://$RUNSTORE_S3_BUCKET/crash-kills-$$" 3 "$SERVICE_KILLS" 1200
kills postgres "$(pg kills)" 3 "$SERVICE_KILLS" 1200
kills postgres-relaxed "$(pg kills_relaxed "&durability=relaxed")" 3 "$SERVICE_KILLS" 1200

# fault NAME URL BREAK RESTART [--expect-errors]: a 24 s load of three
# writers; the server is broken 6 s in and started again 4 s later.
fault() {
    local name=$1 url=$2 break_cmd=$3 restart_cmd=$4 expect=${5:-}
    local round
    for round in $(seq 1 "$FAULTS"); do
        step "server fault: $name, round $round"
        "$crash" load --store "$url" --dir "$CRASH_DIR/$name" --writers 3 --seconds 24 \
            --seed "${CRASH_SEED:-$RANDOM}" --runstore "$bin/runstore" $expect &
        local load=$!
        sleep 6
        "$break_cmd"
        sleep 4
        "$restart_cmd"
        wait "$load"
    done
}

if wants faults; then
    fault s3-server "s3://$RUNSTORE_S3_BUCKET/crash-faults-$$" kill_seaweedfs restart_seaweedfs
    fault postgres-server "$(pg faults)" crash_postgres restart_postgres --expect-errors
fi

step "done: nothing acknowledged was lost"
echo "acknowledgement files: $CRASH_DIR" >&2
