//! Benchmarks of the s3 backend.

fn main() {}
