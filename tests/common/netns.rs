//! Test hosts in network namespaces the test creates itself (`ip netns`), so that
//! multicast and injected faults never leave this machine's sandbox.

use super::proc::is_root;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// A fresh namespace with `lo` up and multicast-capable. Needs root (as CI runs);
    /// otherwise the test fails saying so rather than skipping.
    pub fn new(tag: &str) -> Netns {
        assert!(
            is_root(),
            "this test creates network namespaces with `ip netns` and needs root (CI runs as root)"
        );
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vmux-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["ip", "link", "set", "lo", "multicast", "on"]);
        ns
    }

    /// Run a command inside and require success.
    pub fn exec(&self, args: &[&str]) {
        ip(&[&["netns", "exec", &self.name][..], args].concat());
    }

    /// A Command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Connect two namespaces with a veth pair: `self` gets `addr_a`, `other` `addr_b`
    /// (CIDR, e.g. `10.77.0.1/24`). Returns the interface names (here, there).
    pub fn link(&self, other: &Netns, addr_a: &str, addr_b: &str) -> (String, String) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let (a, b) = (
            format!("vx{}a{n}", std::process::id() % 100_000),
            format!("vx{}b{n}", std::process::id() % 100_000),
        );
        ip(&[
            "link",
            "add",
            &a,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &other.name,
        ]);
        self.exec(&["ip", "addr", "add", addr_a, "dev", &a]);
        self.exec(&["ip", "link", "set", &a, "up"]);
        other.exec(&["ip", "addr", "add", addr_b, "dev", &b]);
        other.exec(&["ip", "link", "set", &b, "up"]);
        (a, b)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
