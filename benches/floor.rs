//! What a signature costs at the bottom, and what must not grow with history.
//!
//! `cargo bench --bench floor` (scripts/bench runs it and puts its figures in its table)
//!
//! - CPU per signature of a bare `ring` signature, of vmux's prepared key (ring, the SSH
//!   encoding, the stack scrub) and of the pure-Rust curves it replaced, for P-256,
//!   P-384 and Ed25519, over the same userauth-shaped data.
//! - Opening and appending to a hash-chained log, and issuing a certificate (which
//!   picks a serial), with 10 lines in the decision log and with 1,000,000.
//!
//! Every line of output that scripts/bench reads starts with `RESULT name=… value=…`.
//! Figures are CPU time of this thread (not wall time), medians of several runs.

use std::time::Instant;

fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// Median over `runs` of the CPU µs per call of `f`, `n` calls a run.
fn per_call(runs: usize, n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 + 1 {
        f();
    }
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = thread_cpu_ns();
            for _ in 0..n {
                f();
            }
            (thread_cpu_ns() - t) as f64 / 1000.0 / n as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn result(name: &str, value: f64, what: &str) {
    println!("RESULT name={name} value={value:.2} # {what}");
}

fn userauth_data(alg: &str, blob: &[u8]) -> Vec<u8> {
    fn put(v: &mut Vec<u8>, s: &[u8]) {
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s);
    }
    let mut d = vec![];
    put(&mut d, &[7u8; 32]);
    d.push(50);
    put(&mut d, b"alice");
    put(&mut d, b"ssh-connection");
    put(&mut d, b"publickey");
    d.push(1);
    put(&mut d, alg.as_bytes());
    put(&mut d, blob);
    d
}

fn signatures() {
    use ring::signature::KeyPair;
    use ssh_key::encoding::Encode;
    use ssh_key::{Algorithm, EcdsaCurve, PrivateKey};
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    let sysrng = ring::rand::SystemRandom::new();
    let (runs, n) = (5, 2000);
    for (name, alg) in [
        (
            "p256",
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
        (
            "p384",
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
        ),
        ("ed25519", Algorithm::Ed25519),
    ] {
        let key = PrivateKey::random(&mut rng, alg.clone()).unwrap();
        let blob = key.public_key().key_data().encode_vec().unwrap();
        let data = userauth_data(alg.as_str(), &blob);
        let prepared = vmux_proto::keys::PreparedKey::new(&key).unwrap();
        let vmux = per_call(runs, n, || {
            std::hint::black_box(prepared.sign(&data).unwrap());
        });
        // ring alone: the same key pair, no SSH encoding, no scrub.
        let bare = match key.key_data() {
            ssh_key::private::KeypairData::Ecdsa(k) => {
                let (ring_alg, private, public) = match k {
                    ssh_key::private::EcdsaKeypair::NistP256 { private, public } => (
                        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        private.as_slice().to_vec(),
                        public.as_bytes().to_vec(),
                    ),
                    ssh_key::private::EcdsaKeypair::NistP384 { private, public } => (
                        &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                        private.as_slice().to_vec(),
                        public.as_bytes().to_vec(),
                    ),
                    _ => unreachable!(),
                };
                let kp = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
                    ring_alg, &private, &public, &sysrng,
                )
                .unwrap();
                assert_eq!(kp.public_key().as_ref(), public.as_slice());
                per_call(runs, n, || {
                    std::hint::black_box(kp.sign(&sysrng, &data).unwrap());
                })
            }
            ssh_key::private::KeypairData::Ed25519(k) => {
                let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(k.private.as_ref())
                    .unwrap();
                per_call(runs, n, || {
                    std::hint::black_box(kp.sign(&data));
                })
            }
            _ => unreachable!(),
        };
        // The pure-Rust curves (ssh-key's own signer) that signed before.
        let rustcrypto = per_call(runs, n / 4, || {
            use signature::Signer;
            let s: ssh_key::Signature = key.try_sign(&data).unwrap();
            std::hint::black_box(s);
        });
        result(
            &format!("ring_{name}_us"),
            bare,
            "bare ring signature, CPU µs",
        );
        result(
            &format!("vmux_{name}_us"),
            vmux,
            "vmux PreparedKey::sign (ring + SSH encoding + stack scrub), CPU µs",
        );
        result(
            &format!("rustcrypto_{name}_us"),
            rustcrypto,
            "pure-Rust curve (ssh-key signer), CPU µs",
        );
    }
}

