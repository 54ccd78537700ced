//! A hostile paired device: it holds a real agent's link identity (what malware running
//! as the workstation user can read) and speaks the link directly, so tests can make it
//! lie: reuse ids, cancel others' requests, claim what the data contradicts, forge
//! bindings, flood. Also builders for the bytes such a peer sends.

use super::vmux::T;
use std::path::Path;
use vmux_proto::envelope::*;
use vmux_proto::noise::{LinkReader, LinkWriter};

pub struct Peer {
    pub rt: tokio::runtime::Runtime,
    rx: LinkReader<tokio::net::TcpStream>,
    tx: LinkWriter<tokio::net::TcpStream>,
    pub identity: vmux_proto::Identity,
    pub name: String,
}

impl Peer {
    /// Speak the link as the paired agent under `agent_home` (its identity file).
    pub fn as_agent(agent_home: &Path, addr: &str, name: &str) -> Peer {
        let identity =
            vmux_proto::Identity::load_or_create(&agent_home.join("agent/identity")).unwrap();
        Peer::connect(identity, addr, name)
    }

    /// Connect with `identity` and send Hello; a paired peer gets the signer's Hello.
    pub fn connect(identity: vmux_proto::Identity, addr: &str, name: &str) -> Peer {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (rx, tx) = rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let link = vmux_proto::noise::connect(stream, &identity).await.unwrap();
            let (mut rx, mut tx) = (link.reader, link.writer);
            rx.authenticated();
            let hello = Message::Hello(Hello {
                device_id: identity.device_id(),
                device_name: name.into(),
                role: Role::Agent,
                software: "hostile test peer".into(),
                time: None,
            });
            tx.send(&Envelope::new(hello)).await.unwrap();
            (rx, tx)
        });
        Peer {
            rt,
            rx,
            tx,
            identity,
            name: name.into(),
        }
    }

    pub fn send(&mut self, m: Message) {
        let (rt, tx) = (&self.rt, &mut self.tx);
        rt.block_on(tx.send(&Envelope::new(m))).unwrap();
    }

    /// The next message that `pick` accepts, skipping others (Hello, Pong, …), within `T`.
    pub fn recv_where<R>(&mut self, mut pick: impl FnMut(Message) -> Option<R>) -> R {
        let (rt, rx) = (&self.rt, &mut self.rx);
        rt.block_on(async {
            loop {
                let env = tokio::time::timeout(T, rx.recv())
                    .await
                    .expect("no answer from the signer")
                    .expect("link failed");
                if let Some(r) = pick(env.message) {
                    return r;
                }
            }
        })
    }

    /// Whether the signer closes this link within `wait` (messages before that are
    /// skipped).
    pub fn closed_within(&mut self, wait: std::time::Duration) -> bool {
        let (rt, rx) = (&self.rt, &mut self.rx);
        rt.block_on(async {
            tokio::time::timeout(wait, async { while rx.recv().await.is_ok() {} })
                .await
                .is_ok()
        })
    }

    pub fn sign_response(&mut self, label: uuid::Uuid) -> SignResponse {
        self.recv_where(|m| match m {
            Message::SignResponse(r) if r.request_id == label => Some(r),
            _ => None,
        })
    }

    pub fn cert_response(&mut self, label: uuid::Uuid) -> CertificateResponse {
        self.recv_where(|m| match m {
            Message::CertificateResponse(r) if r.request_id == label => Some(*r),
            _ => None,
        })
    }

    /// A well-formed request (fresh nonce, 60 s window) for `key_blob` over `data`.
    pub fn sign_request(&self, label: uuid::Uuid, key_blob: &[u8], data: &[u8]) -> SignRequest {
        let now = vmux_proto::now_unix();
        SignRequest {
            request_id: label,
            key_blob: key_blob.to_vec(),
            algorithm: "ecdsa-sha2-nistp256".into(),
            flags: 0,
            device_id: self.identity.device_id(),
            device_name: self.name.clone(),
            origin: Origin::Agent,
            data: data.to_vec(),
            nonce: vmux_proto::random_bytes::<16>().to_vec(),
            issued: now,
            expires: now + 60,
            context: Context::default(),
            bindings: vec![],
            session_cert: false,
        }
    }

    pub fn cert_request(&self, label: uuid::Uuid, public_key: &[u8]) -> CertificateRequest {
        let now = vmux_proto::now_unix();
        CertificateRequest {
            request_id: label,
            public_key: public_key.to_vec(),
            validity_secs: 8 * 3600,
            principals: vec![],
            device_id: self.identity.device_id(),
            device_name: self.name.clone(),
            nonce: vmux_proto::random_bytes::<16>().to_vec(),
            issued: now,
            expires: now + 60,
        }
    }

    pub fn submit(&mut self, req: SignRequest) {
        self.send(Message::SignRequest(Box::new(req)));
    }
}

