//! Keys on a PKCS#11 token (SoftHSM2, a YubiKey through ykcs11, a smart card through
//! OpenSC): generated on the token as sensitive, non-extractable objects, or existing
//! keys found by label or id. The key directory holds only a reference per key
//! (`NAME.pkcs11`: module, token label, object id, public key) and its `.pub`.
//!
//! Each signature finds the token by label again and opens a fresh session, so a token
//! that was removed fails that request alone (`internal`), and one that comes back
//! serves the next. A PIN the token refuses is not tried again until the signer
//! reloads its keys: tokens lock after a few wrong PINs.

use super::blob::{ecdsa_blob, rsa_blob, ssh_string};
use super::Keystore;
use crate::SignerError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vmux_proto::envelope::KeyRecord;
use vmux_proto::ErrorCode;
use zeroize::Zeroizing;

/// DER of the curve OIDs (CKA_EC_PARAMS): P-256 1.2.840.10045.3.1.7, P-384 1.3.132.0.34.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// What the key directory keeps for a token key: where to find it, never a secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pkcs11Ref {
    /// The PKCS#11 module (a shared library path).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// CKA_ID of the key pair, hex.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(with = "vmux_proto::envelope::b64")]
    pub public_key: Vec<u8>,
    #[serde(default)]
    pub comment: String,
}

/// Parse a reference file's text (untrusted: any bytes a file may hold).
pub fn parse_ref(text: &str) -> Result<Pkcs11Ref, String> {
    let r: Pkcs11Ref = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if r.token.is_empty() || r.token.len() > 32 {
        return Err("the token label must be 1 to 32 characters".into());
    }
    hex(&r.id).ok_or("the key id is not hex")?;
    let kind = Kind::of_blob(&r.public_key).ok_or("the public key is not ECDSA or RSA")?;
    let _ = kind;
    Ok(r)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    P256,
    P384,
    Rsa,
}

impl Kind {
    pub fn parse(t: &str) -> Result<Kind, SignerError> {
        match t {
            "ecdsa" | "p256" | "ecdsa-p256" => Ok(Kind::P256),
            "p384" | "ecdsa-p384" => Ok(Kind::P384),
            "rsa" | "rsa2048" => Ok(Kind::Rsa),
            other => Err(SignerError::UnsupportedKeyType(format!(
                "{other} (a token key is ecdsa, ecdsa-p384 or rsa)"
            ))),
        }
    }

    fn of_blob(blob: &[u8]) -> Option<Kind> {
        let mut r = blob;
        let alg = super::blob::take_string(&mut r)?;
        match alg {
            b"ecdsa-sha2-nistp256" => Some(Kind::P256),
            b"ecdsa-sha2-nistp384" => Some(Kind::P384),
            b"ssh-rsa" => Some(Kind::Rsa),
            _ => None,
        }
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Gives the PIN for a token label (from config, the environment or the terminal).
pub type PinSource = Arc<dyn Fn(&str) -> Option<Zeroizing<String>> + Send + Sync>;

fn ck(what: &str) -> impl Fn(CkError) -> SignerError + '_ {
    move |e| SignerError::Token(format!("{what}: {e}"))
}

static LOADED: Mutex<Option<HashMap<PathBuf, Arc<Pkcs11>>>> = Mutex::new(None);

/// Forget a loaded module: when the last user lets go it is finalised, and the next
/// use initialises it again, which makes modules that list tokens only at
/// C_Initialize (SoftHSM2) see a token that was plugged back in.
fn unload(path: &Path) {
    if let Some(map) = LOADED.lock().unwrap().as_mut() {
        map.remove(path);
    }
}

/// Load `module` and initialise it (once per process and module).
fn module(path: &Path) -> Result<Arc<Pkcs11>, SignerError> {
    let mut loaded = LOADED.lock().unwrap();
    let map = loaded.get_or_insert_with(HashMap::new);
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let p = Pkcs11::new(path).map_err(|e| {
        SignerError::Token(format!(
            "cannot load PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(SignerError::Token(format!(
                "PKCS#11 module {}: {e}",
                path.display()
            )))
        }
    }
    let p = Arc::new(p);
    map.insert(path.to_path_buf(), p.clone());
    Ok(p)
}

