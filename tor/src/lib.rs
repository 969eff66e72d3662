//! Tor as a second anonymous-stream provider (issue 7). Work in progress.