/// A decision log of `lines` records, made by the journal itself (a valid chain).
fn log_with(dir: &std::path::Path, lines: usize) -> std::path::PathBuf {
    let home = vmux_signer::SignerHome::new(dir);
    let path = home.log();
    let mut j = vmux_proto::journal::Journal::open(&path).unwrap();
    for i in 0..lines {
        let mut m = serde_json::Map::new();
        m.insert("time".into(), 1_700_000_000u64.into());
        m.insert("event".into(), "sign".into());
        m.insert("decision".into(), "approved".into());
        m.insert("serial".into(), (i as u64).into());
        m.insert("requestId".into(), format!("{i:032x}").into());
        j.append(m).unwrap();
    }
    j.sync();
    path
}

fn history() {
    use vmux_signer::keystore::software::{self, SoftwareKeystore};
    let tmp = tempfile::tempdir().unwrap();
    for lines in [10usize, 1_000_000] {
        let dir = tmp.path().join(format!("h{lines}"));
        let made = Instant::now();
        let log = log_with(&dir, lines);
        let size = std::fs::metadata(&log).unwrap().len();
        eprintln!(
            "  decision log of {lines} lines ({:.1} MB) made in {:.1} s",
            size as f64 / 1e6,
            made.elapsed().as_secs_f64()
        );
        // Opening starts (and closing joins) the flusher thread: many opens, so that the
        // thread's start-up noise averages out.
        let open = per_call(7, 200, || {
            std::hint::black_box(vmux_proto::journal::Journal::open(&log).unwrap());
        });
        let mut j = vmux_proto::journal::Journal::open(&log).unwrap();
        let append = per_call(5, 2000, || {
            let mut m = serde_json::Map::new();
            m.insert("time".into(), 1_700_000_000u64.into());
            m.insert("event".into(), "sign".into());
            m.insert("decision".into(), "approved".into());
            j.append(m).unwrap();
        });
        drop(j);
        // Certificate issuance: the serial, the certificate, the CA's signature.
        let home = vmux_signer::SignerHome::new(&dir);
        software::generate(
            &home.ca(),
            software::parse_algorithm("ed25519").unwrap(),
            "bench-ca",
            None,
        )
        .unwrap();
        let ca = SoftwareKeystore::open(&home.ca(), None).unwrap();
        let policy = vmux_signer::state::CaPolicy {
            principals: vec!["alice".into()],
            ..Default::default()
        };
        let device = vmux_signer::state::PairedDevice {
            id: "dev".into(),
            name: "bench".into(),
            public_key: vec![0; 32],
            paired_at: 0,
            last_seen: 0,
        };
        let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
        let subject = ssh_key::PrivateKey::random(
            &mut rng,
            ssh_key::Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP256,
            },
        )
        .unwrap();
        let req = vmux_proto::envelope::CertificateRequest {
            request_id: uuid::Uuid::new_v4(),
            public_key: ssh_key::encoding::Encode::encode_vec(subject.public_key().key_data())
                .unwrap(),
            validity_secs: 3600,
            principals: vec![],
            device_id: "dev".into(),
            device_name: "bench".into(),
            nonce: vec![1; 16],
            issued: 0,
            expires: 60,
        };
        // Wall time here: issuing writes the counter atomically (fsync), which is the
        // point: it is the same with any log.
        let mut walls: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..20 {
                    vmux_signer::ca::issue(
                        &ca,
                        &home,
                        &policy,
                        &device,
                        &req,
                        &["bench".to_string()],
                    )
                    .unwrap();
                }
                t.elapsed().as_secs_f64() * 1e6 / 20.0
            })
            .collect();
        walls.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let issue = walls[2];
        let issue_cpu = per_call(3, 10, || {
            vmux_signer::ca::issue(&ca, &home, &policy, &device, &req, &["bench".to_string()])
                .unwrap();
        });
        let tag = if lines == 10 { "10" } else { "1m" };
        result(
            &format!("log_open_{tag}_us"),
            open,
            "open a decision log (find where its chain goes on), CPU µs",
        );
        result(
            &format!("log_append_{tag}_us"),
            append,
            "append one record to it, CPU µs",
        );
        result(
            &format!("cert_issue_{tag}_us"),
            issue,
            "issue one certificate (serial counter written atomically), wall µs",
        );
        result(
            &format!("cert_issue_cpu_{tag}_us"),
            issue_cpu,
            "issue one certificate, CPU µs",
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument picks one part.
    let want: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let on = |part: &str| want.is_empty() || want.iter().any(|w| w == part);
    if on("signatures") {
        signatures();
    }
    if on("history") {
        history();
    }
}
