//! Hardware for tests, as real as it gets without hardware: swtpm (a TPM 2.0 simulator
//! speaking the real TPM protocol) on loopback ports, and SoftHSM2 tokens under a
//! temporary directory. Both are Debian packages the test command installs.

use super::proc::{free_port, run, Daemon};
use super::vmux::T;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

pub struct Swtpm {
    pub daemon: Daemon,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Swtpm {
    /// A fresh TPM (its own state directory, its own seeds).
    pub fn start() -> Swtpm {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..10 {
            // The swtpm TCTI finds the control channel at the next port.
            let port = free_port();
            if std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
                continue;
            }
            if let Some(daemon) = Swtpm::spawn(dir.path(), port) {
                return Swtpm {
                    daemon,
                    port,
                    _dir: dir,
                };
            }
        }
        panic!("swtpm did not start (apt-get install swtpm swtpm-tools)");
    }

    fn spawn(dir: &Path, port: u16) -> Option<Daemon> {
        let mut d = Daemon::spawn_named(
            "swtpm",
            Command::new("swtpm").args([
                "socket",
                "--tpm2",
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
                "--tpmstate",
                &format!("dir={}", dir.display()),
                "--flags",
                "not-need-init,startup-clear",
            ]),
        );
        let deadline = Instant::now() + T;
        while Instant::now() < deadline && d.is_running() {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        d.terminate(Duration::from_secs(2));
        None
    }

    /// The TPM goes away (as a TPM whose daemon or bus fails).
    pub fn stop(&mut self) {
        self.daemon.terminate(Duration::from_secs(2));
    }

    /// The same TPM (same state, same seeds) back on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + T;
        loop {
            if let Some(d) = Swtpm::spawn(self._dir.path(), self.port) {
                self.daemon = d;
                return;
            }
            assert!(Instant::now() < deadline, "swtpm did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// TPM2_PT_LOCKOUT_COUNTER: failed authorizations the TPM has counted.
    pub fn lockout_counter(&self) -> u64 {
        let out = run(
            Command::new("tpm2_getcap")
                .args(["properties-variable"])
                .env("TPM2TOOLS_TCTI", self.tcti()),
            T,
        );
        assert!(out.success(), "tpm2_getcap: {out:?}");
        let text = out.stdout;
        let at = text
            .find("TPM2_PT_LOCKOUT_COUNTER")
            .unwrap_or_else(|| panic!("no lockout counter in: {text}"));
        text[at..]
            .lines()
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| panic!("unreadable lockout counter in: {text}"))
    }
}

/// The `*.tpm` file in a signer's `keys` directory whose `.pub` carries `comment`, parsed.
pub fn tpm_key_file(keys: &Path, comment: &str) -> (PathBuf, vmux_signer::keystore::tss2::TpmKey) {
    let file = std::fs::read_dir(keys)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "tpm")
                && std::fs::read_to_string(p.with_extension("pub"))
                    .is_ok_and(|l| l.contains(comment))
        })
        .unwrap_or_else(|| panic!("no TPM key {comment:?} in {}", keys.display()));
    let text = std::fs::read_to_string(&file).unwrap();
    let key = vmux_signer::keystore::tss2::TpmKey::from_pem(&text).unwrap();
    (file, key)
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.daemon.terminate(Duration::from_secs(2));
    }
}

/// A SoftHSM2 installation of its own: config and token directory in a temp dir.
pub struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    pub fn new() -> SoftHsm {
        assert!(
            Path::new(SOFTHSM).exists(),
            "{SOFTHSM} missing (apt-get install softhsm2)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        SoftHsm { dir }
    }

    pub fn conf(&self) -> String {
        self.dir.path().join("softhsm2.conf").display().to_string()
    }

    pub fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// A new token with user PIN `pin`.
    pub fn token(&self, label: &str, pin: &str) {
        let out = run(
            Command::new("softhsm2-util")
                .args([
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--pin",
                    pin,
                    "--so-pin",
                    "5678",
                ])
                .env("SOFTHSM2_CONF", self.conf()),
            T,
        );
        assert!(out.success(), "softhsm2-util: {out:?}");
    }
}

/// Whether any private key on the token gives out CKA_VALUE (it must not), asked
/// through the PKCS#11 module itself, logged in as the user.
pub fn private_value_readable(hsm: &SoftHsm, token: &str, pin: &str) -> bool {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    // SoftHSM reads its config at C_Initialize; only this test loads it in-process.
    std::env::set_var("SOFTHSM2_CONF", hsm.conf());
    let p = Pkcs11::new(SOFTHSM).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label().trim_end() == token)
        .expect("token present");
    let s = p.open_ro_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(pin.to_string())))
        .unwrap();
    let keys = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert!(!keys.is_empty(), "no private key on the token");
    keys.into_iter().any(|h| {
        let flags = s
            .get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable])
            .unwrap();
        assert!(flags.contains(&Attribute::Sensitive(true)), "{flags:?}");
        assert!(flags.contains(&Attribute::Extractable(false)), "{flags:?}");
        matches!(
            s.get_attributes(h, &[AttributeType::Value]).as_deref(),
            Ok([Attribute::Value(v)]) if !v.is_empty()
        )
    })
}
