//! Keys in a TPM 2.0 (tss-esapi): created inside the TPM under the owner hierarchy's
//! storage key, kept on disk only as `NAME.tpm`, a `TSS2 PRIVATE KEY` PEM (see `tss2`)
//! whose private part only this TPM can load, so the files move between vmux,
//! tpm2-openssl, tpm2-tools and ssh-tpm-agent.
//!
//! One worker thread owns the TPM connection: TPM commands are serial anyway, a
//! `Context` must stay on one thread, and a slow TPM then stalls nobody else. The
//! storage key is recreated from its template (ECC P-256, AES-128-CFB) when the worker
//! first needs it, as the other tools do, rather than persisted.
//!
//! A key file's parent `0x40000001` names "the owner hierarchy's storage key", and the
//! tools disagree on which template makes it: the key-file spec and tpm2-openssl (and
//! tpm2-tools' ECC primary) leave the template's `unique` field empty; go-tpm, and so
//! ssh-tpm-agent, fill it with two 32-byte zero coordinates. Different `unique`, a
//! different key: a key made under one does not load under the other (`TPM_RC_INTEGRITY`,
//! 0x1df). vmux makes keys under the spec's (see [`Srk`]) and loads every key under
//! either, so keys from all of them import, and its own keys load in tpm2-openssl.

use super::blob::{ecdsa_blob_rs, mpint, rsa_blob, ssh_string};
use super::tss2::{TpmKey, OWNER};
use super::{Keystore, Open};
use crate::SignerError;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, Private, Public, PublicBuffer,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    Signature, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;
use vmux_proto::envelope::KeyRecord;
use vmux_proto::ErrorCode;
use zeroize::Zeroizing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    P256,
    Rsa,
}

impl Kind {
    pub fn parse(t: &str) -> Result<Kind, SignerError> {
        match t {
            "ecdsa" | "p256" | "ecdsa-sha2-nistp256" => Ok(Kind::P256),
            "rsa" | "rsa2048" => Ok(Kind::Rsa),
            other => Err(SignerError::UnsupportedKeyType(format!(
                "{other} (a TPM key is ecdsa or rsa)"
            ))),
        }
    }
}

/// The TCTI to use: the config's, else `TPM2TOOLS_TCTI` or `TCTI`, else the kernel's
/// resource manager.
pub fn tcti(configured: Option<&str>) -> String {
    configured
        .map(String::from)
        .or_else(|| std::env::var("TPM2TOOLS_TCTI").ok())
        .or_else(|| std::env::var("TCTI").ok())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "device:/dev/tpmrm0".into())
}

fn tpm_err(what: &str) -> impl Fn(tss_esapi::Error) -> SignerError + '_ {
    move |e| SignerError::Tpm(format!("{what}: {e}"))
}

/// Whether `e` is the TPM's own answer. A code the TPM never sends (a TCTI or driver
/// error: the TPM went away, its daemon died, the bus failed) says it was not reached.
fn answered(e: &tss_esapi::Error) -> bool {
    !matches!(e, tss_esapi::Error::Tss2Error(rc) if rc.kind().is_none())
}

/// `e` for a person: the TPM's answer as tss-esapi words it, or that nothing answered.
fn explain(tcti: &str, e: &tss_esapi::Error) -> String {
    use tss_esapi::constants::response_code::Tss2ResponseCode as Rc;
    match e {
        tss_esapi::Error::Tss2Error(rc) if !answered(e) => {
            let raw = match rc {
                Rc::FormatZero(r) => r.to_string(),
                Rc::FormatOne(r) => r.to_string(),
                Rc::Success => String::new(),
            };
            format!("cannot reach the TPM through {tcti:?} ({raw}): it went away, or its connection failed")
        }
        other => other.to_string(),
    }
}

