//! The vmux link: the messages an agent and a signer exchange (`envelope`), how they
//! are framed inside Noise transport messages (`frame`), the Noise XX session with
//! pinned static keys (`noise`), device identities and the pairing code (`identity`),
//! and the small on-disk helpers both daemons share (`store`, `journal`).

pub mod desktop;
pub mod discovery;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod identity;
pub mod journal;
pub mod keys;
pub mod local;
pub mod noise;
pub mod pairing;
pub mod reach;
pub mod ssh_config;
pub mod sshdata;
pub mod store;
pub mod text;
pub mod time;
pub mod wipe;

pub use envelope::{Envelope, ErrorCode, Message};
pub use error::ProtoError;
pub use identity::Identity;
pub use noise::{Link, LinkReader, LinkWriter};

/// Seconds since the Unix epoch, as used in every timestamp on the link.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the operating system has no random source");
    b
}
