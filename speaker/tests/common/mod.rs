//! Links for the root tests: `ip` commands and veth pairs removed however a test ends.

#![allow(dead_code, clippy::unwrap_used)]

use std::process::Command;

/// Runs `ip` with `args`; the test fails if it does.
pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// A veth pair, deleted (both ends) when dropped.
pub struct VethPair(String);

impl VethPair {
    /// Creates `ours` with its peer `peer`, both down.
    pub fn create(ours: &str, peer: &str) -> Self {
        ip(&["link", "add", ours, "type", "veth", "peer", "name", peer]);
        Self(ours.to_owned())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}