/// The signer's first key blob, from an agent's key cache.
pub fn signer_key_blob(agent_home: &Path) -> Vec<u8> {
    use base64::Engine;
    let keys: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(agent_home.join("agent/keys.json")).unwrap())
            .unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(keys[0]["publicKey"].as_str().unwrap())
        .unwrap()
}

fn sstr(v: &mut Vec<u8>, b: &[u8]) {
    v.extend_from_slice(&(b.len() as u32).to_be_bytes());
    v.extend_from_slice(b);
}

/// An SSH userauth request (RFC 4252 §7) as ssh asks an agent to sign it.
pub fn userauth(session_id: &[u8], user: &str, key_blob: &[u8]) -> Vec<u8> {
    userauth_bytes(session_id, user.as_bytes(), key_blob)
}

/// The same with a user name given as bytes (sshd reads bytes).
pub fn userauth_bytes(session_id: &[u8], user: &[u8], key_blob: &[u8]) -> Vec<u8> {
    let mut d = vec![];
    sstr(&mut d, session_id);
    d.push(50);
    sstr(&mut d, user);
    sstr(&mut d, b"ssh-connection");
    sstr(&mut d, b"publickey");
    d.push(1);
    sstr(&mut d, b"ecdsa-sha2-nistp256");
    sstr(&mut d, key_blob);
    d
}

/// An SSHSIG blob to sign (PROTOCOL.sshsig) in `namespace`.
pub fn sshsig_blob(namespace: &str, message: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut d = b"SSHSIG".to_vec();
    sstr(&mut d, namespace.as_bytes());
    sstr(&mut d, b"");
    sstr(&mut d, b"sha512");
    sstr(&mut d, &sha2::Sha512::digest(message));
    d
}

/// A server host key that can make (or forge) session bindings.
pub struct HostKey {
    pub key: ssh_key::PrivateKey,
}

impl HostKey {
    pub fn new() -> HostKey {
        let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
        HostKey {
            key: ssh_key::PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519).unwrap(),
        }
    }

    pub fn blob(&self) -> Vec<u8> {
        self.key.public_key().to_bytes().unwrap()
    }

    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string()
    }

    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        use signature::Signer;
        use ssh_key::encoding::Encode;
        let sig: ssh_key::Signature = self.key.try_sign(data).unwrap();
        sig.encode_vec().unwrap()
    }

    /// A genuine binding of `session_id` by this host.
    pub fn binding(&self, session_id: &[u8], forwarding: bool) -> SessionBinding {
        SessionBinding {
            host_key: self.blob(),
            session_id: session_id.to_vec(),
            signature: self.sign(session_id),
            is_forwarding: forwarding,
        }
    }
}

/// Check an SSH signature blob over `data` by the key `key_blob`.
pub fn verifies(key_blob: &[u8], data: &[u8], sig: &[u8]) -> bool {
    use signature::Verifier;
    use ssh_key::encoding::Decode;
    let (Ok(k), Ok(s)) = (
        ssh_key::public::KeyData::decode(&mut &key_blob[..]),
        ssh_key::Signature::decode(&mut &sig[..]),
    ) else {
        return false;
    };
    k.verify(data, &s).is_ok()
}
