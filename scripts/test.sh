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

# shellcheck source=scripts/services/all.sh
source scripts/services/all.sh
start_services

# Skipping a backend is for local runs without services, never for this script.
unset RUNSTORE_ALLOW_MISSING_SERVICES

cargo test --workspace --all-features "$@"
