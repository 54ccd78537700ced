//! Where a login goes, from what OpenSSH (≥ 8.9) tells the agent: `session-bind@openssh.com`
//! carries the server host key, the session id and the server's signature over it
//! (PROTOCOL.agent §1). A binding that verifies, whose session id matches the userauth
//! request, and whose host key `known_hosts` names, is a `verified` destination.

use crate::context::Parsed;
use crate::wire::SessionBind;
use ssh_key::encoding::Decode;
use ssh_key::public::KeyData;
use ssh_key::HashAlg;
use std::path::PathBuf;

/// A binding as the session keeps it: checked once, when it arrived.
#[derive(Debug, Clone)]
pub struct Binding {
    pub bind: SessionBind,
    /// `Some(true)` verified, `Some(false)` the signature is wrong, `None` the host key
    /// type cannot be checked here (RSA: no RSA code in this build).
    pub signature_ok: Option<bool>,
    /// The host's name in known_hosts, looked up once when the binding arrives (a large
    /// known_hosts costs about 1 µs a line: too much to pay on every signature).
    pub name: Option<String>,
    /// The host key's SHA-256 fingerprint, also computed once.
    pub fingerprint: String,
}

impl Binding {
    /// Check a binding once, when it arrives; `candidates` are names to try against
    /// hashed known_hosts entries (from the requesting ssh's command line).
    pub fn check(bind: SessionBind, known_hosts: &[PathBuf], candidates: &[String]) -> Binding {
        let signature_ok = verify(&bind);
        let name = match signature_ok {
            Some(false) => None,
            _ => host_name(&bind.host_key, known_hosts, candidates),
        };
        Binding {
            fingerprint: fingerprint(&bind.host_key),
            bind,
            signature_ok,
            name,
        }
    }
}

fn verify(b: &SessionBind) -> Option<bool> {
    vmux_proto::keys::verify_session_bind(&b.host_key, &b.session_id, &b.signature)
}

/// Why a request on a bound connection is refused before it reaches the signer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    #[error("the server's session-bind signature does not verify")]
    BadSignature,
    #[error("the userauth request names another host key than the bound one")]
    HostKeyMismatch,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Destination {
    /// `verified`, `bound`, `forwarded` or `unknown` (for the agent's own log).
    pub quality: &'static str,
    /// A known_hosts name, else the host key fingerprint (for the log).
    pub host: Option<String>,
    /// The name known_hosts gives the bound host key: the agent's claim to the signer.
    pub name: Option<String>,
    pub host_key_fingerprint: Option<String>,
    /// For forwarded connections: every hop, first to last.
    pub hops: Vec<String>,
    /// Some binding on this connection forwards the agent: the request comes from a
    /// host further on, not from this workstation's own ssh.
    pub forwarded: bool,
}

/// Decide the destination of `parsed` on a connection with `bindings`. Only lies are
/// refused (a binding whose signature is wrong, a userauth request naming another host
/// key than the session it is bound to); a userauth request for a session nobody bound
/// (clients on the far side of `ssh -A` that do not send session-bind) goes on as
/// `unknown`, as OpenSSH's agent lets it.
pub fn resolve(bindings: &[Binding], parsed: &Parsed) -> Result<Destination, BindingError> {
    if bindings.iter().any(|b| b.signature_ok == Some(false)) {
        return Err(BindingError::BadSignature);
    }
    let forwarded = bindings.iter().any(|b| b.bind.is_forwarding) || bindings.len() > 1;
    let names: Vec<Option<String>> = bindings.iter().map(|b| b.name.clone()).collect();
    let label = |i: usize| {
        names[i]
            .clone()
            .unwrap_or_else(|| bindings[i].fingerprint.clone())
    };
    let hops: Vec<String> = if forwarded {
        (0..bindings.len()).map(label).collect()
    } else {
        vec![]
    };
    let unknown = Destination {
        quality: if forwarded { "forwarded" } else { "unknown" },
        hops: hops.clone(),
        forwarded,
        ..Default::default()
    };
    let Some(last) = bindings.last() else {
        return Ok(unknown);
    };
    if parsed.kind == "login" {
        if parsed.session_id.as_deref() != Some(last.bind.session_id.as_slice()) {
            return Ok(unknown);
        }
        if let Some(hk) = &parsed.host_key {
            if hk != &last.bind.host_key {
                return Err(BindingError::HostKeyMismatch);
            }
        }
    }
    let fp = last.fingerprint.clone();
    let quality = if forwarded {
        "forwarded"
    } else if last.signature_ok != Some(true) {
        "unknown"
    } else if names[bindings.len() - 1].is_some() {
        "verified"
    } else {
        "bound"
    };
    Ok(Destination {
        quality,
        host: Some(label(bindings.len() - 1)),
        name: names[bindings.len() - 1].clone(),
        host_key_fingerprint: Some(fp),
        hops,
        forwarded,
    })
}

