//! AVX-512F microkernel: a `14 × 32` tile of `Y` in 28 zmm accumulators.
//!
//! Per `kk`: two 16-float loads of the B panel row, then for each of the 14 rows one
//! broadcast from the packed A micro-panel (constant offsets `i·KG`) and two FMAs: 28 FMAs
//! per 16 loads, so the two FMA ports stay the bottleneck. Partial tiles use the same body
//! instantiated for `rows < 14` (identical per-element FMA chains) and masked loads/stores
//! for `cols < 32`.

use std::arch::x86_64::*;

use std::marker::PhantomData;

use super::panel_elem::PanelElem;
use super::{pack_a_request_fits, Microkernel, RowQuant, TileEpilogue, KC, KG, NR};
use crate::activation::{epilogue_row, epilogue_tile, Activation};
use crate::simd::{avx512_prefix_mask, Avx512Token};

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 14;

/// The AVX-512 kernel over B panels of `B`; holding one proves the CPU has AVX-512F, AVX2
/// and FMA.
#[derive(Debug)]
pub(crate) struct Avx512Kernel<B>(Avx512Token, PhantomData<fn() -> B>);

impl<B> Clone for Avx512Kernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for Avx512Kernel<B> {}

impl<B> Avx512Kernel<B> {
    /// `Some` iff this CPU supports the kernel.
    pub(crate) fn detect() -> Option<Self> {
        Avx512Token::detect().map(|t| Self(t, PhantomData))
    }
}

impl<B: PanelElem> Microkernel for Avx512Kernel<B> {
    type A = f32;
    type B = B;
    const MR: usize = MR;

    unsafe fn tile(
        self,
        kc: usize,
        a: *const f32,
        b: *const B,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        mr: usize,
        accumulate: bool,
        epi: Option<TileEpilogue>,
    ) {
        #[cfg(test)]
        TILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the token proves AVX-512F; the caller upholds the pointer contract.
        unsafe { tile_avx512::<B>(kc, a, b, c, ldc, rows, cols, mr, accumulate, epi) }
    }

    fn pack_a(
        self,
        x: &[f32],
        k: usize,
        (r0, r1): (usize, usize),
        pc: usize,
        kc: usize,
        mr: usize,
        quant: &[RowQuant],
        dst: &mut [f32],
    ) {
        if !pack_a_request_fits::<Self>((x, k), (r0, r1), (pc, kc), mr, quant, dst.len()) {
            debug_assert!(false, "pack_a: out-of-bounds request");
            return;
        }
        // SAFETY: the token proves AVX-512F; bounds were checked just above.
        unsafe { pack_a_avx512(x.as_ptr(), k, (r0, r1), pc, kc, mr, dst.as_mut_ptr()) }
    }

    unsafe fn epilogue_tile(
        self,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        act: Activation,
        residual: *const f32,
        ldr: usize,
    ) {
        // SAFETY: the token proves the CPU features; the caller upholds the tile contract.
        unsafe { epilogue_tile_avx512(self.0, c, ldc, rows, cols, act, residual, ldr) }
    }

    fn epilogue_row(
        self,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    ) {
        epilogue_row_avx512(self.0, row, bias, act, residual)
    }
}

/// [`Microkernel::epilogue_tile`] of every AVX-512 kernel (f32, bf16, int8): the generic
/// epilogue compiled with AVX-512.
///
/// # Safety
/// As [`epilogue_tile`].
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn epilogue_tile_avx512(
    t: Avx512Token,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    act: Activation,
    residual: *const f32,
    ldr: usize,
) {
    // SAFETY: forwarded contract; the token proves the CPU features.
    unsafe { epilogue_tile(t, c, ldc, rows, cols, act, residual, ldr) }
}

/// [`Microkernel::epilogue_row`] of every AVX-512 kernel, compiled with AVX-512.
pub(super) fn epilogue_row_avx512(
    t: Avx512Token,
    row: &mut [f32],
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
) {
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run(
        t: Avx512Token,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    ) {
        epilogue_row(t, row, bias, act, residual)
    }
    // SAFETY: the token proves the CPU has AVX-512F, AVX2 and FMA.
    unsafe { run(t, row, bias, act, residual) }
}

