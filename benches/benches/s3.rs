//! S3: the standard workload against a real S3 server (SeaweedFS in CI,
//! started by `scripts/services/seaweedfs.sh`), next to a bare loop of one
//! conditional `PUT` per event, with requests per event counted at the
//! client (issue 6). Needs `RUNSTORE_S3_ENDPOINT` and `RUNSTORE_S3_BUCKET`
//! (and the `AWS_*` credentials the script exports); without them it says
//! so loudly and exits successfully.

fn main() {
    if let Some(engine) = runstore_benches::engines::S3::from_env() {
        runstore_benches::main(&engine);
    }
}
