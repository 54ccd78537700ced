//! Issue 9, day two: a signer that issued certificates starts again, serials only grow
//! (even when the counter is lost), old installs are migrated, and a stray file in a key
//! directory is named and skipped instead of bricking the signer.

mod common;

use common::proc::run;
use common::sshd::{Sshd, SshdOptions};
use common::vmux::*;
use std::time::{Duration, Instant};

fn approve_cert(s: &Setup) -> u64 {
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    s.signer.approve_next();
    let deadline = Instant::now() + T;
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&ok(&s.agent.home, &["agent", "status", "--json"])).unwrap();
        if let Some(serial) = st["certificate"]["serial"].as_u64() {
            return serial;
        }
        assert!(Instant::now() < deadline, "no certificate: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn restart(s: &mut Setup) {
    let addr = s.signer.addr.clone();
    s.agent.stop();
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home, &addr);
    s.agent = Agent::start(&s.agent.home);
    s.agent.wait_connected();
}

#[test]
fn a_signer_that_issued_certificates_lives_through_restarts() {
    let mut s = Setup::with_agent_config("");
    let first = approve_cert(&s);
    let ca = ok(&s.signer.home, &["signer", "ca", "pub"]);
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: s.pubkey.clone(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    });
    assert!(run(sshd.ssh_command(&s.agent.sock).arg("true"), T).success());
    // The counter lives beside the CA key, never in its directory.
    assert!(!s.signer.home.join("signer/ca/serial").exists());
    assert!(s.signer.home.join("signer/ca-serial").exists());

    // Day two: both daemons restart on what day one left behind.
    restart(&mut s);
    let keys = ok(&s.signer.home, &["signer", "keys", "list"]);
    assert!(keys.contains("SHA256:"), "{keys}");
    let second = approve_cert(&s);
    assert!(second > first, "serial {second} after {first}");
    assert!(run(sshd.ssh_command(&s.agent.sock).arg("true"), T).success());

    // An install from before the move: the counter in ca/ is migrated on start.
    s.agent.stop();
    s.signer.stop();
    let home = s.signer.home.join("signer");
    std::fs::rename(home.join("ca-serial"), home.join("ca/serial")).unwrap();
    let addr = s.signer.addr.clone();
    s.signer = Signer::start(&s.signer.home, &addr);
    assert!(!home.join("ca/serial").exists() && home.join("ca-serial").exists());
    // A stray file in a key directory is skipped and named, not fatal.
    std::fs::write(home.join("keys/notes.txt"), "my keys are here\n").unwrap();
    let list = try_vmux(&s.signer.home, &["signer", "keys", "list"]);
    assert!(list.success(), "{list:?}");
    assert!(
        list.stderr.contains("notes.txt"),
        "the stray file is named: {list:?}"
    );

    // The counter is lost: the next serial still follows the decision log.
    std::fs::remove_file(home.join("ca-serial")).unwrap();
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home, &addr);
    s.agent = Agent::start(&s.agent.home);
    s.agent.wait_connected();
    let third = approve_cert(&s);
    assert!(third > second, "serial {third} reissued after {second}");

    // A counter that is not a number fails closed, naming it.
    std::fs::write(home.join("ca-serial"), "garbage").unwrap();
    let h = background({
        let mut c = vmux(&s.agent.home);
        c.args(["agent", "request-cert"]);
        c
    });
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert");
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert!(!out.success(), "a corrupt counter must not issue: {out:?}");
    assert!(
        s.signer.log().contains("\"decision\":\"internal\""),
        "{}",
        s.signer.log()
    );
}
