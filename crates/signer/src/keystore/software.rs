//! Keys as OpenSSH private key files (encrypted with a passphrase when one is set),
//! one per file, mode 0600, under the signer's `keys/` directory: Ed25519, ECDSA P-256
//! and P-384. ssh-key reads and writes the files; `ring` signs, from a key pair made
//! once at open and wiped when the keystore is dropped (`vmux_proto::keys`).

use super::Keystore;
use crate::SignerError;
use ssh_key::encoding::Encode;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey};
use std::path::{Path, PathBuf};
use vmux_proto::envelope::KeyRecord;
use vmux_proto::keys::PreparedKey;
use vmux_proto::ErrorCode;
use zeroize::Zeroizing;

pub struct SoftwareKeystore {
    keys: Vec<Loaded>,
}

struct Loaded {
    blob: Vec<u8>,
    record: KeyRecord,
    /// The OpenSSH `authorized_keys` line.
    line: String,
    key: PreparedKey,
}

fn rng() -> ssh_key::rand_core::UnwrapErr<ssh_key::getrandom::SysRng> {
    ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng)
}

pub fn parse_algorithm(name: &str) -> Result<Algorithm, SignerError> {
    match name {
        "ed25519" | "ssh-ed25519" => Ok(Algorithm::Ed25519),
        "ecdsa" | "p256" | "ecdsa-sha2-nistp256" => Ok(Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        }),
        "ecdsa-p384" | "p384" | "ecdsa-sha2-nistp384" => Ok(Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        }),
        other => Err(SignerError::UnsupportedKeyType(other.to_string())),
    }
}

/// Generate a key into `dir`; returns its public key.
pub fn generate(
    dir: &Path,
    algorithm: Algorithm,
    comment: &str,
    passphrase: Option<&str>,
) -> Result<PublicKey, SignerError> {
    let mut key =
        PrivateKey::random(&mut rng(), algorithm.clone()).map_err(|e| SignerError::Key {
            path: dir.to_path_buf(),
            reason: format!("key generation failed: {e}"),
        })?;
    key.set_comment(comment);
    store(dir, key, passphrase)
}

