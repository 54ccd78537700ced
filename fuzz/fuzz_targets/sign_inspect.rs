//! The signer's inspection of a sign request from a paired device
//! (`vmux_signer::request::inspect::examine`): the data to sign, the device's claims, and the
//! session bindings it sends, all chosen by a possibly hostile peer; plus the signer's
//! host-pin file parser and the escaping of peer text.
//!
//! Invariants: never panics; a destination is `verified` only when a pin names the
//! bound key; a `new` destination never comes from an unverifiable binding; every text
//! shown is free of control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_proto::envelope::{Context, Origin, SessionBinding, SignRequest};
use vmux_signer::hosts::HostPins;

/// Cut `input` into length-prefixed pieces (one length byte each).
fn pieces(mut input: &[u8], n: usize) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for _ in 0..n {
        let Some((&len, rest)) = input.split_first() else {
            out.push(vec![]);
            continue;
        };
        let len = (len as usize).min(rest.len());
        out.push(rest[..len].to_vec());
        input = &rest[len..];
    }
    out.push(input.to_vec());
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let p = pieces(rest, 6);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let pins = HostPins::parse(&text(&p[5]), std::path::Path::new("fuzz"));
    let bindings: Vec<SessionBinding> = (0..(flags % 3) as usize)
        .map(|i| SessionBinding {
            host_key: p[1].clone(),
            session_id: if i == 0 { p[2].clone() } else { p[3].clone() },
            signature: p[4].clone(),
            is_forwarding: flags & 0x10 != 0,
        })
        .collect();
    let req = SignRequest {
        request_id: uuid::Uuid::nil(),
        key_blob: p[3].clone(),
        algorithm: String::new(),
        flags: 0,
        device_id: String::new(),
        device_name: text(&p[4]),
        origin: if flags & 0x20 != 0 {
            Origin::Client
        } else {
            Origin::Agent
        },
        data: p[6].clone(),
        nonce: vec![],
        issued: 0,
        expires: 0,
        context: Context {
            kind: ["", "login", "sshsig", "unknown", "git"][(flags as usize >> 2) % 5].into(),
            host: (flags & 0x40 != 0).then(|| text(&p[0])),
            user: (flags & 0x80 != 0).then(|| text(&p[2])),
            ..Default::default()
        },
        bindings,
    };
    if let Ok(seen) = vmux_signer::request::inspect::examine(&req, &pins) {
        if let Some((shown, quality, warning)) = seen.destination() {
            for t in [shown, warning.unwrap_or("")] {
                assert!(
                    !t.chars().any(|c| c.is_control()),
                    "control character shown: {t:?}"
                );
            }
            if quality == "verified" {
                assert!(!pins
                    .names_for(&req.bindings.last().unwrap().host_key)
                    .is_empty());
            }
        }
    }
    let shown = vmux_proto::text::field(&text(rest));
    assert!(!shown.chars().any(|c| c.is_control()));
});
