//! SQLite backend of runstore, via sqlx
