//! PostgreSQL backend of runstore, via sqlx, for deployments beyond one machine
