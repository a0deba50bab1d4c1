#!/usr/bin/env bash
# The peer benchmark (issue 19): LangGraph's checkpointers and runstore's
# snapshot stores on the same checkpoint workload, in the same run, one
# side-by-side table of ratios at the end.
#
#   scripts/peer-bench.sh              SQLite, JSONL and redb against LangGraph's SqliteSaver
#   scripts/peer-bench.sh --postgres   also PostgreSQL against PostgresSaver, on the
#                                      server of RUNSTORE_POSTGRES_URL or, without it,
#                                      a throwaway cluster (scripts/services/postgres.sh)
#
# The peer is installed into a virtual environment of its own, outside the
# repository: RUNSTORE_PEER_VENV (default ~/.cache/runstore/peer-venv).
# RUNSTORE_PEER_ROUNDS (default 3) rounds; RUNSTORE_PEER_BACKENDS picks
# backends (comma-separated); RUNSTORE_BENCH_DIR where the stores go.
# Not part of CI's pass/fail: a benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."

postgres=""
for arg in "$@"; do
    case "$arg" in
    --postgres) postgres=1 ;;
    *)
        echo "usage: $0 [--postgres]" >&2
        exit 2
        ;;
    esac
done

venv="${RUNSTORE_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/runstore/peer-venv}"
packages=(langgraph-checkpoint-sqlite)
if [[ -n "$postgres" ]]; then
    packages+=(langgraph-checkpoint-postgres "psycopg[binary]")
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "peer-bench: creating the peer's virtual environment at $venv" >&2
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}"
"$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
    grep -iE '^(langgraph-checkpoint|psycopg) ' >&2 || true

features=()
if [[ -n "$postgres" ]]; then
    features=(--features postgres)
    # shellcheck source=scripts/services/postgres.sh
    source scripts/services/postgres.sh
    trap stop_postgres EXIT
    start_postgres
fi

export RUNSTORE_PEER_PYTHON="$venv/bin/python"
export RUNSTORE_PEER_SCRIPT="$PWD/scripts/peer/langgraph_checkpoints.py"
cargo bench -p runstore-benches "${features[@]}" --bench peer -- --bench
