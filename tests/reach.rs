//! Issue 24: sign from anywhere. A signer at "home" and a workstation at a "cafe", each
//! behind its own NAT, with no route between them but the "internet" namespace, where
//! an iroh relay runs (`common/internet.rs`). They pair on a shared LAN first, as a
//! person would, then each goes its own way. Every approval is made through `vmux
//! signer approve ID --digest D`, as a person would.

mod common;
#[path = "common/internet.rs"]
mod internet;

use common::netns::Netns;
use common::proc::run;
use common::sshd::Sshd;
use common::vmux::*;
use internet::{Internet, Nat, Ns};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The test helpers take `common::netns::Netns`; these namespaces are owned (and
/// removed) by `Internet`.
fn netns(ns: &Ns) -> ManuallyDrop<Netns> {
    ManuallyDrop::new(Netns {
        name: ns.name.clone(),
    })
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(home: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(home, &["agent", "status", "--json"])).unwrap()
}

fn signer_reach(shome: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(shome, &["signer", "reach", "--json"])).unwrap()
}

struct World {
    tmp: tempfile::TempDir,
    net: Internet,
    signer: Signer,
    agent: Agent,
    pubkey: String,
    sshd: Sshd,
    known_hosts: PathBuf,
}

impl World {
    /// Pair on the LAN, then the signer goes home (reach anywhere through the test
    /// relay) and the workstation to the cafe, with reach `anywhere` or left `local`.
    fn new(nat: Nat, workstation_anywhere: bool) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let net = Internet::new(nat, tmp.path());
        let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
        agent_config(
            &ahome,
            "session_certs = false\nconnect_timeout_secs = 8\nfeedback = \"off\"\ntray = \"off\"\n",
        );
        let pubkey = Signer::init(&shome, "home-signer");
        let (relay, ca) = (net.relay_url(), net.ca.display().to_string());
        let out = ok(
            &shome,
            &[
                "signer",
                "reach",
                "anywhere",
                "--relay",
                &relay,
                "--relay-ca",
                &ca,
            ],
        );
        assert!(
            out.contains("reach: anywhere (relays: https://198.18.1.1:8443"),
            "{out}"
        );

        // Pairing on one network: the pairing carries how to reach the signer.
        let lan = netns(&net.lan);
        let mut signer = Signer::start_in(Some(&lan), &shome, "127.0.0.1:0");
        pair_in(
            Some(&lan),
            &ahome,
            &signer,
            &["agent", "pair", &signer.addr],
        );
        pair_in(
            Some(&lan),
            &ahome,
            &signer,
            &["client", "pair", &signer.addr],
        );
        signer.stop();
        let paired: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(ahome.join("agent/signers.json")).unwrap(),
        )
        .unwrap();
        let endpoint = signer_reach(&shome)["endpointId"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(paired[0]["reach"]["endpointId"], endpoint.as_str());
        assert_eq!(paired[0]["reach"]["anywhere"], true);

        // Apart: the signer at home, reachable through the relay.
        let home = netns(&net.home);
        let signer = Signer::start_in(Some(&home), &shome, "0.0.0.0:7227");
        let started = Instant::now();
        while !signer_reach(&shome)["running"]["homeRelay"]
            .as_str()
            .is_some_and(|r| r.starts_with("https://198.18.1.1"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the signer never reached the relay: {}\n{}",
                signer_reach(&shome),
                signer.daemon.as_ref().unwrap().output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if workstation_anywhere {
            for device in ["agent", "client"] {
                ok(
                    &ahome,
                    &[
                        device,
                        "reach",
                        "anywhere",
                        "--relay",
                        &relay,
                        "--relay-ca",
                        &ca,
                    ],
                );
            }
            std::fs::write(
                ahome.join("client/config.toml"),
                "discovery = \"off\"\nconnect_timeout_secs = 8\n",
            )
            .unwrap();
        } else {
            std::fs::write(
                ahome.join("client/config.toml"),
                "discovery = \"off\"\nconnect_timeout_secs = 3\n",
            )
            .unwrap();
        }
        let cafe = netns(&net.cafe);
        let agent = Agent::start_in(Some(&cafe), &ahome, &[]);
        let sshd = Sshd::start(&pubkey);
        internet::bridge_loopback_port(&net.cafe, sshd.port());
        let known_hosts = tmp.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line())).unwrap();
        World {
            tmp,
            net,
            signer,
            agent,
            pubkey,
            sshd,
            known_hosts,
        }
    }

    fn path(&self) -> Option<String> {
        status(&self.agent.home)["signers"][0]["path"]
            .as_str()
            .map(String::from)
    }

    fn login(&self) -> common::proc::Output {
        let mut c = self.sshd.ssh_command(&self.agent.sock);
        c.arg("true");
        let h = background(c);
        self.signer.approve_next();
        h.join().unwrap()
    }

    /// `vmux ssh` from the cafe to the sshd (bridged into the cafe's loopback).
    fn vmux_ssh(&self, approve: bool) -> common::proc::Output {
        let cafe = netns(&self.net.cafe);
        let mut c = vmux_in(Some(&cafe), &self.agent.home);
        c.args([
            "ssh",
            "-F",
            "none",
            "-p",
            &self.sshd.port().to_string(),
            "-o",
            &format!("UserKnownHostsFile={}", self.known_hosts.display()),
            &format!("{}@127.0.0.1", self.sshd.user()),
            "true",
        ]);
        let h = background(c);
        if approve {
            self.signer.approve_next();
        }
        h.join().unwrap()
    }

    fn sign_file(&self, name: &str) -> Command {
        let pubkey = self.tmp.path().join("signer.pub");
        std::fs::write(&pubkey, &self.pubkey).unwrap();
        let msg = self.tmp.path().join(name);
        std::fs::write(&msg, name).unwrap();
        sshsig(&self.agent.sock, &pubkey, &msg, "file")
    }
}

