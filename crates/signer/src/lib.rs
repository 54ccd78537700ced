//! The vmux signer: the device that holds the keys.
//!
//! A request's path, one file each: `listener` (accept, bounds on unauthenticated
//! work in `guard`, Noise, Hello) → `session` (one paired device's link; `pair` for a
//! new one) → `request` (`window`, `inspect`, queue, decide, record, sign; `cert` for a
//! session certificate, issued by `ca`) → `keystore`. `signer` is the shared state
//! under them, `queue` what waits for a person. The surfaces (`sheet`, `prompt`,
//! `control`, `askpass`, `desktop`) sit above `decide`, the one way anything is
//! decided, and show requests with `describe`. `state` is what survives a restart.
//! ARCHITECTURE.md at the repository root maps both devices.

pub mod askpass;
pub mod ca;
pub mod control;
pub mod decide;
pub mod describe;
pub mod desktop;
pub mod error;
pub mod guard;
pub mod hosts;
pub mod keys;
pub mod keystore;
pub mod listener;
pub mod mute;
pub mod nonces;
pub mod pair;
pub mod prompt;
pub mod queue;
pub mod reach;
pub mod request;
pub mod session;
pub mod sheet;
pub mod signer;
pub mod state;
pub mod verify;

pub use error::SignerError;
pub use queue::{Decision, Queue};
pub use signer::Signer;
pub use state::SignerHome;
