//! The C ABI of Ember (`include/ember.h`): load a model, ask its dimension, embed UTF-8 texts
//! into a caller's buffer, read the last error, free.
//!
//! `ember_load` and `ember_encode` run under [`std::panic::catch_unwind`], and the other
//! entry points cannot panic (their thread-locals are reached with `try_with`, so not even
//! from a thread-local destructor that runs after Rust's own), so no panic unwinds into C; a
//! failure is a return value (`NULL` or `-1`) and [`ember_last_error`] tells what happened,
//! per thread. Pointers from C are checked for `NULL`; lengths are checked before any
//! slice is formed; texts are validated as UTF-8 (an error names the text's index) and
//! checked not to overlap the output buffer.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ember::Embedder;

/// What `ember_load` returns: the embedder behind an opaque C type.
pub struct EmberEmbedder {
    embedder: Embedder,
}

/// A caller's text inside `ember_encode`: `len` bytes at `ptr`, UTF-8 (every `CText` is:
/// `CText::new` checks it). Read only during the `ember_encode` call that made it, while the
/// caller keeps the bytes alive and unchanged.
#[derive(Clone, Copy)]
struct CText {
    ptr: *const u8,
    len: usize,
}

// SAFETY: a read-only view of bytes the caller keeps alive and unmodified for the whole
// `ember_encode` call; the embedder only reads them, from any of its threads, during the call.
unsafe impl Send for CText {}
// SAFETY: as above.
unsafe impl Sync for CText {}

impl CText {
    /// The view of text `index`: `len` bytes at `ptr`, refused (before any slice is formed)
    /// when `ptr` is `NULL` with bytes to read, or `len` is past `isize::MAX`, the most a
    /// slice can span: e.g. `(size_t)-1`, the C idiom for "NUL-terminated", which Ember does
    /// not take; and refused when the bytes are not UTF-8 (naming where they stop being).
    fn new(index: usize, ptr: *const c_char, len: usize) -> Result<Self, String> {
        if len > isize::MAX as usize {
            return Err(format!(
                "ember_encode: lens[{index}] = {len} is past the largest text (isize::MAX bytes); \
                 lens[i] is a byte count ((size_t)-1 for a NUL-terminated text is not accepted)"
            ));
        }
        if len > 0 && ptr.is_null() {
            return Err(format!("ember_encode: text {index} is NULL"));
        }
        let view = Self {
            ptr: ptr.cast(),
            len,
        };
        std::str::from_utf8(view.bytes()).map_err(|e| {
            format!(
                "ember_encode: text {index} is not UTF-8 (at byte {})",
                e.valid_up_to()
            )
        })?;
        Ok(view)
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: non-null and `len ≤ isize::MAX` (both checked by `CText::new`), and `len`
        // readable bytes, as the caller of `ember_encode` promises, alive for the call.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl AsRef<str> for CText {
    fn as_ref(&self) -> &str {
        // SAFETY: `CText::new`, the only way to make one, checked these bytes are UTF-8.
        unsafe { std::str::from_utf8_unchecked(self.bytes()) }
    }
}

thread_local! {
    /// Per-thread list of text views, reused by `ember_encode` so that it allocates nothing
    /// once warm.
    static TEXTS: RefCell<Vec<CText>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's last error, returned by `ember_last_error`.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: Option<String>) {
    // An interior NUL cannot be represented in a C string: show it as U+2400.
    let message = message
        .map(|m| CString::new(m.replace('\0', "\u{2400}")).unwrap_or_else(|_| CString::default()));
    // After the thread's storage is gone (a C++ thread_local's destructor calling in) there is
    // nowhere to keep it; ember_last_error says so.
    let _ = LAST_ERROR.try_with(|cell| *cell.borrow_mut() = message);
}

/// Runs `f`, recording its error (or panic) as the thread's last error; `fallback` is returned
/// on failure.
fn guarded<T>(fallback: T, f: impl FnOnce() -> Result<T, String>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => {
            set_last_error(None);
            value
        }
        Ok(Err(message)) => {
            set_last_error(Some(message));
            fallback
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(Some(format!("internal error (panic): {what}")));
            fallback
        }
    }
}