/// Everything a workstation does, from the cafe, with the signer at home.
fn everything_works_from_anywhere(w: &World) -> String {
    w.agent.wait_connected();
    let path = w.path().unwrap();
    let listed = w.agent.ssh_add(&["-L"]);
    assert!(listed.success(), "{listed:?}");
    assert!(listed
        .stdout
        .contains(w.pubkey.split_whitespace().nth(1).unwrap()));
    let refreshed = ok(&w.agent.home, &["agent", "refresh"]);
    assert!(refreshed.contains("refreshed"), "{refreshed}");

    let login = w.login();
    assert!(login.success(), "login through the relay: {login:?}");

    let cert = background({
        let mut c = vmux(&w.agent.home);
        c.args(["agent", "request-cert", "--validity", "1h"]);
        c
    });
    w.signer.approve_next();
    let cert = cert.join().unwrap();
    assert!(
        cert.success() && cert.stdout.contains("session certificate issued"),
        "certificate: {cert:?}"
    );

    let ssh = w.vmux_ssh(true);
    assert!(ssh.success(), "vmux ssh from anywhere: {ssh:?}");

    let human = ok(&w.agent.home, &["agent", "status"]);
    assert!(human.contains("connected ("), "{human}");
    assert!(human.contains("rtt"), "{human}");
    path
}

#[test]
fn anywhere_through_symmetric_nats_goes_via_the_relay() {
    let w = World::new(Nat::Symmetric, true);
    let path = everything_works_from_anywhere(&w);
    assert_eq!(path, "via relay https://198.18.1.1:8443/");
    // Hole punching cannot work through two symmetric NATs: still relayed.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        w.path().as_deref(),
        Some("via relay https://198.18.1.1:8443/")
    );
    let s = status(&w.agent.home);
    assert!(s["signers"][0]["rttMs"].as_f64().is_some(), "{s}");
    assert_eq!(s["signers"][0]["reach"], "anywhere");
    let signer_side = try_vmux(&w.signer.home, &["status"]).stdout;
    assert!(
        signer_side.contains("reach: anywhere as endpoint ")
            && signer_side.contains("through https://198.18.1.1:8443/"),
        "{signer_side}"
    );
}

