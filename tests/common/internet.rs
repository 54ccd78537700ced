//! A small internet in network namespaces, for reach tests and the reach benchmark:
//! an "internet" namespace that routes between two NAT routers and runs an iroh relay
//! (in this process, from `iroh-relay`'s server feature, with a TLS certificate of a
//! CA made here), a "home" host behind one NAT (the signer) and a "cafe" host behind
//! the other (the workstation), plus a "lan" namespace where the two can meet to pair.
//! The hosts have no route to each other except through the internet namespace, and
//! nothing here has a route out of this machine.
//!
//! Self-contained (it only runs `ip` and `nft`), so `benches/reach.rs` includes it too.

#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The relay's address in the internet namespace, and its ports.
pub const RELAY_IP: &str = "198.18.1.1";
pub const RELAY_HTTPS_PORT: u16 = 8443;

/// How the NAT routers map ports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nat {
    /// Linux masquerade as it comes: source ports kept where possible, one mapping per
    /// inside address and port (hole punching works through it).
    PortPreserving,
    /// `masquerade fully-random`: a new random port for every destination, so the port
    /// a peer saw through the relay is not the one a direct packet would come from
    /// (hole punching fails; only the relay path works).
    Symmetric,
}

pub struct Ns {
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

impl Ns {
    pub fn new(tag: &str) -> Ns {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test builds network namespaces with `ip netns` and needs root (CI runs as root)"
        );
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vmux-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        let ns = Ns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn exec(&self, args: &[&str]) {
        ip(&[&["netns", "exec", &self.name][..], args].concat());
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run `f` on a thread of its own inside this namespace: sockets it (and the
    /// threads it starts) create live here.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// A veth pair between two namespaces, with an address at each end.
    fn link(&self, other: &Ns, addr_here: &str, addr_there: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let (a, b) = (
            format!("vr{}a{n}", std::process::id() % 100_000),
            format!("vr{}b{n}", std::process::id() % 100_000),
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
        self.exec(&["ip", "addr", "add", addr_here, "dev", &a]);
        self.exec(&["ip", "link", "set", &a, "up"]);
        other.exec(&["ip", "addr", "add", addr_there, "dev", &b]);
        other.exec(&["ip", "link", "set", &b, "up"]);
        a
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Move the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a namespace file we hold open; affects this thread only.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

pub struct Internet {
    pub internet: Ns,
    pub home_nat: Ns,
    pub cafe_nat: Ns,
    /// The signer's host, behind `home_nat`.
    pub home: Ns,
    /// The workstation, behind `cafe_nat`.
    pub cafe: Ns,
    /// Where the two meet to pair.
    pub lan: Ns,
    pub relay: Relay,
    /// The CA the relay's certificate chains to (PEM), for `--relay-ca`.
    pub ca: PathBuf,
}

impl Internet {
    pub fn new(nat: Nat, dir: &Path) -> Internet {
        let internet = Ns::new("inet");
        internet.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let side = |tag: &str, n: u8| {
            let router = Ns::new(&format!("{tag}nat"));
            let host = Ns::new(tag);
            internet.link(
                &router,
                &format!("198.18.{n}.1/24"),
                &format!("198.18.{n}.2/24"),
            );
            let wan = router_wan(&router);
            let lan = router.link(&host, &format!("10.{n}.0.1/24"), &format!("10.{n}.0.2/24"));
            router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            router.exec(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("198.18.{n}.1"),
            ]);
            host.exec(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.{n}.0.1"),
            ]);
            // As a home router does, the router drops what arrives for itself unasked
            // (so an early hole-punching packet leaves no conntrack entry that would
            // make masquerade pick another port), and masquerades what goes out; it
            // counts what its host sends out (`sent_by`).
            let how = match nat {
                Nat::PortPreserving => "masquerade",
                Nat::Symmetric => "masquerade fully-random",
            };
            let rules = format!(
                "table ip nat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  oifname \"{wan}\" {how}\n }}\n}}\n\
                 table ip filter {{\n chain input {{\n  type filter hook input priority 0; policy drop;\n  ct state established,related accept\n  iif lo accept\n }}\n\
                 chain forward {{\n  type filter hook forward priority 0; policy accept;\n  iifname \"{lan}\" counter\n }}\n}}\n"
            );
            let out = router
                .command("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(rules.as_bytes())?;
                    c.wait_with_output()
                })
                .expect("run nft");
            assert!(out.status.success(), "nft: {out:?}");
            (router, host)
        };
        let (home_nat, home) = side("home", 1);
        let (cafe_nat, cafe) = side("cafe", 2);
        let lan = Ns::new("lan");
        let ca = dir.join("relay-ca.pem");
        let relay = Relay::start(&internet, &ca);
        Internet {
            internet,
            home_nat,
            cafe_nat,
            home,
            cafe,
            lan,
            relay,
            ca,
        }
    }

    /// Packets and bytes the host behind `router` has sent out so far.
    pub fn sent_by(router: &Ns) -> (u64, u64) {
        let out = router
            .command("nft")
            .args(["list", "chain", "ip", "filter", "forward"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |w: &str| {
            words
                .iter()
                .position(|x| *x == w)
                .and_then(|i| words.get(i + 1))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {w} counter in {text}"))
        };
        (after("packets"), after("bytes"))
    }

    pub fn relay_url(&self) -> String {
        format!("https://{RELAY_IP}:{RELAY_HTTPS_PORT}")
    }
}

/// The router's interface toward the internet: the first veth it got.
fn router_wan(router: &Ns) -> String {
    let out = router
        .command("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .find(|n| n != "lo")
        .expect("router has a wan link")
}

enum RelayCmd {
    Stop,
    Start,
    Quit,
}

/// The iroh relay, in this process, inside the internet namespace: HTTPS on
/// RELAY_HTTPS_PORT, QUIC address discovery on 7842, plain HTTP on 8080. It can be
/// stopped and started again (the same certificate) to drop every relayed packet.
pub struct Relay {
    tx: std::sync::mpsc::Sender<(RelayCmd, std::sync::mpsc::Sender<()>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(internet: &Ns, ca_path: &Path) -> Relay {
        let cert = rcgen::generate_simple_self_signed(vec![RELAY_IP.to_string()]).unwrap();
        std::fs::write(ca_path, cert.cert.pem()).unwrap();
        let cert_der = cert.cert.der().clone();
        let key_der = cert.signing_key.serialize_der();
        let (tx, rx) = std::sync::mpsc::channel::<(RelayCmd, std::sync::mpsc::Sender<()>)>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = internet.spawn(move || {
            // Worker threads, started from this thread, live in this namespace too, and
            // serve the relay while this thread waits for commands.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let spawn = || {
                let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert_der.clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.clone().into()),
                )
                .unwrap();
                let mut relay = iroh_relay::server::RelayConfig::new(([0, 0, 0, 0], 8080));
                relay.tls = Some(iroh_relay::server::TlsConfig::new(
                    ([0, 0, 0, 0], RELAY_HTTPS_PORT),
                    iroh_relay::server::CertConfig::Manual { server_config: tls },
                ));
                let mut config = iroh_relay::server::ServerConfig::default();
                config.relay = Some(relay);
                config.quic = Some(iroh_relay::server::QuicConfig::new(([0, 0, 0, 0], 7842)));
                rt.block_on(iroh_relay::server::Server::spawn(config))
                    .expect("relay starts")
            };
            let mut server = Some(spawn());
            ready_tx.send(()).unwrap();
            while let Ok((cmd, done)) = rx.recv() {
                match cmd {
                    RelayCmd::Stop => {
                        if let Some(s) = server.take() {
                            let _ = rt.block_on(s.shutdown());
                        }
                    }
                    RelayCmd::Start => {
                        if server.is_none() {
                            // The ports may linger a moment after shutdown.
                            std::thread::sleep(Duration::from_millis(100));
                            server = Some(spawn());
                        }
                    }
                    RelayCmd::Quit => {
                        if let Some(s) = server.take() {
                            let _ = rt.block_on(s.shutdown());
                        }
                        let _ = done.send(());
                        return;
                    }
                }
                let _ = done.send(());
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the relay did not start");
        Relay {
            tx,
            thread: Some(thread),
        }
    }

    fn ask(&self, cmd: RelayCmd) {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.tx.send((cmd, done_tx)).unwrap();
        done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }

    /// Stop relaying: every relayed connection drops.
    pub fn stop(&self) {
        self.ask(RelayCmd::Stop);
    }

    pub fn start_again(&self) {
        self.ask(RelayCmd::Start);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let (done_tx, _done_rx) = std::sync::mpsc::channel();
        let _ = self.tx.send((RelayCmd::Quit, done_tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Make `127.0.0.1:port` of this (root) namespace reachable at `127.0.0.1:port` inside
/// `ns` (for an sshd on loopback that a client inside `ns` logs in to). The bridge lives
/// as long as the process.
pub fn bridge_loopback_port(ns: &Ns, port: u16) {
    let listener = ns
        .spawn(move || std::net::TcpListener::bind(("127.0.0.1", port)).unwrap())
        .join()
        .unwrap();
    std::thread::spawn(move || {
        for inside in listener.incoming() {
            let Ok(inside) = inside else { continue };
            let Ok(outside) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let (mut a, mut b) = (inside.try_clone().unwrap(), outside.try_clone().unwrap());
            let (mut c, mut d) = (outside, inside);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut d);
                let _ = d.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}
