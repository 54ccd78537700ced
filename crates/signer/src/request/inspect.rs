//! What the signer checks before anyone is asked, from the bytes it would sign: parse
//! the data (userauth request, SSHSIG, or unrecognised), compare it with what the
//! requesting device claims (a contradiction is refused: `contextMismatch`), verify the
//! session bindings the device sent, name the host from this signer's own pins, and
//! apply the key's policy to the parsed values. The result is the display a person
//! decides on.

use super::Refusal;
use crate::hosts::{self, HostPins};
use crate::queue::PendingInfo;
use crate::signer::{obj, Signer};
use crate::state::PairedDevice;
use sha2::{Digest, Sha256};
use vmux_proto::envelope::{Origin, SessionBinding, SignRequest};
use vmux_proto::identity::{hex, key_fingerprint};
use vmux_proto::keys::verify_session_bind;
use vmux_proto::sshdata::{self, Parsed};
use vmux_proto::text::field;
use vmux_proto::ErrorCode;

/// A request as the person will see it, and what approving it also records.
pub struct Inspection {
    pub info: PendingInfo,
    /// Pin this host key under this name when the login is approved.
    pub pin: Option<(String, Vec<u8>)>,
    pub parsed: Parsed,
}

/// Where a login goes, as far as the signer can vouch for it.
struct Dest {
    text: String,
    quality: &'static str,
    host_key: Option<String>,
    warning: Option<String>,
    pin: Option<(String, Vec<u8>)>,
    /// The name a `hosts` policy may match: a pinned name, or on first sight the
    /// device's claim when the binding verified and no pin contradicts it.
    policy_name: Option<String>,
}

/// The part of the inspection that needs no keys: parse the data, check the claims
/// against it, verify the bindings and name the destination from `pins`. Pure, so it
/// can be fuzzed (fuzz/fuzz_targets/sign_inspect.rs).
pub struct Examined {
    pub parsed: Parsed,
    dest: Option<Dest>,
    /// Hosts the agent was forwarded through, first to last.
    pub hops: Vec<String>,
}

impl Examined {
    /// `(destination text, quality, warning)` for a login.
    pub fn destination(&self) -> Option<(&str, &str, Option<&str>)> {
        self.dest
            .as_ref()
            .map(|d| (d.text.as_str(), d.quality, d.warning.as_deref()))
    }
}

pub fn examine(req: &SignRequest, pins: &HostPins) -> Result<Examined, Refusal> {
    let parsed = sshdata::parse(&req.data);
    if parsed.kind == "malformed" {
        return Err(Refusal::new(ErrorCode::ContextMismatch)
            .why("the data starts like a login but does not parse as one"));
    }
    if parsed.kind == "login" {
        login_user(&parsed)?;
    }
    check_claims(req, &parsed)?;
    let claimer = match req.origin {
        Origin::Agent => "the workstation",
        Origin::Client => "the client",
    };
    let claim = req
        .context
        .host
        .as_deref()
        .map(field)
        // `host`, `host:22` and `[host]:22` are one host, pinned and shown as `host`.
        .map(|h| vmux_proto::ssh_config::canonical_name(&h))
        .filter(|h| hosts::pinnable_name(h));
    let hops = hop_names(&req.bindings, pins)?;
    let dest = match parsed.kind {
        "login" => Some(login_destination(
            &parsed,
            &req.bindings,
            claim.as_deref(),
            claimer,
            pins,
        )?),
        _ => None,
    };
    Ok(Examined { parsed, dest, hops })
}

