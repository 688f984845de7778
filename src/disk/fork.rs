//! Telling a forked child from its parent without a syscall per operation.
//!
//! Process-wide state seeded once (the write-id nonce) would be inherited by every
//! child of a pre-fork server, so two workers would draw the same ids. A
//! `pthread_atfork` child handler, registered the first time such state is seeded,
//! bumps a generation counter in each new child; state seeded under an older
//! generation is seeded again.
#![allow(unsafe_code)]

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped in the child after every `fork()` (once the handler is registered).
static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

extern "C" fn in_child() {
    // Async-signal-safe, as a child of a multithreaded process requires: one atomic.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation: it changes in a child after each `fork()`. Call it
/// before seeding state that a child must not share; its first call registers the
/// handler (a fork before that first call is not seen, and needs none: nothing was
/// seeded yet).
pub(crate) fn generation() -> u64 {
    REGISTER.call_once(|| {
        // SAFETY: pthread_atfork takes three optional `extern "C" fn()` handlers
        // and copies the pointers; `in_child` is a plain function that lives for the
        // whole program and only touches an atomic, which is async-signal-safe (the
        // rule for code run in a forked child). Registration cannot fail except for
        // ENOMEM, and then ids fall back to the pid check in `layout`.
        let r = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        if r != 0 {
            FALLBACK.store(true, Ordering::Relaxed);
        }
    });
    if FALLBACK.load(Ordering::Relaxed) {
        // No handler: the pid tells a child apart (one syscall).
        return u64::from(std::process::id());
    }
    GENERATION.load(Ordering::Relaxed)
}

static FALLBACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
