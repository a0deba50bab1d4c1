#!/usr/bin/env bash
# Mutation testing of core's shared rules (docs/testing.md, "Mutation
# testing"): cargo-mutants mutates the files below one change at a time and
# runs core's unit tests plus the conformance suite's model and bite tests
# against each mutant.
#
#   scripts/mutants.sh                 every mutant of the shared rules
#   scripts/mutants.sh --in-diff FILE  only mutants on lines a diff touches
#   scripts/mutants.sh --list          list them without testing
#
# Further arguments go to cargo-mutants. The outcome files land in
# ${RUNSTORE_MUTANTS_OUT:-target/mutants}/mutants.out (caught.txt,
# missed.txt, timeout.txt, unviable.txt, outcomes.json).
#
# cargo-mutants runs the mutated package's own tests, so the suite's test
# files are made core's test targets in a throwaway worktree of HEAD
# (commit what you want tested); the repository's Cargo.toml stays as it is.
# Needs `cargo install cargo-mutants` (27.1 measured).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="${RUNSTORE_MUTANTS_OUT:-$root/target/mutants}"
mkdir -p "$out"
work=$(mktemp -d)
cleanup() {
    git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
git -C "$root" worktree add --quiet --detach "$work/tree" HEAD

cat >>"$work/tree/crates/core/Cargo.toml" <<'TOML'

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

# The shared rules (issue 18): append and import planning, compaction and
# its marker, erasure, snapshot order and prune selection, the stream
# checker, the one validation, ids and tenants.
files=(
    crates/core/src/raw/append.rs
    crates/core/src/raw/compaction.rs
    crates/core/src/raw/erasure.rs
    crates/core/src/raw/snapshots.rs
    crates/core/src/raw/check.rs
    crates/core/src/validate.rs
    crates/core/src/types/ids.rs
    crates/core/src/types/tenant.rs
)
file_args=()
for file in "${files[@]}"; do
    file_args+=(-f "$file")
done

cd "$work/tree"
# The property test's case count: 64 keeps one mutant's run near ten
# seconds; the bites' own property test runs its fixed 1,024.
export RUNSTORE_PROPTEST_CASES="${RUNSTORE_PROPTEST_CASES:-64}"
cargo mutants -p runstore-core "${file_args[@]}" --output "$out" --timeout 120 "$@" \
    -- --lib --test memory --test bites
