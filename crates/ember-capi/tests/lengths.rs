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