/// Loads a model folder or cached hub id. `threads == 0`: one per core; `batch_size == 0`:
/// the default. `NULL` on failure.
///
/// # Safety
/// `model` is `NULL` or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ember_load(
    model: *const c_char,
    threads: usize,
    batch_size: usize,
) -> *mut EmberEmbedder {
    guarded(std::ptr::null_mut(), || {
        if model.is_null() {
            return Err("ember_load: model is NULL".into());
        }
        // SAFETY: non-null, and the caller promises a NUL-terminated string.
        let model = unsafe { CStr::from_ptr(model) }
            .to_str()
            .map_err(|_| "ember_load: model path is not UTF-8".to_string())?;
        // Offline whatever features the build unified: the C interface promises a lookup in
        // the local cache, never a network request inside ember_load (a workspace build turns
        // on ember's `hub` feature through ember-cli).
        let mut builder = Embedder::builder().hub(ember::HubConfig::from_env().offline(true));
        if threads > 0 {
            builder = builder.threads(threads);
        }
        if batch_size > 0 {
            builder = builder.batch_size(batch_size);
        }
        let embedder = builder.load(model).map_err(|e| e.to_string())?;
        Ok(Box::into_raw(Box::new(EmberEmbedder { embedder })))
    })
}

/// Width of one embedding; 0 for `NULL`.
///
/// # Safety
/// `embedder` is `NULL` or a live pointer from [`ember_load`].
#[no_mangle]
pub unsafe extern "C" fn ember_dim(embedder: *const EmberEmbedder) -> usize {
    // SAFETY: the caller promises NULL or a live embedder.
    unsafe { embedder.as_ref() }.map_or(0, |e| e.embedder.dim())
}

/// Longest token sequence the model reads; 0 for `NULL`.
///
/// # Safety
/// As [`ember_dim`].
#[no_mangle]
pub unsafe extern "C" fn ember_max_seq_length(embedder: *const EmberEmbedder) -> usize {
    // SAFETY: the caller promises NULL or a live embedder.
    unsafe { embedder.as_ref() }.map_or(0, |e| e.embedder.max_seq_length())
}

