//! The signer's keys as a running signer holds them: the keystore (reloaded when keys
//! are added, removed, enabled, disabled, renamed or imported, without a restart) and
//! the per-key state kept beside the key directory in `signer/keys.json` (a key
//! directory holds keys only).

use crate::keystore::{sk, Keystore, SignOptions};
use crate::state::SignerHome;
use crate::SignerError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use vmux_proto::envelope::KeyRecord;
use vmux_proto::identity::key_fingerprint;
use vmux_proto::ErrorCode;

/// What the person decided about one key, by fingerprint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyState {
    /// `false`: not listed to agents; requests for it get `keyDisabled`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Shown instead of the key file's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            enabled: true,
            name: None,
        }
    }
}

pub type KeyStates = BTreeMap<String, KeyState>;

pub fn load_states(home: &SignerHome) -> Result<KeyStates, SignerError> {
    Ok(vmux_proto::store::read_json(&home.key_states())?.unwrap_or_default())
}

pub fn save_states(home: &SignerHome, s: &KeyStates) -> Result<(), SignerError> {
    Ok(vmux_proto::store::write_json(&home.key_states(), s)?)
}

/// Opens the keystore again from disk (the binary supplies it: it knows the
/// passphrase and which stores exist).
pub type Reopen = Box<dyn Fn() -> Result<Box<dyn Keystore>, SignerError> + Send + Sync>;

/// The live keystore with the per-key state applied.
pub struct Keys {
    store: RwLock<Arc<dyn Keystore>>,
    states: RwLock<KeyStates>,
    reopen: RwLock<Option<Reopen>>,
    /// Queue entries whose approval ran user verification (see [`Keys::note_verified`]).
    verified: sk::Verified,
}

impl Keys {
    pub fn new(store: Box<dyn Keystore>, states: KeyStates) -> Keys {
        Keys {
            store: RwLock::new(Arc::from(store)),
            states: RwLock::new(states),
            reopen: RwLock::new(None),
            verified: Default::default(),
        }
    }

    /// Every key, disabled ones included (marked), with its state applied.
    pub fn keys(&self) -> Vec<KeyRecord> {
        let states = self.states.read().unwrap();
        let store = self.store.read().unwrap().clone();
        store
            .keys()
            .into_iter()
            .map(|mut k| {
                if let Some(s) = states.get(&key_fingerprint(&k.public_key)) {
                    k.enabled = k.enabled && s.enabled;
                    if let Some(n) = &s.name {
                        k.display_name = n.clone();
                        k.comment = n.clone();
                    }
                }
                k
            })
            .collect()
    }

    /// The keys agents are told about: enabled ones only.
    pub fn listed(&self) -> Vec<KeyRecord> {
        self.keys().into_iter().filter(|k| k.enabled).collect()
    }

    pub fn sign(&self, key_blob: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, ErrorCode> {
        self.sign_with(
            key_blob,
            data,
            &SignOptions {
                flags,
                ..Default::default()
            },
        )
    }

    pub fn sign_with(
        &self,
        key_blob: &[u8],
        data: &[u8],
        how: &SignOptions,
    ) -> Result<Vec<u8>, ErrorCode> {
        if self.disabled(key_blob) {
            return Err(ErrorCode::KeyDisabled);
        }
        let store = self.store.read().unwrap().clone();
        store.sign_with(key_blob, data, how)
    }

    fn disabled(&self, key_blob: &[u8]) -> bool {
        self.states
            .read()
            .unwrap()
            .get(&key_fingerprint(key_blob))
            .is_some_and(|s| !s.enabled)
    }

    /// Sign, off the async runtime when the key lives on a device that may block (a
    /// token, the TPM): a slow device then stalls no link.
    pub async fn sign_async(
        &self,
        key_blob: &[u8],
        data: &[u8],
        flags: u32,
    ) -> Result<Vec<u8>, ErrorCode> {
        self.sign_async_with(
            key_blob,
            data,
            SignOptions {
                flags,
                ..Default::default()
            },
        )
        .await
    }

    /// [`Keys::sign_async`] with what the signature may say about the decision (a
    /// security-key key sets user-verified from `how`).
    pub async fn sign_async_with(
        &self,
        key_blob: &[u8],
        data: &[u8],
        how: SignOptions,
    ) -> Result<Vec<u8>, ErrorCode> {
        let store = self.store.read().unwrap().clone();
        if !store.blocking(key_blob) {
            return self.sign_with(key_blob, data, &how);
        }
        if self.disabled(key_blob) {
            return Err(ErrorCode::KeyDisabled);
        }
        let (blob, data) = (key_blob.to_vec(), data.to_vec());
        tokio::task::spawn_blocking(move || store.sign_with(&blob, &data, &how))
            .await
            .unwrap_or(Err(ErrorCode::Internal))
    }

    /// User verification ran, and succeeded, for the approval of queue entry `id`
    /// (`crate::decide`, before the decision is delivered).
    pub fn note_verified(&self, id: &str) {
        self.verified.note(id);
    }

    /// Whether user verification ran for the approval of queue entry `id` (asked once,
    /// by the request, when its approval arrives).
    pub fn take_verified(&self, id: &str) -> bool {
        self.verified.take(id)
    }

    /// Where a key lives (`keys list`, the prompt).
    pub fn location(&self, key_blob: &[u8]) -> Option<String> {
        self.store.read().unwrap().location(key_blob)
    }

    pub fn set_reopen(&self, f: Reopen) {
        *self.reopen.write().unwrap() = Some(f);
    }

    /// Read keys and their state from disk again. The old keystore keeps serving if the
    /// new one cannot be opened.
    pub fn reload(&self, home: &SignerHome) -> Result<(), SignerError> {
        let states = load_states(home)?;
        if let Some(reopen) = self.reopen.read().unwrap().as_ref() {
            let store = reopen()?;
            *self.store.write().unwrap() = Arc::from(store);
        }
        *self.states.write().unwrap() = states;
        Ok(())
    }
}
