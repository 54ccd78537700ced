//! Security-key keys (OpenSSH PROTOCOL.u2f): `sk-ecdsa-sha2-nistp256@openssh.com` and
//! `sk-ssh-ed25519@openssh.com`. A signer that signs only after a person approved is a
//! security key in every sense a server checks, so it can say so in the signature:
//!
//! - the public key is the curve key plus an application string (`ssh:`);
//! - the key signs `SHA-256(application) ‖ flags ‖ counter ‖ SHA-256(message)`, and the
//!   signature carries the flags and the counter after the curve signature;
//! - flags: user-present (0x01) always, since nothing is signed unless a person
//!   approved; user-verified (0x04) only when verification ran for that decision (PAM
//!   after Approve: see `crate::decide`), so sshd's `verify-required` holds the signer
//!   to it;
//! - the counter strictly increases, across restarts: it is kept in
//!   `signer/sk-counters.json` (beside the key directory, which holds keys only),
//!   written and fsynced before the curve key signs, so no signature ever leaves with a
//!   counter that was not on disk first.
//!
//! The curve key lives in any store that holds the curve (software: P-256 and Ed25519;
//! TPM and PKCS#11: P-256) as an ordinary key; what makes it a security-key key is its
//! `.pub`, which holds the security-key public key. [`SkKeystore`] stands in front of
//! the stores: it lists such keys under their security-key blobs and signs only in the
//! security-key format. The curve key is never offered and never signs anything else:
//! a plain signature over chosen bytes could be passed off as a security-key signature
//! with any flags.

use super::blob::{ssh_string, take_string};
use super::{Keystore, SignOptions};
use crate::SignerError;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use vmux_proto::envelope::KeyRecord;
use vmux_proto::identity::key_fingerprint;
use vmux_proto::ErrorCode;

pub const SK_ECDSA: &str = "sk-ecdsa-sha2-nistp256@openssh.com";
pub const SK_ED25519: &str = "sk-ssh-ed25519@openssh.com";
/// The flag bits of a security-key signature (PROTOCOL.u2f, `SSH_SK_*_REQD`).
pub const USER_PRESENT: u8 = 0x01;
pub const USER_VERIFIED: u8 = 0x04;
/// The counters' file, beside the key directory.
pub const COUNTERS: &str = "sk-counters.json";
/// OpenSSH's default application.
pub const DEFAULT_APPLICATION: &str = "ssh:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    Ed25519,
}

impl Curve {
    /// `--type` of `keys add`: `sk-ecdsa`, `sk-ed25519` (and OpenSSH's names).
    pub fn parse(key_type: &str) -> Option<Curve> {
        match key_type {
            "sk-ecdsa" | "ecdsa-sk" | SK_ECDSA => Some(Curve::P256),
            "sk-ed25519" | "ed25519-sk" | SK_ED25519 => Some(Curve::Ed25519),
            _ => None,
        }
    }

    /// The `--type` that makes the curve key in a store.
    pub fn inner_type(self) -> &'static str {
        match self {
            Curve::P256 => "ecdsa",
            Curve::Ed25519 => "ed25519",
        }
    }

    pub fn algorithm(self) -> &'static str {
        match self {
            Curve::P256 => SK_ECDSA,
            Curve::Ed25519 => SK_ED25519,
        }
    }

    fn inner_algorithm(self) -> &'static str {
        match self {
            Curve::P256 => "ecdsa-sha2-nistp256",
            Curve::Ed25519 => "ssh-ed25519",
        }
    }
}

/// An application string OpenSSH would make: `ssh:` and printable ASCII after it.
pub fn check_application(app: &str) -> Result<(), SignerError> {
    let ok =
        app.starts_with("ssh:") && app.len() <= 64 && app.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(SignerError::SecurityKey(format!(
            "application {app:?}: it must begin with \"ssh:\" (OpenSSH's rule) and be at most 64 printable characters"
        )))
    }
}

