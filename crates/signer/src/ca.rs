//! The signer's OpenSSH certificate authority (PROTOCOL.certkeys): it certifies the
//! agent's ephemeral session key after a person approves. The CA key sits in a keystore
//! like any identity, so a hardware backend can hold it too.

use crate::keystore::Keystore;
use crate::state::{CaPolicy, PairedDevice, SignerHome};
use ssh_key::certificate::{Builder, CertType};
use ssh_key::encoding::Decode;
use ssh_key::public::KeyData;
use ssh_key::Signature;
use vmux_proto::envelope::CertificateRequest;
use vmux_proto::{now_unix, ErrorCode};

/// The user-certificate extensions OpenSSH knows (PROTOCOL.certkeys); the CA policy
/// picks from these.
pub const KNOWN_EXTENSIONS: [&str; 5] = [
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

/// Backdating of `valid_after`, so that a server whose clock is a little behind still
/// accepts a fresh certificate (ssh-keygen users do the same with `-V -1m:…`).
pub const CLOCK_SKEW_SECS: u64 = 60;

pub struct Issued {
    pub certificate: Vec<u8>,
    pub ca_public_key: Vec<u8>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub key_id: String,
    pub serial: u64,
}

/// Signs through a [`Keystore`], so the certificate builder never sees key material.
struct KeystoreKey<'a> {
    ks: &'a dyn Keystore,
    blob: Vec<u8>,
    public: KeyData,
    /// rsa-sha2-512 for an RSA CA (RFC 8332); nothing for the others.
    flags: u32,
}

impl signature::Signer<Signature> for KeystoreKey<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, signature::Error> {
        let sig = self
            .ks
            .sign(&self.blob, msg, self.flags)
            .map_err(|_| signature::Error::new())?;
        Signature::decode(&mut sig.as_slice()).map_err(|_| signature::Error::new())
    }
}

impl<'a> From<&KeystoreKey<'a>> for KeyData {
    fn from(k: &KeystoreKey<'a>) -> KeyData {
        k.public.clone()
    }
}

/// The CA's public key blob (the first key of the CA keystore).
pub fn ca_key(ca: &dyn Keystore) -> Option<Vec<u8>> {
    ca.keys().into_iter().next().map(|k| k.public_key)
}

/// The CA's public key as an OpenSSH line (`ssh-ed25519 AAAA… comment`), for
/// TrustedUserCAKeys.
pub fn ca_line(ca: &dyn Keystore) -> Option<String> {
    let k = ca.keys().into_iter().next()?;
    let data = KeyData::decode(&mut k.public_key.as_slice()).ok()?;
    ssh_key::PublicKey::new(data, k.comment).to_openssh().ok()
}

/// Principals the policy grants when a request names none: its list, or the signer's
/// own user name when empty.
pub fn principals(policy: &CaPolicy) -> Vec<String> {
    if policy.principals.is_empty() {
        vec![std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(current_user)]
    } else {
        policy.principals.clone()
    }
}

fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; read it at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "root".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Issue a user certificate for `req`, for `principals`, as the policy allows. Called
/// only after approval.
pub fn issue(
    ca: &dyn Keystore,
    home: &SignerHome,
    policy: &CaPolicy,
    device: &PairedDevice,
    req: &CertificateRequest,
    principals: &[String],
) -> Result<Issued, ErrorCode> {
    let ca_blob = ca_key(ca).ok_or(ErrorCode::PolicyDenied)?;
    let ca_public = KeyData::decode(&mut ca_blob.as_slice()).map_err(|_| ErrorCode::Internal)?;
    let subject = KeyData::decode(&mut req.public_key.as_slice())
        .map_err(|_| ErrorCode::UnsupportedAlgorithm)?;
    let now = now_unix();
    let validity = req.validity_secs.min(policy.max_validity_secs).max(1);
    let (valid_after, valid_before) = (now.saturating_sub(CLOCK_SKEW_SECS), now + validity);
    let serial = next_serial(&home.ca_serial()).map_err(|e| {
        tracing::error!("{e}");
        ErrorCode::Internal
    })?;
    let key_id = format!("vmux:{}:{}:{}", device.name, device.id, req.request_id);
    let nonce = vmux_proto::random_bytes::<32>();
    let mut b = Builder::new(nonce.to_vec(), subject, valid_after, valid_before)
        .map_err(|_| ErrorCode::Internal)?;
    let built = (|| {
        b.serial(serial)?
            .cert_type(CertType::User)?
            .key_id(key_id.clone())?;
        for p in principals {
            b.valid_principal(p.clone())?;
        }
        if let Some(src) = &policy.source_address {
            b.critical_option("source-address", src.clone())?;
        }
        for e in &policy.extensions {
            b.extension(e.clone(), "")?;
        }
        b.comment("vmux-session-cert")?;
        Ok::<_, ssh_key::Error>(())
    })();
    built.map_err(|_| ErrorCode::Internal)?;
    let flags = if matches!(ca_public, KeyData::Rsa(_)) {
        4
    } else {
        0
    };
    let signer = KeystoreKey {
        ks: ca,
        blob: ca_blob.clone(),
        public: ca_public,
        flags,
    };
    let cert = b.sign(&signer).map_err(|_| ErrorCode::Internal)?;
    Ok(Issued {
        certificate: cert.to_bytes().map_err(|_| ErrorCode::Internal)?,
        ca_public_key: ca_blob,
        valid_after,
        valid_before,
        key_id,
        serial,
    })
}

