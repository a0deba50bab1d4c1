//! Connecting: the schema name, per-connection settings and the embedded,
//! versioned migrations.

use std::str::FromStr;

use runstore_core::{Durability, Error, Result};
use sqlx::{
    Connection, Executor, PgConnection,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};

use crate::{PostgresOptions, error};

/// Checks a schema name: 1 to 63 bytes of lowercase ASCII letters, digits
/// and `_`, starting with a letter or `_`, not starting with `pg_`. Such a
/// name needs no quoting, in SQL or in the `search_path` setting.
pub(crate) fn check_schema(schema: &str) -> Result<()> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit()
        && !schema.starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "postgres schema {schema:?} must be 1 to 63 bytes of [a-z0-9_], start with a letter \
             or '_', and not start with 'pg_'"
        )))
    }
}

/// Connection options for `url`: every connection's `search_path` is the
/// store's schema (the unqualified table names of the queries and of sqlx's
/// `_sqlx_migrations` resolve there), transactions are `READ COMMITTED`,
/// and relaxed durability turns `synchronous_commit` off.
pub(crate) fn connect_options(url: &str, options: &PostgresOptions) -> Result<PgConnectOptions> {
    check_schema(&options.schema)?;
    let connect = PgConnectOptions::from_str(url)
        .map_err(|err| Error::invalid(format!("postgres url is not usable: {err}")))?;
    let mut settings = vec![
        ("search_path", options.schema.as_str()),
        // The locking protocol is written for READ COMMITTED (see
        // docs/backends/postgres.md); pin it against a server whose default
        // differs.
        ("default_transaction_isolation", "read\\ committed"),
    ];
    if options.durability == Durability::Relaxed {
        settings.push(("synchronous_commit", "off"));
    }
    Ok(connect.application_name("runstore").options(settings))
}

/// Creates the schema if needed, applies pending migrations and re-bases
/// the feed of a store that moved to this cluster, on a
/// dedicated connection holding an advisory lock named after the schema, so
/// nodes starting together migrate one at a time. The lock dies with the
/// connection, also when a step fails.
pub(crate) async fn migrate(connect: &PgConnectOptions, schema: &str) -> Result<()> {
    let doing = format!("migrating schema {schema}");
    let mut conn = PgConnection::connect_with(connect)
        .await
        .map_err(|err| error::map(&doing, err))?;
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("runstore-postgres migrate {schema}"))
        .execute(&mut conn)
        .await
        .map_err(|err| error::map(&doing, err))?;
    // The name was checked by `check_schema`: it needs no escaping.
    conn.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
        .await
        .map_err(|err| error::map(&doing, err))?;
    // The schema's migrations, embedded at build time (`migrations/`).
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    // The schema lock above already serialises migrations of this schema;
    // sqlx's own lock is database-wide and would serialise unrelated schemas.
    migrator.set_locking(false);
    migrator
        .run_direct(&mut conn)
        .await
        .map_err(|err| error::map_migrate(schema, err))?;
    // A store restored or replicated from another cluster (see
    // `feed::rebase`), before this node writes anything.
    crate::feed::rebase_if_new_cluster(&mut conn)
        .await
        .map_err(|err| error::map(&format!("re-basing the feed of schema {schema}"), err))?;
    conn.close().await.map_err(|err| error::map(&doing, err))?;
    Ok(())
}

/// The pool every operation of a store uses.
pub(crate) async fn pool(connect: PgConnectOptions, options: &PostgresOptions) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(|err| error::map("connecting", err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_need_no_quoting() {
        for ok in ["runstore", "_a", "t0123abc", &"a".repeat(63)] {
            assert!(check_schema(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Runstore",
            "1a",
            "a-b",
            "a b",
            "pg_x",
            "a\"",
            &"a".repeat(64),
        ] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