/// A security-key public key: the curve key and the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkPublic {
    pub curve: Curve,
    /// The SEC1 uncompressed point (P-256) or the 32-byte key (Ed25519).
    pub key: Vec<u8>,
    pub application: String,
}

impl SkPublic {
    /// Parse a security-key public key blob; `None` for anything else. Untrusted bytes
    /// (`.pub` files, key lists): every read is bounded, nothing may follow the blob.
    pub fn parse(blob: &[u8]) -> Option<SkPublic> {
        let mut r = blob;
        let alg = take_string(&mut r)?;
        let curve = match alg {
            a if a == SK_ECDSA.as_bytes() => {
                if take_string(&mut r)? != b"nistp256" {
                    return None;
                }
                Curve::P256
            }
            a if a == SK_ED25519.as_bytes() => Curve::Ed25519,
            _ => return None,
        };
        let key = take_string(&mut r)?.to_vec();
        let application = std::str::from_utf8(take_string(&mut r)?).ok()?.to_string();
        (key_fits(curve, &key) && r.is_empty()).then_some(SkPublic {
            curve,
            key,
            application,
        })
    }

    /// The security-key public key with `application` for the curve key `inner` (an
    /// `ecdsa-sha2-nistp256` or `ssh-ed25519` blob).
    pub fn of_inner(inner: &[u8], application: &str) -> Option<SkPublic> {
        let mut r = inner;
        let curve = match take_string(&mut r)? {
            b"ecdsa-sha2-nistp256" => {
                if take_string(&mut r)? != b"nistp256" {
                    return None;
                }
                Curve::P256
            }
            b"ssh-ed25519" => Curve::Ed25519,
            _ => return None,
        };
        let key = take_string(&mut r)?.to_vec();
        (key_fits(curve, &key) && r.is_empty()).then(|| SkPublic {
            curve,
            key,
            application: application.to_string(),
        })
    }

    /// The security-key public key blob.
    pub fn blob(&self) -> Vec<u8> {
        let mut b = vec![];
        ssh_string(&mut b, self.curve.algorithm().as_bytes());
        if self.curve == Curve::P256 {
            ssh_string(&mut b, b"nistp256");
        }
        ssh_string(&mut b, &self.key);
        ssh_string(&mut b, self.application.as_bytes());
        b
    }

    /// The curve key's own blob (what its store lists).
    pub fn inner_blob(&self) -> Vec<u8> {
        let mut b = vec![];
        ssh_string(&mut b, self.curve.inner_algorithm().as_bytes());
        if self.curve == Curve::P256 {
            ssh_string(&mut b, b"nistp256");
        }
        ssh_string(&mut b, &self.key);
        b
    }
}

/// An uncompressed P-256 point, or an Ed25519 key.
fn key_fits(curve: Curve, key: &[u8]) -> bool {
    match curve {
        Curve::P256 => key.len() == 65 && key[0] == 4,
        Curve::Ed25519 => key.len() == 32,
    }
}

/// What the curve key signs (PROTOCOL.u2f): `SHA-256(application) ‖ flags ‖ counter ‖
/// SHA-256(message)`.
pub fn signed_data(application: &str, flags: u8, counter: u32, message: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(32 + 1 + 4 + 32);
    d.extend_from_slice(&Sha256::digest(application.as_bytes()));
    d.push(flags);
    d.extend_from_slice(&counter.to_be_bytes());
    d.extend_from_slice(&Sha256::digest(message));
    d
}

