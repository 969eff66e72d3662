//! Shared helpers for warren's cross-crate integration tests: network namespaces, veth links,
//! packet captures and process guards. Every resource is released by `Drop`, so a failing test
//! cleans up too.

pub mod capture;
pub mod libtorrent;
pub mod netns;
pub mod proc;

pub use capture::Capture;
pub use netns::{Host, Netns, Veth};
pub use proc::{free_port, have, port_open, wait_file, wait_for, wait_until, Child};

/// True when the process runs as root (needed for namespaces and tun devices).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