/// `match rows { 1 => go!(1), …, 14 => go!(14), _ => {} }`: a tile body instantiated for
/// each row count of the 14-row AVX-512 kernels.
macro_rules! dispatch_rows_14 {
    ($rows:expr, $go:ident) => {
        match $rows {
            1 => $go!(1),
            2 => $go!(2),
            3 => $go!(3),
            4 => $go!(4),
            5 => $go!(5),
            6 => $go!(6),
            7 => $go!(7),
            8 => $go!(8),
            9 => $go!(9),
            10 => $go!(10),
            11 => $go!(11),
            12 => $go!(12),
            13 => $go!(13),
            14 => $go!(14),
            _ => {}
        }
    };
}
pub(super) use dispatch_rows_14;

// One k group is exactly one zmm (and one cache line) per row.
const _: () = assert!(KG == 16);

/// [`super::pack_a_block`] for `KG = 16`: each row's 16-float group is one
/// masked zmm load and one masked zmm store (masks cover the `kc` tail).
///
/// # Safety
/// CPU has AVX-512F; `x` readable for `r1·k` floats, `kc ≤ KC`, `pc + kc ≤ k`, `mr ≥ 1`,
/// `dst` writable for the layout of [`super::pack_a_block`].
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pack_a_avx512(
    x: *const f32,
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    dst: *mut f32,
) {
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = dst.wrapping_add(q * mr * KC);
        for (g, kk0) in (0..kc).step_by(KG).enumerate() {
            let mask = avx512_prefix_mask(kc - kk0);
            for i in 0..rows {
                // SAFETY: row ir + i < r1 and columns pc + kk0 .. pc + min(kc, kk0 + 16) ≤ k
                // lie inside x; the store goes to group g, row i of this micro-panel, inside
                // dst. Masked-off lanes are neither read nor written.
                unsafe {
                    let v = _mm512_maskz_loadu_ps(mask, x.add((ir + i) * k + pc + kk0));
                    _mm512_mask_storeu_ps(panel.add(g * mr * KG + i * KG), mask, v);
                }
            }
        }
    }
}

/// How many k steps ahead (`B_PREFETCH · NR` floats) the microkernel prefetches B.
const B_PREFETCH: usize = 24;

/// Dispatches on `rows` to a body with a compile-time row count.
///
/// # Safety
/// CPU has AVX-512F; pointer contract of [`Microkernel::tile`].
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<B: PanelElem>(
    kc: usize,
    a: *const f32,
    b: *const B,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    mr: usize,
    accumulate: bool,
    epi: Option<TileEpilogue>,
) {
    macro_rules! go {
        ($r:literal) => {
            // SAFETY: forwarded contract; rows == $r ≤ mr ≤ MR.
            unsafe { tile_body::<B, $r>(kc, a, b, c, ldc, cols, mr, accumulate, epi) }
        };
    }
    dispatch_rows_14!(rows, go);
}

/// `C[0..R, 0..cols] = (accumulate ? C : 0) + A·B`, one FMA chain per element over `kk`,
/// then the in-register epilogue if `epi` is given.
///
/// # Safety
/// Called only from `tile_avx512` (AVX-512F enabled); `R ≤ MR`, pointer contract of
/// [`Microkernel::tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<B: PanelElem, const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const B,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    mr: usize,
    accumulate: bool,
    epi: Option<TileEpilogue>,
) {
    // SAFETY: (whole body) AVX-512F is enabled by the caller. `load_tile` and `finish_tile`
    // touch only columns < cols of rows < R of C (inside the caller's tile). A reads stay
    // within the mr·kc_pad micro-panel, B reads within kc·NR.
    unsafe {
        let (mut acc0, mut acc1) = if accumulate {
            load_tile::<R>(c, ldc, cols)
        } else {
            ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R])
        };
        // One k step: two B vectors, R broadcasts, 2R FMAs. Unrolled ×4 so the loop counter
        // and pointer updates (which compete for the FMA ports) are amortised.
        macro_rules! k_step {
            ($a:expr, $b:expr) => {{
                let b0 = B::load16($b);
                let b1 = B::load16($b.add(16));
                for i in 0..R {
                    let ai = _mm512_set1_ps(*$a.add(i * KG));
                    acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
                    acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
                }
            }};
        }
        let mut a = a;
        let mut b = b;
        for _ in 0..kc / KG {
            for u in 0..KG {
                // B streams from memory when the weights are not cached (few rows, e.g. one
                // text): fetch the lines B_PREFETCH k steps ahead. A hint only — it never
                // faults, so running past the panel's end is harmless.
                let ahead = b.wrapping_add((u + B_PREFETCH) * NR);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
                k_step!(a.add(u), b.add(u * NR));
            }
            a = a.add(mr * KG);
            b = b.add(KG * NR);
        }
        for u in 0..kc % KG {
            k_step!(a.add(u), b.add(u * NR));
        }
        finish_tile::<R>(acc0, acc1, c, ldc, cols, epi);
    }
}

