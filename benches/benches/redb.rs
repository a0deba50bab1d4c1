//! redb: the standard workload next to a bare redb loop of one insert per
//! durable commit on the same disk, and the raw `fdatasync` rate (issue 5's
//! targets).

fn main() {
    runstore_benches::main(&runstore_benches::engines::Redb);
}