/// A host key's SHA-256 fingerprint, as ssh-keygen -l prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    KeyData::decode(&mut &blob[..])
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .unwrap_or_else(|_| "unparseable host key".into())
}

/// The first name `known_hosts` gives `host_key`: plain entries by their first literal
/// pattern (`[host]:port` shown as `host:port`); hashed entries by the first of
/// `candidates` whose HMAC matches, else "hashed entry, name not recovered".
/// `@cert-authority` and `@revoked` lines never name a host.
pub fn host_name(host_key: &[u8], files: &[PathBuf], candidates: &[String]) -> Option<String> {
    let key = KeyData::decode(&mut &host_key[..]).ok()?;
    let mut hashed_unnamed = false;
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for (_, entry) in vmux_proto::ssh_config::known_hosts_entries(&text) {
            if entry.marker().is_some() || entry.public_key().key_data() != &key {
                continue;
            }
            match entry.host_patterns() {
                ssh_key::known_hosts::HostPatterns::Patterns(p) => {
                    if let Some(name) = p.iter().find_map(|p| literal(p)) {
                        return Some(name);
                    }
                }
                ssh_key::known_hosts::HostPatterns::HashedName { salt, hash } => {
                    let found = candidates.iter().find(|c| {
                        crate::hostnames::hashed_matches(salt.as_slice(), hash.as_slice(), c)
                    });
                    match found.and_then(|c| literal(c)) {
                        Some(name) => return Some(name),
                        None => hashed_unnamed = true,
                    }
                }
            }
        }
    }
    hashed_unnamed.then(|| "hashed entry, name not recovered".into())
}

/// A pattern that names one host: no negation, no wildcard.
fn literal(p: &str) -> Option<String> {
    if p.starts_with('!') || p.contains(['*', '?']) {
        return None;
    }
    // `[host]:port` as `host:port`, `[host]:22` as `host`: one name for one host.
    Some(vmux_proto::ssh_config::canonical_name(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(literal("github.com").as_deref(), Some("github.com"));
        assert_eq!(literal("[h]:2222").as_deref(), Some("h:2222"));
        assert_eq!(literal("[h]:22").as_deref(), Some("h"));
        assert_eq!(literal("*.example.com"), None);
        assert_eq!(literal("!bad"), None);
    }

    #[test]
    fn no_binding_is_unknown_and_bad_signature_refuses() {
        let p = Parsed {
            kind: "login",
            session_id: Some(b"sid".to_vec()),
            ..Default::default()
        };
        assert_eq!(resolve(&[], &p).unwrap().quality, "unknown");
        let bad = Binding {
            bind: SessionBind {
                host_key: vec![1, 2, 3],
                session_id: b"sid".to_vec(),
                signature: vec![],
                is_forwarding: false,
            },
            signature_ok: Some(false),
            name: None,
            fingerprint: fingerprint(&[1, 2, 3]),
        };
        assert_eq!(resolve(&[bad], &p), Err(BindingError::BadSignature));
    }
}
