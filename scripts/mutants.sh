#!/usr/bin/env bash
# Mutation testing (docs/testing.md, "Mutation testing"): cargo-mutants
# changes one line of the files below at a time and runs the tests against
# each mutant.
#
#   scripts/mutants.sh [--scope S] [ARGS]    every mutant of scope S (default core)
#   scripts/mutants.sh --scope S --list      list them without testing
#   scripts/mutants.sh --changed-since REV [ARGS]
#                                            the mutants on lines changed since
#                                            REV, every scope, within a budget
#
# Scopes and their test commands:
#   core    the shared rules (append and import planning, compaction and its
#           marker, erasure, snapshot order and prune selection, the stream
#           checker, the one validation, ids and tenants); core's unit tests
#           plus the suite's model and bite tests
#   jsonl, sqlite, redb
#           the backend's write, compaction, recovery and index paths; the
#           crate's own unit and integration tests plus the conformance
#           suite on that backend
#
# ARGS go to cargo-mutants (`--list`, `--re REGEX`, `--shard K/N`,
# `--in-diff FILE`, ...). Outcome files land in
# ${RUNSTORE_MUTANTS_OUT:-target/mutants}/<scope>/mutants.out (caught.txt,
# missed.txt, timeout.txt, unviable.txt, outcomes.json). A mutant's tests
# are stopped after RUNSTORE_MUTANTS_TIMEOUT seconds (default 300) and the
# mutant counted as a timeout.
#
# --changed-since REV runs, for each scope whose files changed between REV
# and HEAD, only the mutants on the changed lines (`--in-diff`). It stops
# after RUNSTORE_MUTANTS_BUDGET seconds in all (default 600) and says how
# many it tested; it exits 1 if any tested mutant was missed (a changed line
# no test notices) and 0 otherwise. `.ci/run` runs it against HEAD~1.
#
# cargo-mutants runs the mutated package's own tests, so the suite's test
# files are made the package's test targets in a throwaway worktree of HEAD
# (commit what you want tested; it is ${RUNSTORE_MUTANTS_OUT}/tree); the
# repository's Cargo.toml files stay as they are. Needs `cargo install cargo-mutants` (27.1 measured).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out_root="${RUNSTORE_MUTANTS_OUT:-$root/target/mutants}"

