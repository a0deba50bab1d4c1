//! Record types and validated ids.

pub mod event;
pub mod feed;
pub mod ids;
pub mod phase;
pub mod query;
pub mod snapshot;
pub mod tenant;
