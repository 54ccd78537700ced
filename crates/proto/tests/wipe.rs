//! The private key's memory is zeroed before it is freed: an allocator that looks at
//! the key's allocation at the moment it is handed back.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use vmux_proto::keys::PreparedKey;

struct Watching;

static WATCHED: AtomicUsize = AtomicUsize::new(0);
static FREED: AtomicBool = AtomicBool::new(false);
static FREED_ZERO: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards to the system allocator; only reads a block it is about to free.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize == WATCHED.load(Ordering::SeqCst) {
            let bytes = std::slice::from_raw_parts(ptr, layout.size());
            FREED_ZERO.store(bytes.iter().all(|&b| b == 0), Ordering::SeqCst);
            FREED.store(true, Ordering::SeqCst);
        }
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Watching = Watching;

#[test]
fn key_memory_is_zeroed_before_it_is_freed() {
    use ssh_key::{Algorithm, EcdsaCurve, PrivateKey};
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    for alg in [
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ed25519,
    ] {
        let key = PrivateKey::random(&mut rng, alg.clone()).unwrap();
        let prepared = PreparedKey::new(&key).unwrap();
        prepared.sign(b"in use").unwrap();
        let (addr, len) = prepared.key_allocation();
        // The allocation watched is the one with the key pair in it: ring keeps the
        // public key beside the private scalar, so the public point is found there.
        let public = match key.public_key().key_data() {
            ssh_key::public::KeyData::Ecdsa(k) => k.as_sec1_bytes().to_vec(),
            ssh_key::public::KeyData::Ed25519(k) => k.0.to_vec(),
            other => panic!("{other:?}"),
        };
        // SAFETY: the allocation is alive while `prepared` is.
        let live = unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec();
        assert!(
            live.windows(public.len()).any(|w| w == public.as_slice()),
            "{alg}: the watched allocation does not hold the key pair"
        );
        FREED.store(false, Ordering::SeqCst);
        WATCHED.store(addr, Ordering::SeqCst);
        drop(prepared);
        WATCHED.store(0, Ordering::SeqCst);
        assert!(
            FREED.load(Ordering::SeqCst),
            "{alg}: key allocation not freed"
        );
        assert!(
            FREED_ZERO.load(Ordering::SeqCst),
            "{alg}: key allocation freed with key bytes in it"
        );
    }
}
