//! S3 backend of runstore, via object_store, for many writers sharing one bucket
