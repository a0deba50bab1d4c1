//! Pluggable storage for durable workflow and agent runs.