/// Where the key a reference file names lives, for `keys list`: token, slot (when the
/// token is present now) and module. Asks the module, never logs in.
pub fn describe(ref_file: &Path) -> String {
    let r = match std::fs::read_to_string(ref_file)
        .map_err(|e| e.to_string())
        .and_then(|t| parse_ref(&t))
    {
        Ok(r) => r,
        Err(e) => return format!("pkcs11: unreadable reference ({e})"),
    };
    let slot = module(&r.module)
        .and_then(|m| slot_of(&m, &r.token))
        .map(|s| format!("slot {}", s.id()))
        .unwrap_or_else(|_| "not present".into());
    format!("pkcs11: token {}, {slot}, {}", r.token, r.module.display())
}

fn slot_of(m: &Pkcs11, token: &str) -> Result<cryptoki::slot::Slot, SignerError> {
    m.get_slots_with_token()
        .map_err(ck("listing slots"))?
        .into_iter()
        .find(|s| {
            m.get_token_info(*s)
                .is_ok_and(|t| t.label().trim_end() == token)
        })
        .ok_or_else(|| SignerError::Token(format!("no token labelled {token:?} is present")))
}

/// A logged-in session on the token labelled `token`.
fn session(m: &Pkcs11, token: &str, pin: Option<&str>, rw: bool) -> Result<Session, SignerError> {
    let slot = slot_of(m, token)?;
    let s = if rw {
        m.open_rw_session(slot)
    } else {
        m.open_ro_session(slot)
    }
    .map_err(ck("opening a session"))?;
    if let Some(pin) = pin {
        match s.login(UserType::User, Some(&AuthPin::from(pin.to_string()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(e @ (RvError::PinIncorrect | RvError::PinLocked), _)) => {
                return Err(SignerError::Token(format!(
                    "token {token:?} refused the PIN: {e}"
                )))
            }
            Err(e) => return Err(ck("logging in")(e)),
        }
    }
    Ok(s)
}

fn find(s: &Session, class: ObjectClass, id: &[u8]) -> Result<ObjectHandle, SignerError> {
    s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        .map_err(ck("finding the key"))?
        .into_iter()
        .next()
        .ok_or_else(|| SignerError::Token(format!("no key with id {} on the token", to_hex(id))))
}

/// The SSH public key blob of the key pair whose public object is `h`.
fn public_blob(s: &Session, h: ObjectHandle) -> Result<(Vec<u8>, Kind), SignerError> {
    let attrs = s
        .get_attributes(
            h,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::EcPoint,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )
        .map_err(ck("reading the public key"))?;
    let (mut ktype, mut params, mut point, mut n, mut e) = (None, None, None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => ktype = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            Attribute::Modulus(m) => n = Some(m),
            Attribute::PublicExponent(x) => e = Some(x),
            _ => {}
        }
    }
    let unsupported =
        || SignerError::UnsupportedKeyType("this token key (not P-256, P-384 or RSA)".into());
    match ktype {
        Some(KeyType::EC) => {
            let params = params.ok_or_else(unsupported)?;
            let point = unwrap_octet_string(&point.ok_or_else(unsupported)?);
            let (kind, alg, curve) = match params.as_slice() {
                p if p == P256 => (Kind::P256, "ecdsa-sha2-nistp256", "nistp256"),
                p if p == P384 => (Kind::P384, "ecdsa-sha2-nistp384", "nistp384"),
                _ => return Err(unsupported()),
            };
            let mut b = vec![];
            ssh_string(&mut b, alg.as_bytes());
            ssh_string(&mut b, curve.as_bytes());
            ssh_string(&mut b, &point);
            Ok((b, kind))
        }
        Some(KeyType::RSA) => {
            let (n, e) = (n.ok_or_else(unsupported)?, e.ok_or_else(unsupported)?);
            let mut b = vec![];
            ssh_string(&mut b, b"ssh-rsa");
            super::blob::mpint(&mut b, &e);
            super::blob::mpint(&mut b, &n);
            Ok((b, Kind::Rsa))
        }
        _ => Err(unsupported()),
    }
}

