//! The SOCKS requests `vmux ssh -D` (and `-R [bind:]port`) read from whoever reaches the
//! listening port (`vmux_client::socks`): greeting and request, SOCKS5 and SOCKS4/4a.
//! Every call returns, never panics; what parses used no more bytes than it was given
//! and names a printable host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_client::socks::{greeting5, request4, request5, Step};

fuzz_target!(|data: &[u8]| {
    for step in [request5(data), request4(data)].into_iter().flatten() {
        if let Step::Done(t, used) = step {
            assert!(used <= data.len());
            assert!(!t.host.is_empty() && t.host.chars().all(|c| c.is_ascii_graphic()));
        }
    }
    if let Ok(Step::Done((), used)) = greeting5(data) {
        assert!(used <= data.len());
        let _ = request5(&data[used..]);
    }
    let _ =
        vmux_client::socks::parse_bind(&String::from_utf8_lossy(data), data.first() == Some(&1));
});
