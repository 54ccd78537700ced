//! What a peer hands us beyond the frame layer: a certificate answer from a signer's CA
//! (`vmux_agent::cert::SessionCert::from_response`), a server's session binding
//! (`Binding::check` verifies its signature, `destination::resolve` compares it with the
//! userauth request), and a control-socket request (`ControlRequest` JSON).
//!
//! The first byte picks the parser; the rest is its input. Every call must return, never
//! panic; a certificate is only ever accepted for the key we made.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_agent::{cert, context, destination, wire};
use vmux_proto::envelope::CertificateResponse;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            // Split the rest into certificate and CA key at a byte chosen by the input.
            let cut = rest
                .first()
                .map(|&b| b as usize)
                .unwrap_or(0)
                .min(rest.len());
            let (ca, cert_blob) = rest.split_at(cut);
            let resp = CertificateResponse {
                request_id: uuid::Uuid::nil(),
                certificate: Some(cert_blob.to_vec()),
                ca_public_key: Some(ca.to_vec()),
                valid_after: 0,
                valid_before: 0,
                error: None,
                message: None,
            };
            // A certificate is accepted only for the key we just made: never for these bytes.
            let accepted = cert::SessionCert::from_response(cert::ephemeral_key(), &resp, "s");
            assert!(
                accepted.is_err(),
                "a certificate for another key was accepted"
            );
        }
        1 => {
            if let Ok(b) = wire::parse_session_bind(rest) {
                let binding = destination::Binding::check(b.clone(), &[], &[]);
                let parsed = context::parse(rest);
                let _ = destination::resolve(&[binding.clone(), binding], &parsed);
            }
        }
        _ => {
            let _ = serde_json::from_slice::<vmux_signer::control::ControlRequest>(rest);
        }
    }
});