/// The `R × cols` tile of `C` at `c` (`cols ≤ 32`) as two zmm per row, zero past `cols`.
///
/// # Safety
/// AVX-512F enabled in the caller; `c` readable at `C[i·ldc + j]` for `i < R`, `j < cols`.
#[inline(always)]
pub(super) unsafe fn load_tile<const R: usize>(
    c: *const f32,
    ldc: usize,
    cols: usize,
) -> ([__m512; R], [__m512; R]) {
    let m0 = avx512_prefix_mask(cols);
    let m1 = avx512_prefix_mask(cols.saturating_sub(16));
    // SAFETY: AVX-512F is enabled in the caller; masked-off lanes are not read, and
    // `wrapping_add` keeps the address arithmetic defined even when the second half lies
    // past the buffer.
    unsafe {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        for i in 0..R {
            let ci = c.wrapping_add(i * ldc);
            acc0[i] = _mm512_maskz_loadu_ps(m0, ci);
            acc1[i] = _mm512_maskz_loadu_ps(m1, ci.wrapping_add(16));
        }
        (acc0, acc1)
    }
}

/// Applies `epi` (bias, ReLU, residual: [`TileEpilogue`]) to the accumulators if given and
/// stores them to the `R × cols` tile of `C` at `c` (`cols ≤ 32`), masked past `cols`.
///
/// # Safety
/// AVX-512F enabled in the caller; `c` writable at `C[i·ldc + j]` for `i < R`, `j < cols`;
/// `epi`'s pointers readable for those columns (and rows).
#[inline(always)]
pub(super) unsafe fn finish_tile<const R: usize>(
    mut acc0: [__m512; R],
    mut acc1: [__m512; R],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Option<TileEpilogue>,
) {
    let m0 = avx512_prefix_mask(cols);
    let m1 = avx512_prefix_mask(cols.saturating_sub(16));
    // SAFETY: C, bias and residual are accessed through masks m0/m1, which cover exactly
    // columns < cols of rows < R; masked-off lanes are never touched.
    unsafe {
        if let Some(e) = epi {
            // Same masks as C: only columns < cols of bias / residual rows are read.
            if !e.bias.is_null() {
                let bias0 = _mm512_maskz_loadu_ps(m0, e.bias);
                let bias1 = _mm512_maskz_loadu_ps(m1, e.bias.wrapping_add(16));
                for i in 0..R {
                    acc0[i] = _mm512_add_ps(acc0[i], bias0);
                    acc1[i] = _mm512_add_ps(acc1[i], bias1);
                }
            }
            if e.relu {
                // max(0, x): a NaN in x is returned (second operand), as torch.relu.
                for i in 0..R {
                    acc0[i] = _mm512_max_ps(_mm512_setzero_ps(), acc0[i]);
                    acc1[i] = _mm512_max_ps(_mm512_setzero_ps(), acc1[i]);
                }
            }
            if !e.residual.is_null() {
                for i in 0..R {
                    let ri = e.residual.wrapping_add(i * e.ld_residual);
                    acc0[i] = _mm512_add_ps(acc0[i], _mm512_maskz_loadu_ps(m0, ri));
                    acc1[i] =
                        _mm512_add_ps(acc1[i], _mm512_maskz_loadu_ps(m1, ri.wrapping_add(16)));
                }
            }
        }
        for i in 0..R {
            let ci = c.wrapping_add(i * ldc);
            _mm512_mask_storeu_ps(ci, m0, acc0[i]);
            _mm512_mask_storeu_ps(ci.wrapping_add(16), m1, acc1[i]);
        }
    }
}