scope_files() {
    case "$1" in
    core)
        echo crates/core/src/raw/append.rs crates/core/src/raw/compaction.rs \
            crates/core/src/raw/erasure.rs crates/core/src/raw/snapshots.rs \
            crates/core/src/raw/check.rs crates/core/src/validate.rs \
            crates/core/src/types/ids.rs crates/core/src/types/tenant.rs
        ;;
    jsonl)
        echo crates/jsonl/src/writer.rs crates/jsonl/src/compact.rs \
            crates/jsonl/src/recovery.rs crates/jsonl/src/index.rs \
            crates/jsonl/src/log.rs crates/jsonl/src/import.rs \
            crates/jsonl/src/snapshots.rs crates/jsonl/src/fileio.rs
        ;;
    sqlite)
        echo crates/sqlite/src/log.rs crates/sqlite/src/snapshots.rs \
            crates/sqlite/src/schema.rs crates/sqlite/src/conn.rs \
            crates/sqlite/src/writer/*.rs
        ;;
    redb)
        echo crates/redb/src/writer.rs crates/redb/src/log.rs \
            crates/redb/src/snapshots.rs crates/redb/src/tables.rs \
            crates/redb/src/backend.rs
        ;;
    *)
        echo "mutants.sh: unknown scope $1 (core, jsonl, sqlite, redb)" >&2
        exit 2
        ;;
    esac
}
scopes=(core jsonl sqlite redb)

# The throwaway tree lives at a fixed path beside the outcomes and
# cargo-mutants mutates it in place, so cargo's fingerprints (which name the
# path) stay the same from one run to the next: a later run rebuilds only
# what changed, and CARGO_TARGET_DIR does not fill up with copies. One run
# at a time per RUNSTORE_MUTANTS_OUT.
tree="$out_root/tree"
mkdir -p "$out_root"
drop_tree() {
    git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true
    rm -rf "$tree"
    git -C "$root" worktree prune
}
drop_tree
work=$(mktemp -d)
scratch=""
trap 'drop_tree; rm -rf "$work" ${scratch:+"$scratch"}' EXIT
# The tests' temporary stores go to memory when the machine has a tmpfs
# with room (2 GiB free; RUNSTORE_MUTANTS_TMPFS=0 keeps them on the disk):
# a mutant's tests then wait on no disk sync (a missed redb mutant's tests
# took 24-45 s there against 57-60 s on the disk, measured side by side
# under load). Kills and torn writes are simulated or made by killing a
# process, which the page cache survives as a disk does.
if [[ "${RUNSTORE_MUTANTS_TMPFS:-1}" != 0 && -d /dev/shm && -w /dev/shm ]] &&
    (($(df --output=avail -k /dev/shm | tail -n 1) >= 2 * 1024 * 1024)); then
    scratch=$(mktemp -d /dev/shm/runstore-mutants.XXXXXX)
    export TMPDIR="$scratch"
fi
git -C "$root" worktree add --quiet --detach "$tree" HEAD

# Makes the suite's test files the scope's package's test targets in the
# throwaway tree.
enrol() {
    local scope=$1 manifest
    if [[ "$scope" == core ]]; then
        cat >>"$tree/crates/core/Cargo.toml" <<'TOML'

[dev-dependencies.runstore-conformance]
path = "../../conformance-tests"
default-features = false

[[test]]
name = "memory"
path = "../../conformance-tests/tests/memory.rs"

[[test]]
name = "bites"
path = "../../conformance-tests/tests/bites.rs"
TOML
        return
    fi
    manifest="$tree/crates/$scope/Cargo.toml"
    # The backend already dev-depends on the suite without features; the
    # suite's test file for the backend needs the backend's feature.
    sed -i "s|^runstore-conformance = { path = \"../../conformance-tests\", default-features = false }|runstore-conformance = { path = \"../../conformance-tests\", default-features = false, features = [\"$scope\"] }|" "$manifest"
    grep -q "features = \[\"$scope\"\]" "$manifest" || {
        echo "mutants.sh: could not enrol the suite in $manifest" >&2
        exit 1
    }
    cat >>"$manifest" <<TOML

[[test]]
name = "conformance"
path = "../../conformance-tests/tests/$scope.rs"
TOML
}

# Runs cargo-mutants over one scope in the throwaway tree.
run_scope() {
    local scope=$1
    shift
    local file_args=() test_args
    for file in $(scope_files "$scope"); do
        file_args+=(-f "$file")
    done
    if [[ "$scope" == core ]]; then
        test_args=(--lib --test memory --test bites)
    else
        test_args=(--lib --tests)
    fi
    # Within --changed-since's budget: `timeout` stops cargo-mutants, which
    # keeps the outcomes of the mutants it finished.
    local prefix=()
    if [[ -n "${limit:-}" ]]; then
        prefix=(timeout --signal=INT "$limit")
    fi
    mkdir -p "$out_root/$scope"
    (cd "$tree" && "${prefix[@]}" cargo mutants -p "runstore-$scope" "${file_args[@]}" \
        --output "$out_root/$scope" --in-place --timeout "${RUNSTORE_MUTANTS_TIMEOUT:-300}" "$@" -- "${test_args[@]}")
}

# A mutant's build is mostly linking the package's test binaries (sixteen
# for JSONL): without debug info, and with mold when the C compiler can
# link with it, a JSONL mutant's build took about 4 s instead of 6-7. Set
# RUNSTORE_MUTANTS_FASTLINK=0 to build as `cargo test` does (the first run
# after a change of either rebuilds every dependency). The mold flag goes
# into RUSTFLAGS, which overrides any `rustflags` of a cargo config file.
if [[ "${RUNSTORE_MUTANTS_FASTLINK:-1}" != 0 ]]; then
    export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
    if command -v mold >/dev/null && command -v cc >/dev/null &&
        printf 'int main(void) { return 0; }\n' |
        cc -x c - -fuse-ld=mold -o "$work/mold-check" >/dev/null 2>&1; then
        export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-fuse-ld=mold"
    fi
fi

# The property test's case count: 64 keeps one core mutant's run near ten
# seconds; the bites' own property test runs its fixed 1,024.
export RUNSTORE_PROPTEST_CASES="${RUNSTORE_PROPTEST_CASES:-64}"

if [[ "${1:-}" == --changed-since ]]; then
    base=${2:?"usage: $0 --changed-since REV [ARGS]"}
    shift 2
    budget=${RUNSTORE_MUTANTS_BUDGET:-600}
    deadline=$((SECONDS + budget))
    missed=0
    for scope in "${scopes[@]}"; do
        # shellcheck disable=SC2046 # one word per file
        git -C "$root" diff "$base" HEAD -- $(scope_files "$scope") >"$work/$scope.diff"
        if [[ ! -s "$work/$scope.diff" ]]; then
            echo "mutants: $scope: no change since $base"
            continue
        fi
        left=$((deadline - SECONDS))
        if ((left <= 0)); then
            echo "mutants: $scope: changed, NOT TESTED: the budget of ${budget}s is spent" >&2
            continue
        fi
        enrol "$scope"
        rm -rf "$out_root/$scope/mutants.out"
        total=$(limit="" run_scope "$scope" --list --in-diff "$work/$scope.diff" | wc -l)
        status=0
        limit=$left run_scope "$scope" --in-diff "$work/$scope.diff" "$@" || status=$?
        outcomes="$out_root/$scope/mutants.out"
        tested=$({ cat "$outcomes"/{caught,missed,timeout,unviable}.txt 2>/dev/null || true; } | wc -l)
        echo "mutants: $scope: $tested of $total mutants on changed lines tested (exit $status)"
        if [[ "$status" == 124 ]]; then
            echo "mutants: $scope: the budget of ${budget}s ran out; the rest were NOT TESTED" >&2
        elif [[ "$status" != 0 && "$status" != 2 && "$status" != 3 ]]; then
            # 2: missed mutants, 3: timeouts (counted as caught); anything
            # else (the unmutated tree failing its tests, a usage error) is
            # a failure of the run itself.
            echo "mutants: $scope: cargo-mutants failed (exit $status)" >&2
            exit 1
        fi
        if [[ -s "$outcomes/missed.txt" ]]; then
            echo "mutants: $scope: MISSED (a changed line no test notices):" >&2
            cat "$outcomes/missed.txt" >&2
            missed=1
        fi
    done
    exit "$missed"
fi

scope=core
if [[ "${1:-}" == --scope ]]; then
    scope=${2:?"usage: $0 --scope core|jsonl|sqlite|redb"}
    shift 2
fi
scope_files "$scope" >/dev/null
enrol "$scope"
run_scope "$scope" "$@"
