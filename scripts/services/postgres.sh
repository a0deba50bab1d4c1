#!/usr/bin/env bash
# PostgreSQL for the test run. Source this file, then:
#
#   start_postgres   # exports RUNSTORE_POSTGRES_URL
#   ...tests...
#   stop_postgres    # stops what start_postgres started; call it from a trap
#
# crash_postgres stops the server with `pg_ctl stop -m immediate` (no
# checkpoint, crash recovery at the next start) and restart_postgres starts it
# again on the same data directory and port (the server-fault runs of
# scripts/crash.sh).
#
# With RUNSTORE_POSTGRES_URL already set, start_postgres uses that server and
# starts nothing. Otherwise it creates a throwaway cluster: data and socket
# directory under /tmp, owned by the postgres user (initdb refuses root),
# trust authentication, listening on 127.0.0.1 only, on a free port from
# RUNSTORE_POSTGRES_PORT (default 54329) upwards. PostgreSQL is installed from
# Debian's packages when no binaries are found. Every failure is loud and
# returns non-zero; nothing is skipped silently.

_RUNSTORE_PG_STARTED=""
_RUNSTORE_PG_DATA=""
_RUNSTORE_PG_BIN=""
_RUNSTORE_PG_USER=""
_RUNSTORE_PG_OPTS=""

_pg_log() { echo "postgres.sh: $*" >&2; }

