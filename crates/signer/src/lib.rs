//! The vmux signer: the device that holds the keys.
//!
//! A request's path: `serve` (link server, pairing, checks) → `queue` (waits for a
//! person) → `approve` (control socket and terminal prompt that decide) → `keystore`
//! (signs); `ca` issues session certificates the same way. `state` is what survives a
//! restart.

pub mod approve;
pub mod askpass;
pub mod ca;
pub mod desktop;
pub mod error;
pub mod guard;
pub mod hosts;
pub mod inspect;
pub mod keys;
pub mod keystore;
pub mod pair;
pub mod queue;
pub mod replay;
pub mod serve;
pub mod sheet;
pub mod state;
pub mod verify;

pub use error::SignerError;
pub use queue::{Decision, Queue};
pub use serve::Signer;
pub use state::SignerHome;