#[test]
fn anywhere_through_port_preserving_nats_is_hole_punched() {
    let w = World::new(Nat::PortPreserving, true);
    everything_works_from_anywhere(&w);
    // The relay carries the first packets; hole punching then finds the direct path.
    let started = Instant::now();
    while w.path().as_deref() != Some("direct (hole-punched)") {
        if started.elapsed() > Duration::from_secs(30) {
            panic!(
                "no hole-punched path: {:?}\n{}",
                w.path(),
                w.agent.daemon.as_ref().unwrap().output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let login = w.login();
    assert!(login.success(), "login on the direct path: {login:?}");
}

#[test]
fn reach_local_fails_and_names_the_fix() {
    let w = World::new(Nat::PortPreserving, false);
    // The agent tries its saved (LAN) address only, and says what would reach it.
    wait_until(
        "the agent to give up on the LAN address",
        Duration::from_secs(30),
        || {
            status(&w.agent.home)["signers"][0]["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("vmux agent reach anywhere"))
        },
    );
    let s = status(&w.agent.home);
    assert_eq!(s["signers"][0]["connected"], false, "{s}");
    let human = ok(&w.agent.home, &["agent", "status"]);
    assert!(human.contains("vmux agent reach anywhere"), "{human}");
    eprintln!("agent status with reach local:\n{human}");

    let mut c = w.sshd.ssh_command(&w.agent.sock);
    c.arg("true");
    let login = run(&mut c, T);
    assert!(!login.success(), "a login with reach local: {login:?}");
    assert!(w.signer.pending().is_empty());

    let ssh = w.vmux_ssh(false);
    assert!(!ssh.success());
    assert!(
        ssh.stderr.contains("vmux client reach anywhere"),
        "vmux ssh names the fix: {ssh:?}"
    );
    eprintln!("vmux ssh with reach local: {}", ssh.stderr);
    // No endpoint, so no relay connection from this workstation.
    assert!(
        !w.agent
            .daemon
            .as_ref()
            .unwrap()
            .output()
            .contains("iroh endpoint"),
        "an agent with reach local made an endpoint"
    );
}

#[test]
fn a_relay_that_drops_mid_request_signs_at_most_once_and_the_next_works() {
    let w = World::new(Nat::Symmetric, true);
    w.agent.wait_connected();
    let h = background(w.sign_file("first"));
    let req = w.signer.next_request();
    let id = req["id"].as_str().unwrap().to_string();
    // The relay goes away with the request on the signer's screen; the person
    // approves; the relay comes back after the agent gave the link up for dead (9 s).
    w.net.relay.stop();
    ok(
        &w.signer.home,
        &[
            "signer",
            "approve",
            &id,
            "--digest",
            req["digest"].as_str().unwrap(),
        ],
    );
    std::thread::sleep(Duration::from_secs(12));
    w.net.relay.start_again();
    let first = h.join().unwrap();
    let approvals = w
        .signer
        .log()
        .lines()
        .filter(|l| l.contains(&format!("\"requestId\":\"{id}\"")) && l.contains("approved"))
        .count();
    assert_eq!(
        approvals,
        1,
        "one decision, one signature: {}",
        w.signer.log()
    );
    let sigs = std::fs::read_dir(w.tmp.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() == "first.sig")
        .count();
    assert_eq!(sigs, usize::from(first.success()), "{first:?}");
    eprintln!(
        "MEASURE relay_drop_first_request={}",
        if first.success() {
            "succeeded"
        } else {
            "failed"
        }
    );

    // The link comes back by itself and the next request works.
    w.agent.wait_connected();
    let h = background(w.sign_file("second"));
    w.signer.approve_next();
    let second = h.join().unwrap();
    assert!(second.success(), "the next request: {second:?}");
}

#[test]
fn unpaired_iroh_endpoints_get_pairing_invalid_and_a_flood_does_not_stop_the_signer() {
    let w = World::new(Nat::PortPreserving, true);
    w.agent.wait_connected();
    let endpoint_id = signer_reach(&w.signer.home)["endpointId"]
        .as_str()
        .unwrap()
        .to_string();
    let config = vmux_proto::reach::ReachConfig {
        mode: vmux_proto::reach::Mode::Anywhere,
        relays: vec![w.net.relay_url()],
        relay_ca: Some(w.net.ca.clone()),
    };
    let to = vmux_proto::envelope::Reach {
        anywhere: true,
        endpoint_id,
        relays: vec![w.net.relay_url()],
    };

    // One stranger: Noise completes (the signer's key is no secret), then the signer
    // waits (5 s) for a pairing request, answers `pairingInvalid` and nothing else.
    let (c, t) = (config.clone(), to.clone());
    let answer = w
        .net
        .cafe
        .spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let me = vmux_proto::Identity::generate();
                let ep = vmux_proto::reach::bind(&me, &c, false).await.unwrap();
                let stream = vmux_proto::reach::dial(&ep, &t).await.unwrap();
                let mut link = vmux_proto::noise::connect(stream, &me).await.unwrap();
                link.writer
                    .send(&vmux_proto::Envelope::new(vmux_proto::Message::Hello(
                        vmux_proto::envelope::Hello {
                            device_id: me.device_id(),
                            device_name: "stranger".into(),
                            role: vmux_proto::envelope::Role::Agent,
                            software: "test".into(),
                            time: None,
                        },
                    )))
                    .await
                    .unwrap();
                let mut got = vec![];
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), link.reader.recv()).await {
                        Ok(Ok(e)) => got.push(e.message),
                        Ok(Err(e)) => {
                            eprintln!("the stranger's link ended: {e}");
                            break;
                        }
                        Err(_) => break,
                    }
                }
                got
            })
        })
        .join()
        .unwrap();
    assert_eq!(
        answer.len(),
        1,
        "{answer:?}\n{}\n{}",
        w.signer.log(),
        w.signer.daemon.as_ref().unwrap().output()
    );
    match &answer[0] {
        vmux_proto::Message::Error(e) => {
            assert_eq!(e.code, vmux_proto::ErrorCode::PairingInvalid)
        }
        m => panic!("an unpaired endpoint got {m:?}"),
    }

    // A flood: 8 endpoints × 40 connections that open a stream and stall in the
    // handshake. Meanwhile the paired agent still signs.
    let (c, t) = (config.clone(), to.clone());
    let flood = w.net.cafe.spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut held = vec![];
            let mut tasks = vec![];
            for _ in 0..8 {
                let me = vmux_proto::Identity::generate();
                let ep = vmux_proto::reach::bind(&me, &c, false).await.unwrap();
                for _ in 0..40 {
                    let (ep, t) = (ep.clone(), t.clone());
                    tasks.push(tokio::spawn(async move {
                        let s = vmux_proto::reach::dial(&ep, &t).await.ok()?;
                        let mut s = s;
                        use tokio::io::AsyncWriteExt;
                        s.write_all(&[0, 32]).await.ok()?;
                        tokio::time::sleep(Duration::from_secs(8)).await;
                        Some(())
                    }));
                }
                held.push(ep);
            }
            let mut opened = 0;
            for t in tasks {
                if let Ok(Some(())) = t.await {
                    opened += 1;
                }
            }
            opened
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    let h = background(w.sign_file("during-flood"));
    w.signer.approve_next();
    let during = h.join().unwrap();
    assert!(
        during.success(),
        "a paired agent during the flood: {during:?}"
    );
    let opened = flood.join().unwrap();
    eprintln!("MEASURE iroh_flood_streams_opened={opened} of 320");
    assert!(
        w.signer.daemon.as_ref().unwrap().output().lines().count() < 2000,
        "the flood is logged, bounded"
    );
    let refused = w.signer.log().matches("\"refused").count();
    assert!(refused < 100, "refusals logged, bounded: {refused}");

    // And a new link still comes up after it: restart the agent.
    let mut w = w;
    w.agent.stop();
    let cafe = netns(&w.net.cafe);
    w.agent = Agent::start_in(Some(&cafe), &w.agent.home.clone(), &[]);
    w.agent.wait_connected();
    let login = w.login();
    assert!(login.success(), "{login:?}");
}

