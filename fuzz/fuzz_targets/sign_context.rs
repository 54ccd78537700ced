//! The data-to-sign classifier (`vmux_agent::context::parse`): the `data` field of a
//! SIGN_REQUEST, chosen by the client, shown to the person approving the signature.
//!
//! Covers: `parse` on arbitrary bytes (SSHSIG blobs, RFC 4252 userauth requests incl.
//! `publickey-hostbound-v00@openssh.com`, garbage), plus consistency of the result:
//! the kind is one of `login`/`sshsig`/`unknown` and exactly the fields that kind
//! promises are set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_agent::context;

fuzz_target!(|data: &[u8]| {
    let p = context::parse(data);
    match p.kind {
        "sshsig" => {
            assert!(data.starts_with(b"SSHSIG"));
            assert!(p.namespace.is_some());
            assert!(p.session_id.is_none() && p.user.is_none() && p.host_key.is_none());
        }
        "login" => {
            assert!(p.session_id.is_some() && p.user.is_some());
            assert!(p.namespace.is_none());
        }
        "unknown" => {
            assert!(p.session_id.is_none() && p.user.is_none());
            assert!(p.namespace.is_none() && p.host_key.is_none());
        }
        other => panic!("unexpected kind {other:?}"),
    }
});