/// Everything checked before a person is asked, and the display they will decide on.
pub(crate) fn inspect(
    signer: &Signer,
    device: &PairedDevice,
    req: &SignRequest,
) -> Result<Inspection, Refusal> {
    let pins = signer.pins.get(&hosts::path(&signer.home.dir));
    let Examined { parsed, dest, hops } = examine(req, &pins)?;
    let key_fp = key_fingerprint(&req.key_blob);
    let key = if req.session_cert {
        session_cert_key(signer, req)?
    } else {
        signer
            .keystore
            .keys()
            .into_iter()
            .find(|k| k.public_key == req.key_blob)
            .ok_or_else(|| {
                Refusal::new(ErrorCode::KeyNotFound)
                    .why(format!("this signer holds no key {key_fp}"))
            })?
    };
    if !key.enabled {
        return Err(Refusal::new(ErrorCode::KeyDisabled).why(format!(
            "key {key_fp} is disabled on this signer (`vmux signer keys enable`)"
        )));
    }
    // RSA keys sign rsa-sha2-256 (flag 2) or rsa-sha2-512 (flag 4) only; plain
    // `ssh-rsa` (SHA-1) is refused before anyone is asked to approve what no key
    // here would sign.
    if key.algorithm == "ssh-rsa" && req.flags & (2 | 4) == 0 {
        tracing::warn!(
            "key {key_fp}: refused an ssh-rsa (SHA-1) signature; only rsa-sha2-256/512 are made"
        );
        return Err(Refusal::new(ErrorCode::UnsupportedAlgorithm)
            .why("ssh-rsa (SHA-1) signatures are not made; rsa-sha2-256/512 only"));
    }
    let config = signer.home.load_config().map_err(|e| {
        tracing::error!("{e}");
        Refusal::new(ErrorCode::Internal).why("the signer could not read its config")
    })?;
    let policy = config.policy.iter().find(|p| p.key == key_fp);
    let verify = policy
        .and_then(|p| p.verify.clone())
        .or(config.verify.clone());
    if let Some(p) = policy {
        let host = dest
            .as_ref()
            .filter(|_| hops.is_empty())
            .and_then(|d| d.policy_name.as_deref());
        p.check(parsed.kind, parsed.namespace.as_deref(), host)
            .map_err(|code| Refusal::new(code).why(policy_words(p, parsed.kind, host)))?;
    }
    let user = match login_user(&parsed)? {
        Some((name, Some(style))) => {
            Some(format!("{name} (login style {style}, as sshd reads it)"))
        }
        Some((name, None)) => Some(name),
        None => None,
    };
    let (mut destination, mut quality, host_key, warning, pin) = match dest {
        Some(d) => (
            Some(d.text),
            Some(d.quality.to_string()),
            d.host_key,
            d.warning,
            d.pin,
        ),
        None => (None, None, None, None, None),
    };
    if !hops.is_empty() {
        let via = format!("forwarded via {}", hops.join(" → "));
        destination = Some(match destination {
            Some(d) => format!("{d}, {via}"),
            None => via,
        });
        quality = Some("forwarded".into());
    }
    let info = PendingInfo {
        kind: "sign".into(),
        from: field(&device.name),
        from_id: device.id.clone(),
        origin: Some(
            match req.origin {
                Origin::Agent => "agent",
                Origin::Client => "client",
            }
            .into(),
        ),
        label: Some(req.request_id.to_string()),
        purpose: Some(purpose(&parsed)),
        user,
        destination,
        destination_quality: quality,
        host_claim: req.context.host.as_deref().map(field),
        host_key,
        warning,
        requester: req.context.requester.as_deref().map(field),
        key: Some(key_fp),
        key_comment: Some(field(&key.comment)),
        key_store: Some(field(&crate::keystore::sk::store_name(
            &key.provider,
            &key.public_key,
        ))),
        data_digest: Some(hex(&Sha256::digest(&req.data))),
        verify,
        created: vmux_proto::now_unix(),
        expires: req.expires,
        ..Default::default()
    };
    // A host pin is recorded only for a login to the host itself, never via a hop.
    let pin = pin.filter(|_| hops.is_empty());
    Ok(Inspection { info, pin, parsed })
}

/// A login the device signs itself with its session certificate, asking only for the
/// person's approval: the certificate must be one this signer's CA issued, still valid,
/// and the data a login. Shown as the session certificate, never as a signer key.
fn session_cert_key(
    signer: &Signer,
    req: &SignRequest,
) -> Result<vmux_proto::envelope::KeyRecord, Refusal> {
    let refuse = |why: &str| Err(Refusal::new(ErrorCode::KeyNotFound).why(why.to_string()));
    let Ok(cert) = ssh_key::Certificate::from_bytes(&req.key_blob) else {
        return refuse("the session certificate does not parse");
    };
    let ca = signer.ca.as_deref().and_then(crate::ca::ca_key);
    let named = ssh_key::encoding::Encode::encode_vec(cert.signature_key()).ok();
    if ca.is_none() || named != ca || cert.verify_signature().is_err() {
        return refuse("the session certificate was not issued by this signer's CA");
    }
    if cert.valid_before() <= vmux_proto::now_unix() {
        return refuse("the session certificate has expired");
    }
    if sshdata::parse(&req.data).kind != "login" {
        return Err(
            Refusal::new(ErrorCode::PolicyDenied).why("a session certificate signs logins only")
        );
    }
    Ok(vmux_proto::envelope::KeyRecord {
        algorithm: cert.algorithm().as_str().to_string(),
        public_key: req.key_blob.clone(),
        comment: format!(
            "session certificate {} (signed on the workstation; the client bound no session)",
            cert.key_id()
        ),
        provider: "session".into(),
        display_name: "session certificate".into(),
        enabled: true,
    })
}

