//! Benchmarks of the postgres backend.

fn main() {}
