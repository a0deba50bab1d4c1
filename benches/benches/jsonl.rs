//! JSONL: the standard workload next to the raw `fdatasync` rate of the same
//! disk, and the open (index rebuild) next to a plain `serde_json` parse of
//! the same file (issue 3's targets).

fn main() {
    runstore_benches::main(&runstore_benches::engines::Jsonl);
}
