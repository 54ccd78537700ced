//! SSH wire encodings for keys and signatures made outside ssh-key (tokens, the TPM):
//! RFC 4251 §5 strings and mpints, RFC 5656 §3.1.2 ECDSA signature blobs, RFC 8332 §3
//! RSA signature blobs.

pub fn ssh_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// An unsigned big-endian integer as an mpint: leading zeros dropped, a zero byte added
/// when the high bit is set.
pub fn mpint(out: &mut Vec<u8>, n: &[u8]) {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => &[],
    };
    if n.first().is_some_and(|&b| b & 0x80 != 0) {
        out.extend_from_slice(&((n.len() + 1) as u32).to_be_bytes());
        out.push(0);
        out.extend_from_slice(n);
    } else {
        ssh_string(out, n);
    }
}

pub fn take_string<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(r.get(..4)?.try_into().ok()?) as usize;
    let s = r.get(4..4usize.checked_add(len)?)?;
    *r = &r[4 + len..];
    Some(s)
}

/// `string alg, string(mpint r, mpint s)` from `r ‖ s` of equal halves (PKCS#11 CKM_ECDSA).
pub fn ecdsa_blob(alg: &str, raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(ecdsa_blob_rs(alg, r, s))
}

pub fn ecdsa_blob_rs(alg: &str, r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut inner = vec![];
    mpint(&mut inner, r);
    mpint(&mut inner, s);
    let mut out = vec![];
    ssh_string(&mut out, alg.as_bytes());
    ssh_string(&mut out, &inner);
    out
}

pub fn rsa_blob(alg: &str, sig: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    ssh_string(&mut out, alg.as_bytes());
    ssh_string(&mut out, sig);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpints_and_strings() {
        let mut v = vec![];
        mpint(&mut v, &[0, 0, 0x80, 1]);
        assert_eq!(v, [0, 0, 0, 3, 0, 0x80, 1]);
        v.clear();
        mpint(&mut v, &[0, 0]);
        assert_eq!(v, [0, 0, 0, 0]);
        let mut r: &[u8] = &[0, 0, 0, 2, b'h', b'i', 9];
        assert_eq!(take_string(&mut r), Some(&b"hi"[..]));
        assert_eq!(r, [9]);
        assert_eq!(take_string(&mut &[0xff, 0xff, 0xff, 0xff][..]), None);
        assert!(ecdsa_blob("x", &[1, 2, 3]).is_none());
    }
}