/// Why a key's policy refused a request, in words.
fn policy_words(p: &crate::state::KeyPolicy, kind: &str, host: Option<&str>) -> String {
    let list = |l: &Option<Vec<String>>| l.as_ref().map(|l| l.join(", "));
    let limits = match (list(&p.namespaces), list(&p.hosts)) {
        (Some(n), Some(h)) => format!("signatures in namespaces {n} and logins to {h}"),
        (Some(n), None) => format!("signatures in namespaces {n} only"),
        (None, Some(h)) => format!("logins to {h} only (destinations this signer verified)"),
        (None, None) => "anything".into(),
    };
    let what = match (kind, host) {
        ("login", Some(h)) => format!("a login to {h}"),
        ("login", None) => "a login to a destination this signer cannot name".into(),
        ("sshsig", _) => "this signature".into(),
        _ => "data it cannot recognise".into(),
    };
    format!("key {} may sign {limits}, not {what} (policy)", p.key)
}

/// After approval: remember the host key under the name that was shown.
pub(crate) fn pin_host(signer: &Signer, name: &str, key: &[u8]) {
    let path = hosts::path(&signer.home.dir);
    let mut pins = HostPins::load(&path);
    if pins.add(name, key) {
        let saved = pins.save(&path);
        signer.pins.invalidate();
        match saved {
            Ok(()) => signer.record(obj(serde_json::json!({
                "event": "hostPinned", "host": name, "hostKey": hosts::fingerprint(key)}))),
            Err(e) => tracing::error!("{e}"),
        }
    }
}

/// A login's user as sshd will read it: `user` or `user:style` (sshd splits at the
/// first colon, BSD authentication style). A user that is not valid UTF-8, or holds
/// control or layout characters, and a style that is not a plain word, are refused:
/// the person would read something other than what the server reads.
fn login_user(parsed: &Parsed) -> Result<Option<(String, Option<String>)>, Refusal> {
    let Some(bytes) = parsed.user_bytes.as_deref() else {
        return Ok(None);
    };
    let refuse = |why: &str| {
        Err(Refusal::new(ErrorCode::ContextMismatch).why(format!("the login's user name {why}")))
    };
    let Ok(user) = std::str::from_utf8(bytes) else {
        return refuse("is not valid UTF-8");
    };
    let layout = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    };
    if user.chars().any(layout) {
        return refuse("holds control or layout characters");
    }
    let (name, style) = match user.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (user, None),
    };
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return refuse("is empty or holds spaces");
    }
    if let Some(st) = style {
        let plain = !st.is_empty()
            && st
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !plain {
            return refuse("carries a login style that is not a plain word (sshd reads the name before the colon)");
        }
    }
    Ok(Some((field(name), style.map(field))))
}

/// What the device says about the request must agree with the data.
fn check_claims(req: &SignRequest, parsed: &Parsed) -> Result<(), Refusal> {
    let c = &req.context;
    let mismatch = |what: &str| {
        tracing::warn!(
            "request {}: {what} contradicts the data to sign; refused",
            req.request_id
        );
        Err(Refusal::new(ErrorCode::ContextMismatch)
            .why(format!("{what} contradicts the data to sign")))
    };
    if !c.kind.is_empty() && c.kind != "unknown" && c.kind != parsed.kind {
        return mismatch("the claimed kind");
    }
    if c.namespace.is_some() && c.namespace != parsed.namespace {
        return mismatch("the claimed namespace");
    }
    if c.user.is_some() && c.user != parsed.user {
        return mismatch("the claimed user");
    }
    if parsed.kind == "login" && parsed.key_blob.as_deref() != Some(req.key_blob.as_slice()) {
        return mismatch("the key named in the userauth request");
    }
    Ok(())
}

fn purpose(p: &Parsed) -> String {
    match (p.kind, p.namespace.as_deref()) {
        ("login", _) => match p.service.as_deref() {
            Some("ssh-connection") | None => "login".into(),
            Some(s) => format!("login (service {})", field(s)),
        },
        ("sshsig", Some("git")) => "git signature".into(),
        ("sshsig", Some("file")) => "file signature".into(),
        ("sshsig", Some(ns)) => format!("signature ({})", field(ns)),
        _ => "unrecognised data".into(),
    }
}