/// CKA_EC_POINT is a DER OCTET STRING around the point on most tokens, raw on a few.
fn unwrap_octet_string(v: &[u8]) -> Vec<u8> {
    match v {
        [0x04, len, rest @ ..] if *len as usize == rest.len() && rest.first() == Some(&0x04) => {
            rest.to_vec()
        }
        [0x04, 0x81, len, rest @ ..] if *len as usize == rest.len() => rest.to_vec(),
        _ => v.to_vec(),
    }
}

/// Write `NAME.pkcs11` and `NAME.pub` into `dir` for a key pair on the token.
fn store_ref(dir: &Path, r: &Pkcs11Ref) -> Result<ssh_key::PublicKey, SignerError> {
    let mut public = ssh_key::PublicKey::from_bytes(&r.public_key)
        .map_err(|e| SignerError::Token(format!("the token's public key does not parse: {e}")))?;
    public.set_comment(r.comment.as_str());
    let fp = public.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let short: String = fp
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    let path = dir.join(format!("pkcs11-{short}.pkcs11"));
    let json = serde_json::to_vec_pretty(r).map_err(|e| SignerError::Token(e.to_string()))?;
    vmux_proto::store::write_atomic(&path, &json, 0o600)?;
    let line = public
        .to_openssh()
        .map_err(|e| SignerError::Token(e.to_string()))?;
    vmux_proto::store::write_atomic(
        &path.with_extension("pub"),
        format!("{line}\n").as_bytes(),
        0o644,
    )?;
    Ok(public)
}

/// Generate a key pair on the token: private half sensitive and not extractable.
pub fn generate(
    dir: &Path,
    module_path: &Path,
    token: &str,
    pin: &str,
    kind: Kind,
    comment: &str,
) -> Result<ssh_key::PublicKey, SignerError> {
    let m = module(module_path)?;
    let s = session(&m, token, Some(pin), true)?;
    let id = vmux_proto::random_bytes::<16>().to_vec();
    let label = format!("vmux {comment}").into_bytes();
    let common = vec![
        Attribute::Token(true),
        Attribute::Id(id.clone()),
        Attribute::Label(label.clone()),
    ];
    let (mech, mut public_t) = match kind {
        Kind::P256 | Kind::P384 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(
                if kind == Kind::P256 { P256 } else { P384 }.to_vec(),
            )],
        ),
        Kind::Rsa => (
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
        ),
    };
    public_t.extend(common.clone());
    public_t.push(Attribute::Verify(true));
    let mut private_t = common;
    private_t.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
    ]);
    let (public_h, _) = s
        .generate_key_pair(&mech, &public_t, &private_t)
        .map_err(ck("generating the key on the token"))?;
    let (blob, _) = public_blob(&s, public_h)?;
    store_ref(
        dir,
        &Pkcs11Ref {
            module: module_path.to_path_buf(),
            token: token.into(),
            id: to_hex(&id),
            label: Some(String::from_utf8_lossy(&label).into()),
            public_key: blob,
            comment: comment.into(),
        },
    )
}

/// Reference a key pair already on the token, by its label or its id (hex).
pub fn use_existing(
    dir: &Path,
    module_path: &Path,
    token: &str,
    pin: &str,
    label: Option<&str>,
    id: Option<&str>,
    comment: &str,
) -> Result<ssh_key::PublicKey, SignerError> {
    let m = module(module_path)?;
    let s = session(&m, token, Some(pin), false)?;
    let mut t = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    match (label, id) {
        (_, Some(id)) => {
            t.push(Attribute::Id(hex(id).ok_or_else(|| {
                SignerError::Token(format!("--id {id}: not hex"))
            })?))
        }
        (Some(l), None) => t.push(Attribute::Label(l.as_bytes().to_vec())),
        (None, None) => return Err(SignerError::Token("give --label or --id".into())),
    }
    let found = s.find_objects(&t).map_err(ck("finding the key"))?;
    let h = match found.as_slice() {
        [h] => *h,
        [] => {
            return Err(SignerError::Token(
                "no such public key object on the token".into(),
            ))
        }
        _ => {
            return Err(SignerError::Token(
                "several keys match: name one with --id".into(),
            ))
        }
    };
    let id = match s
        .get_attributes(h, &[AttributeType::Id])
        .map_err(ck("reading CKA_ID"))?[..]
    {
        [Attribute::Id(ref v)] => v.clone(),
        _ => return Err(SignerError::Token("the key has no CKA_ID".into())),
    };
    find(&s, ObjectClass::PRIVATE_KEY, &id)?;
    let (blob, _) = public_blob(&s, h)?;
    store_ref(
        dir,
        &Pkcs11Ref {
            module: module_path.to_path_buf(),
            token: token.into(),
            id: to_hex(&id),
            label: label.map(String::from),
            public_key: blob,
            comment: if comment.is_empty() {
                label.unwrap_or("token key").into()
            } else {
                comment.into()
            },
        },
    )
}

