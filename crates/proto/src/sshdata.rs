//! What the data to sign is: an SSH userauth request (RFC 4252 §7, and OpenSSH's
//! `publickey-hostbound-v00@openssh.com`) or an SSHSIG blob (OpenSSH PROTOCOL.sshsig).
//! Untrusted bytes: every read is bounded and a failure means `unknown`. Both the agent
//! (to label its claims) and the signer (to decide what it shows) parse with this.

use ssh_encoding::{Decode, Reader};

const SSH_MSG_USERAUTH_REQUEST: u8 = 50;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// `login`, `sshsig`, `unknown`, or `malformed` (it starts like a userauth request
    /// but does not parse as one: refused, never shown as unrecognised data).
    pub kind: &'static str,
    pub session_id: Option<Vec<u8>>,
    /// The user, when it is valid UTF-8.
    pub user: Option<String>,
    /// The user exactly as the bytes say (sshd reads these).
    pub user_bytes: Option<Vec<u8>>,
    pub namespace: Option<String>,
    /// For hostbound userauth: the server host key the client says it is talking to.
    pub host_key: Option<Vec<u8>>,
    /// Userauth: the public key blob the request is for.
    pub key_blob: Option<Vec<u8>>,
    /// Userauth: the service asked for (`ssh-connection`).
    pub service: Option<String>,
    /// SSHSIG: the hash algorithm of the signed message (`sha256`, `sha512`).
    pub hash_alg: Option<String>,
}

pub fn parse(data: &[u8]) -> Parsed {
    if let Some(p) = parse_sshsig(data) {
        return p;
    }
    let kind = if looks_like_userauth(data) {
        "malformed"
    } else {
        "unknown"
    };
    parse_userauth(data).unwrap_or(Parsed {
        kind,
        ..Default::default()
    })
}

/// A session id of a size SSH makes (SHA-1 to SHA-512) followed by
/// SSH_MSG_USERAUTH_REQUEST: the start of a userauth request.
fn looks_like_userauth(data: &[u8]) -> bool {
    let Some(len) = data.get(..4) else {
        return false;
    };
    let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    (20..=64).contains(&n) && data.get(4 + n) == Some(&SSH_MSG_USERAUTH_REQUEST)
}

fn parse_sshsig(data: &[u8]) -> Option<Parsed> {
    let mut r = data.strip_prefix(b"SSHSIG")?;
    let namespace = String::decode(&mut r).ok()?;
    let _reserved = Vec::<u8>::decode(&mut r).ok()?;
    let hash_alg = String::decode(&mut r).ok()?;
    let _hash = Vec::<u8>::decode(&mut r).ok()?;
    r.is_finished().then_some(Parsed {
        kind: "sshsig",
        namespace: Some(namespace),
        hash_alg: Some(hash_alg),
        ..Default::default()
    })
}

fn parse_userauth(mut r: &[u8]) -> Option<Parsed> {
    let session_id = Vec::<u8>::decode(&mut r).ok()?;
    if u8::decode(&mut r).ok()? != SSH_MSG_USERAUTH_REQUEST {
        return None;
    }
    let user = Vec::<u8>::decode(&mut r).ok()?;
    let service = String::decode(&mut r).ok()?;
    let method = String::decode(&mut r).ok()?;
    if !bool::decode(&mut r).ok()? {
        return None;
    }
    let _alg = String::decode(&mut r).ok()?;
    let key = Vec::<u8>::decode(&mut r).ok()?;
    let host_key = match method.as_str() {
        "publickey" => None,
        "publickey-hostbound-v00@openssh.com" => Some(Vec::<u8>::decode(&mut r).ok()?),
        _ => return None,
    };
    r.is_finished().then_some(Parsed {
        kind: "login",
        session_id: Some(session_id),
        user: String::from_utf8(user.clone()).ok(),
        user_bytes: Some(user),
        namespace: None,
        host_key,
        key_blob: Some(key),
        service: Some(service),
        hash_alg: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_encoding::Encode;

    fn s(v: &mut Vec<u8>, b: &[u8]) {
        b.encode(v).unwrap();
    }

    #[test]
    fn userauth_and_sshsig() {
        let mut d = vec![];
        s(&mut d, b"sid");
        d.push(50);
        s(&mut d, b"alice");
        s(&mut d, b"ssh-connection");
        s(&mut d, b"publickey-hostbound-v00@openssh.com");
        d.push(1);
        s(&mut d, b"ssh-ed25519");
        s(&mut d, b"keyblob");
        s(&mut d, b"hostkey");
        let p = parse(&d);
        assert_eq!(p.kind, "login");
        assert_eq!(p.user.as_deref(), Some("alice"));
        assert_eq!(p.host_key.as_deref(), Some(&b"hostkey"[..]));

        let mut g = b"SSHSIG".to_vec();
        s(&mut g, b"git");
        s(&mut g, b"");
        s(&mut g, b"sha512");
        s(&mut g, &[0u8; 64]);
        assert_eq!(parse(&g).namespace.as_deref(), Some("git"));
        assert_eq!(parse(b"random").kind, "unknown");
        assert_eq!(parse(&d[..d.len() - 3]).kind, "unknown");
        // A real session id, then a userauth request that does not parse: malformed.
        let mut m = vec![];
        s(&mut m, &[7u8; 32]);
        m.push(50);
        s(&mut m, b"root");
        m.extend_from_slice(b"\xff\xff\xff\xff");
        assert_eq!(parse(&m).kind, "malformed");
        // A user that is not UTF-8 is kept as bytes.
        let mut u = vec![];
        s(&mut u, &[7u8; 32]);
        u.push(50);
        s(&mut u, b"name:\xff");
        s(&mut u, b"ssh-connection");
        s(&mut u, b"publickey");
        u.push(1);
        s(&mut u, b"ssh-ed25519");
        s(&mut u, b"keyblob");
        let p = parse(&u);
        assert_eq!((p.kind, p.user.is_none()), ("login", true));
        assert_eq!(p.user_bytes.as_deref(), Some(&b"name:\xff"[..]));
    }
}
