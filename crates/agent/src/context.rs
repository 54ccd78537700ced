//! What the data to sign is; the parser is shared with the signer (`vmux_proto::sshdata`).

pub use vmux_proto::sshdata::{parse, Parsed};
