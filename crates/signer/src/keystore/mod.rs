//! Where private keys live and sign. Backends implement [`Keystore`]; the rest of the
//! signer never touches key material.

pub mod software;

use vmux_proto::envelope::KeyRecord;
use vmux_proto::ErrorCode;

pub trait Keystore: Send + Sync {
    /// Public halves of every key, in a stable order.
    fn keys(&self) -> Vec<KeyRecord>;

    /// Sign `data` with the key whose public blob is `key_blob`; the result is an SSH
    /// signature blob. `flags` are the agent protocol's RSA hash flags.
    fn sign(&self, key_blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, ErrorCode>;
}
