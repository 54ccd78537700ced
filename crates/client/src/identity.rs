//! `-i FILE` and `IdentityFile`: which of the signer's keys to offer, named by their
//! public halves (this device holds no private key). A file is a public key, or a key
//! whose `.pub` lies beside it, as ssh finds them. With `-i` or `IdentitiesOnly yes`
//! only the named keys are offered; otherwise they are offered first.

use crate::config::Target;
use crate::signer::Offer;
use crate::ClientError;
use ssh_key::public::KeyData;
use ssh_key::PublicKey;
use std::path::{Path, PathBuf};

/// The public key a file names: the file itself, else `FILE.pub`.
pub fn load(path: &Path) -> Result<PublicKey, String> {
    let read = |p: &Path| -> Result<PublicKey, String> {
        let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
        PublicKey::from_openssh(text.trim()).map_err(|_| "not a public key".to_string())
    };
    match read(path) {
        Ok(k) => Ok(k),
        Err(first) => {
            let mut pub_path = path.as_os_str().to_owned();
            pub_path.push(".pub");
            read(&PathBuf::from(pub_path)).map_err(|_| first)
        }
    }
}

/// The offers for `t`, in the order they are tried.
pub fn select(t: &Target, offers: &[Offer]) -> Result<Vec<Offer>, ClientError> {
    if t.identity_files.is_empty() {
        return Ok(offers.to_vec());
    }
    let mut wanted: Vec<(PathBuf, KeyData)> = vec![];
    for p in &t.identity_files {
        match load(p) {
            Ok(k) => wanted.push((p.clone(), k.key_data().clone())),
            Err(e) => eprintln!(
                "Warning: Identity file {} not accessible: {e}.",
                p.display()
            ),
        }
    }
    let mut chosen: Vec<Offer> = vec![];
    for (p, key) in &wanted {
        match offers.iter().find(|o| o.key.key_data() == key) {
            Some(o) if !chosen.iter().any(|c| c.blob == o.blob) => chosen.push(o.clone()),
            Some(_) => {}
            None => eprintln!(
                "vmux ssh: the key in {} ({}) is not held by a paired signer",
                p.display(),
                key.fingerprint(ssh_key::HashAlg::Sha256)
            ),
        }
    }
    if t.identities_only {
        if chosen.is_empty() {
            return Err(ClientError::PermissionDenied {
                user: t.user.clone(),
                host: t.host.clone(),
                why: " (none of the keys named by -i/IdentityFile is held by a paired signer)"
                    .into(),
            });
        }
        return Ok(chosen);
    }
    let rest: Vec<Offer> = offers
        .iter()
        .filter(|o| !chosen.iter().any(|c| c.blob == o.blob))
        .cloned()
        .collect();
    chosen.extend(rest);
    Ok(chosen)
}
