#!/usr/bin/env bash
# Runs every test of the workspace against every backend.
#
# Starts what the service backends need and stops it again on exit, also on
# failure: SeaweedFS (S3) and a throwaway PostgreSQL cluster, each unless the
# environment already names one (RUNSTORE_S3_ENDPOINT, RUNSTORE_POSTGRES_URL).
# A backend whose service is missing fails its tests; nothing is skipped.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services/seaweedfs.sh
source scripts/services/seaweedfs.sh
# shellcheck source=scripts/services/postgres.sh
source scripts/services/postgres.sh

cleanup() {
    local status=$?
    stop_seaweedfs || true
    stop_postgres || true
    exit "$status"
}
trap cleanup EXIT INT TERM

start_seaweedfs
start_postgres

# Skipping a backend is for local runs without services, never for this script.
unset RUNSTORE_ALLOW_MISSING_SERVICES

cargo test --workspace --all-features "$@"
