//! The vmux agent: an ssh-agent that holds no long-term private key.
//!
//! A request's path: `socket` (Unix socket, same-uid peers) → `session` (one client
//! connection: agent protocol via `wire`, session bindings) → `forward` (pick the
//! signer that holds the key, build the SignRequest, log it) → `link` (Noise link to
//! that signer). `pair` pins a new signer; `state` is what survives a restart;
//! `upstream` passes keys vmux does not hold to another agent.

pub mod cert;
pub mod context;
pub mod destination;
pub mod error;
pub mod forward;
pub mod hostnames;
pub mod link;
pub mod pair;
pub mod requester;
pub mod session;
pub mod socket;
pub mod state;
pub mod upstream;
pub mod wake;
pub mod wire;

pub use error::AgentError;
pub use forward::Agent;
pub use state::AgentHome;