/// Write a (decrypted) private key into `dir` as `TYPE-FINGERPRINT` + `.pub`, encrypted
/// with `passphrase` when one is given; returns its public key.
pub fn store(
    dir: &Path,
    key: PrivateKey,
    passphrase: Option<&str>,
) -> Result<PublicKey, SignerError> {
    let algorithm = key.algorithm();
    parse_algorithm(algorithm.as_str())?;
    let public = key.public_key().clone();
    let stored = match passphrase.filter(|p| !p.is_empty()) {
        Some(p) => key.encrypt(&mut rng(), p).map_err(|e| SignerError::Key {
            path: dir.to_path_buf(),
            reason: format!("encryption failed: {e}"),
        })?,
        None => key,
    };
    let fp = public.fingerprint(HashAlg::Sha256).to_string();
    let short: String = fp
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    let path = dir.join(format!("{}-{short}", algo_file_prefix(&algorithm)));
    let pem = stored
        .to_openssh(LineEnding::LF)
        .map_err(|e| SignerError::Key {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    vmux_proto::store::write_atomic(&path, pem.as_bytes(), 0o600)?;
    let line = public.to_openssh().map_err(|e| SignerError::Key {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    vmux_proto::store::write_atomic(
        &path.with_extension("pub"),
        format!("{line}\n").as_bytes(),
        0o644,
    )?;
    Ok(public)
}

fn algo_file_prefix(a: &Algorithm) -> &'static str {
    match a {
        Algorithm::Ed25519 => "ed25519",
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        } => "ecdsa-p384",
        _ => "ecdsa",
    }
}

/// Private key files in `dir` (everything but `*.pub` and hidden temp files), sorted.
fn key_files(dir: &Path) -> Result<Vec<PathBuf>, SignerError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(vmux_proto::ProtoError::file(dir, e).into()),
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && !name.ends_with(".pub")
                && !name.ends_with(".pkcs11")
                && !name.ends_with(".tpm")
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A signing key as its `.pub` file shows it: no passphrase needed.
pub struct PublicInfo {
    pub fingerprint: String,
    pub algorithm: String,
    pub comment: String,
    pub store: String,
    /// The private key file that goes with it.
    pub private: PathBuf,
    pub private_present: bool,
    /// A security-key key: its application (`ssh:`).
    pub security_key: Option<String>,
}

/// Every `.pub` in `dir`, sorted, with whether its private key is there.
pub fn public_keys(dir: &Path) -> Result<Vec<PublicInfo>, SignerError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(vmux_proto::ProtoError::file(dir, e).into()),
    };
    let mut pubs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    pubs.sort();
    let mut out = vec![];
    for p in pubs {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(k) = PublicKey::from_openssh(text.trim()) else {
            tracing::warn!("{}: not an OpenSSH public key, skipped", p.display());
            continue;
        };
        // The private half: an OpenSSH file, a PKCS#11 reference or a TPM blob.
        let (private, store) = [
            (p.with_extension("pkcs11"), "pkcs11"),
            (p.with_extension("tpm"), "tpm"),
        ]
        .into_iter()
        .find(|(f, _)| f.is_file())
        .unwrap_or((p.with_extension(""), "software"));
        let store = match store {
            "pkcs11" => std::fs::read_to_string(&private)
                .ok()
                .and_then(|t| super::pkcs11::parse_ref(&t).ok())
                .map(|r| format!("pkcs11: token {}, {}", r.token, r.module.display()))
                .unwrap_or_else(|| "pkcs11: unreadable reference".into()),
            other => other.to_string(),
        };
        let security_key = k
            .key_data()
            .encode_vec()
            .ok()
            .and_then(|b| super::sk::SkPublic::parse(&b))
            .map(|sk| sk.application);
        out.push(PublicInfo {
            security_key,
            fingerprint: k.fingerprint(HashAlg::Sha256).to_string(),
            algorithm: k.algorithm().as_str().to_string(),
            comment: k.comment().to_string(),
            store,
            private_present: private.is_file(),
            private,
        });
    }
    Ok(out)
}

/// Warn about every file in `dir` that is not a key (it is skipped everywhere).
pub fn check_dir(dir: &Path) -> Result<(), SignerError> {
    for f in key_files(dir)? {
        if let Err(e) = read_key(&f) {
            tracing::warn!("skipped: {e}");
        }
    }
    Ok(())
}

/// Whether any key in `dir` needs a passphrase to open.
pub fn any_encrypted(dir: &Path) -> Result<bool, SignerError> {
    for f in key_files(dir)? {
        if read_key(&f).is_ok_and(|k| k.is_encrypted()) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_key(path: &Path) -> Result<PrivateKey, SignerError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| SignerError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?);
    PrivateKey::from_openssh(text.as_bytes()).map_err(|e| SignerError::Key {
        path: path.to_path_buf(),
        reason: if super::tss2::looks_like(&text) {
            "a TPM key (TSS2 PRIVATE KEY) under a name the TPM store does not read: \
             bring it in with `vmux signer keys import FILE`"
                .into()
        } else if super::pkcs11::parse_ref(&text).is_ok() {
            "a PKCS#11 key reference without its .pkcs11 name".into()
        } else {
            format!("not an OpenSSH private key ({e})")
        },
    })
}

