//! Issue 18: the workstation's tray item, on a private D-Bus session with a small tray
//! host written for the test (tests/fixtures/tray_host.py) and a recording notification
//! server: the item registers; its properties and menu hold the connection, certificate
//! and key lines; "Request Certificate" puts a request in the signer's queue; the icon
//! changes while a request waits and when the signer stops; the workstation's
//! notifications say what waits and how it ended. No bus, or no tray host: one line why.

mod common;

use common::proc::{run, Daemon};
use common::vmux::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Poll `f` until it gives a value; `f` may note what it saw, for the timeout's message.
fn wait_until<R>(what: &str, mut f: impl FnMut(&mut String) -> Option<R>) -> R {
    let deadline = Instant::now() + T;
    let mut seen = String::from("nothing");
    loop {
        if let Some(r) = f(&mut seen) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {seen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Bus {
    _daemon: Daemon,
    address: String,
}

fn bus() -> Bus {
    let d = Daemon::spawn_named(
        "dbus-daemon",
        Command::new("dbus-daemon").args(["--session", "--nofork", "--print-address"]),
    );
    let address = d
        .wait_for_line(|l| l.starts_with("unix:"), T)
        .unwrap_or_else(|| panic!("dbus-daemon (apt-get install dbus): {}", d.output()));
    Bus {
        _daemon: d,
        address,
    }
}

fn fixture(name: &str, log: &Path, bus: &Bus) -> Daemon {
    let d = Daemon::spawn_named(
        name,
        Command::new("/usr/bin/python3")
            .arg(format!(
                "{}/tests/fixtures/{name}.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(log)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address),
    );
    wait_until(name, |_| {
        records(log)
            .iter()
            .any(|r| r["method"] == "ready")
            .then_some(())
    });
    d
}

/// Ask the tray host for a snapshot of the item; the newest one that `pred` accepts.
fn snapshot(bus: &Bus, log: &Path, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    wait_until("a tray snapshot", |seen| {
        let out = run(
            Command::new("gdbus")
                .args([
                    "call",
                    "--session",
                    "--dest",
                    "org.kde.StatusNotifierWatcher",
                    "--object-path",
                    "/StatusNotifierWatcher",
                    "--method",
                    "test.Tray.Snapshot",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &bus.address),
            T,
        );
        if !out.success() {
            *seen = format!("{out:?}");
            return None;
        }
        let newest = records(log)
            .into_iter()
            .rev()
            .find(|r| r["method"] == "snapshot")?;
        if pred(&newest) {
            return Some(newest);
        }
        *seen = newest.to_string();
        None
    })
}

fn click(bus: &Bus, id: i32) {
    let out = run(
        Command::new("gdbus")
            .args([
                "call",
                "--session",
                "--dest",
                "org.kde.StatusNotifierWatcher",
                "--object-path",
                "/StatusNotifierWatcher",
                "--method",
                "test.Tray.Click",
                &id.to_string(),
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address),
        T,
    );
    assert!(out.success(), "{out:?}");
}

fn labels(snap: &serde_json::Value) -> Vec<String> {
    snap["menu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["label"].as_str().unwrap_or("").to_string())
        .collect()
}

fn id_of(snap: &serde_json::Value, label: &str) -> i32 {
    snap["menu"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["label"] == label)
        .unwrap_or_else(|| panic!("no {label:?} in {snap}"))["id"]
        .as_i64()
        .unwrap() as i32
}

#[test]
fn the_tray_item_shows_the_agent_and_its_menu_acts() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = bus();
    let tray_log = tmp.path().join("tray.jsonl");
    let notes_log = tmp.path().join("notes.jsonl");
    let _host = fixture("tray_host", &tray_log, &bus);
    let _notes = fixture("notification_server", &notes_log, &bus);
    let (shome, ahome) = (tmp.path().join("s"), tmp.path().join("a"));
    agent_config(&ahome, "session_certs = false\n");
    Signer::init(&shome, "test-signer");
    let mut signer = Signer::start(&shome, "127.0.0.1:0");
    pair(&ahome, &signer);
    let agent = Agent::start_env(
        None,
        &ahome,
        &[],
        &[("DBUS_SESSION_BUS_ADDRESS", bus.address.as_str())],
    );
    agent.wait_connected();

    // The item registered with the tray, and shows the agent as it is.
    wait_until("the item's registration", |_| {
        records(&tray_log)
            .iter()
            .any(|r| r["method"] == "registered")
            .then_some(())
    });
    let snap = snapshot(&bus, &tray_log, |s| {
        labels(s)
            .iter()
            .any(|l| l.starts_with("Connected to test-signer"))
    });
    assert_eq!(snap["props"]["IconName"], "security-high", "{snap}");
    assert_eq!(snap["props"]["Status"], "Active", "{snap}");
    assert_eq!(snap["props"]["Id"], "vmux-agent");
    let l = labels(&snap);
    for want in [
        "Certificate: none (session certificates are off in the agent config)",
        "Refresh Keys",
        "Request Certificate",
        "Drop Certificate",
        "Copy public keys",
        "Open log",
    ] {
        assert!(l.iter().any(|x| x == want), "missing {want:?}: {l:?}");
    }
    assert!(
        l.iter()
            .any(|x| x.starts_with("vmux@test-signer  SHA256:") && x.ends_with("[software]")),
        "no key line: {l:?}"
    );

    // "Request Certificate": a request waits in the signer's queue, the icon says so.
    click(&bus, id_of(&snap, "Request Certificate"));
    let p = signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    let waiting = snapshot(&bus, &tray_log, |s| {
        s["props"]["Status"] == "NeedsAttention"
    });
    assert_eq!(waiting["props"]["IconName"], "dialog-password", "{waiting}");
    assert!(
        labels(&waiting)
            .iter()
            .any(|x| x.starts_with("Waiting for approval on test-signer: session certificate for")),
        "{waiting}"
    );
    // The workstation's own notification says what it waits for.
    wait_until("a waiting notification", |_| {
        records(&notes_log)
            .iter()
            .any(|r| r["summary"] == "Waiting for approval on test-signer")
            .then_some(())
    });
    signer.approve_next();
    let done = snapshot(&bus, &tray_log, |s| {
        labels(s)
            .iter()
            .any(|l| l.starts_with("Certificate: valid until"))
    });
    assert_eq!(done["props"]["Status"], "Active", "{done}");
    wait_until("the outcome notification", |_| {
        records(&notes_log)
            .iter()
            .any(|r| r["summary"] == "Approved on test-signer")
            .then_some(())
    });

    // "Drop Certificate" drops it, and nothing is asked again by itself.
    click(&bus, id_of(&done, "Drop Certificate"));
    snapshot(&bus, &tray_log, |s| {
        labels(s)
            .iter()
            .any(|l| l.contains("dropped from the tray"))
    });
    assert!(signer.pending().is_empty());

    // The signer stops: the item says so.
    signer.stop();
    let gone = snapshot(&bus, &tray_log, |s| {
        s["props"]["IconName"] == "security-low"
    });
    assert!(
        labels(&gone)
            .iter()
            .any(|l| l.contains("test-signer not connected")),
        "{gone}"
    );
    assert!(records(&tray_log).iter().any(|r| r["name"] == "NewIcon"));
    drop(agent);
}

#[test]
fn no_bus_or_no_tray_host_is_said_once() {
    let s = Setup::new();
    let out = s.agent.daemon.as_ref().unwrap().output();
    assert!(
        out.contains("no tray: this agent runs without a desktop session bus"),
        "{out}"
    );
    // A bus, but no tray host on it.
    let bus = bus();
    let home = s.path("other");
    agent_config(&home, "session_certs = false\n");
    let mut a = Daemon::spawn_named(
        "vmux agent",
        vmux(&home)
            .args(["agent", "run"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address),
    );
    let line = a
        .wait_for_line(|l| l.contains("no tray:"), T)
        .unwrap_or_else(|| panic!("{}", a.output()));
    assert!(line.contains("no tray host"), "{line}");
    // `tray = "off"`: not even tried.
    a.terminate(Duration::from_secs(5));
    agent_config(&home, "session_certs = false\ntray = \"off\"\n");
    let b = Daemon::spawn_named(
        "vmux agent",
        vmux(&home)
            .args(["agent", "run"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address),
    );
    b.wait_for_line(|l| l.contains("vmux agent listening on"), T)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!b.output().contains("tray"), "{}", b.output());
}