/// The security-key signature blob from the curve key's signature blob (`string
/// ecdsa-sha2-nistp256, string (mpint r, mpint s)` or `string ssh-ed25519, string
/// sig`): `string sk-alg, string sig, byte flags, uint32 counter`. `None` when `inner`
/// is not a signature of that curve.
pub fn wrap_signature(curve: Curve, inner: &[u8], flags: u8, counter: u32) -> Option<Vec<u8>> {
    let mut r = inner;
    if take_string(&mut r)? != curve.inner_algorithm().as_bytes() {
        return None;
    }
    let sig = take_string(&mut r)?;
    let well_formed = match curve {
        Curve::Ed25519 => sig.len() == 64,
        Curve::P256 => {
            let mut s = sig;
            let (a, b) = (take_string(&mut s)?, take_string(&mut s)?);
            s.is_empty() && (1..=33).contains(&a.len()) && (1..=33).contains(&b.len())
        }
    };
    if !well_formed || !r.is_empty() {
        return None;
    }
    let mut out = vec![];
    ssh_string(&mut out, curve.algorithm().as_bytes());
    ssh_string(&mut out, sig);
    out.push(flags);
    out.extend_from_slice(&counter.to_be_bytes());
    Some(out)
}

/// `(flags, counter)` of a security-key signature blob (for tests and the log).
pub fn flags_and_counter(sig: &[u8]) -> Option<(u8, u32)> {
    let mut r = sig;
    let alg = take_string(&mut r)?;
    if alg != SK_ECDSA.as_bytes() && alg != SK_ED25519.as_bytes() {
        return None;
    }
    take_string(&mut r)?;
    match r {
        [flags, c @ ..] if c.len() == 4 => Some((*flags, u32::from_be_bytes(c.try_into().ok()?))),
        _ => None,
    }
}

/// The security-key public keys among the `.pub` files in `dir`.
pub fn keys_in(dir: &Path) -> Vec<(PathBuf, SkPublic)> {
    let mut out: Vec<(PathBuf, SkPublic)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            let sk = public_of_line(&text)?;
            Some((p, sk))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The security-key public key of an `authorized_keys`-style line, if it is one.
pub fn public_of_line(line: &str) -> Option<SkPublic> {
    use ssh_key::encoding::Encode;
    let k = ssh_key::PublicKey::from_openssh(line.trim()).ok()?;
    SkPublic::parse(&k.key_data().encode_vec().ok()?)
}

/// How a store's name reads for a security-key key: `software, security key (ssh:)`.
pub fn store_name(provider: &str, record_blob: &[u8]) -> String {
    match SkPublic::parse(record_blob) {
        Some(sk) => format!("{provider}, security key ({})", sk.application),
        None => provider.to_string(),
    }
}

/// Make the plain key `inner` (just made in `dir` by a store) a security-key key for
/// `application`: its `.pub` then holds the security-key public key. Returns that key.
pub fn adopt(
    dir: &Path,
    inner: &ssh_key::PublicKey,
    application: &str,
) -> Result<ssh_key::PublicKey, SignerError> {
    use ssh_key::encoding::Encode;
    check_application(application)?;
    let fail = |reason: String| SignerError::Key {
        path: dir.to_path_buf(),
        reason,
    };
    let inner_blob = inner
        .key_data()
        .encode_vec()
        .map_err(|e| fail(e.to_string()))?;
    let sk = SkPublic::of_inner(&inner_blob, application).ok_or_else(|| {
        SignerError::SecurityKey(format!(
            "a {} key cannot be a security-key key (P-256 or Ed25519 only)",
            inner.algorithm().as_str()
        ))
    })?;
    // The `.pub` the store wrote for it.
    let pub_file = std::fs::read_dir(dir)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .find(|p| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| ssh_key::PublicKey::from_openssh(t.trim()).ok())
                .is_some_and(|k| k.key_data() == inner.key_data())
        })
        .ok_or_else(|| fail("the new key's .pub is not there".into()))?;
    let mut public = ssh_key::PublicKey::from_bytes(&sk.blob()).map_err(|e| fail(e.to_string()))?;
    public.set_comment(inner.comment().clone());
    let line = public.to_openssh().map_err(|e| fail(e.to_string()))?;
    vmux_proto::store::write_atomic(&pub_file, format!("{line}\n").as_bytes(), 0o644)?;
    Ok(public)
}

/// One process writes the counters' file at a time (keystores are reopened while
/// signatures run).
static COUNTER_FILE: Mutex<()> = Mutex::new(());

/// The persisted signature counters, by the key's `SHA256:` fingerprint.
pub struct Counters {
    path: PathBuf,
}

