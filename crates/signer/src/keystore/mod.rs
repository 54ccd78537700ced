//! Where private keys live and sign. Backends implement [`Keystore`]; the rest of the
//! signer never touches key material. A key directory may mix stores: OpenSSH files
//! (`software`), PKCS#11 references (`*.pkcs11`) and TPM-wrapped blobs (`*.tpm`);
//! [`Stores`] puts them behind one keystore, and [`sk::SkKeystore`] in front of them
//! makes the keys whose `.pub` is a security-key public key sign as security keys.

pub mod blob;
pub mod pkcs11;
pub mod sk;
pub mod software;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod tss2;

use std::collections::BTreeSet;
use std::sync::Mutex;
use vmux_proto::envelope::KeyRecord;
use vmux_proto::ErrorCode;

/// Devices ("tpm", or a PKCS#11 token label) that refused a PIN in this process. Tokens
/// and TPMs lock after a few wrong PINs, so a refused PIN is not tried again (through
/// key reloads too) until `vmux signer pin reset` or a restart.
static REFUSED_PINS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// One attempt with the PIN of `device`, unless the device refused it before.
/// `attempt` returns its result and whether the device refused the PIN. The lock is
/// held across the attempt, so concurrent requests cannot each spend a try.
pub(crate) fn with_pin<T>(
    device: &str,
    attempt: impl FnOnce() -> (Result<T, ErrorCode>, bool),
) -> Result<T, ErrorCode> {
    let mut refused = REFUSED_PINS.lock().unwrap_or_else(|e| e.into_inner());
    if refused.contains(device) {
        tracing::warn!(
            "{device}: its PIN was refused before; not trying again (fix the PIN, then `vmux signer pin reset`)"
        );
        return Err(ErrorCode::PresenceFailed);
    }
    let (r, was_refused) = attempt();
    if was_refused {
        refused.insert(device.to_string());
    }
    r
}

/// The devices whose PIN was refused, and so are not tried.
pub fn refused_pins() -> Vec<String> {
    let r = REFUSED_PINS.lock().unwrap_or_else(|e| e.into_inner());
    r.iter().cloned().collect()
}

/// Try refused PINs again (after the PIN was fixed); returns the devices cleared.
pub fn reset_pins() -> Vec<String> {
    let mut r = REFUSED_PINS.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *r).into_iter().collect()
}

pub trait Keystore: Send + Sync {
    /// Public halves of every key, in a stable order.
    fn keys(&self) -> Vec<KeyRecord>;

    /// Sign `data` with the key whose public blob is `key_blob`; the result is an SSH
    /// signature blob. `flags` are the agent protocol's RSA hash flags.
    fn sign(&self, key_blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, ErrorCode>;

    /// Sign as [`Keystore::sign`] does, knowing what the signature may say about the
    /// decision behind it (security-key keys: whether user verification ran). Stores
    /// whose signatures say nothing about it just sign.
    fn sign_with(
        &self,
        key_blob: &[u8],
        data: &[u8],
        how: &SignOptions,
    ) -> Result<Vec<u8>, ErrorCode> {
        self.sign(key_blob, data, how.flags)
    }

    /// Signing with this key may block on a device (a token, the TPM): the signer runs
    /// it off the async runtime.
    fn blocking(&self, _key_blob: &[u8]) -> bool {
        false
    }

    /// Where the key lives, for `keys list` (`pkcs11 (token T, module)`, `tpm`, …).
    fn location(&self, _key_blob: &[u8]) -> Option<String> {
        None
    }
}

/// One signature's circumstances, beyond the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignOptions {
    /// The agent protocol's RSA hash flags.
    pub flags: u32,
    /// User verification (PAM after Approve) ran for the decision and succeeded: a
    /// security-key signature then sets its user-verified flag.
    pub user_verified: bool,
}

/// What opening a key directory needs besides the directory.
#[derive(Clone)]
pub struct Open {
    /// For encrypted software keys.
    pub passphrase: Option<zeroize::Zeroizing<String>>,
    /// PINs of PKCS#11 tokens, by token label.
    pub pins: pkcs11::PinSource,
    /// The TPM's TCTI (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`).
    pub tcti: Option<String>,
}

/// Every key in `dir`, whatever store holds it.
pub fn open_dir(
    dir: &std::path::Path,
    how: &Open,
) -> Result<Box<dyn Keystore>, crate::SignerError> {
    let mut stores: Vec<Box<dyn Keystore>> = vec![Box::new(software::SoftwareKeystore::open(
        dir,
        how.passphrase.as_deref().map(|s| s.as_str()),
    )?)];
    if !pkcs11::ref_files(dir).is_empty() {
        stores.push(Box::new(pkcs11::Pkcs11Keystore::open(
            dir,
            how.pins.clone(),
        )));
    }
    if !tss2_files(dir).is_empty() {
        #[cfg(feature = "tpm")]
        stores.push(Box::new(tpm::TpmKeystore::open(dir, how)?));
        #[cfg(not(feature = "tpm"))]
        tracing::warn!(
            "{}: TPM keys are skipped: {}",
            dir.display(),
            crate::SignerError::NoTpmSupport
        );
    }
    let stores = Box::new(Stores(stores));
    if sk::keys_in(dir).is_empty() {
        return Ok(stores);
    }
    Ok(Box::new(sk::SkKeystore::over(
        dir,
        stores,
        sk::Counters::beside(dir),
    )))
}

/// The `*.tpm` files (TSS2 PEM blobs) in `dir`.
pub fn tss2_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tpm"))
        .collect();
    v.sort();
    v
}

/// Several keystores as one: keys in order, each signature routed to its owner.
pub struct Stores(pub Vec<Box<dyn Keystore>>);

impl Stores {
    fn owner(&self, key_blob: &[u8]) -> Option<&dyn Keystore> {
        self.0
            .iter()
            .find(|s| s.keys().iter().any(|k| k.public_key == key_blob))
            .map(|s| s.as_ref())
    }
}

impl Keystore for Stores {
    fn keys(&self) -> Vec<KeyRecord> {
        self.0.iter().flat_map(|s| s.keys()).collect()
    }

    fn sign(&self, key_blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, ErrorCode> {
        self.owner(key_blob)
            .ok_or(ErrorCode::KeyNotFound)?
            .sign(key_blob, data, flags)
    }

    fn sign_with(
        &self,
        key_blob: &[u8],
        data: &[u8],
        how: &SignOptions,
    ) -> Result<Vec<u8>, ErrorCode> {
        self.owner(key_blob)
            .ok_or(ErrorCode::KeyNotFound)?
            .sign_with(key_blob, data, how)
    }

    fn blocking(&self, key_blob: &[u8]) -> bool {
        self.owner(key_blob).is_some_and(|s| s.blocking(key_blob))
    }

    fn location(&self, key_blob: &[u8]) -> Option<String> {
        self.owner(key_blob)?.location(key_blob)
    }
}
