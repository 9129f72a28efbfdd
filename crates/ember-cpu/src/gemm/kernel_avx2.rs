//! AVX2 + FMA microkernel: `6 × 16` tiles (12 ymm accumulators), run twice per 32-column panel.
//!
//! The packed B panel is 32 columns wide; each half is read with a row stride of `NR = 32`.
//! Per `kk`: two 8-float B loads, six broadcasts from the packed A micro-panel, twelve FMAs;
//! per group of `KG` k values, a prefetch of each B row of the next group.
//! Partial tiles: the same body for fewer rows; columns past `cols` go through masked
//! loads/stores (`vmaskmovps`).

use std::arch::x86_64::*;

use std::marker::PhantomData;

use super::panel_elem::PanelElem;
use super::{pack_a_block, Microkernel, RowQuant, TileEpilogue, KG, NR};
use crate::activation::{epilogue_row, epilogue_tile, Activation};
use crate::simd::Avx2Token;

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 6;
/// Columns per half-panel pass.
pub(super) const HALF: usize = 16;

/// The AVX2 kernel over B panels of `B`; holding one proves the CPU has AVX2, FMA and F16C
/// (every AVX2 CPU has F16C; it widens f16 panels).
#[derive(Debug)]
pub(crate) struct Avx2Kernel<B>(Avx2Token, PhantomData<fn() -> B>);

impl<B> Clone for Avx2Kernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for Avx2Kernel<B> {}

impl<B> Avx2Kernel<B> {
    /// `Some` iff this CPU supports the kernel.
    pub(crate) fn detect() -> Option<Self> {
        let f16c = std::is_x86_feature_detected!("f16c");
        Avx2Token::detect()
            .filter(|_| f16c)
            .map(|t| Self(t, PhantomData))
    }
}

impl<B: PanelElem> Microkernel for Avx2Kernel<B> {
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
        for_each_half(cols, epi, |start, width, epi| {
            // SAFETY: `detect` proved AVX2, FMA and F16C; this half's columns
            // start..start+width lie inside the caller's tile, and b + start stays inside the
            // kc·NR panel slice.
            unsafe {
                tile_avx2::<B>(
                    kc,
                    a,
                    b.add(start),
                    c.add(start),
                    ldc,
                    rows,
                    width,
                    mr,
                    accumulate,
                    epi,
                )
            }
        });
    }

    fn pack_a(
        self,
        x: &[f32],
        k: usize,
        rows: (usize, usize),
        pc: usize,
        kc: usize,
        mr: usize,
        _quant: &[RowQuant],
        dst: &mut [f32],
    ) {
        pack_a_block(x, k, rows, pc, kc, mr, dst);
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
        /// # Safety
        /// As [`epilogue_tile`]; the CPU supports the token's features.
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn run(
            t: Avx2Token,
            c: *mut f32,
            ldc: usize,
            rows: usize,
            cols: usize,
            act: Activation,
            residual: *const f32,
            ldr: usize,
        ) {
            // SAFETY: forwarded contract.
            unsafe { epilogue_tile(t, c, ldc, rows, cols, act, residual, ldr) }
        }
        // SAFETY: the token proves the CPU features; the caller upholds the tile contract.
        unsafe { run(self.0, c, ldc, rows, cols, act, residual, ldr) }
    }

    fn epilogue_row(
        self,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    ) {
        #[target_feature(enable = "avx2,fma")]
        fn run(
            t: Avx2Token,
            row: &mut [f32],
            bias: Option<&[f32]>,
            act: Activation,
            residual: Option<&[f32]>,
        ) {
            epilogue_row(t, row, bias, act, residual)
        }
        // SAFETY: the token proves the CPU has AVX2 and FMA.
        unsafe { run(self.0, row, bias, act, residual) }
    }
}

