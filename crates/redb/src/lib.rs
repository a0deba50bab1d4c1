//! redb backend of runstore: embedded, pure Rust
