//! The Flask decoders are bounded in bytes, not only in values: a record planted in
//! a Flask session directory (or Redis) cannot make a load allocate far more than
//! its own size (SECURITY.md). Measured with a counting allocator: the peak of live
//! heap bytes while one input decodes.
#![cfg(feature = "flask")]
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use fscache::flask::{msgpack, pickle};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// One measurement at a time (the test harness runs tests on several threads).
static MEASURE: Mutex<()> = Mutex::new(());

// SAFETY: every call is forwarded to the system allocator unchanged; the wrapper
// only adds and subtracts sizes in atomics, which allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `layout` is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract (ptr from this allocator, new_size valid) is
        // passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let live = LIVE.fetch_add(grown, Ordering::Relaxed) + grown;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the peak heap bytes it added.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _one = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// `pickle.dumps`-shaped: a dict whose one value is a list of `refs` references to
/// one memoized string of `len` bytes.
fn memo_bomb(len: usize, refs: usize) -> Vec<u8> {
    let mut p = vec![0x80, 5, b'}', 0x94];
    p.extend_from_slice(&[0x8c, 1, b'k', 0x94]); // SHORT_BINUNICODE "k", MEMOIZE
    p.push(0x8d); // BINUNICODE8
    p.extend_from_slice(&(len as u64).to_le_bytes());
    p.extend(std::iter::repeat_n(b'x', len));
    p.push(0x94); // memo 2
    p.push(b'0'); // POP: the string stays only in the memo
    p.push(b']'); // EMPTY_LIST
    p.push(b'(');
    for _ in 0..refs {
        p.extend_from_slice(&[b'h', 2]); // BINGET 2
    }
    p.push(b'e'); // APPENDS
    p.push(b's'); // SETITEM
    p.push(b'.');
    p
}

#[test]
fn a_memoized_string_referenced_many_times_is_refused_before_it_is_copied() {
    let input = memo_bomb(256 * 1024, 256);
    assert!(input.len() < 300 * 1024);
    let (decoded, peak) = peak_during(|| pickle::decode(&input));
    let err = decoded.expect_err("64 MiB of copies from a 257 KiB pickle must be refused");
    assert!(err.to_string().contains("times its size"), "{err}");
    eprintln!(
        "pickle memo bomb: input {} B, peak heap {} B",
        input.len(),
        peak
    );
    // The copies made before the budget ran out, and no more.
    assert!(
        peak < (pickle::MAX_EXPANSION + 4) * input.len(),
        "decoding allocated {peak} bytes for a {} byte input",
        input.len()
    );
    // The same shape within the budget still decodes (memo sharing is legitimate).
    let small = memo_bomb(100, 20);
    assert!(pickle::decode(&small).is_ok());
}

/// Nested array and map headers that each claim 2^32 items: today's decoders must
/// not reserve room for what the input cannot hold, once per level.
#[test]
fn untrusted_msgpack_headers_reserve_nothing_the_input_cannot_hold() {
    for header in [0xdd, 0xdf] {
        // array32 / map32 of u32::MAX items, 100 levels deep, then 4 KiB of nils.
        let mut input = Vec::new();
        for _ in 0..100 {
            input.push(header);
            input.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        input.extend(std::iter::repeat_n(0xc0, 4 * 1024));
        let (decoded, peak) = peak_during(|| msgpack::decode(&input));
        assert!(
            decoded.is_err(),
            "truncated: the headers claim more than the input"
        );
        eprintln!(
            "msgpack headers 0x{header:x}: input {} B, peak heap {} B",
            input.len(),
            peak
        );
        // What the values read take (a few dozen bytes each, plus growth), not a
        // reservation per level for what the headers claim.
        assert!(
            peak < 128 * input.len() + (1 << 20),
            "decoding allocated {peak} bytes for a {} byte input",
            input.len()
        );
    }
}