/// Dispatches on `rows` to a body with a compile-time row count.
///
/// # Safety
/// CPU has AVX2, FMA and F16C; `b` readable for `kc` rows of stride `NR` and `width ≤ 16` columns;
/// otherwise the pointer contract of [`Microkernel::tile`] with `cols = width`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<B: PanelElem>(
    kc: usize,
    a: *const f32,
    b: *const B,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    width: usize,
    mr: usize,
    accumulate: bool,
    epi: Option<TileEpilogue>,
) {
    macro_rules! go {
        ($r:literal) => {
            // SAFETY: forwarded contract; rows == $r ≤ mr ≤ MR.
            unsafe { tile_body::<B, $r>(kc, a, b, c, ldc, width, mr, accumulate, epi) }
        };
    }
    dispatch_rows_6!(rows, go);
}

/// `match rows { 1 => go!(1), …, 6 => go!(6), _ => {} }`: a tile body instantiated for each
/// row count of the 6-row AVX2 kernels.
macro_rules! dispatch_rows_6 {
    ($rows:expr, $go:ident) => {
        match $rows {
            1 => $go!(1),
            2 => $go!(2),
            3 => $go!(3),
            4 => $go!(4),
            5 => $go!(5),
            6 => $go!(6),
            _ => {}
        }
    };
}
pub(super) use dispatch_rows_6;

/// Lanes `i < n` all-ones.
#[inline(always)]
pub(super) fn lane_mask(n: usize) -> __m256i {
    let n = n.min(8) as i32;
    // SAFETY: only reached from AVX2-enabled code (the tile bodies and packing of this module,
    // kernel_avx2_i8 and kernel_avx2_bf16).
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

/// Runs `half(start, width, epi)` for each 16-column half of a `cols`-wide tile that has
/// columns (`start` = 0, 16; `width ≤ 16`), with the epilogue's bias and residual pointers
/// shifted to that half (null stays null).
#[inline(always)]
pub(super) fn for_each_half(
    cols: usize,
    epi: Option<TileEpilogue>,
    mut half: impl FnMut(usize, usize, Option<TileEpilogue>),
) {
    for start in (0..NR).step_by(HALF) {
        if start >= cols {
            break;
        }
        let shift = |p: *const f32| {
            if p.is_null() {
                p
            } else {
                p.wrapping_add(start)
            }
        };
        let epi = epi.map(|e| TileEpilogue {
            bias: shift(e.bias),
            residual: shift(e.residual),
            ..e
        });
        half(start, HALF.min(cols - start), epi);
    }
}

/// `C[0..R, 0..width] = (accumulate ? C : 0) + A·B[:, 0..16]`, then the in-register
/// epilogue if `epi` is given.
///
/// # Safety
/// As [`tile_avx2`], with `R ≤ MR`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<B: PanelElem, const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const B,
    c: *mut f32,
    ldc: usize,
    width: usize,
    mr: usize,
    accumulate: bool,
    epi: Option<TileEpilogue>,
) {
    // SAFETY: (whole body) AVX2+FMA enabled by the caller. C is accessed only at rows < R and
    // columns < width (by `load_tile` / `finish_tile`). A/B reads stay in kc·MR / kc·NR.
    unsafe {
        let (mut acc0, mut acc1) = if accumulate {
            load_tile::<R>(c, ldc, width)
        } else {
            ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R])
        };
        macro_rules! k_step {
            ($a:expr, $b:expr) => {{
                let b0 = B::load8($b);
                let b1 = B::load8($b.add(8));
                for i in 0..R {
                    let ai = _mm256_set1_ps(*$a.add(i * KG));
                    acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
                    acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
                }
            }};
        }
        let mut a = a;
        let mut b = b;
        for _ in 0..kc / KG {
            // This half's B rows of the next k group (one line each), fetched while this group
            // runs: the panel is `NR` wide, so the rows a half reads are 2 lines apart, a
            // stride the hardware prefetchers follow late. Measured on Zen 3 (AVX2 f32
            // `gemm_throughput`, six pairs in turns): +1 to +9 points of the FMA peak per
            // BERT shape. A prefetch never faults; past the panel's end it fetches nothing
            // used (`wrapping_add` keeps the address arithmetic defined).
            for u in 0..KG {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((KG + u) * NR).cast::<i8>());
            }
            for u in 0..KG {
                k_step!(a.add(u), b.add(u * NR));
            }
            a = a.add(mr * KG);
            b = b.add(KG * NR);
        }
        for u in 0..kc % KG {
            k_step!(a.add(u), b.add(u * NR));
        }
        finish_tile::<R>(acc0, acc1, c, ldc, width, epi);
    }
}