/// The signer's resident memory (kB).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A signer at home, run from `VMUX_REACH_BIN` when set (a release build, to measure
/// memory), else this build's `vmux`.
fn idle_signer(ns: &Ns, shome: &Path) -> common::proc::Daemon {
    let bin = std::env::var("VMUX_REACH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vmux").into());
    let mut cmd = ns.command(&bin);
    cmd.env("VMUX_HOME", shome)
        .env("VMUX_LOG", "info")
        .env_remove("VMUX_PASSPHRASE")
        .args(["signer", "run", "--no-ui", "--listen", "0.0.0.0:7227"]);
    let d = common::proc::Daemon::spawn_named("vmux signer", &mut cmd);
    d.wait_for_line(|l| l.contains("listening on"), T)
        .unwrap_or_else(|| panic!("signer did not start: {}", d.output()));
    d
}

#[test]
fn an_idle_signer_costs_little_with_reach_anywhere_and_nothing_with_reach_local() {
    let tmp = tempfile::tempdir().unwrap();
    let net = Internet::new(Nat::PortPreserving, tmp.path());
    let shome = tmp.path().join("s");
    Signer::init(&shome, "idle-signer");
    let (relay, ca) = (net.relay_url(), net.ca.display().to_string());
    ok(
        &shome,
        &[
            "signer",
            "reach",
            "anywhere",
            "--relay",
            &relay,
            "--relay-ca",
            &ca,
        ],
    );
    let mut signer = idle_signer(&net.home, &shome);
    wait_until(
        "the signer to reach the relay",
        Duration::from_secs(30),
        || signer_reach(&shome)["running"]["homeRelay"].is_string(),
    );
    std::thread::sleep(Duration::from_secs(5));
    let rss_anywhere = rss_kb(signer.pid());
    let (p0, b0) = Internet::sent_by(&net.home_nat);
    std::thread::sleep(Duration::from_secs(60));
    let (p1, b1) = Internet::sent_by(&net.home_nat);
    eprintln!(
        "MEASURE idle_signer_reach_anywhere packets_per_min={} bytes_per_min={}",
        p1 - p0,
        b1 - b0
    );
    assert!(
        p1 - p0 <= 60,
        "an idle signer sent {} packets in a minute",
        p1 - p0
    );

    // Turned local while running: the endpoint goes, and nothing leaves any more.
    let out = ok(&shome, &["signer", "reach", "local"]);
    assert!(out.contains("is local only now"), "{out}");
    std::thread::sleep(Duration::from_secs(2));
    let (p2, _) = Internet::sent_by(&net.home_nat);
    std::thread::sleep(Duration::from_secs(30));
    let (p3, _) = Internet::sent_by(&net.home_nat);
    assert_eq!(p3 - p2, 0, "a signer with reach local sent packets");

    // What reach costs in memory: the same signer started with reach local.
    signer.terminate(Duration::from_secs(5));
    let signer = idle_signer(&net.home, &shome);
    std::thread::sleep(Duration::from_secs(10));
    let rss_local = rss_kb(signer.pid());
    eprintln!(
        "MEASURE idle_signer_rss_kb local={rss_local} anywhere={rss_anywhere} added={}",
        rss_anywhere as i64 - rss_local as i64
    );
}