impl Counters {
    pub fn at(path: PathBuf) -> Counters {
        Counters { path }
    }

    /// Where the counters of the keys in `dir` live: beside it.
    pub fn beside(dir: &Path) -> Counters {
        Counters::at(dir.parent().unwrap_or(Path::new(".")).join(COUNTERS))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The counter a key's signatures carry now (0 before the first).
    pub fn current(&self, fingerprint: &str) -> Result<u32, SignerError> {
        let all: BTreeMap<String, u32> =
            vmux_proto::store::read_json(&self.path)?.unwrap_or_default();
        Ok(all.get(fingerprint).copied().unwrap_or(0))
    }

    /// Take the next counter for `fingerprint`: it is on disk (written atomically and
    /// fsynced) when this returns. A file that cannot be read is never replaced: the
    /// key does not sign until it is fixed.
    pub fn next(&self, fingerprint: &str) -> Result<u32, SignerError> {
        let _one = COUNTER_FILE.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: BTreeMap<String, u32> =
            vmux_proto::store::read_json(&self.path)?.unwrap_or_default();
        let n = all
            .get(fingerprint)
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| {
                SignerError::SecurityKey(format!(
                    "{fingerprint}: its signature counter is used up; make a new key"
                ))
            })?;
        all.insert(fingerprint.to_string(), n);
        vmux_proto::store::write_json(&self.path, &all)?;
        Ok(n)
    }
}

/// The queue entries whose approval ran user verification (PAM), until their request
/// takes the answer: `crate::decide` notes an entry after verification succeeded and
/// before the decision reaches the request. Bounded: an entry whose request never came
/// back for it (cancelled, expired) falls out.
#[derive(Default)]
pub struct Verified(Mutex<VecDeque<String>>);

const VERIFIED_KEPT: usize = 256;

impl Verified {
    pub fn note(&self, id: &str) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= VERIFIED_KEPT {
            v.pop_front();
        }
        v.push_back(id.to_string());
    }

    /// Whether verification ran for the entry `id`; the answer is given once.
    pub fn take(&self, id: &str) -> bool {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match v.iter().position(|x| x == id) {
            Some(i) => {
                v.remove(i);
                true
            }
            None => false,
        }
    }
}

struct SkKey {
    public: SkPublic,
    blob: Vec<u8>,
    inner_blob: Vec<u8>,
    fingerprint: String,
}

/// The stores of a key directory, with its security-key keys shown and signing as such.
pub struct SkKeystore {
    inner: Box<dyn Keystore>,
    keys: Vec<SkKey>,
    counters: Counters,
}

impl SkKeystore {
    /// `inner` with the security-key keys whose `.pub` files are in `dir`.
    pub fn over(dir: &Path, inner: Box<dyn Keystore>, counters: Counters) -> SkKeystore {
        let keys = keys_in(dir)
            .into_iter()
            .map(|(_, public)| {
                let blob = public.blob();
                SkKey {
                    inner_blob: public.inner_blob(),
                    fingerprint: key_fingerprint(&blob),
                    blob,
                    public,
                }
            })
            .collect();
        SkKeystore {
            inner,
            keys,
            counters,
        }
    }

    fn by_blob(&self, blob: &[u8]) -> Option<&SkKey> {
        self.keys.iter().find(|k| k.blob == blob)
    }

    /// The curve key of a security-key key: never used by itself.
    fn is_inner(&self, blob: &[u8]) -> bool {
        self.keys.iter().any(|k| k.inner_blob == blob)
    }

    /// Where `blob` signs: the curve key's blob for a security-key key.
    fn route<'a>(&'a self, blob: &'a [u8]) -> Option<&'a [u8]> {
        match self.by_blob(blob) {
            Some(k) => Some(&k.inner_blob),
            None if self.is_inner(blob) => None,
            None => Some(blob),
        }
    }
}