/// The `R × width` tile of `C` at `c` (`width ≤ 16`) as two ymm per row, masked past
/// `width`.
///
/// # Safety
/// AVX2 enabled in the caller; `c` readable at `C[i·ldc + j]` for `i < R`, `j < width`.
#[inline(always)]
pub(super) unsafe fn load_tile<const R: usize>(
    c: *const f32,
    ldc: usize,
    width: usize,
) -> ([__m256; R], [__m256; R]) {
    let m0 = lane_mask(width);
    let m1 = lane_mask(width.saturating_sub(8));
    // SAFETY: AVX2 is enabled in the caller; full loads only when width == 16, otherwise
    // masked lanes are not read, and `wrapping_add` keeps the address arithmetic defined.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        for i in 0..R {
            let ci = c.wrapping_add(i * ldc);
            if width == HALF {
                acc0[i] = _mm256_loadu_ps(ci);
                acc1[i] = _mm256_loadu_ps(ci.add(8));
            } else {
                acc0[i] = _mm256_maskload_ps(ci, m0);
                acc1[i] = _mm256_maskload_ps(ci.wrapping_add(8), m1);
            }
        }
        (acc0, acc1)
    }
}

/// Applies `epi` (bias, ReLU, residual: [`TileEpilogue`]) to the accumulators if given and
/// stores them to the `R × width` tile of `C` at `c` (`width ≤ 16`), masked past `width`.
///
/// # Safety
/// AVX2 enabled in the caller; `c` writable at `C[i·ldc + j]` for `i < R`, `j < width`;
/// `epi`'s pointers readable for those columns (and rows).
#[inline(always)]
pub(super) unsafe fn finish_tile<const R: usize>(
    mut acc0: [__m256; R],
    mut acc1: [__m256; R],
    c: *mut f32,
    ldc: usize,
    width: usize,
    epi: Option<TileEpilogue>,
) {
    let m0 = lane_mask(width);
    let m1 = lane_mask(width.saturating_sub(8));
    // SAFETY: C, bias and residual are accessed only at columns < width (full stores only
    // when width == 16; masked lanes are not touched, and `wrapping_add` keeps the address
    // arithmetic defined) of rows < R.
    unsafe {
        if let Some(e) = epi {
            // Masked like C: only columns < width of bias / residual rows are read.
            if !e.bias.is_null() {
                let bias0 = _mm256_maskload_ps(e.bias, m0);
                let bias1 = _mm256_maskload_ps(e.bias.wrapping_add(8), m1);
                for i in 0..R {
                    acc0[i] = _mm256_add_ps(acc0[i], bias0);
                    acc1[i] = _mm256_add_ps(acc1[i], bias1);
                }
            }
            if e.relu {
                // max(0, x): a NaN in x is returned (second operand), as torch.relu.
                for i in 0..R {
                    acc0[i] = _mm256_max_ps(_mm256_setzero_ps(), acc0[i]);
                    acc1[i] = _mm256_max_ps(_mm256_setzero_ps(), acc1[i]);
                }
            }
            if !e.residual.is_null() {
                for i in 0..R {
                    let ri = e.residual.wrapping_add(i * e.ld_residual);
                    acc0[i] = _mm256_add_ps(acc0[i], _mm256_maskload_ps(ri, m0));
                    acc1[i] = _mm256_add_ps(acc1[i], _mm256_maskload_ps(ri.wrapping_add(8), m1));
                }
            }
        }
        for i in 0..R {
            let ci = c.wrapping_add(i * ldc);
            if width == HALF {
                _mm256_storeu_ps(ci, acc0[i]);
                _mm256_storeu_ps(ci.add(8), acc1[i]);
            } else {
                _mm256_maskstore_ps(ci, m0, acc0[i]);
                _mm256_maskstore_ps(ci.wrapping_add(8), m1, acc1[i]);
            }
        }
    }
}