/// A PIN (or no PIN) failure rather than a broken TPM: the request gets presenceFailed.
fn is_auth_failure(e: &tss_esapi::Error) -> bool {
    matches!(
        e,
        tss_esapi::Error::Tss2Error(rc) if matches!(
            rc.kind(),
            Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth | Tss2ResponseCodeKind::Lockout)
        )
    )
}

/// Which template makes the owner hierarchy's storage key (see the module notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Srk {
    /// The key-file spec's (TCG EK profile H-2 style: `unique` empty): tpm2-openssl,
    /// tpm2-tools. vmux makes its keys here.
    Spec,
    /// go-tpm's `ECCSRKTemplate` (`unique` = two 32-byte zero coordinates):
    /// ssh-tpm-agent, and vmux before it moved to the spec's.
    ZeroUnique,
}

/// A storage-key template (ECC P-256, restricted decryption, AES-128-CFB, noDA).
fn srk_template(which: Srk) -> Result<Public, SignerError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(tpm_err("SRK attributes"))?;
    Public::builder()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(tpm_err("SRK parameters"))?,
        )
        .with_ecc_unique_identifier(match which {
            Srk::Spec => EccPoint::default(),
            Srk::ZeroUnique => EccPoint::new(
                vec![0u8; 32].try_into().map_err(tpm_err("SRK unique"))?,
                vec![0u8; 32].try_into().map_err(tpm_err("SRK unique"))?,
            ),
        })
        .build()
        .map_err(tpm_err("SRK template"))
}

/// A signing key template (ECDSA with SHA-256; RSA with the hash chosen when signing,
/// for rsa-sha2-256 and rsa-sha2-512), DA-protected
/// when it has a PIN.
fn key_template(kind: Kind, with_pin: bool) -> Result<Public, SignerError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(!with_pin)
        .with_sign_encrypt(true)
        .build()
        .map_err(tpm_err("key attributes"))?;
    let b = Public::builder()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs);
    match kind {
        Kind::P256 => b
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_unrestricted_signing_key(
                    EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                    EccCurve::NistP256,
                )
                .build()
                .map_err(tpm_err("key parameters"))?,
            )
            .with_ecc_unique_identifier(EccPoint::default()),
        Kind::Rsa => b
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new_unrestricted_signing_key(
                    RsaScheme::Null,
                    RsaKeyBits::Rsa2048,
                    RsaExponent::default(),
                )
                .build()
                .map_err(tpm_err("key parameters"))?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default()),
    }
    .build()
    .map_err(tpm_err("key template"))
}

/// The SSH public key blob of a TPM public area.
pub fn ssh_blob(public: &Public) -> Result<(Vec<u8>, Kind), SignerError> {
    let mut b = vec![];
    match public {
        Public::Ecc {
            unique, parameters, ..
        } if parameters.ecc_curve() == EccCurve::NistP256 => {
            let mut point = vec![0x04];
            point.extend_from_slice(unique.x().value());
            point.extend_from_slice(unique.y().value());
            ssh_string(&mut b, b"ecdsa-sha2-nistp256");
            ssh_string(&mut b, b"nistp256");
            ssh_string(&mut b, &point);
            Ok((b, Kind::P256))
        }
        Public::Rsa {
            unique, parameters, ..
        } => {
            let e = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            ssh_string(&mut b, b"ssh-rsa");
            mpint(&mut b, &e.to_be_bytes());
            mpint(&mut b, unique.value());
            Ok((b, Kind::Rsa))
        }
        _ => Err(SignerError::UnsupportedKeyType(
            "this TPM key (not P-256 or RSA)".into(),
        )),
    }
}

