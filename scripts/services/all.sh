# shellcheck shell=bash
# Every service the test runs need. Meant to be sourced:
#
#   source scripts/services/all.sh
#   start_services   # SeaweedFS and PostgreSQL, stopped again on exit
#
# start_services starts both (each unless the environment already names one,
# see seaweedfs.sh and postgres.sh) and installs an EXIT/INT/TERM trap that
# stops them, also on failure, keeping the script's exit status.

# shellcheck source=scripts/services/seaweedfs.sh
source "$(dirname "${BASH_SOURCE[0]}")/seaweedfs.sh"
# shellcheck source=scripts/services/postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/postgres.sh"

_services_cleanup() {
    local status=$?
    stop_seaweedfs || true
    stop_postgres || true
    exit "$status"
}

start_services() {
    trap _services_cleanup EXIT INT TERM
    start_seaweedfs
    start_postgres
}
