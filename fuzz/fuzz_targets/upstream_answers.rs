//! What an upstream agent answers the vmux agent (`vmux_agent::upstream`): another
//! program's bytes. The key list is parsed (bounded count, no trailing bytes), and a
//! sign, add, remove or lock answer is checked before it is passed on to the client.
//! Every call returns, never panics; a parsed list holds at most MAX_IDENTITIES keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_agent::upstream::{answer_ok, parse_identities, MAX_IDENTITIES};

fuzz_target!(|data: &[u8]| {
    if let Ok(ids) = parse_identities(data) {
        assert!(ids.len() <= MAX_IDENTITIES);
    }
    if let Some((&request, body)) = data.split_first() {
        if answer_ok(request, body) {
            assert!(!body.is_empty());
        }
    }
});