fn marshal_private(p: &Private) -> Vec<u8> {
    let mut out = (p.value().len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(p.value());
    out
}

fn unmarshal_private(b: &[u8]) -> Result<Private, SignerError> {
    let len = u16::from_be_bytes(
        b.get(..2)
            .and_then(|x| x.try_into().ok())
            .ok_or_else(|| SignerError::Tpm("truncated private part".into()))?,
    ) as usize;
    let body = b
        .get(2..2 + len)
        .ok_or_else(|| SignerError::Tpm("truncated private part".into()))?;
    Private::try_from(body.to_vec()).map_err(tpm_err("private part"))
}

fn unmarshal_public(b: &[u8]) -> Result<Public, SignerError> {
    let pb = PublicBuffer::unmarshall(b).map_err(tpm_err("public part"))?;
    Public::try_from(pb).map_err(tpm_err("public part"))
}

/// The connection the worker thread owns.
struct Tpm {
    tcti: String,
    ctx: Option<Context>,
    /// The storage key loaded now (one at a time: a TPM holds few objects).
    srk: Option<(Srk, KeyHandle)>,
}

/// Why a key did not load: the TPM (or its connection) said no, or the storage key
/// could not be made.
enum LoadFail {
    Tpm(tss_esapi::Error),
    Setup(SignerError),
}

/// A load failure as an error: the TPM's answer prefixed with `what`.
fn failed(what: &str) -> impl Fn(LoadFail) -> SignerError + '_ {
    move |f| match f {
        LoadFail::Setup(e) => e,
        LoadFail::Tpm(e) => tpm_err(what)(e),
    }
}

impl Tpm {
    fn ctx(&mut self) -> Result<&mut Context, SignerError> {
        if self.ctx.is_none() {
            let conf = TctiNameConf::from_str(&self.tcti)
                .map_err(|e| SignerError::Tpm(format!("TCTI {:?}: {e}", self.tcti)))?;
            let ctx = Context::new(conf).map_err(|e| {
                SignerError::Tpm(format!(
                    "cannot reach the TPM through {:?}: {e} (set `tcti` in the signer config or TPM2TOOLS_TCTI)",
                    self.tcti
                ))
            })?;
            self.ctx = Some(ctx);
            self.srk = None;
        }
        Ok(self.ctx.as_mut().expect("just set"))
    }

    fn srk(&mut self, which: Srk) -> Result<KeyHandle, SignerError> {
        match self.srk {
            Some((w, h)) if w == which => return Ok(h),
            Some((_, h)) => {
                self.srk = None;
                let _ = self.ctx()?.flush_context(h.into());
            }
            None => {}
        }
        let template = srk_template(which)?;
        let ctx = self.ctx()?;
        let h = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(tpm_err("creating the storage key"))?
            .key_handle;
        self.srk = Some((which, h));
        Ok(h)
    }

