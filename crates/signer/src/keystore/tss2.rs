//! The `TSS2 PRIVATE KEY` PEM format of tpm2-openssl, tpm2-tss-engine and
//! ssh-tpm-agent (the "ASN.1 Specification for TPM 2.0 Key Files" draft):
//!
//! ```text
//! TPMKey ::= SEQUENCE {
//!     type        OBJECT IDENTIFIER,            -- 2.23.133.10.1.3: a loadable key
//!     emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
//!     policy      [1] EXPLICIT SEQUENCE OPTIONAL,
//!     secret      [2] EXPLICIT OCTET STRING OPTIONAL,
//!     authPolicy  [3] EXPLICIT SEQUENCE OPTIONAL,
//!     description [4] EXPLICIT UTF8String OPTIONAL, -- ssh-tpm-agent: the key's comment
//!     rsaParent   [5] EXPLICIT BOOLEAN OPTIONAL,    -- parent is the RSA SRK
//!     parent      INTEGER,                      -- 0x40000001: the owner hierarchy's SRK
//!     pubkey      OCTET STRING,                 -- TPM2B_PUBLIC
//!     privkey     OCTET STRING }                -- TPM2B_PRIVATE, sealed to this TPM
//! ```
//!
//! Parsing takes untrusted bytes (any file in a key directory) and never panics. Keys
//! with policies or import secrets ([1]–[3]) and keys under the RSA storage key are
//! refused (vmux cannot satisfy or load them); later optional fields ([6] on) are
//! skipped, as go-tpm-keyfiles does.

use base64::Engine;

/// DER of OID 2.23.133.10.1.3 (loadable key).
const LOADABLE: &[u8] = &[0x67, 0x81, 0x05, 0x0a, 0x01, 0x03];
/// DER of OID 2.23.133.10.1.5 (sealed data: a secret only this TPM unseals).
const SEALED: &[u8] = &[0x67, 0x81, 0x05, 0x0a, 0x01, 0x05];
pub const OWNER: u32 = 0x4000_0001;
const LABEL: &str = "TSS2 PRIVATE KEY";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmKey {
    /// Sealed data (a secret to unseal) rather than a signing key.
    pub sealed: bool,
    /// No PIN: the key's userAuth is empty.
    pub empty_auth: bool,
    pub parent: u32,
    /// The key's description (ssh-tpm-agent keeps the SSH comment here).
    pub description: Option<String>,
    /// TPM2B_PUBLIC, marshalled (size included).
    pub public: Vec<u8>,
    /// TPM2B_PRIVATE, marshalled (size included).
    pub private: Vec<u8>,
}

fn tlv<'a>(r: &mut &'a [u8]) -> Result<(u8, &'a [u8]), String> {
    let tag = *r.first().ok_or("truncated")?;
    let first = *r.get(1).ok_or("truncated")?;
    let (len, head) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 3 {
            return Err("unsupported length".into());
        }
        let bytes = r.get(2..2 + n).ok_or("truncated")?;
        (
            bytes.iter().fold(0usize, |a, &b| a << 8 | b as usize),
            2 + n,
        )
    };
    let body = r.get(head..head + len).ok_or("truncated")?;
    *r = &r[head + len..];
    Ok((tag, body))
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match body.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n if n < 0x10000 => out.extend([0x82, (n >> 8) as u8, n as u8]),
        n => out.extend([0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(body);
    out
}

impl TpmKey {
    pub fn from_der(mut der_bytes: &[u8]) -> Result<TpmKey, String> {
        let (tag, mut seq) = tlv(&mut der_bytes)?;
        if tag != 0x30 {
            return Err("not a SEQUENCE".into());
        }
        let (tag, oid) = tlv(&mut seq)?;
        let sealed = match oid {
            _ if tag != 0x06 => return Err("type is not an OBJECT IDENTIFIER".into()),
            o if o == LOADABLE => false,
            o if o == SEALED => true,
            _ => {
                return Err(
                    "not a loadable TPM key or sealed data (type is not 2.23.133.10.1.3 or .5)"
                        .into(),
                )
            }
        };
        let mut empty_auth = false;
        let mut description = None;
        let boolean = |mut inner: &[u8], what: &str| -> Result<bool, String> {
            match tlv(&mut inner)? {
                (0x01, [v]) if inner.is_empty() => Ok(*v != 0),
                _ => Err(format!("{what} is not a BOOLEAN")),
            }
        };
        let mut next = tlv(&mut seq)?;
        // [0] … [30], context-specific and constructed: the optional fields.
        while (0xa0..=0xbe).contains(&next.0) {
            match next.0 {
                0xa0 => empty_auth = boolean(next.1, "emptyAuth")?,
                0xa1..=0xa3 => {
                    return Err("keys with TPM policies or import secrets are not supported".into())
                }
                0xa4 => {
                    let mut inner = next.1;
                    match tlv(&mut inner)? {
                        (0x0c, text) if inner.is_empty() => {
                            let text = std::str::from_utf8(text)
                                .map_err(|_| "the description is not UTF-8")?;
                            description = Some(text.to_string());
                        }
                        _ => return Err("the description is not a UTF8String".into()),
                    }
                }
                0xa5 if boolean(next.1, "rsaParent")? => {
                    return Err(
                        "the key's parent is the RSA storage key; vmux loads keys under the ECC P-256 one"
                            .into(),
                    );
                }
                _ => {} // a later optional field: not needed to load and sign
            }
            next = tlv(&mut seq)?;
        }
        if next.0 != 0x02 || next.1.is_empty() || next.1.len() > 5 {
            return Err("parent is not an INTEGER handle".into());
        }
        let parent = next.1.iter().fold(0u64, |a, &b| a << 8 | b as u64);
        let parent = u32::try_from(parent).map_err(|_| "parent handle out of range")?;
        let (t, public) = tlv(&mut seq)?;
        if t != 0x04 {
            return Err("pubkey is not an OCTET STRING".into());
        }
        let (t, private) = tlv(&mut seq)?;
        if t != 0x04 {
            return Err("privkey is not an OCTET STRING".into());
        }
        Ok(TpmKey {
            sealed,
            empty_auth,
            parent,
            description,
            public: public.to_vec(),
            private: private.to_vec(),
        })
    }

    pub fn to_der(&self) -> Vec<u8> {
        let mut body = der(0x06, if self.sealed { SEALED } else { LOADABLE });
        if self.empty_auth {
            body.extend(der(0xa0, &der(0x01, &[0xff])));
        }
        if let Some(d) = &self.description {
            body.extend(der(0xa4, &der(0x0c, d.as_bytes())));
        }
        // A positive INTEGER: a leading zero when the high bit is set.
        let p = self.parent.to_be_bytes();
        let mut int = p.to_vec();
        while int.len() > 1 && int[0] == 0 && int[1] & 0x80 == 0 {
            int.remove(0);
        }
        if int[0] & 0x80 != 0 {
            int.insert(0, 0);
        }
        body.extend(der(0x02, &int));
        body.extend(der(0x04, &self.public));
        body.extend(der(0x04, &self.private));
        der(0x30, &body)
    }

    pub fn from_pem(text: &str) -> Result<TpmKey, String> {
        let begin = format!("-----BEGIN {LABEL}-----");
        let end = format!("-----END {LABEL}-----");
        let start = text.find(&begin).ok_or("no TSS2 PRIVATE KEY block")? + begin.len();
        let stop = start + text[start..].find(&end).ok_or("unterminated PEM block")?;
        let b64: String = text[start..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der_bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("bad base64: {e}"))?;
        TpmKey::from_der(&der_bytes)
    }

    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.to_der());
        let mut out = format!("-----BEGIN {LABEL}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            out.push('\n');
        }
        out.push_str(&format!("-----END {LABEL}-----\n"));
        out
    }
}

