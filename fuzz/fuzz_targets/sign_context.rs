//! The data-to-sign classifier (`vmux_agent::context::parse`): the `data` field of a
//! SIGN_REQUEST, chosen by the client, shown to the person approving the signature.
//!
//! Covers: `parse` on arbitrary bytes (SSHSIG blobs, RFC 4252 userauth requests incl.
//! `publickey-hostbound-v00@openssh.com`, garbage), plus consistency of the result:
//! the kind is one of `login`/`sshsig`/`malformed`/`unknown` and exactly the fields
//! that kind promises are set (`malformed`: starts like a userauth request, does not
//! parse as one; refused by the signer, never shown as unrecognised data).
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
            // The user exactly as sshd reads it; as text only when it is UTF-8.
            assert!(p.session_id.is_some() && p.user_bytes.is_some());
            let bytes = p.user_bytes.as_deref().unwrap_or_default();
            assert_eq!(p.user.as_deref(), std::str::from_utf8(bytes).ok());
            assert!(p.namespace.is_none());
        }
        "unknown" | "malformed" => {
            assert!(p.session_id.is_none() && p.user.is_none());
            assert!(p.namespace.is_none() && p.host_key.is_none());
            // Only data that starts like a userauth request is called malformed.
            let n = data
                .get(..4)
                .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
            let starts_like_userauth =
                n.is_some_and(|n| (20..=64).contains(&n) && data.get(4 + n) == Some(&50));
            assert_eq!(p.kind == "malformed", starts_like_userauth);
        }
        other => panic!("unexpected kind {other:?}"),
    }
});