    /// Load a key file's parts under the owner hierarchy's storage key: the one loaded
    /// now first, then the other template, when the TPM refuses the key under the first.
    fn load(&mut self, key: &TpmKey) -> Result<KeyHandle, LoadFail> {
        let order = match self.srk {
            Some((Srk::ZeroUnique, _)) => [Srk::ZeroUnique, Srk::Spec],
            _ => [Srk::Spec, Srk::ZeroUnique],
        };
        let mut last = None;
        for which in order {
            let parent = self.srk(which).map_err(LoadFail::Setup)?;
            let private = unmarshal_private(&key.private).map_err(LoadFail::Setup)?;
            let public = unmarshal_public(&key.public).map_err(LoadFail::Setup)?;
            let ctx = self.ctx().map_err(LoadFail::Setup)?;
            match ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.load(parent, private, public)
            }) {
                Ok(h) => return Ok(h),
                // The TPM answered (this storage key is not the key's parent): try the other.
                Err(e) if answered(&e) => last = Some(e),
                Err(e) => return Err(LoadFail::Tpm(e)),
            }
        }
        Err(LoadFail::Tpm(last.expect("two tries")))
    }

    /// Forget the connection after an error: the next command starts afresh.
    fn reset(&mut self) {
        self.srk = None;
        self.ctx = None;
    }

    fn create(&mut self, kind: Kind, pin: Option<&str>) -> Result<TpmKey, SignerError> {
        let parent = self.srk(Srk::Spec)?;
        let template = key_template(kind, pin.is_some())?;
        let auth = pin
            .map(|p| Auth::try_from(p.as_bytes().to_vec()))
            .transpose()
            .map_err(tpm_err("the PIN is too long"))?;
        let r = self
            .ctx()?
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create(parent, template, auth, None, None, None)
            })
            .map_err(tpm_err("creating the key"))?;
        let public = PublicBuffer::try_from(r.out_public)
            .and_then(|b| b.marshall())
            .map_err(tpm_err("public part"))?;
        Ok(TpmKey {
            sealed: false,
            empty_auth: pin.is_none(),
            parent: OWNER,
            description: None,
            public,
            private: marshal_private(&r.out_private),
        })
    }

    fn sign(
        &mut self,
        key: &TpmKey,
        kind: Kind,
        pin: Option<&str>,
        data: &[u8],
        flags: u32,
    ) -> Result<Vec<u8>, (ErrorCode, String)> {
        let internal = |e: SignerError| (ErrorCode::Internal, e.to_string());
        let (hash, digest, name): (HashingAlgorithm, Vec<u8>, &str) = match kind {
            Kind::P256 => (
                HashingAlgorithm::Sha256,
                sha2::Sha256::digest(data).to_vec(),
                "ecdsa-sha2-nistp256",
            ),
            Kind::Rsa if flags & 4 != 0 => (
                HashingAlgorithm::Sha512,
                sha2::Sha512::digest(data).to_vec(),
                "rsa-sha2-512",
            ),
            Kind::Rsa if flags & 2 != 0 => (
                HashingAlgorithm::Sha256,
                sha2::Sha256::digest(data).to_vec(),
                "rsa-sha2-256",
            ),
            Kind::Rsa => {
                return Err((
                    ErrorCode::UnsupportedAlgorithm,
                    "ssh-rsa (SHA-1) signatures are not made".into(),
                ))
            }
        };
        let tcti = self.tcti.clone();
        let handle = self.load(key).map_err(|f| match f {
            LoadFail::Setup(e) => internal(e),
            LoadFail::Tpm(e) => {
                let why = match answered(&e) {
                    true => format!("this TPM cannot load the key (made by another TPM?): {e}"),
                    false => explain(&tcti, &e),
                };
                (ErrorCode::Internal, why)
            }
        })?;
        let ctx = self.ctx().map_err(internal)?;
        let result = (|| {
            if let Some(pin) = pin {
                let auth = Auth::try_from(pin.as_bytes().to_vec())?;
                ctx.tr_set_auth(handle.into(), auth)?;
            }
            let scheme = match kind {
                Kind::P256 => SignatureScheme::EcDsa {
                    hash_scheme: HashScheme::new(hash),
                },
                Kind::Rsa => SignatureScheme::RsaSsa {
                    hash_scheme: HashScheme::new(hash),
                },
            };
            let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
                tag: TPM2_ST_HASHCHECK,
                hierarchy: TPM2_RH_NULL,
                digest: Default::default(),
            })?;
            let digest = Digest::try_from(digest)?;
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.sign(handle, digest, scheme, ticket)
            })
        })();
        let _ = ctx.flush_context(handle.into());
        match result {
            Ok(Signature::EcDsa(s)) => Ok(ecdsa_blob_rs(
                name,
                s.signature_r().value(),
                s.signature_s().value(),
            )),
            Ok(Signature::RsaSsa(s)) => Ok(rsa_blob(name, s.signature().value())),
            Ok(_) => Err((ErrorCode::Internal, "unexpected signature type".into())),
            Err(e) if is_auth_failure(&e) => Err((
                ErrorCode::PresenceFailed,
                format!("the TPM refused the key's PIN: {e}"),
            )),
            Err(e) => Err((
                ErrorCode::Internal,
                format!("signing: {}", explain(&tcti, &e)),
            )),
        }
    }
}