struct Loaded {
    r: Pkcs11Ref,
    id: Vec<u8>,
    kind: Kind,
    record: KeyRecord,
}

pub struct Pkcs11Keystore {
    keys: Vec<Loaded>,
    pins: PinSource,
}

/// The `*.pkcs11` reference files in `dir`.
pub fn ref_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pkcs11"))
        .collect();
    v.sort();
    v
}

/// The tokens the references in `dir` name, with their modules (to ask their PINs up
/// front).
pub fn tokens_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut t: Vec<(String, PathBuf)> = ref_files(dir)
        .iter()
        .filter_map(|f| parse_ref(&std::fs::read_to_string(f).ok()?).ok())
        .map(|r| (r.token, r.module))
        .collect();
    t.sort();
    t.dedup_by(|a, b| a.0 == b.0);
    t
}

/// What logging in to a token with a PIN typed at start says.
#[derive(Debug, PartialEq, Eq)]
pub enum PinCheck {
    Accepted,
    /// The token refused it (it counts towards the token's lock).
    Refused(String),
    /// The token or its module is not there now: the PIN is kept and tried at use.
    NotChecked(String),
}

/// Log in to `token` with `pin` once, to tell the person at once whether it was right.
pub fn check_pin(module_path: &Path, token: &str, pin: &str) -> PinCheck {
    let m = match module(module_path) {
        Ok(m) => m,
        Err(e) => return PinCheck::NotChecked(e.to_string()),
    };
    match session(&m, token, Some(pin), false) {
        Ok(_) => PinCheck::Accepted,
        Err(e) if e.to_string().contains("refused the PIN") => PinCheck::Refused(e.to_string()),
        Err(e) => PinCheck::NotChecked(e.to_string()),
    }
}

