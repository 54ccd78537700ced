//! Secrets in memory that the libraries holding them do not wipe themselves.
//!
//! [`Wiped`] keeps a value in a heap allocation of its own and, when it is dropped,
//! writes zeros over the whole allocation (volatile writes the compiler cannot drop)
//! before it is freed. [`scrub_stack`] overwrites the stack below the caller, where a
//! library's temporaries (an ECDSA nonce, a hashed seed) stay after it returned.

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, Ordering};

/// A value in its own heap allocation, zeroed before the allocation is freed.
///
/// The value is built directly into the allocation where the optimiser allows (see
/// [`Wiped::try_new`]); whatever copy the constructor left on the stack is the
/// caller's to scrub ([`scrub_stack`]).
pub struct Wiped<T> {
    ptr: NonNull<T>,
}

// SAFETY: Wiped<T> owns its T like a Box<T> does.
unsafe impl<T: Send> Send for Wiped<T> {}
// SAFETY: as above; only shared references to T are handed out through &Wiped<T>.
unsafe impl<T: Sync> Sync for Wiped<T> {}

impl<T> Wiped<T> {
    /// Allocate first, then build the value into the allocation.
    pub fn try_new<E>(make: impl FnOnce() -> Result<T, E>) -> Result<Self, E> {
        let mut slot: Box<MaybeUninit<T>> = Box::new_uninit();
        match make() {
            Ok(v) => {
                slot.write(v);
                // SAFETY: the slot was just initialised.
                let raw = Box::into_raw(slot) as *mut T;
                Ok(Wiped {
                    ptr: NonNull::new(raw).expect("Box pointers are not null"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Start address and size of the allocation (for tests that watch it being freed).
    pub fn allocation(&self) -> (usize, usize) {
        (self.ptr.as_ptr() as usize, std::mem::size_of::<T>())
    }
}

impl<T> std::ops::Deref for Wiped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: ptr is a live, initialised allocation owned by self.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for Wiped<T> {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        // SAFETY: we own the allocation; the value is dropped once, then its bytes
        // (padding included, written as plain bytes) are zeroed and the memory is freed
        // through the Box it came from, as MaybeUninit so nothing is dropped twice.
        unsafe {
            std::ptr::drop_in_place(p);
            zero_bytes(p as *mut u8, std::mem::size_of::<T>());
            drop(Box::from_raw(p as *mut MaybeUninit<T>));
        }
    }
}

/// Volatile zeroing of `len` bytes at `p`, word by word where aligned.
///
/// # Safety
/// `p..p+len` must be writable memory owned by the caller.
unsafe fn zero_bytes(p: *mut u8, len: usize) {
    let mut i = 0;
    while i < len && (p as usize + i) & 7 != 0 {
        std::ptr::write_volatile(p.add(i), 0);
        i += 1;
    }
    while i + 8 <= len {
        std::ptr::write_volatile(p.add(i) as *mut u64, 0);
        i += 8;
    }
    while i < len {
        std::ptr::write_volatile(p.add(i), 0);
        i += 1;
    }
    compiler_fence(Ordering::SeqCst);
}

/// Bytes of stack [`scrub_stack`] overwrites below its caller: more than ring's
/// deepest signing or key-setup call chain uses.
pub const SCRUB_BYTES: usize = 16 * 1024;

/// Overwrite the stack below the caller's frame with zeros. Call it right after a
/// function that handled a secret returned: its frames were exactly there.
#[inline(never)]
pub fn scrub_stack() {
    let mut buf = MaybeUninit::<[u64; SCRUB_BYTES / 8]>::uninit();
    // SAFETY: buf is this frame's own, writable, and as large as its type.
    unsafe { zero_bytes(buf.as_mut_ptr() as *mut u8, SCRUB_BYTES) };
    std::hint::black_box(&buf);
}