/// Open one key file: decrypt it, make it ready to sign. `None` for a file that is not
/// a key (named in the log and skipped). Not inlined, so that the caller can scrub the
/// stack this used.
#[inline(never)]
fn load(path: &Path, passphrase: Option<&str>) -> Result<Option<Loaded>, SignerError> {
    let mut key = match read_key(path) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("skipped: {e}");
            return Ok(None);
        }
    };
    if key.is_encrypted() {
        let p = passphrase.ok_or_else(|| SignerError::NeedsPassphrase(path.to_path_buf()))?;
        key = key
            .decrypt(p)
            .map_err(|_| SignerError::WrongPassphrase(path.to_path_buf()))?;
    }
    let public = key.public_key();
    let blob = public
        .key_data()
        .encode_vec()
        .map_err(|e| SignerError::Key {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let comment = key.comment().to_string();
    let record = KeyRecord {
        algorithm: public.algorithm().as_str().to_string(),
        public_key: blob.clone(),
        display_name: if comment.is_empty() {
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into()
        } else {
            comment.clone()
        },
        comment,
        provider: "software".into(),
        enabled: true,
    };
    let line = public.to_openssh().map_err(|e| SignerError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let prepared = PreparedKey::new(&key).map_err(|e| SignerError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Some(Loaded {
        blob,
        record,
        line,
        key: prepared,
    }))
}

impl SoftwareKeystore {
    /// Open every key in `dir`, decrypting with `passphrase` where a key is encrypted.
    pub fn open(dir: &Path, passphrase: Option<&str>) -> Result<Self, SignerError> {
        let mut keys = vec![];
        for p in public_keys(dir)?.iter().filter(|p| !p.private_present) {
            tracing::warn!(
                "{}: public key {} has no private key beside it; it cannot sign and is not offered",
                p.private.display(),
                p.fingerprint
            );
        }
        for path in key_files(dir)? {
            // A key directory holds keys only; anything else is named and skipped, so a
            // stray file never keeps the signer from starting.
            let loaded = load(&path, passphrase);
            // The decrypted key passed through the stack frames below this one.
            vmux_proto::wipe::scrub_stack();
            if let Some(k) = loaded? {
                keys.push(k);
            }
        }
        Ok(SoftwareKeystore { keys })
    }

    /// Public keys as `authorized_keys` lines.
    pub fn public_lines(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.line.clone()).collect()
    }
}

impl Keystore for SoftwareKeystore {
    fn keys(&self) -> Vec<KeyRecord> {
        self.keys.iter().map(|k| k.record.clone()).collect()
    }

    fn sign(&self, key_blob: &[u8], data: &[u8], _flags: u32) -> Result<Vec<u8>, ErrorCode> {
        // The RSA hash flags mean nothing for Ed25519 and ECDSA keys; OpenSSH ignores them too.
        let k = self
            .keys
            .iter()
            .find(|k| k.blob == key_blob)
            .ok_or(ErrorCode::KeyNotFound)?;
        if !k.record.enabled {
            return Err(ErrorCode::KeyDisabled);
        }
        k.key.sign(data).map_err(|_| ErrorCode::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier;
    use ssh_key::encoding::Decode;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmux-ks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generate_open_sign_verify() {
        let d = tmp("plain");
        for alg in ["ed25519", "ecdsa", "ecdsa-p384"] {
            generate(&d, parse_algorithm(alg).unwrap(), "c", None).unwrap();
        }
        let ks = SoftwareKeystore::open(&d, None).unwrap();
        assert_eq!(ks.keys().len(), 3);
        for rec in ks.keys() {
            let sig = ks.sign(&rec.public_key, b"hello", 0).unwrap();
            let sig = ssh_key::Signature::decode(&mut sig.as_slice()).unwrap();
            let pk = ssh_key::public::KeyData::decode(&mut rec.public_key.as_slice()).unwrap();
            pk.verify(b"hello", &sig).unwrap();
        }
        assert_eq!(ks.sign(b"nope", b"x", 0), Err(ErrorCode::KeyNotFound));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn passphrase_required_and_checked() {
        let d = tmp("enc");
        generate(&d, Algorithm::Ed25519, "c", Some("s3cret")).unwrap();
        assert!(any_encrypted(&d).unwrap());
        assert!(matches!(
            SoftwareKeystore::open(&d, None),
            Err(SignerError::NeedsPassphrase(_))
        ));
        assert!(matches!(
            SoftwareKeystore::open(&d, Some("wrong")),
            Err(SignerError::WrongPassphrase(_))
        ));
        assert_eq!(
            SoftwareKeystore::open(&d, Some("s3cret"))
                .unwrap()
                .keys()
                .len(),
            1
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
