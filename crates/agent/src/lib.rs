//! The vmux agent: an ssh-agent that holds no long-term private key.
//!
//! A request's path: `socket` (Unix socket, same-uid peers) → `session` (one client
//! connection: agent protocol via `wire`, session bindings) → `forward` (sign here with
//! the session certificate, or build the SignRequest for the signer that holds the key,
//! tell the person what it waits for, log it) → `route` (the link to that signer:
//! dial, follow, wake) → `link` (the Noise link). `agent` is the shared state under
//! them; `cert` decides the session certificate's life and `renew` asks for it;
//! `feedback`/`notify` tell the person, `status` is what every surface reads, `tray`
//! shows it on the desktop. `pair` pins a new signer; `state` is what survives a restart;
//! `upstream` passes keys vmux does not hold to another agent.
//! ARCHITECTURE.md at the repository root maps both devices.

pub mod agent;
pub mod cert;
pub mod context;
pub mod destination;
pub mod error;
pub mod feedback;
pub mod forward;
pub mod hostnames;
pub mod link;
pub mod notify;
pub mod pair;
pub mod passthrough;
pub mod reach;
pub mod renew;
pub mod requester;
pub mod route;
pub mod session;
pub mod socket;
pub mod state;
pub mod status;
pub mod tray;
pub mod upstream;
pub mod wake;
pub mod wire;

pub use agent::Agent;
pub use error::AgentError;
pub use state::AgentHome;