/// Embeds `n` texts (`texts[i]`: `lens[i]` bytes of UTF-8) into `out` (`out_len` floats, at
/// least `n · dim` needed). 0 on success, -1 on failure: among others, for a `lens[i]` past
/// `isize::MAX` (such as `(size_t)-1`: lengths are byte counts, not a NUL-terminated marker)
/// or an `n` no array of pointers can hold, refused before anything is read.
///
/// # Safety
/// `embedder` is `NULL` or live; when `n > 0`, `texts` and `lens` point to `n` entries each,
/// `texts[i]` to `lens[i]` readable bytes, and `out` to `out_len` writable floats that nothing
/// else accesses during the call.
#[no_mangle]
pub unsafe extern "C" fn ember_encode(
    embedder: *const EmberEmbedder,
    texts: *const *const c_char,
    lens: *const usize,
    n: usize,
    out: *mut f32,
    out_len: usize,
) -> c_int {
    guarded(-1, || {
        // SAFETY: the caller promises NULL or a live embedder.
        let embedder = &unsafe { embedder.as_ref() }
            .ok_or("ember_encode: embedder is NULL")?
            .embedder;
        if n == 0 {
            return Ok(0);
        }
        if texts.is_null() || lens.is_null() || out.is_null() {
            return Err("ember_encode: texts, lens and out must not be NULL".into());
        }
        // A slice over a misaligned pointer is undefined behaviour; in C the pointer already
        // was (a cast from a char buffer, say): say so rather than read through it.
        if !(texts.is_aligned() && lens.is_aligned() && out.is_aligned()) {
            return Err(
                "ember_encode: texts, lens and out must be aligned for their types (out at a \
                 multiple of sizeof(float), texts of sizeof(char *), lens of sizeof(size_t))"
                    .into(),
            );
        }
        // A slice spans at most isize::MAX bytes: past that, no caller can hold the arrays
        // (`n` is garbage, e.g. a negative count cast to size_t) and forming them is UB.
        let max_n = isize::MAX as usize / size_of::<*const c_char>().max(size_of::<usize>());
        if n > max_n {
            return Err(format!(
                "ember_encode: n = {n} texts is more than texts and lens can hold (at most {max_n})"
            ));
        }
        let needed = n
            .checked_mul(embedder.dim())
            .filter(|&needed| needed <= isize::MAX as usize / size_of::<f32>())
            .ok_or_else(|| {
                format!(
                    "ember_encode: {n} texts × dim {} is more floats than out can hold",
                    embedder.dim()
                )
            })?;
        if out_len < needed {
            return Err(format!(
                "ember_encode: out holds {out_len} floats, {n} texts × {} need {needed}",
                embedder.dim()
            ));
        }
        // SAFETY: non-null, `n` entries of 8 bytes or fewer span at most isize::MAX bytes
        // (checked above), and the caller promises `n` entries each.
        let (ptrs, lens) = unsafe {
            (
                std::slice::from_raw_parts(texts, n),
                std::slice::from_raw_parts(lens, n),
            )
        };
        // The bytes of `out`, which no text may share: `encode_into` reads the texts while it
        // writes `out`.
        let out_bytes = (out as usize)..(out as usize).saturating_add(needed * size_of::<f32>());
        let encode = |views: &mut Vec<CText>| -> Result<(), String> {
            for (i, (&ptr, &len)) in ptrs.iter().zip(lens).enumerate() {
                // Its length first: a (size_t)-1 would "overlap" everything after `ptr`.
                let view = CText::new(i, ptr, len)?;
                let text_bytes = (ptr as usize)..(ptr as usize).saturating_add(len);
                if text_bytes.start < out_bytes.end && out_bytes.start < text_bytes.end {
                    return Err(format!("ember_encode: text {i} overlaps out"));
                }
                views.push(view);
            }
            // SAFETY: non-null, `needed ≤ isize::MAX / 4` (checked above), no text overlaps it
            // (checked above), and the caller promises `out_len ≥ needed` writable floats used
            // by nothing else during the call.
            let out = unsafe { std::slice::from_raw_parts_mut(out, needed) };
            embedder
                .encode_into(views.as_slice(), out)
                .map_err(|e| e.to_string())
        };
        // The thread's list of views, reused (no allocation after the first calls); a fresh
        // one if it is somehow in use, or the thread's storage already destroyed.
        let run = |views: &mut Vec<CText>| {
            views.clear();
            let result = encode(views);
            // Views are only read inside the call that made them; clearing on every way out
            // leaves no pointer of the caller's behind.
            views.clear();
            result
        };
        TEXTS
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut views) => run(&mut views),
                Err(_) => run(&mut Vec::new()),
            })
            .unwrap_or_else(|_| run(&mut Vec::new()))?;
        Ok(0)
    })
}

/// The error of the calling thread's last `ember_load` or `ember_encode`, or `NULL` if it
/// succeeded; valid until the thread's next such call.
#[no_mangle]
pub extern "C" fn ember_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|cell| match cell.try_borrow() {
            Ok(message) => message.as_ref().map_or(std::ptr::null(), |m| m.as_ptr()),
            Err(_) => c"ember: the last error is being written".as_ptr(),
        })
        .unwrap_or_else(|_| {
            c"ember: the last error is unavailable: this thread's storage is destroyed".as_ptr()
        })
}

/// Releases an embedder; `NULL` is ignored.
///
/// # Safety
/// `embedder` is `NULL` or a pointer from [`ember_load`] not yet freed, unused by any other
/// thread from now on.
#[no_mangle]
pub unsafe extern "C" fn ember_free(embedder: *mut EmberEmbedder) {
    if !embedder.is_null() {
        // SAFETY: the caller passes ownership of a pointer made by `Box::into_raw`.
        drop(unsafe { Box::from_raw(embedder) });
    }
}
