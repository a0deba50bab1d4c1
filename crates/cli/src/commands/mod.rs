//! One module per command group.

pub mod bench;
pub mod erase;
pub mod events;
pub mod feed;
pub mod migrate;
pub mod reference;
pub mod salvage;
pub mod snapshot;
pub mod stats;
pub mod verify;
