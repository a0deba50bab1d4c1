//! The conformance suite on the SQLite backend, with its default (durable)
//! options: each case opens `db.sqlite` in the case's fresh directory.

use runstore_conformance::{Capabilities, Harness};
use runstore_sqlite::SqliteStore;

fn harness() -> Harness {
    Harness::new(
        "sqlite",
        Capabilities::persistent(),
        |location| async move { SqliteStore::open(location.dir.join("db.sqlite")).await },
    )
}

runstore_conformance::suite!(harness());