/// Every binding's signature must verify (a forged one is a lie: refused); the hosts
/// the agent was forwarded through, named from the pins, first to last. A connection
/// is forwarded when a binding says so, or when more than one session was bound on it
/// (each hop binds its own session).
fn hop_names(bindings: &[SessionBinding], pins: &HostPins) -> Result<Vec<String>, Refusal> {
    let mut hops = vec![];
    let last = bindings.len().saturating_sub(1);
    for (i, b) in bindings.iter().enumerate().take(16) {
        if verify_session_bind(&b.host_key, &b.session_id, &b.signature) == Some(false) {
            tracing::warn!("a session binding's signature does not verify; refused");
            return Err(Refusal::new(ErrorCode::ContextMismatch)
                .why("a session binding's signature does not verify"));
        }
        if b.is_forwarding || i < last {
            hops.push(
                pins.names_for(&b.host_key)
                    .first()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| hosts::fingerprint(&b.host_key)),
            );
        }
    }
    Ok(hops)
}

fn login_destination(
    parsed: &Parsed,
    bindings: &[SessionBinding],
    claim: Option<&str>,
    claimer: &str,
    pins: &HostPins,
) -> Result<Dest, Refusal> {
    let user = login_user(parsed)?.map(|(n, _)| n).unwrap_or_default();
    let calls = |c: Option<&str>| match c {
        Some(c) => format!("{claimer} calls it {c}"),
        None => format!("{claimer} did not name it"),
    };
    let unknown = |why: &str| Dest {
        text: format!("{user}@? destination unknown ({why}; {})", calls(claim)),
        quality: "unknown",
        host_key: None,
        warning: None,
        pin: None,
        policy_name: None,
    };
    // OpenSSH binds each connection's newest session last; a userauth request for any
    // other session is not bound (clients that do not send session-bind, e.g. through
    // `ssh -A`), which is shown, not refused.
    let Some(bound) = bindings
        .last()
        .filter(|b| parsed.session_id.as_deref() == Some(b.session_id.as_slice()))
    else {
        return Ok(unknown("session not bound"));
    };
    if let Some(hk) = &parsed.host_key {
        if hk != &bound.host_key {
            tracing::warn!("the userauth request names another host key than the bound one");
            return Err(Refusal::new(ErrorCode::ContextMismatch)
                .why("the login names another host key than the session it is bound to"));
        }
    }
    let fp = hosts::fingerprint(&bound.host_key);
    if verify_session_bind(&bound.host_key, &bound.session_id, &bound.signature) != Some(true) {
        let mut d = unknown(&format!("host key {fp} cannot be verified here"));
        d.host_key = Some(fp);
        return Ok(d);
    }
    let names = pins.names_for(&bound.host_key);
    let dest = if let Some(first) = names.first() {
        let name = claim
            .filter(|c| names.iter().any(|n| n.eq_ignore_ascii_case(c)))
            .unwrap_or(first)
            .to_string();
        let warning = claim
            .filter(|c| !names.iter().any(|n| n.eq_ignore_ascii_case(c)))
            .map(|c| {
                format!("this signer knows host key {fp} as {name}, but {claimer} calls it {c}")
            });
        Dest {
            text: format!("{user}@{name} (verified by this signer)"),
            quality: "verified",
            host_key: Some(fp),
            warning,
            pin: None,
            policy_name: Some(name),
        }
    } else if let Some(c) = claim.filter(|c| !pins.keys_for(c).is_empty()) {
        Dest {
            text: format!("{user}@{c} — HOST KEY CHANGED: new key {fp}, this signer has another key pinned for {c}"),
            quality: "changed",
            host_key: Some(fp.clone()),
            warning: Some(format!(
                "REMOTE HOST IDENTIFICATION HAS CHANGED: this signer has another host key pinned for {c}; \
                 {claimer} now reaches a server with key {fp}. Deny unless you know the host key was replaced \
                 (then `vmux signer hosts remove {c}`)"
            )),
            pin: None,
            policy_name: None,
        }
    } else {
        Dest {
            text: format!(
                "{user}@{} — new host key {fp} ({}; session binding verified)",
                claim.unwrap_or("?"),
                calls(claim)
            ),
            quality: "new",
            host_key: Some(fp),
            warning: None,
            pin: claim.map(|c| (c.to_string(), bound.host_key.clone())),
            // A `hosts` policy trusts names this signer verified or pinned, never a
            // name the workstation gives a key it sees for the first time.
            policy_name: None,
        }
    };
    Ok(dest)
}