impl Tpm {
    /// Seal `secret` under the storage key: only this TPM can unseal it.
    fn seal(&mut self, secret: &[u8]) -> Result<TpmKey, SignerError> {
        use tss_esapi::structures::{KeyedHashScheme, PublicKeyedHashParameters, SensitiveData};
        let parent = self.srk(Srk::Spec)?;
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .build()
            .map_err(tpm_err("sealed object attributes"))?;
        let template = Public::builder()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()
            .map_err(tpm_err("sealed object template"))?;
        let data = SensitiveData::try_from(secret.to_vec()).map_err(tpm_err("secret too long"))?;
        let r = self
            .ctx()?
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create(parent, template, None, Some(data), None, None)
            })
            .map_err(tpm_err("sealing"))?;
        let public = PublicBuffer::try_from(r.out_public)
            .and_then(|b| b.marshall())
            .map_err(tpm_err("public part"))?;
        Ok(TpmKey {
            sealed: true,
            empty_auth: true,
            parent: OWNER,
            description: None,
            public,
            private: marshal_private(&r.out_private),
        })
    }

    fn unseal(&mut self, key: &TpmKey) -> Result<Zeroizing<Vec<u8>>, SignerError> {
        let handle = self.load(key).map_err(failed(
            "this TPM cannot load the sealed identity (sealed by another TPM?)",
        ))?;
        let ctx = self.ctx()?;
        let out =
            ctx.execute_with_session(Some(AuthSession::Password), |c| c.unseal(handle.into()));
        let _ = ctx.flush_context(handle.into());
        Ok(Zeroizing::new(
            out.map_err(tpm_err("unsealing"))?.value().to_vec(),
        ))
    }
}

/// Seal `secret` to the TPM at `tcti`; the result is a `TSS2 PRIVATE KEY` PEM of sealed
/// data (OID 2.23.133.10.1.5).
pub fn seal(tcti_conf: &str, secret: &[u8]) -> Result<String, SignerError> {
    let worker = Worker::start(tcti_conf.to_string());
    let secret = Zeroizing::new(secret.to_vec());
    worker
        .run(move |t| t.seal(&secret))
        .ok_or_else(|| SignerError::Tpm("the TPM worker stopped".into()))?
        .map(|k| k.to_pem())
}

/// Unseal what [`seal`] made, with the TPM at `tcti`.
pub fn unseal(tcti_conf: &str, pem: &str) -> Result<Zeroizing<Vec<u8>>, SignerError> {
    let key = TpmKey::from_pem(pem).map_err(SignerError::Tpm)?;
    if !key.sealed {
        return Err(SignerError::Tpm("not sealed data".into()));
    }
    let worker = Worker::start(tcti_conf.to_string());
    worker
        .run(move |t| t.unseal(&key))
        .ok_or_else(|| SignerError::Tpm("the TPM worker stopped".into()))?
}

type Job = Box<dyn FnOnce(&mut Tpm) + Send>;

/// The worker thread: jobs in, one at a time, on the thread that owns the TPM.
#[derive(Clone)]
pub struct Worker {
    tx: Arc<Mutex<mpsc::Sender<Job>>>,
}

impl Worker {
    pub fn start(tcti: String) -> Worker {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("vmux-tpm".into())
            .spawn(move || {
                let mut tpm = Tpm {
                    tcti,
                    ctx: None,
                    srk: None,
                };
                for job in rx {
                    job(&mut tpm);
                }
            })
            .expect("spawn the TPM worker");
        Worker {
            tx: Arc::new(Mutex::new(tx)),
        }
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Tpm) -> T + Send + 'static) -> Option<T> {
        let (back, answer) = mpsc::channel();
        let job: Job = Box::new(move |tpm| {
            let _ = back.send(f(tpm));
        });
        self.tx.lock().unwrap().send(job).ok()?;
        answer.recv().ok()
    }
}

