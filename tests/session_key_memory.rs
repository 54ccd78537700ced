//! Issue 20: after `vmux agent reset` the session key is gone from the agent's memory,
//! not only freed. The test reads the running agent's memory (/proc/PID/mem, as root),
//! finds the private scalar where ring keeps it (next to the public point, in
//! Montgomery form), checks that it found the real key (d·G is the certified point),
//! then resets the agent and searches all its writable memory (heap, anonymous
//! mappings, thread stacks) for the scalar in every form it was seen in.

mod common;

use common::vmux::*;
use p256::elliptic_curve::ff::{Field, PrimeField};
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{ProjectivePoint, Scalar};
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

/// Every writable private mapping of `pid`, as (start address, bytes).
fn writable_memory(pid: u32) -> Vec<(usize, Vec<u8>)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = vec![];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; b - a];
        if mem.seek(SeekFrom::Start(a as u64)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            out.push((a, buf));
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

fn scalar(be: &[u8]) -> Option<Scalar> {
    let bytes: [u8; 32] = be.try_into().ok()?;
    Option::from(Scalar::from_repr(bytes.into()))
}

#[test]
fn reset_leaves_no_session_key_in_the_agents_memory() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "reading another process's memory needs root (the agent is non-dumpable)"
    );
    let s = Setup::with_agent_config("");
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    s.signer.approve_next();
    let deadline = Instant::now() + T;
    let cert = loop {
        let l = s.agent.ssh_add(&["-L"]);
        if let Some(c) = l
            .stdout
            .lines()
            .find(|l| l.contains("-cert-v01@openssh.com"))
        {
            break c.to_string();
        }
        assert!(Instant::now() < deadline, "no certificate listed: {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(cert.split_whitespace().nth(1).unwrap())
        .unwrap();
    let point = match ssh_key::Certificate::from_bytes(&blob)
        .unwrap()
        .public_key()
    {
        ssh_key::public::KeyData::Ecdsa(k) => k.as_sec1_bytes().to_vec(),
        other => panic!("unexpected key {other:?}"),
    };
    let pid = s.agent.daemon.as_ref().unwrap().pid();

    // Find the scalar: ring keeps it as little-endian 64-bit limbs, times R = 2^256 mod n.
    let mut r = Scalar::from(2u64);
    for _ in 0..8 {
        r = r * r; // 2^(2^8) = 2^256 mod n
    }
    let r_inv: Scalar = Option::from(Field::invert(&r)).unwrap();
    let is_key = |d: &Scalar| {
        (ProjectivePoint::GENERATOR * d)
            .to_affine()
            .to_sec1_point(false)
            .as_bytes()
            == point.as_slice()
    };
    let mut forms: Vec<Vec<u8>> = vec![];
    'search: for (_, bytes) in writable_memory(pid) {
        for at in find(&bytes, &point) {
            let lo = at.saturating_sub(1024) & !7;
            let hi = (at + 1024).min(bytes.len().saturating_sub(32));
            for c in (lo..hi).step_by(8) {
                let le = &bytes[c..c + 32];
                let be: Vec<u8> = le.iter().rev().copied().collect();
                let Some(v) = scalar(&be) else { continue };
                let d = if is_key(&(v * r_inv)) {
                    v * r_inv
                } else if is_key(&v) {
                    v
                } else {
                    continue;
                };
                let d_be = d.to_repr().to_vec();
                let d_le: Vec<u8> = d_be.iter().rev().copied().collect();
                forms = vec![le.to_vec(), be, d_be, d_le];
                break 'search;
            }
        }
    }
    assert!(
        !forms.is_empty(),
        "the session key was not found in the agent's memory before reset: the test \
         cannot see what it is meant to check"
    );

    ok(&s.agent.home, &["agent", "reset"]);
    let deadline = Instant::now() + T;
    while s
        .agent
        .ssh_add(&["-L"])
        .stdout
        .contains("-cert-v01@openssh.com")
    {
        assert!(
            Instant::now() < deadline,
            "reset did not drop the certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give the runtime a moment to drop the last reference.
    std::thread::sleep(Duration::from_millis(300));
    for (start, bytes) in writable_memory(pid) {
        for (i, form) in forms.iter().enumerate() {
            let at = find(&bytes, form);
            assert!(
                at.is_empty(),
                "after reset the session key (form {i}) is still in the agent's memory at {:#x}",
                start + at[0]
            );
        }
    }
}
