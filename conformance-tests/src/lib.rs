//! The storage contract as executable tests.