/// Create a key inside the TPM at `tcti` and write `NAME.tpm` + `NAME.pub` into `dir`.
pub fn generate(
    dir: &Path,
    tcti_conf: &str,
    kind: Kind,
    pin: Option<&str>,
    comment: &str,
) -> Result<ssh_key::PublicKey, SignerError> {
    let worker = Worker::start(tcti_conf.to_string());
    let pin_owned = pin.map(|p| Zeroizing::new(p.to_string()));
    let key = worker
        .run(move |t| {
            let r = t.create(kind, pin_owned.as_deref().map(|s| s.as_str()));
            if r.is_err() {
                t.reset();
            }
            r
        })
        .ok_or_else(|| SignerError::Tpm("the TPM worker stopped".into()))??;
    store(dir, &key, comment)
}

/// Write `tpm-FINGERPRINT.tpm` and its `.pub` into `dir`. The comment goes into the
/// `.pub` only: tpm2-openssl refuses a key file with the optional `description` field.
fn store(dir: &Path, key: &TpmKey, comment: &str) -> Result<ssh_key::PublicKey, SignerError> {
    let key = &TpmKey {
        description: None,
        ..key.clone()
    };
    let (blob, _) = ssh_blob(&unmarshal_public(&key.public)?)?;
    let mut public = ssh_key::PublicKey::from_bytes(&blob)
        .map_err(|e| SignerError::Tpm(format!("the TPM's public key does not parse: {e}")))?;
    public.set_comment(comment);
    let fp = public.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let short: String = fp
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    let path = dir.join(format!("tpm-{short}.tpm"));
    vmux_proto::store::write_atomic(&path, key.to_pem().as_bytes(), 0o600)?;
    let line = public
        .to_openssh()
        .map_err(|e| SignerError::Tpm(e.to_string()))?;
    vmux_proto::store::write_atomic(
        &path.with_extension("pub"),
        format!("{line}\n").as_bytes(),
        0o644,
    )?;
    Ok(public)
}

/// Take in a `TSS2 PRIVATE KEY` made by another tool for this TPM (ssh-tpm-agent,
/// tpm2-openssl, `tpm2_encodeobject`): checked by loading it into the TPM at `tcti`,
/// then kept as `tpm-….tpm` + `.pub` in `dir`. The comment is `comment`, else the
/// key's description.
pub fn import(
    dir: &Path,
    tcti_conf: &str,
    pem: &str,
    comment: Option<&str>,
) -> Result<ssh_key::PublicKey, SignerError> {
    let key = TpmKey::from_pem(pem).map_err(SignerError::Tpm)?;
    if key.sealed {
        return Err(SignerError::Tpm("sealed data, not a signing key".into()));
    }
    if key.parent != OWNER {
        return Err(SignerError::Tpm(format!(
            "the key's parent is handle {:#010x}; vmux loads keys under the owner hierarchy's storage key ({OWNER:#010x}) only",
            key.parent
        )));
    }
    ssh_blob(&unmarshal_public(&key.public)?)?;
    let worker = Worker::start(tcti_conf.to_string());
    let probe = key.clone();
    worker
        .run(move |t| {
            let h = t.load(&probe).map_err(failed(
                "this TPM cannot load the key (made by another TPM, or under another storage key?)",
            ))?;
            let _ = t.ctx()?.flush_context(h.into());
            Ok::<_, SignerError>(())
        })
        .ok_or_else(|| SignerError::Tpm("the TPM worker stopped".into()))??;
    let comment = comment
        .map(String::from)
        .or_else(|| key.description.clone())
        .unwrap_or_default();
    store(dir, &key, &comment)
}

struct Loaded {
    key: TpmKey,
    kind: Kind,
    blob: Vec<u8>,
    record: KeyRecord,
    file: PathBuf,
}

pub struct TpmKeystore {
    keys: Vec<Loaded>,
    worker: Worker,
    pins: super::pkcs11::PinSource,
}

