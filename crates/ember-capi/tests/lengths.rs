//! `ember_encode` refuses lengths no slice can have before it forms one: a `lens[i]` past
//! `isize::MAX` (`(size_t)-1` is the C idiom for "NUL-terminated", which Ember does not take)
//! and an `n` past what an array of pointers can hold. Both used to reach
//! `slice::from_raw_parts` (undefined behaviour; a non-unwinding abort in a debug build).

use std::ffi::{c_char, CStr, CString};
use std::path::Path;

use ember_capi::*;

fn last_error() -> String {
    let ptr = ember_last_error();
    assert!(!ptr.is_null(), "no error was recorded");
    // SAFETY: non-null pointers from ember_last_error are NUL-terminated and valid until the
    // next ember call on this thread.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

fn load_tiny() -> *mut EmberEmbedder {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-bert");
    let path = CString::new(model.to_str().expect("UTF-8 path")).expect("no NUL");
    // SAFETY: a valid C string.
    let e = unsafe { ember_load(path.as_ptr(), 1, 0) };
    assert!(!e.is_null(), "load failed");
    e
}

/// ember_encode of `ptrs.len()` texts into `out`. `lens` may lie (that is what these tests
/// check); every pointer is live and `out` is a live buffer of its length.
fn encode(e: *mut EmberEmbedder, ptrs: &[*const c_char], lens: &[usize], out: &mut [f32]) -> i32 {
    // SAFETY: `e` is live, `ptrs` and `lens` hold `ptrs.len()` entries each, `out` is writable
    // for `out.len()` floats; a length that lies must be refused before any text is read.
    unsafe {
        ember_encode(
            e,
            ptrs.as_ptr(),
            lens.as_ptr(),
            ptrs.len(),
            out.as_mut_ptr(),
            out.len(),
        )
    }
}

#[test]
fn a_length_past_isize_max_is_an_error() {
    let e = load_tiny();
    // SAFETY: `e` is live.
    let dim = unsafe { ember_dim(e) };
    let texts: [&[u8]; 2] = [b"fine", b"x"];
    let ptrs: Vec<*const c_char> = texts.iter().map(|t| t.as_ptr().cast()).collect();
    for bad_len in [usize::MAX, isize::MAX as usize + 1] {
        let lens = [texts[0].len(), bad_len];
        let mut out = vec![f32::NAN; 2 * dim];
        // `lens[1]` lies about text 1, which ember_encode must refuse before reading it.
        let rc = encode(e, &ptrs, &lens, &mut out);
        assert_eq!(rc, -1, "lens[1] = {bad_len} accepted");
        let message = last_error();
        assert!(
            message.contains("lens[1]") && message.contains("isize::MAX"),
            "{message}"
        );
        assert!(out.iter().all(|x| x.is_nan()), "out was written");
    }
    // The same call with honest lengths works.
    let lens = [texts[0].len(), texts[1].len()];
    let mut out = vec![f32::NAN; 2 * dim];
    assert_eq!(encode(e, &ptrs, &lens, &mut out), 0);
    assert!(out.iter().all(|x| x.is_finite()));
    // SAFETY: `e` came from ember_load and is no longer used.
    unsafe { ember_free(e) };
}

#[test]
fn a_count_no_array_can_hold_is_an_error() {
    let e = load_tiny();
    let text: &[u8] = b"x";
    let ptrs = [text.as_ptr().cast::<c_char>()];
    let lens = [text.len()];
    let mut out = [f32::NAN; 4];
    let too_many = isize::MAX as usize / size_of::<*const c_char>() + 1;
    for n in [too_many, usize::MAX] {
        // SAFETY: the arrays hold one entry, not `n`: ember_encode must refuse `n` before it
        // forms a slice of them. `out_len` is as large as `n` would need, so that only `n`
        // itself is at fault.
        let rc = unsafe {
            ember_encode(
                e,
                ptrs.as_ptr(),
                lens.as_ptr(),
                n,
                out.as_mut_ptr(),
                usize::MAX,
            )
        };
        assert_eq!(rc, -1, "n = {n} accepted");
        let message = last_error();
        assert!(message.contains(&format!("n = {n}")), "{message}");
        assert!(out.iter().all(|x| x.is_nan()), "out was written");
    }
    // SAFETY: `e` came from ember_load and is no longer used.
    unsafe { ember_free(e) };
}

#[test]
fn a_text_inside_out_is_an_error() {
    let e = load_tiny();
    // SAFETY: `e` is live.
    let dim = unsafe { ember_dim(e) };
    // One buffer for both, as a C caller with an arena might: the text sits in out's bytes,
    // which the encoder would write while it reads the text.
    let mut arena = vec![0f32; 2 * dim];
    let text = b"a cat";
    // SAFETY: the arena holds 8 · dim ≥ 5 bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), arena.as_mut_ptr().cast::<u8>().add(4), 5)
    };
    // SAFETY: the arena's base as bytes; 4 + 5 bytes stay inside it.
    let inside = unsafe { arena.as_ptr().cast::<c_char>().add(4) };
    let fine: &[u8] = b"fine";
    for (ptrs, bad) in [
        ([fine.as_ptr().cast(), inside], 1),
        ([inside, fine.as_ptr().cast()], 0),
    ] {
        let lens = [if bad == 0 { 5 } else { 4 }, if bad == 1 { 5 } else { 4 }];
        // SAFETY: every pointer is live for its length; `out` is the arena, 2 · dim floats.
        let rc = unsafe {
            ember_encode(
                e,
                ptrs.as_ptr(),
                lens.as_ptr(),
                2,
                arena.as_mut_ptr(),
                2 * dim,
            )
        };
        assert_eq!(rc, -1, "a text inside out was accepted");
        let message = last_error();
        assert!(
            message.contains(&format!("text {bad} overlaps out")),
            "{message}"
        );
    }
    // A text that ends where out begins does not overlap it: "fine" in the arena's first
    // float, out the next `dim`.
    let mut arena = vec![0f32; 1 + dim];
    arena[0] = f32::from_ne_bytes(*b"fine");
    let (text, out) = arena.split_at_mut(1);
    let ptrs = [text.as_ptr().cast::<c_char>()];
    assert_eq!(encode(e, &ptrs, &[4], out), 0, "{}", last_error_or_none());
    assert!(out.iter().all(|x| x.is_finite()));
    // SAFETY: `e` came from ember_load and is no longer used.
    unsafe { ember_free(e) };
}