#[test]
fn a_running_signer_that_turns_reach_on_tells_its_connected_devices() {
    let s = Setup::new();
    let stored = |home: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(home.join("agent/signers.json")).unwrap())
            .unwrap()
    };
    wait_until("the agent to learn the signer is local", T, || {
        stored(&s.agent.home)[0]["reach"]["anywhere"] == false
    });
    // A relay on this machine that is not there: the signer keeps trying it, and the
    // agent learns the endpoint id and relay over the link it already has.
    let out = ok(
        &s.signer.home,
        &[
            "signer",
            "reach",
            "anywhere",
            "--relay",
            "https://127.0.0.1:9/",
        ],
    );
    assert!(out.contains("endpoint id: "), "{out}");
    wait_until("the agent to hear of it", Duration::from_secs(10), || {
        stored(&s.agent.home)[0]["reach"]["anywhere"] == true
    });
    let endpoint = signer_reach(&s.signer.home)["endpointId"].clone();
    assert_eq!(stored(&s.agent.home)[0]["reach"]["endpointId"], endpoint);
    assert_eq!(status(&s.agent.home)["signers"][0]["reach"], "anywhere");
    assert_eq!(
        status(&s.agent.home)["signers"][0]["path"],
        "direct (LAN)",
        "the local link stays"
    );

    ok(&s.signer.home, &["signer", "reach", "local"]);
    wait_until(
        "the agent to hear it is local again",
        Duration::from_secs(10),
        || stored(&s.agent.home)[0]["reach"]["anywhere"] == false,
    );
}