impl TpmKeystore {
    /// Every `*.tpm` in `dir` (a file that does not parse is named and skipped). The
    /// public key comes from the blob itself; the `.pub` beside it gives the comment.
    pub fn open(dir: &Path, how: &Open) -> Result<TpmKeystore, SignerError> {
        let mut keys = vec![];
        for file in super::tss2_files(dir) {
            let parsed = std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| TpmKey::from_pem(&t))
                .and_then(|k| match k.sealed {
                    true => Err("sealed data, not a signing key".to_string()),
                    false => Ok(k),
                })
                .and_then(|k| match k.parent {
                    OWNER => Ok(k),
                    other => Err(format!(
                        "its parent is handle {other:#010x}; vmux loads keys under the owner hierarchy's storage key ({OWNER:#010x}) only"
                    )),
                })
                .map_err(SignerError::Tpm)
                .and_then(|k| Ok((ssh_blob(&unmarshal_public(&k.public)?)?, k)));
            let ((blob, kind), key) = match parsed {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("skipped {}: not a TPM key ({e})", file.display());
                    continue;
                }
            };
            let comment = std::fs::read_to_string(file.with_extension("pub"))
                .ok()
                .and_then(|l| ssh_key::PublicKey::from_openssh(l.trim()).ok())
                .map(|k| k.comment().to_string())
                .filter(|c| !c.is_empty())
                .or_else(|| key.description.clone())
                .unwrap_or_default();
            let algorithm = match kind {
                Kind::P256 => "ecdsa-sha2-nistp256",
                Kind::Rsa => "ssh-rsa",
            };
            keys.push(Loaded {
                record: KeyRecord {
                    algorithm: algorithm.into(),
                    public_key: blob.clone(),
                    display_name: if comment.is_empty() {
                        "TPM key".into()
                    } else {
                        comment.clone()
                    },
                    comment,
                    provider: "tpm".into(),
                    enabled: true,
                },
                key,
                kind,
                blob,
                file,
            });
        }
        Ok(TpmKeystore {
            keys,
            worker: Worker::start(tcti(how.tcti.as_deref())),
            pins: how.pins.clone(),
        })
    }
}

impl Keystore for TpmKeystore {
    fn keys(&self) -> Vec<KeyRecord> {
        self.keys.iter().map(|k| k.record.clone()).collect()
    }

    fn sign(&self, key_blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, ErrorCode> {
        let k = self
            .keys
            .iter()
            .find(|k| k.blob == key_blob)
            .ok_or(ErrorCode::KeyNotFound)?;
        let pin = if k.key.empty_auth {
            None
        } else {
            match (self.pins)("tpm") {
                Some(p) => Some(p),
                None => {
                    tracing::warn!(
                        "TPM key {}: it has a PIN and none was given (start the signer on a terminal, set VMUX_PIN, or set tpm = \"PIN\" under [pins] in its config)",
                        k.file.display()
                    );
                    return Err(ErrorCode::PresenceFailed);
                }
            }
        };
        let (key, kind, data) = (k.key.clone(), k.kind, data.to_vec());
        let attempt = || {
            let r = self
                .worker
                .run(move |t| {
                    let r = t.sign(&key, kind, pin.as_deref().map(|s| s.as_str()), &data, flags);
                    if matches!(r, Err((ErrorCode::Internal, _))) {
                        t.reset();
                    }
                    r
                })
                .unwrap_or_else(|| Err((ErrorCode::Internal, "the TPM worker stopped".into())));
            let refused = matches!(&r, Err((ErrorCode::PresenceFailed, _)));
            let r = r.map_err(|(code, why)| {
                tracing::error!("TPM key {}: {why}", k.file.display());
                code
            });
            (r, refused)
        };
        if k.key.empty_auth {
            attempt().0
        } else {
            super::with_pin("the TPM", attempt)
        }
    }

    fn blocking(&self, _key_blob: &[u8]) -> bool {
        true
    }

    fn location(&self, _key_blob: &[u8]) -> Option<String> {
        Some("tpm".into())
    }
}
