//! The signer on this machine, as a workstation process on the same machine finds it:
//! a running signer writes where it listens to `<vmux home>/signer/listening.json`, so
//! an agent whose loopback signer moved (a new port after `vmux up`, or the service
//! unit) finds it again without pairing anew. The agent still dials it with the pinned
//! key: the file is a hint, never trusted.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listening {
    pub pid: u32,
    /// The bound `host:port`.
    pub address: String,
    /// The signer's device id (a hash of its link key).
    pub device_id: String,
    pub name: String,
}

pub fn path(vmux_home: &Path) -> PathBuf {
    vmux_home.join("signer").join("listening.json")
}

/// The running local signer, if its file is there and its process lives.
pub fn read(vmux_home: &Path) -> Option<Listening> {
    let l: Listening = crate::store::read_json(&path(vmux_home)).ok()??;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(l.pid as libc::pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(l)
}
