//! Frames inside the Noise stream: `uint32 length ‖ JSON envelope`, capped at 1 MiB.
//!
//! A Noise transport message carries at most 65,535 bytes, so a frame is written as
//! the plaintext of one or more Noise messages and the reader reassembles it here.

use crate::ProtoError;

/// The largest frame either side accepts from a peer it has authenticated.
pub const MAX_FRAME: usize = 1 << 20;

/// The largest frame accepted before the peer is authenticated (its Hello, pairing
/// messages): a stranger's bytes cost at most this much to decode.
pub const MAX_PREAUTH_FRAME: usize = 4 * 1024;

/// `payload` with its length prefix.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, ProtoError> {
    if payload.len() > MAX_FRAME {
        return Err(ProtoError::FrameTooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Reassembles frames from decrypted Noise plaintext.
#[derive(Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    pub fn push(&mut self, plaintext: &[u8]) {
        self.buf.extend_from_slice(plaintext);
    }

    /// The next whole frame, `Ok(None)` while more bytes are needed, or an error when the
    /// announced length is over the cap (the stream cannot be trusted after that).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        self.next_frame_within(MAX_FRAME)
    }

    /// [`FrameBuffer::next_frame`] with a lower cap (`MAX_PREAUTH_FRAME` for strangers).
    pub fn next_frame_within(&mut self, limit: usize) -> Result<Option<Vec<u8>>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > limit.min(MAX_FRAME) {
            return Err(ProtoError::FrameTooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_joined_frames() {
        let mut all = encode(b"hello").unwrap();
        all.extend(encode(b"").unwrap());
        all.extend(encode(&[7u8; 70_000]).unwrap());
        let mut fb = FrameBuffer::default();
        let mut got = vec![];
        for chunk in all.chunks(999) {
            fb.push(chunk);
            while let Some(f) = fb.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], b"hello");
        assert!(got[1].is_empty());
        assert_eq!(got[2].len(), 70_000);
    }

    #[test]
    fn oversized_frame_is_refused() {
        let mut fb = FrameBuffer::default();
        fb.push(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(matches!(fb.next_frame(), Err(ProtoError::FrameTooLarge(_))));
        assert!(encode(&vec![0; MAX_FRAME + 1]).is_err());
    }
}