/// Whether a file's text is a TSS2 key (cheap: the PEM label only).
pub fn looks_like(text: &str) -> bool {
    text.contains("-----BEGIN TSS2 PRIVATE KEY-----")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let k = TpmKey {
            sealed: false,
            empty_auth: true,
            parent: OWNER,
            description: None,
            public: vec![0, 3, 1, 2, 3],
            private: vec![7; 300],
        };
        let pem = k.to_pem();
        assert!(looks_like(&pem));
        assert_eq!(TpmKey::from_pem(&pem).unwrap(), k);
        let pin = TpmKey {
            empty_auth: false,
            parent: 0x8100_0001,
            ..k.clone()
        };
        assert_eq!(TpmKey::from_der(&pin.to_der()).unwrap(), pin);
        let sealed = TpmKey {
            sealed: true,
            ..k.clone()
        };
        assert_eq!(TpmKey::from_pem(&sealed.to_pem()).unwrap(), sealed);
        let der_bytes = k.to_der();
        for cut in 0..der_bytes.len() {
            assert!(TpmKey::from_der(&der_bytes[..cut]).is_err());
        }
        assert!(TpmKey::from_pem(
            "-----BEGIN TSS2 PRIVATE KEY-----\n!!\n-----END TSS2 PRIVATE KEY-----"
        )
        .is_err());
        // ssh-tpm-agent's comment, and a later optional field skipped.
        let described = TpmKey {
            description: Some("alice@laptop ✓".into()),
            ..k.clone()
        };
        assert_eq!(TpmKey::from_der(&described.to_der()).unwrap(), described);
        let with = |field: Vec<u8>| {
            let d = k.to_der();
            // After the OID (2 + 6 bytes) and emptyAuth (5 bytes) of the body.
            let (head, body) = (&d[..4], &d[4..]);
            assert_eq!(head[0], 0x30);
            let mut b = body[..13].to_vec();
            b.extend(field);
            b.extend(&body[13..]);
            TpmKey::from_der(&der(0x30, &b))
        };
        assert_eq!(with(der(0xa6, &der(0x05, &[]))).unwrap(), k);
        assert_eq!(with(der(0xa5, &der(0x01, &[0]))).unwrap(), k);
        assert!(with(der(0xa5, &der(0x01, &[0xff])))
            .unwrap_err()
            .contains("RSA storage key"));
        assert!(with(der(0xa1, &der(0x30, &[]))).is_err());
        assert!(with(der(0xa4, &der(0x0c, &[0xff]))).is_err());
        assert!(with(der(0xa4, &der(0x04, b"x"))).is_err());
    }
}