fn last_error_or_none() -> String {
    let ptr = ember_last_error();
    if ptr.is_null() {
        return "no error".into();
    }
    // SAFETY: as in last_error.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_thread_count_past_max_threads_is_an_error() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-bert");
    let path = CString::new(model.to_str().expect("UTF-8 path")).expect("no NUL");
    for threads in [usize::MAX, ember::MAX_THREADS + 1] {
        // SAFETY: a valid C string.
        let e = unsafe { ember_load(path.as_ptr(), threads, 0) };
        assert!(e.is_null(), "threads = {threads} accepted");
        let message = last_error();
        assert!(
            message.contains(&format!("threads = {threads}")),
            "{message}"
        );
    }
}

#[test]
fn a_misaligned_out_is_an_error() {
    let e = load_tiny();
    // SAFETY: `e` is live.
    let dim = unsafe { ember_dim(e) };
    let text: &[u8] = b"a cat";
    let ptrs = [text.as_ptr().cast::<c_char>()];
    let lens = [text.len()];
    let mut buffer = vec![0f32; dim + 1];
    // One byte into the buffer: a float * that no float can be read or written through.
    let misaligned = buffer
        .as_mut_ptr()
        .cast::<u8>()
        .wrapping_add(1)
        .cast::<f32>();
    // SAFETY: `e` is live and the arrays hold one entry; `out` must be refused before use.
    let rc = unsafe { ember_encode(e, ptrs.as_ptr(), lens.as_ptr(), 1, misaligned, dim) };
    assert_eq!(rc, -1, "a misaligned out was accepted");
    let message = last_error();
    assert!(message.contains("aligned"), "{message}");
    assert!(buffer.iter().all(|&x| x == 0.0), "out was written");
    // SAFETY: `e` came from ember_load and is no longer used.
    unsafe { ember_free(e) };
}
