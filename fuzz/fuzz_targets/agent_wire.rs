//! ssh-agent wire protocol (`vmux_agent::wire`), the bytes any local process can write
//! to the agent socket.
//!
//! Covers: `parse_request` on the input as a message body; `parse_session_bind` on the
//! contents of a parsed `session-bind@openssh.com` extension and on the raw input;
//! for every request that parses, re-encoding it by hand gives back exactly the input
//! (the decoder accepts only canonical encodings and refuses trailing bytes);
//! `encode_response` on responses built from the input (identities from chunks,
//! signature, extension), checking the length prefix equals the body length and the
//! body starts with the right message type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_agent::wire::{self, Request, Response};

fn string(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// The canonical encoding of a request, where the wire format fixes it.
fn reencode(kind: u8, req: &Request) -> Option<Vec<u8>> {
    let mut m = vec![kind];
    match req {
        Request::RequestIdentities | Request::RemoveAllIdentities => {}
        Request::Sign {
            key_blob,
            data,
            flags,
        } => {
            string(&mut m, key_blob);
            string(&mut m, data);
            m.extend_from_slice(&flags.to_be_bytes());
        }
        Request::RemoveIdentity { key_blob } => string(&mut m, key_blob),
        Request::Lock { passphrase } | Request::Unlock { passphrase } => string(&mut m, passphrase),
        Request::Extension { name, contents } => {
            string(&mut m, name.as_bytes());
            m.extend_from_slice(contents);
        }
        // ADD_* are refused without reading their contents; unknown types likewise.
        Request::AddKey | Request::Unknown(_) => return None,
    }
    Some(m)
}

fn check_encoded(resp: &Response, kind: u8) {
    let out = wire::encode_response(resp);
    assert!(out.len() >= 5, "response shorter than prefix + type");
    let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
    assert_eq!(len, out.len() - 4, "length prefix != body length");
    assert_eq!(out[4], kind, "wrong message type");
}

fuzz_target!(|data: &[u8]| {
    // 1. Requests.
    match wire::parse_request(data) {
        Ok(req) => {
            if let Some(m) = reencode(data[0], &req) {
                assert_eq!(m, data, "request did not re-encode to its input: {req:?}");
            }
            if let Request::Extension { name, contents } = &req {
                if name == "session-bind@openssh.com" {
                    let _ = wire::parse_session_bind(contents);
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // 2. session-bind contents directly.
    if let Ok(b) = wire::parse_session_bind(data) {
        let mut m = vec![];
        string(&mut m, &b.host_key);
        string(&mut m, &b.session_id);
        string(&mut m, &b.signature);
        // ssh-encoding decodes any nonzero byte as true; only the prefix is canonical.
        assert_eq!(&m[..], &data[..data.len() - 1]);
        assert_eq!(b.is_forwarding, data[data.len() - 1] != 0);
    }

    // 3. Responses built from the input.
    let ids: Vec<(Vec<u8>, String)> = data
        .split(|&b| b == 0xff)
        .map(|chunk| {
            let (blob, comment) = chunk.split_at(chunk.len() / 2);
            (blob.to_vec(), String::from_utf8_lossy(comment).into_owned())
        })
        .collect();
    check_encoded(&Response::Identities(ids), wire::IDENTITIES_ANSWER);
    check_encoded(&Response::Signature(data.to_vec()), wire::SIGN_RESPONSE);
    let (name, contents) = data.split_at(data.len() / 3);
    check_encoded(
        &Response::Extension {
            name: String::from_utf8_lossy(name).into_owned(),
            contents: contents.to_vec(),
        },
        wire::EXTENSION_RESPONSE,
    );
    check_encoded(&Response::Success, wire::SUCCESS);
    check_encoded(&Response::Failure, wire::FAILURE);
    check_encoded(&Response::ExtensionFailure, wire::EXTENSION_FAILURE);
});