impl Pkcs11Keystore {
    /// Every reference in `dir`; a broken one is named and skipped. Nothing is loaded
    /// from a token until the first signature.
    pub fn open(dir: &Path, pins: PinSource) -> Pkcs11Keystore {
        let mut keys = vec![];
        for f in ref_files(dir) {
            let r = match std::fs::read_to_string(&f)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_ref(&t))
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("skipped {}: not a PKCS#11 key reference ({e})", f.display());
                    continue;
                }
            };
            let kind = Kind::of_blob(&r.public_key).expect("checked by parse_ref");
            let algorithm = String::from_utf8_lossy(
                super::blob::take_string(&mut r.public_key.as_slice()).unwrap_or_default(),
            )
            .into_owned();
            let record = KeyRecord {
                algorithm,
                public_key: r.public_key.clone(),
                comment: r.comment.clone(),
                provider: "pkcs11".into(),
                display_name: if r.comment.is_empty() {
                    format!("token {}", r.token)
                } else {
                    r.comment.clone()
                },
                enabled: true,
            };
            keys.push(Loaded {
                id: hex(&r.id).expect("checked by parse_ref"),
                r,
                kind,
                record,
            });
        }
        Pkcs11Keystore { keys, pins }
    }

    fn sign_with(&self, k: &Loaded, data: &[u8], flags: u32) -> Result<Vec<u8>, ErrorCode> {
        super::with_pin(&format!("token {:?}", k.r.token), || {
            let refused = std::cell::Cell::new(false);
            let r = self.sign_once(k, data, flags, &refused);
            (r, refused.get())
        })
    }

    fn sign_once(
        &self,
        k: &Loaded,
        data: &[u8],
        flags: u32,
        refused: &std::cell::Cell<bool>,
    ) -> Result<Vec<u8>, ErrorCode> {
        let token = &k.r.token;
        let Some(pin) = (self.pins)(token) else {
            tracing::warn!("token {token:?}: no PIN (set it in the signer's config under [pins] as {token:?} = \"PIN\", set VMUX_PIN, or start the signer on a terminal)");
            return Err(ErrorCode::PresenceFailed);
        };
        let fail = |e: SignerError| {
            tracing::error!("PKCS#11 key {}: {e}", k.record.display_name);
            if e.to_string().contains("refused the PIN") {
                refused.set(true);
                ErrorCode::PresenceFailed
            } else {
                ErrorCode::Internal
            }
        };
        let mut m = module(&k.r.module).map_err(fail)?;
        let s = match session(&m, token, Some(&pin), false) {
            Err(SignerError::Token(e)) if e.starts_with("no token labelled") => {
                // Removed, or plugged back in since the module last looked: look again.
                drop(m);
                unload(&k.r.module);
                m = module(&k.r.module).map_err(fail)?;
                session(&m, token, Some(&pin), false)
            }
            r => r,
        }
        .map_err(fail)?;
        let h = find(&s, ObjectClass::PRIVATE_KEY, &k.id).map_err(fail)?;
        let signed = |mech: Mechanism, input: &[u8]| {
            s.sign(&mech, h, input)
                .map_err(|e| fail(SignerError::Token(format!("signing: {e}"))))
        };
        match k.kind {
            Kind::P256 => {
                let raw = signed(Mechanism::Ecdsa, &sha2::Sha256::digest(data))?;
                ecdsa_blob("ecdsa-sha2-nistp256", &raw).ok_or(ErrorCode::Internal)
            }
            Kind::P384 => {
                let raw = signed(Mechanism::Ecdsa, &sha2::Sha384::digest(data))?;
                ecdsa_blob("ecdsa-sha2-nistp384", &raw).ok_or(ErrorCode::Internal)
            }
            Kind::Rsa => {
                // SSH_AGENT_RSA_SHA2_256 = 2, SSH_AGENT_RSA_SHA2_512 = 4 (PROTOCOL.agent).
                // Plain `ssh-rsa` (SHA-1) is not signed.
                let (mech, name) = match flags {
                    f if f & 4 != 0 => (Mechanism::Sha512RsaPkcs, "rsa-sha2-512"),
                    f if f & 2 != 0 => (Mechanism::Sha256RsaPkcs, "rsa-sha2-256"),
                    _ => return Err(ErrorCode::UnsupportedAlgorithm),
                };
                Ok(rsa_blob(name, &signed(mech, data)?))
            }
        }
    }
}

impl Keystore for Pkcs11Keystore {
    fn keys(&self) -> Vec<KeyRecord> {
        self.keys.iter().map(|k| k.record.clone()).collect()
    }

    fn sign(&self, key_blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, ErrorCode> {
        let k = self
            .keys
            .iter()
            .find(|k| k.r.public_key == key_blob)
            .ok_or(ErrorCode::KeyNotFound)?;
        self.sign_with(k, data, flags)
    }

    fn blocking(&self, _key_blob: &[u8]) -> bool {
        true
    }

    fn location(&self, key_blob: &[u8]) -> Option<String> {
        let k = self.keys.iter().find(|k| k.r.public_key == key_blob)?;
        Some(format!(
            "pkcs11 (token {}, {})",
            k.r.token,
            k.r.module.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked() {
        let good = r#"{"module":"/m.so","token":"t","id":"0a0b","publicKey":"AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA==","comment":"c"}"#;
        assert!(parse_ref(good).is_ok());
        for bad in [
            "",
            "{}",
            &good.replace("0a0b", "zz"),
            &good.replace("\"t\"", "\"\""),
            &good.replace("AAAAE2Vj", "AAAAB3Nz"),
            &good.replace("\"c\"}", "\"c\",\"pin\":\"1234\"}"),
        ] {
            assert!(parse_ref(bad).is_err(), "{bad}");
        }
        assert_eq!(hex("0a0B"), Some(vec![10, 11]));
        assert_eq!(unwrap_octet_string(&[4, 3, 4, 1, 2]), vec![4, 1, 2]);
    }
}