/// Serials are unique per CA: a counter kept beside the CA key directory (never in it:
/// a key directory holds keys only), written atomically (temp file, fsync, rename)
/// before the certificate leaves the signer. Only the counter is read: what a serial
/// costs does not grow with the decision log. A lost counter starts again from the
/// clock in microseconds, above every serial a counter can have reached (that would
/// take more than one certificate per microsecond since the counter began), so a serial
/// is never issued twice. An unreadable counter fails closed.
pub fn next_serial(counter: &std::path::Path) -> Result<u64, vmux_proto::ProtoError> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap();
    let next = match std::fs::read_to_string(counter) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| {
                vmux_proto::ProtoError::file(
                    counter,
                    "not a serial number; fix or remove it (the next serial then starts from the clock)",
                )
            })?
            .checked_add(1)
            .ok_or_else(|| vmux_proto::ProtoError::file(counter, "serials used up"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serial_floor(),
        Err(e) => return Err(vmux_proto::ProtoError::file(counter, e)),
    };
    vmux_proto::store::write_atomic(counter, format!("{next}\n").as_bytes(), 0o600)?;
    Ok(next)
}

/// Where a CA without a counter starts: microseconds since 1970.
fn serial_floor() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
        .max(1)
}

/// What approving a certificate for `principals` grants, in words a person can weigh.
pub fn grants(policy: &CaPolicy, principals: &[String], validity_secs: u64) -> String {
    let who = principals.join(", ");
    let mut s = format!(
        "for {}: logins as {who} to every server that trusts this CA, without asking you again",
        vmux_proto::time::duration(validity_secs)
    );
    let ext: Vec<&str> = policy.extensions.iter().map(String::as_str).collect();
    let mut extras = vec![];
    if ext.contains(&"permit-pty") {
        extras.push("a terminal");
    }
    if ext.contains(&"permit-port-forwarding") {
        extras.push("port forwarding");
    }
    if ext.contains(&"permit-agent-forwarding") {
        extras.push("agent forwarding");
    }
    if ext.contains(&"permit-X11-forwarding") {
        extras.push("X11 forwarding");
    }
    if ext.contains(&"permit-user-rc") {
        extras.push("running ~/.ssh/rc");
    }
    if !extras.is_empty() {
        s += &format!(" (with {})", extras.join(", "));
    }
    if let Some(src) = &policy.source_address {
        s += &format!("; only from {src}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vmux-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_serial_comes_from_the_counter_alone() {
        let d = tmp("serial");
        let home = SignerHome { dir: d.clone() };
        // A decision log that records a far higher serial, and a counter at 41: the
        // next serial is 42. The log is not consulted (it is not even a file here, so
        // opening it would fail), so its size costs nothing.
        std::fs::create_dir(home.log()).unwrap();
        std::fs::write(
            home.log().join("decisions.log"),
            "{\"serial\":999999999999}\n",
        )
        .unwrap();
        std::fs::write(home.ca_serial(), "41\n").unwrap();
        assert_eq!(next_serial(&home.ca_serial()).unwrap(), 42);
        assert_eq!(next_serial(&home.ca_serial()).unwrap(), 43);
        assert_eq!(std::fs::read_to_string(home.ca_serial()).unwrap(), "43\n");
        // A lost counter starts again above anything a counter reached.
        std::fs::remove_file(home.ca_serial()).unwrap();
        let before = serial_floor();
        let again = next_serial(&home.ca_serial()).unwrap();
        assert!(again >= before && again > 43, "{again}");
        assert_eq!(next_serial(&home.ca_serial()).unwrap(), again + 1);
        // A counter that is not a number fails closed.
        std::fs::write(home.ca_serial(), "garbage").unwrap();
        assert!(next_serial(&home.ca_serial()).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
