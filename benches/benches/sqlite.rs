//! SQLite: the standard workload next to a bare sqlx loop on the same disk
//! (one `INSERT` per autocommit transaction, WAL, `synchronous=FULL`) and
//! the raw `fdatasync` rate (issue 4's targets).

fn main() {
    runstore_benches::main(&runstore_benches::engines::Sqlite);
}
