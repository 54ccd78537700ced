//! The upstream agent in `vmux agent status`: asked directly, so the status says
//! whether it is there now and which keys it holds (not held by a signer).

use vmux_agent::status::Status;
use vmux_agent::AgentHome;
use vmux_proto::identity::key_fingerprint;

/// The upstream as it answered just now.
pub struct Report {
    socket: Option<String>,
    forwarded: bool,
    answer: Result<Vec<(Vec<u8>, String)>, String>,
}

impl Report {
    /// Ask the upstream the running agent uses (else the one its config names).
    pub async fn probe(home: &AgentHome, running: Option<&Status>) -> anyhow::Result<Report> {
        let configured = vmux_agent::upstream::from_config(&home.load_config()?);
        let (socket, forwarded) = match running {
            Some(s) => match &s.upstream {
                Some(u) => (Some(u.socket.clone()), u.forwarded),
                None => (None, false),
            },
            None => match &configured {
                Some(u) => (Some(u.socket.display().to_string()), u.forwarded),
                None => (None, false),
            },
        };
        let answer = match &socket {
            Some(p) => vmux_agent::upstream::probe(p.as_ref())
                .await
                .map_err(|e| e.to_string()),
            None => Ok(vec![]),
        };
        Ok(Report {
            socket,
            forwarded,
            answer,
        })
    }

    fn keys(&self) -> &[(Vec<u8>, String)] {
        self.answer.as_deref().unwrap_or_default()
    }

    /// The upstream's keys as `--json` lists them, after the signers'.
    pub fn keys_json(&self) -> Vec<serde_json::Value> {
        self.keys()
            .iter()
            .map(|(blob, comment)| {
                serde_json::json!({
                    "fingerprint": key_fingerprint(blob),
                    "algorithm": algorithm(blob),
                    "comment": comment,
                    "provider": "upstream",
                    "providerKind": "upstream",
                    "signer": null,
                    "heldBy": "upstream",
                    "note": "not held by a signer",
                })
            })
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        match &self.socket {
            None => serde_json::Value::Null,
            Some(s) => serde_json::json!({
                "socket": s,
                "forwarded": self.forwarded,
                "reachable": self.answer.is_ok(),
                "error": self.answer.as_ref().err(),
                "keys": self.keys().len(),
            }),
        }
    }

    pub fn print(&self) {
        let Some(socket) = &self.socket else {
            return;
        };
        match &self.answer {
            Ok(keys) => println!(
                "upstream agent {socket}: {} key(s), not held by a signer: they sign without asking anyone, outside vmux's promise{}",
                keys.len(),
                if self.forwarded { "; forwarded connections see them" } else { "" }
            ),
            Err(e) => println!(
                "upstream agent {socket}: gone ({e}); its keys are not listed, vmux's own keys are unaffected"
            ),
        }
        for (blob, comment) in self.keys() {
            println!(
                "  {}  {}  {}  [upstream: not held by a signer]",
                key_fingerprint(blob),
                vmux_proto::text::field(comment),
                algorithm(blob)
            );
        }
    }
}

fn algorithm(blob: &[u8]) -> String {
    ssh_key::PublicKey::from_bytes(blob)
        .map(|k| k.algorithm().as_str().to_string())
        .unwrap_or_else(|_| "?".into())
}
