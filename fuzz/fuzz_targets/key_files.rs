//! What a signer's key directory may hold besides OpenSSH keys: a `TSS2 PRIVATE KEY`
//! PEM (`keystore::tss2`, DER inside) and a PKCS#11 key reference (`pkcs11::parse_ref`).
//! Files there are untrusted bytes: parsing returns or fails, never panics, and what
//! parses re-encodes to what was parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_signer::keystore::{pkcs11, tss2::TpmKey};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(k) = TpmKey::from_der(rest) {
                assert_eq!(TpmKey::from_der(&k.to_der()).as_ref(), Ok(&k));
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(k) = TpmKey::from_pem(&text) {
                assert_eq!(TpmKey::from_pem(&k.to_pem()).as_ref(), Ok(&k));
            }
        }
        _ => {
            let _ = pkcs11::parse_ref(&String::from_utf8_lossy(rest));
        }
    }
});
