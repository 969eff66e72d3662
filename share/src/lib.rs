//! share crate.