# Prints the directory holding initdb, pg_ctl and pg_isready, or fails.
_pg_find_bindir() {
    local dir candidates=()
    if command -v pg_config >/dev/null 2>&1; then
        candidates+=("$(pg_config --bindir 2>/dev/null)")
    fi
    # Debian keeps the server binaries per version; prefer the newest.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        candidates+=("$dir")
    done
    for dir in "${candidates[@]}"; do
        if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/pg_isready" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

_pg_install() {
    _pg_log "no PostgreSQL server binaries found; installing Debian's postgresql package"
    if ! command -v apt-get >/dev/null 2>&1; then
        _pg_log "apt-get is not available: install PostgreSQL or set RUNSTORE_POSTGRES_URL"
        return 1
    fi
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

# Runs a command as the user that owns the cluster.
_pg_as() {
    if [[ "$(id -u)" == 0 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u "$_RUNSTORE_PG_USER" -- "$@"
        else
            su "$_RUNSTORE_PG_USER" -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

_pg_port_free() {
    local port=$1
    # Nothing must accept connections there, and no stale socket lock may exist.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        return 1
    fi
    return 0
}

start_postgres() {
    if [[ -n "${RUNSTORE_POSTGRES_URL:-}" ]]; then
        _pg_log "using RUNSTORE_POSTGRES_URL from the environment; starting nothing"
        return 0
    fi
    if ! _RUNSTORE_PG_BIN=$(_pg_find_bindir); then
        _pg_install || { _pg_log "installing PostgreSQL failed"; return 1; }
        _RUNSTORE_PG_BIN=$(_pg_find_bindir) || {
            _pg_log "PostgreSQL was installed but initdb/pg_ctl/pg_isready are still missing"
            return 1
        }
    fi
    if [[ "$(id -u)" == 0 ]]; then
        _RUNSTORE_PG_USER=postgres
        if ! id -u "$_RUNSTORE_PG_USER" >/dev/null 2>&1; then
            _pg_log "running as root but there is no postgres user to own the cluster"
            return 1
        fi
    else
        _RUNSTORE_PG_USER=$(id -un)
    fi

    local port=${RUNSTORE_POSTGRES_PORT:-54329} tries=0
    while ! _pg_port_free "$port"; do
        port=$((port + 1))
        tries=$((tries + 1))
        if ((tries > 50)); then
            _pg_log "no free port from ${RUNSTORE_POSTGRES_PORT:-54329} upwards"
            return 1
        fi
    done

    _RUNSTORE_PG_DATA=$(mktemp -d /tmp/runstore-pg.XXXXXX) || return 1
    chmod 755 "$_RUNSTORE_PG_DATA"
    mkdir -p "$_RUNSTORE_PG_DATA/data" "$_RUNSTORE_PG_DATA/socket"
    chown -R "$_RUNSTORE_PG_USER" "$_RUNSTORE_PG_DATA" 2>/dev/null || true

    _pg_log "initdb in $_RUNSTORE_PG_DATA/data ($_RUNSTORE_PG_BIN, as $_RUNSTORE_PG_USER)"
    if ! _pg_as "$_RUNSTORE_PG_BIN/initdb" -D "$_RUNSTORE_PG_DATA/data" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C >"$_RUNSTORE_PG_DATA/initdb.log" 2>&1; then
        _pg_log "initdb failed:"
        cat "$_RUNSTORE_PG_DATA/initdb.log" >&2
        rm -rf "$_RUNSTORE_PG_DATA"
        _RUNSTORE_PG_DATA=""
        return 1
    fi

    # fsync stays on: the suite checks the real commit path. Enough
    # connections for parallel test cases, each with its own pool.
    local opts="-c listen_addresses=127.0.0.1 -c port=$port"
    opts+=" -c unix_socket_directories=$_RUNSTORE_PG_DATA/socket -c max_connections=300"
    _RUNSTORE_PG_OPTS="$opts"
    if ! _pg_as "$_RUNSTORE_PG_BIN/pg_ctl" -D "$_RUNSTORE_PG_DATA/data" \
        -l "$_RUNSTORE_PG_DATA/server.log" -o "$opts" -w -t 60 start >/dev/null; then
        _pg_log "pg_ctl start failed; server log:"
        cat "$_RUNSTORE_PG_DATA/server.log" >&2
        rm -rf "$_RUNSTORE_PG_DATA"
        _RUNSTORE_PG_DATA=""
        return 1
    fi
    _RUNSTORE_PG_STARTED=1

    local waited=0
    until "$_RUNSTORE_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; do
        waited=$((waited + 1))
        if ((waited > 60)); then
            _pg_log "server did not become ready in 30 s; server log:"
            cat "$_RUNSTORE_PG_DATA/server.log" >&2
            stop_postgres
            return 1
        fi
        sleep 0.5
    done

    export RUNSTORE_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    _pg_log "PostgreSQL $("$_RUNSTORE_PG_BIN/postgres" --version | awk '{print $3}') ready at $RUNSTORE_POSTGRES_URL"
}

# Stops the cluster the way a crash would: `pg_ctl stop -m immediate`.
crash_postgres() {
    if [[ -z "$_RUNSTORE_PG_STARTED" ]]; then
        _pg_log "crash_postgres: no cluster of ours is running"
        return 1
    fi
    _pg_as "$_RUNSTORE_PG_BIN/pg_ctl" -D "$_RUNSTORE_PG_DATA/data" -m immediate -w -t 60 stop >/dev/null ||
        { _pg_log "pg_ctl stop -m immediate failed"; return 1; }
    _pg_log "stopped with -m immediate"
}

# Starts the crashed cluster again (crash recovery runs) on the same port.
restart_postgres() {
    if [[ -z "$_RUNSTORE_PG_STARTED" ]]; then
        _pg_log "restart_postgres: no cluster of ours to restart"
        return 1
    fi
    if ! _pg_as "$_RUNSTORE_PG_BIN/pg_ctl" -D "$_RUNSTORE_PG_DATA/data" \
        -l "$_RUNSTORE_PG_DATA/server.log" -o "$_RUNSTORE_PG_OPTS" -w -t 60 start >/dev/null; then
        _pg_log "pg_ctl start after the crash failed; server log:"
        tail -n 30 "$_RUNSTORE_PG_DATA/server.log" >&2
        return 1
    fi
    _pg_log "restarted after crash recovery"
}

stop_postgres() {
    if [[ -z "$_RUNSTORE_PG_DATA" ]]; then
        return 0
    fi
    local status=0
    if [[ -n "$_RUNSTORE_PG_STARTED" ]]; then
        _pg_as "$_RUNSTORE_PG_BIN/pg_ctl" -D "$_RUNSTORE_PG_DATA/data" -m fast -w -t 60 stop >/dev/null ||
            { _pg_log "pg_ctl stop failed"; status=1; }
        unset RUNSTORE_POSTGRES_URL
    fi
    rm -rf "$_RUNSTORE_PG_DATA"
    _RUNSTORE_PG_DATA=""
    _RUNSTORE_PG_STARTED=""
    return $status
}
