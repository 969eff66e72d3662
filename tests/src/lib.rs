//! Shared helpers for warren's integration tests.
