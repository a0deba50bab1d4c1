//! The shared benchmark workload.
