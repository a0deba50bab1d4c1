//! PostgreSQL: the standard workload with 64 concurrent appenders across 4
//! pools, next to a pgbench-style bare insert loop on the same server
//! (issue 7). Needs `RUNSTORE_POSTGRES_URL` (`scripts/services/postgres.sh`
//! starts a throwaway cluster and exports it); without it it says so loudly
//! and exits successfully. Every schema it creates is dropped at the end.

fn main() {
    if let Some(engine) = runstore_benches::engines::Postgres::from_env() {
        runstore_benches::main(&engine);
    }
}
