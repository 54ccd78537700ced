//! The ssh-agent wire protocol (draft-miller-ssh-agent / RFC 9987 §3 and OpenSSH's
//! PROTOCOL.agent): `uint32 length ‖ byte type ‖ contents`. Decoding is ours, on
//! ssh-encoding, and refuses anything over 256 KiB as OpenSSH's agent does.

use ssh_encoding::{Decode, Encode, Reader};
use zeroize::Zeroizing;

/// The largest message accepted, as in OpenSSH (`AGENT_MAX_LEN`).
pub const MAX_MESSAGE: usize = 256 * 1024;

pub const FAILURE: u8 = 5;
pub const SUCCESS: u8 = 6;
pub const REQUEST_IDENTITIES: u8 = 11;
pub const IDENTITIES_ANSWER: u8 = 12;
pub const SIGN_REQUEST: u8 = 13;
pub const SIGN_RESPONSE: u8 = 14;
pub const ADD_IDENTITY: u8 = 17;
pub const REMOVE_IDENTITY: u8 = 18;
pub const REMOVE_ALL_IDENTITIES: u8 = 19;
pub const ADD_SMARTCARD_KEY: u8 = 20;
pub const REMOVE_SMARTCARD_KEY: u8 = 21;
pub const LOCK: u8 = 22;
pub const UNLOCK: u8 = 23;
pub const ADD_ID_CONSTRAINED: u8 = 25;
pub const ADD_SMARTCARD_KEY_CONSTRAINED: u8 = 26;
pub const EXTENSION: u8 = 27;
pub const EXTENSION_FAILURE: u8 = 28;
pub const EXTENSION_RESPONSE: u8 = 29;

/// What a client asked.
#[derive(Debug, PartialEq)]
pub enum Request {
    RequestIdentities,
    Sign {
        key_blob: Vec<u8>,
        data: Vec<u8>,
        flags: u32,
    },
    /// ADD_IDENTITY and friends: this agent holds no keys, so they all fail.
    AddKey,
    RemoveIdentity {
        key_blob: Vec<u8>,
    },
    RemoveAllIdentities,
    Lock {
        passphrase: Zeroizing<Vec<u8>>,
    },
    Unlock {
        passphrase: Zeroizing<Vec<u8>>,
    },
    Extension {
        name: String,
        contents: Vec<u8>,
    },
    Unknown(u8),
}

/// What the agent answers.
#[derive(Debug, PartialEq)]
pub enum Response {
    Success,
    Failure,
    Identities(Vec<(Vec<u8>, String)>),
    Signature(Vec<u8>),
    ExtensionFailure,
    /// SSH_AGENT_EXTENSION_RESPONSE: the extension's name, then its contents.
    Extension {
        name: String,
        contents: Vec<u8>,
    },
    /// A body another agent answered (the upstream's), passed on as it is.
    Raw(Vec<u8>),
}

/// Why a message could not be understood.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum WireError {
    #[error("empty agent message")]
    Empty,
    #[error("agent message type {kind}: {reason}")]
    Malformed { kind: u8, reason: String },
}

fn malformed(kind: u8) -> impl Fn(ssh_encoding::Error) -> WireError {
    move |e| WireError::Malformed {
        kind,
        reason: e.to_string(),
    }
}

/// Decode one message body (the bytes after the length prefix).
pub fn parse_request(msg: &[u8]) -> Result<Request, WireError> {
    let (&kind, mut r) = msg.split_first().ok_or(WireError::Empty)?;
    let m = malformed(kind);
    let req = match kind {
        REQUEST_IDENTITIES => Request::RequestIdentities,
        SIGN_REQUEST => Request::Sign {
            key_blob: Vec::decode(&mut r).map_err(&m)?,
            data: Vec::decode(&mut r).map_err(&m)?,
            flags: u32::decode(&mut r).map_err(&m)?,
        },
        ADD_IDENTITY
        | ADD_ID_CONSTRAINED
        | ADD_SMARTCARD_KEY
        | ADD_SMARTCARD_KEY_CONSTRAINED
        | REMOVE_SMARTCARD_KEY => return Ok(Request::AddKey),
        REMOVE_IDENTITY => Request::RemoveIdentity {
            key_blob: Vec::decode(&mut r).map_err(&m)?,
        },
        REMOVE_ALL_IDENTITIES => Request::RemoveAllIdentities,
        LOCK => Request::Lock {
            passphrase: Zeroizing::new(Vec::decode(&mut r).map_err(&m)?),
        },
        UNLOCK => Request::Unlock {
            passphrase: Zeroizing::new(Vec::decode(&mut r).map_err(&m)?),
        },
        EXTENSION => {
            let name = String::decode(&mut r).map_err(&m)?;
            let contents = r.to_vec();
            r = &[];
            Request::Extension { name, contents }
        }
        other => return Ok(Request::Unknown(other)),
    };
    if !r.is_finished() {
        return Err(WireError::Malformed {
            kind,
            reason: format!("{} trailing bytes", r.remaining_len()),
        });
    }
    Ok(req)
}

