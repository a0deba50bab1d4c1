//! The peer comparison (issue 19): LangGraph's checkpointers and runstore's
//! snapshot stores on the same checkpoint workload, in rounds, one table of
//! ratios. `scripts/peer-bench.sh` installs the peer and runs this; see
//! docs/benchmarks.md.

fn main() {
    runstore_benches::peer_main();
}
