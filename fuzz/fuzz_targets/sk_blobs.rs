//! Security-key blobs (`keystore::sk`): public key blobs as `.pub` files and key lists
//! carry them, and signature blobs as a store returns them, to be wrapped in the
//! security-key format. Untrusted bytes: parsing returns or fails, never panics; a
//! public key that parses re-encodes to the same bytes, and a wrapped signature
//! carries the flags and counter it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_signer::keystore::sk::{self, Curve, SkPublic};

fuzz_target!(|data: &[u8]| {
    if let Some(k) = SkPublic::parse(data) {
        assert_eq!(k.blob(), data);
        assert_eq!(
            SkPublic::of_inner(&k.inner_blob(), &k.application).as_ref(),
            Some(&k)
        );
    }
    if let Some(k) = SkPublic::of_inner(data, "ssh:") {
        assert_eq!(k.inner_blob(), data);
        assert_eq!(SkPublic::parse(&k.blob()).as_ref(), Some(&k));
    }
    let _ = sk::flags_and_counter(data);
    for curve in [Curve::P256, Curve::Ed25519] {
        if let Some(w) = sk::wrap_signature(curve, data, 0x05, 7) {
            assert_eq!(sk::flags_and_counter(&w), Some((0x05, 7)));
        }
    }
});