/// Encode a response with its length prefix.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    let mut body: Vec<u8> = Vec::with_capacity(64);
    // Writing into a Vec cannot fail; lengths are bounded by what we put in.
    let put = |v: &mut Vec<u8>, b: &[u8]| b.encode(v).expect("encode into Vec");
    match resp {
        Response::Success => body.push(SUCCESS),
        Response::Failure => body.push(FAILURE),
        Response::ExtensionFailure => body.push(EXTENSION_FAILURE),
        Response::Identities(ids) => {
            body.push(IDENTITIES_ANSWER);
            body.extend_from_slice(&(ids.len() as u32).to_be_bytes());
            for (blob, comment) in ids {
                put(&mut body, blob);
                put(&mut body, comment.as_bytes());
            }
        }
        Response::Signature(sig) => {
            body.push(SIGN_RESPONSE);
            put(&mut body, sig);
        }
        Response::Extension { name, contents } => {
            body.push(EXTENSION_RESPONSE);
            put(&mut body, name.as_bytes());
            body.extend_from_slice(contents);
        }
        Response::Raw(b) => body.extend_from_slice(b),
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// `session-bind@openssh.com` (OpenSSH PROTOCOL.agent §1): the server host key, the
/// session identifier, the server's signature over it, and whether the connection
/// is a forwarded one.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionBind {
    pub host_key: Vec<u8>,
    pub session_id: Vec<u8>,
    pub signature: Vec<u8>,
    pub is_forwarding: bool,
}

pub fn parse_session_bind(mut r: &[u8]) -> Result<SessionBind, WireError> {
    let m = malformed(EXTENSION);
    let b = SessionBind {
        host_key: Vec::decode(&mut r).map_err(&m)?,
        session_id: Vec::decode(&mut r).map_err(&m)?,
        signature: Vec::decode(&mut r).map_err(&m)?,
        is_forwarding: bool::decode(&mut r).map_err(&m)?,
    };
    if !r.is_finished() {
        return Err(WireError::Malformed {
            kind: EXTENSION,
            reason: "trailing bytes after session-bind".into(),
        });
    }
    Ok(b)
}

/// Encode a list of strings, each as an SSH `string`.
pub fn encode_strings(items: &[&str]) -> Vec<u8> {
    let mut v = vec![];
    for s in items {
        s.as_bytes().encode(&mut v).expect("encode into Vec");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn sign_request_round_trip() {
        let mut m = vec![SIGN_REQUEST];
        m.extend(s(b"key"));
        m.extend(s(b"data"));
        m.extend(4u32.to_be_bytes());
        assert_eq!(
            parse_request(&m).unwrap(),
            Request::Sign {
                key_blob: b"key".to_vec(),
                data: b"data".to_vec(),
                flags: 4
            }
        );
        m.push(0);
        assert!(parse_request(&m).is_err());
    }

    #[test]
    fn truncated_and_empty_are_errors() {
        assert_eq!(parse_request(&[]), Err(WireError::Empty));
        let mut m = vec![SIGN_REQUEST];
        m.extend(100u32.to_be_bytes());
        m.extend(b"short");
        assert!(parse_request(&m).is_err());
        assert_eq!(parse_request(&[200]).unwrap(), Request::Unknown(200));
    }

    #[test]
    fn identities_encoding() {
        let out = encode_response(&Response::Identities(vec![(b"k".to_vec(), "c".into())]));
        assert_eq!(
            out,
            [
                &[0, 0, 0, 15, IDENTITIES_ANSWER, 0, 0, 0, 1][..],
                &s(b"k"),
                &s(b"c")
            ]
            .concat()
        );
    }

    #[test]
    fn session_bind() {
        let mut c = s(b"hk");
        c.extend(s(b"sid"));
        c.extend(s(b"sig"));
        c.push(1);
        let b = parse_session_bind(&c).unwrap();
        assert!(b.is_forwarding && b.session_id == b"sid");
        assert!(parse_session_bind(&c[..c.len() - 1]).is_err());
    }
}
