//! The session certificate's key is zeroed before its memory is freed: what `ssh-add
//! -D`, `vmux agent reset`, LOCK and expiry do is drop the certificate, and this is
//! what dropping it leaves behind. An allocator looks at the key's allocation at the
//! moment it is handed back.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

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
fn the_session_key_is_zeroed_when_the_certificate_is_dropped() {
    use ssh_key::certificate::{Builder, CertType};
    use ssh_key::encoding::Encode;
    use vmux_agent::cert::{ephemeral_key, SessionCert};
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    let ca = ssh_key::PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519).unwrap();
    let key = ephemeral_key();
    let point = match key.public_key().key_data() {
        ssh_key::public::KeyData::Ecdsa(k) => k.as_sec1_bytes().to_vec(),
        other => panic!("{other:?}"),
    };
    let now = vmux_proto::now_unix();
    let mut b = Builder::new(
        vec![7; 32],
        key.public_key().key_data().clone(),
        now - 60,
        now + 3600,
    )
    .unwrap();
    b.serial(1).unwrap().cert_type(CertType::User).unwrap();
    b.valid_principal("alice").unwrap();
    let cert = b.sign(&ca).unwrap();
    let resp = vmux_proto::envelope::CertificateResponse {
        request_id: uuid::Uuid::new_v4(),
        certificate: Some(cert.to_bytes().unwrap()),
        ca_public_key: Some(ca.public_key().key_data().encode_vec().unwrap()),
        valid_after: now - 60,
        valid_before: now + 3600,
        error: None,
        message: None,
    };
    // Held the way the agent holds it, and used.
    let held = Arc::new(SessionCert::from_response(key, &resp, "signer").unwrap());
    held.sign(b"a login").unwrap();
    let (addr, len) = held.key_allocation();
    // SAFETY: the allocation is alive while `held` is.
    let live = unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec();
    assert!(
        live.windows(point.len()).any(|w| w == point.as_slice()),
        "the watched allocation does not hold the session key pair"
    );
    WATCHED.store(addr, Ordering::SeqCst);
    drop(held);
    WATCHED.store(0, Ordering::SeqCst);
    assert!(FREED.load(Ordering::SeqCst), "key allocation not freed");
    assert!(
        FREED_ZERO.load(Ordering::SeqCst),
        "the session key's memory was freed with key bytes in it"
    );
}
