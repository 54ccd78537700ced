//! Link framing and envelopes (`vmux_proto::frame`, `vmux_proto::Envelope`): the
//! decrypted plaintext a paired peer sends over the Noise link.
//!
//! Covers: `FrameBuffer` fed the input in chunks whose size comes from the first byte,
//! draining `next_frame` after every push until `None`/`Err`; the frames (and where an
//! error stopped the stream) must equal those from pushing the input in one go.
//! `Envelope::from_json` on every frame and on the whole input; an envelope that
//! decodes must survive `to_json` → `from_json` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmux_proto::frame::{FrameBuffer, MAX_FRAME};
use vmux_proto::Envelope;

/// Frames in order, and whether the stream ended with an error.
fn drain(fb: &mut FrameBuffer, frames: &mut Vec<Vec<u8>>) -> bool {
    loop {
        match fb.next_frame() {
            Ok(Some(f)) => {
                assert!(f.len() <= MAX_FRAME);
                frames.push(f);
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

fn envelope(bytes: &[u8]) {
    if let Ok(e) = Envelope::from_json(bytes) {
        let j = e.to_json();
        let back = Envelope::from_json(&j)
            .unwrap_or_else(|err| panic!("re-encoded envelope does not decode: {err}"));
        assert_eq!(back, e, "envelope changed across to_json/from_json");
    }
}

fuzz_target!(|data: &[u8]| {
    envelope(data);

    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;

    let mut chunked = Vec::new();
    let mut fb = FrameBuffer::default();
    let mut chunked_err = false;
    for chunk in stream.chunks(step) {
        fb.push(chunk);
        if drain(&mut fb, &mut chunked) {
            chunked_err = true;
            break;
        }
    }

    let mut whole = Vec::new();
    let mut fb = FrameBuffer::default();
    fb.push(stream);
    let whole_err = drain(&mut fb, &mut whole);

    assert_eq!(chunked, whole, "chunking changed the frames");
    assert_eq!(
        chunked_err, whole_err,
        "chunking changed where the stream failed"
    );

    for f in &whole {
        envelope(f);
    }
});
