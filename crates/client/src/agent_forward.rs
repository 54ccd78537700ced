//! `-A`: the server's side gets an agent (`auth-agent@openssh.com` channels) that
//! reaches the same signer through this client. Each channel is one agent connection
//! served by the agent's own session code (`vmux_agent::session`), on this client's
//! paired device, and bound first to this client's own session with the server,
//! marked as forwarding, as OpenSSH's ssh binds a forwarded agent connection
//! (PROTOCOL.agent, session-bind `is_forwarding`). The signer therefore shows what
//! comes through it as "forwarded via" this host, from its own pins, and the session
//! certificate (`--cert`) never signs for it.

use russh::client::Msg;
use russh::Channel;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vmux_agent::agent::Caller;
use vmux_agent::destination::Binding;
use vmux_agent::session::Session;
use vmux_agent::wire::{self, SessionBind};
use vmux_agent::Agent;
use vmux_proto::envelope::SessionBinding;

/// What a forwarded agent connection is served with.
#[derive(Clone)]
pub struct Forwarded {
    pub agent: Arc<Agent>,
    /// This client's session with the server the agent is forwarded to.
    pub hop: Binding,
    pub requester: Option<String>,
}

impl Forwarded {
    /// For the connection to `host` (as the signer is told it: `host:port`), whose key
    /// exchange gave `binding`.
    pub fn new(agent: Arc<Agent>, binding: &SessionBinding, host: &str) -> Forwarded {
        let bind = SessionBind {
            host_key: binding.host_key.clone(),
            session_id: binding.session_id.clone(),
            signature: binding.signature.clone(),
            is_forwarding: true,
        };
        let signature_ok = vmux_proto::keys::verify_session_bind(
            &bind.host_key,
            &bind.session_id,
            &bind.signature,
        );
        let requester = vmux_agent::requester::describe(Some(std::process::id() as i32), 4)
            .map(|r| format!("agent forwarded to {host} by {r}"));
        Forwarded {
            agent,
            hop: Binding {
                fingerprint: vmux_agent::destination::fingerprint(&bind.host_key),
                bind,
                signature_ok,
                name: Some(host.to_string()),
            },
            requester,
        }
    }

    /// Serve one forwarded agent connection until either side closes it.
    pub fn serve(&self, channel: Channel<Msg>) {
        let mut session = Session::new(
            self.agent.clone(),
            Caller {
                pid: None,
                requester: self.requester.clone(),
                // A forwarded agent's requests never write to a terminal here.
                tty: None,
                ..Default::default()
            },
        );
        session.bindings.push(self.hop.clone());
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            let mut len = [0u8; 4];
            loop {
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let n = u32::from_be_bytes(len) as usize;
                if n > wire::MAX_MESSAGE {
                    tracing::info!("forwarded agent: a message of {n} bytes is over the limit");
                    return;
                }
                let mut msg = vec![0u8; n];
                if stream.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let resp = session.handle(&msg).await;
                if stream
                    .write_all(&wire::encode_response(&resp))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}