impl Keystore for SkKeystore {
    fn keys(&self) -> Vec<KeyRecord> {
        self.inner
            .keys()
            .into_iter()
            .map(
                |mut r| match self.keys.iter().find(|k| k.inner_blob == r.public_key) {
                    Some(k) => {
                        r.algorithm = k.public.curve.algorithm().to_string();
                        r.public_key = k.blob.clone();
                        r
                    }
                    None => r,
                },
            )
            .collect()
    }

    fn sign(&self, key_blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, ErrorCode> {
        self.sign_with(
            key_blob,
            data,
            &SignOptions {
                flags,
                user_verified: false,
            },
        )
    }

    fn sign_with(
        &self,
        key_blob: &[u8],
        data: &[u8],
        how: &SignOptions,
    ) -> Result<Vec<u8>, ErrorCode> {
        let Some(k) = self.by_blob(key_blob) else {
            if self.is_inner(key_blob) {
                tracing::warn!("refused a plain signature by the curve key of a security-key key");
                return Err(ErrorCode::KeyNotFound);
            }
            return self.inner.sign_with(key_blob, data, how);
        };
        // Listed by the store that holds the curve key? (Its private half may be gone.)
        if !self
            .inner
            .keys()
            .iter()
            .any(|r| r.public_key == k.inner_blob)
        {
            return Err(ErrorCode::KeyNotFound);
        }
        let flags = USER_PRESENT | if how.user_verified { USER_VERIFIED } else { 0 };
        // On disk before the curve key signs: a signature never leaves with a counter
        // that a restart could hand out again.
        let counter = self.counters.next(&k.fingerprint).map_err(|e| {
            tracing::error!(
                "security-key counter of {}: {e}; nothing signed",
                k.fingerprint
            );
            ErrorCode::Internal
        })?;
        let message = signed_data(&k.public.application, flags, counter, data);
        let inner = self.inner.sign(&k.inner_blob, &message, 0)?;
        wrap_signature(k.public.curve, &inner, flags, counter).ok_or_else(|| {
            tracing::error!(
                "{}: the store's signature is not a {} signature",
                k.fingerprint,
                k.public.curve.inner_algorithm()
            );
            ErrorCode::Internal
        })
    }

    /// A security-key signature waits for its counter to reach the disk (an fsync):
    /// off the async runtime, like a device.
    fn blocking(&self, key_blob: &[u8]) -> bool {
        self.by_blob(key_blob).is_some()
            || self.route(key_blob).is_some_and(|b| self.inner.blocking(b))
    }

    fn location(&self, key_blob: &[u8]) -> Option<String> {
        self.inner.location(self.route(key_blob)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::software;
    use signature::Verifier;
    use ssh_key::encoding::Decode;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmux-sk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("keys")).unwrap();
        d
    }

    fn verify(blob: &[u8], data: &[u8], sig: &[u8]) {
        let key = ssh_key::public::KeyData::decode(&mut &blob[..]).unwrap();
        let sig = ssh_key::Signature::decode(&mut &sig[..]).unwrap();
        key.verify(data, &sig).unwrap();
    }

    #[test]
    fn software_security_keys_sign_in_the_security_key_format() {
        let d = tmp("soft");
        let keys = d.join("keys");
        let plain = software::generate(&keys, ssh_key::Algorithm::Ed25519, "plain", None).unwrap();
        for (alg, app) in [
            (ssh_key::Algorithm::Ed25519, "ssh:"),
            (
                ssh_key::Algorithm::Ecdsa {
                    curve: ssh_key::EcdsaCurve::NistP256,
                },
                "ssh:vmux",
            ),
        ] {
            let inner = software::generate(&keys, alg, "sk", None).unwrap();
            let public = adopt(&keys, &inner, app).unwrap();
            assert!(public.algorithm().as_str().starts_with("sk-"), "{public:?}");
            assert_eq!(public.comment().to_string(), "sk");
        }
        let open = || {
            SkKeystore::over(
                &keys,
                Box::new(software::SoftwareKeystore::open(&keys, None).unwrap()),
                Counters::beside(&keys),
            )
        };
        let ks = open();
        let records = ks.keys();
        assert_eq!(records.len(), 3);
        let sks: Vec<&KeyRecord> = records
            .iter()
            .filter(|r| r.algorithm.starts_with("sk-"))
            .collect();
        assert_eq!(sks.len(), 2, "{records:?}");
        let mut last = 0;
        for r in &sks {
            let sk = SkPublic::parse(&r.public_key).unwrap();
            assert_eq!(ks.location(&r.public_key), None);
            assert!(
                ks.blocking(&r.public_key),
                "the counter is fsynced off the runtime"
            );
            for uv in [false, true] {
                let sig = ks
                    .sign_with(
                        &r.public_key,
                        b"hello",
                        &SignOptions {
                            flags: 0,
                            user_verified: uv,
                        },
                    )
                    .unwrap();
                verify(&r.public_key, b"hello", &sig);
                let (flags, counter) = flags_and_counter(&sig).unwrap();
                assert_eq!(flags, if uv { 0x05 } else { 0x01 });
                assert!(counter >= 1);
                let fp = key_fingerprint(&r.public_key);
                assert_eq!(Counters::beside(&keys).current(&fp).unwrap(), counter);
                last = counter;
            }
            // The curve key alone signs nothing.
            assert_eq!(
                ks.sign(&sk.inner_blob(), b"x", 0),
                Err(ErrorCode::KeyNotFound)
            );
        }
        // Plain keys sign as before.
        let pb = ssh_key::encoding::Encode::encode_vec(plain.key_data()).unwrap();
        verify(&pb, b"m", &ks.sign(&pb, b"m", 0).unwrap());
        assert!(!ks.blocking(&pb));
        // Opened again (a restart): the counter goes on.
        let again = open();
        let sig = again.sign(&sks[1].public_key, b"m", 0).unwrap();
        assert!(flags_and_counter(&sig).unwrap().1 > last);
        assert!(d.join(COUNTERS).is_file());
        // A counters file that does not parse is never replaced: nothing signs.
        std::fs::write(d.join(COUNTERS), "garbage").unwrap();
        assert_eq!(
            again.sign(&sks[1].public_key, b"m", 0),
            Err(ErrorCode::Internal)
        );
        assert_eq!(
            std::fs::read_to_string(d.join(COUNTERS)).unwrap(),
            "garbage"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn blobs_parse_and_round_trip() {
        let p = SkPublic {
            curve: Curve::P256,
            key: [vec![4u8], vec![7u8; 64]].concat(),
            application: "ssh:".into(),
        };
        assert_eq!(SkPublic::parse(&p.blob()), Some(p.clone()));
        assert_eq!(SkPublic::of_inner(&p.inner_blob(), "ssh:"), Some(p.clone()));
        assert_eq!(SkPublic::parse(&p.inner_blob()), None);
        // A key of the wrong size is no key of that curve, either way.
        let mut wide = vec![];
        ssh_string(&mut wide, b"ssh-ed25519");
        ssh_string(&mut wide, &[0; 64]);
        assert_eq!(SkPublic::of_inner(&wide, "ssh:"), None);
        let mut longer = p.blob();
        longer.push(0);
        assert_eq!(SkPublic::parse(&longer), None);
        let e = SkPublic {
            curve: Curve::Ed25519,
            key: vec![1; 32],
            application: "ssh:x".into(),
        };
        assert_eq!(SkPublic::parse(&e.blob()), Some(e.clone()));
        assert!(ssh_key::PublicKey::from_bytes(&e.blob()).is_ok());
        assert!(check_application("ssh:").is_ok());
        for bad in ["", "web:", "ssh: x", &format!("ssh:{}", "a".repeat(61))] {
            assert!(check_application(bad).is_err(), "{bad}");
        }
        assert_eq!(wrap_signature(Curve::Ed25519, b"", 1, 1), None);
        let v = Verified::default();
        v.note("a");
        assert!(v.take("a") && !v.take("a") && !v.take("b"));
    }
}
