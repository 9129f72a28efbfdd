//! AVX512_VNNI microkernel: a `14 × 32` tile of `Y` in 28 zmm `i32` accumulators, `u8`
//! activations × `i8` weights (see [`super::quant`] for the maths).
//!
//! `vpdpbusd acc, a, b` adds, per `i32` lane `j`, `Σ_{t<4} a[4j+t]·b[4j+t]` (`a` unsigned,
//! `b` signed bytes) to `acc[j]`: four k per instruction. B panels hold k quads interleaved
//! per column (`b[(kk/4)·4NR + 4jj + kk%4]`), so one k quad of the tile's 32 columns is two
//! zmm; A supplies each row's quad as one broadcast 32-bit value. Per k quad: 2 loads of B,
//! 14 broadcasts, 28 `vpdpbusd` — the f32 kernel's instruction count for four times the k.
//! Between K blocks the tile's `i32` sums are stored to `C` bit-cast; after the last one they
//! are rescaled, `y = f32(acc − z_i·Σ_k w_q) · (s_i·s_j)`, the weight's outlier channels
//! added (`y + x_c·w_c`, multiply then add, as the portable kernel does), and finished as
//! the f32 kernels do.
//! The A micro-panel is quantised (`vcvtps2dq`, `+ z_i`, clamp, `vpmovdb`) as it is packed.

use std::arch::x86_64::*;

use super::kernel_avx512::{dispatch_rows_14, epilogue_row_avx512, epilogue_tile_avx512};
use super::{
    pack_a_request_fits, Microkernel, RowQuant, TileEpilogue, KC_I8, KG_I8, MAX_OUTLIER_CHANNELS,
    NR,
};
use crate::activation::Activation;
use crate::simd::{avx512_prefix_mask, Avx512Token};

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 14;

/// Round to nearest, ties to even, no exceptions: the conversions' explicit rounding (the
/// same as the default MXCSR mode, and as the portable kernel's `round_ties_even`).
const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// The AVX512_VNNI kernel; holding one proves the CPU has AVX-512F/BW, AVX512_VNNI, AVX2 and
/// FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512VnniKernel(Avx512Token);

impl Avx512VnniKernel {
    /// `Some` iff this CPU supports the kernel.
    pub(crate) fn detect() -> Option<Self> {
        let vnni = std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512bw");
        Avx512Token::detect().filter(|_| vnni).map(Self)
    }
}

// One k group of a row is 64 bytes: one zmm, one cache line, four 16-lane conversions.
const _: () = assert!(KG_I8 == 64);

impl Microkernel for Avx512VnniKernel {
    type A = u8;
    type B = i8;
    const MR: usize = MR;
    const KC: usize = KC_I8;
    const KG: usize = KG_I8;
    const KSTEP: usize = 4;
    const ROW_QUANT: bool = true;

    unsafe fn tile(
        self,
        kc: usize,
        a: *const u8,
        b: *const i8,
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
        // SAFETY: the token proves the CPU features; the caller upholds the pointer contract.
        unsafe { tile_avx512_vnni(kc, a, b, c, ldc, rows, cols, mr, accumulate, epi) }
    }

    fn row_quant(self, row: &[f32], skip: &[usize]) -> RowQuant {
        /// [`RowQuant::of_row_skipping`] vectorised with AVX-512 (min and max are exact:
        /// same result).
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn run(_: Avx512Token, row: &[f32], skip: &[usize]) -> RowQuant {
            RowQuant::of_row_skipping(row, skip)
        }
        // SAFETY: the token proves the CPU has AVX-512F, AVX2 and FMA.
        unsafe { run(self.0, row, skip) }
    }

    fn row_quant_rotated(
        self,
        row: &[f32],
        skip: &[usize],
        block: usize,
        rotated: &mut [f32],
    ) -> RowQuant {
        /// [`RowQuant::of_row_rotated`] vectorised with AVX-512 (additions, subtractions, min
        /// and max in the same order: same result).
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn run(
            _: Avx512Token,
            row: &[f32],
            skip: &[usize],
            block: usize,
            rotated: &mut [f32],
        ) -> RowQuant {
            RowQuant::of_row_rotated(row, skip, block, rotated)
        }
        // SAFETY: the token proves the CPU has AVX-512F, AVX2 and FMA.
        unsafe { run(self.0, row, skip, block, rotated) }
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
        dst: &mut [u8],
    ) {
        if !pack_a_request_fits::<Self>((x, k), (r0, r1), (pc, kc), mr, quant, dst.len()) {
            debug_assert!(false, "pack_a: out-of-bounds request");
            return;
        }
        // SAFETY: the token proves the CPU features; bounds were checked just above.
        unsafe { pack_a_avx512_i8(x.as_ptr(), k, (r0, r1), pc, kc, mr, quant, dst.as_mut_ptr()) }
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

/// [`super::pack_a_block_i8`] vectorised: each row's 64-value group is four masked 16-float
/// loads, each multiplied by `1/s_i`, converted (nearest-even), `+ z_i`, clamped to
/// `[0, 255]` and narrowed to 16 bytes (zero past `kc`).
///
/// # Safety
/// CPU has AVX-512F/BW; `x` readable for `r1·k` floats, `quant` for `r1` entries,
/// `kc ≤ KC_I8`, `pc + kc ≤ k`, `mr ≥ 1`, `dst` writable for the layout of
/// [`super::pack_a_block_i8`].
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a_avx512_i8(
    x: *const f32,
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    quant: &[RowQuant],
    dst: *mut u8,
) {
    let low = _mm512_setzero_si512();
    let high = _mm512_set1_epi32(255);
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = dst.wrapping_add(q * mr * KC_I8);
        for i in 0..rows {
            let rq = quant[ir + i];
            let inv = _mm512_set1_ps(rq.inv_scale);
            let zero = _mm512_set1_epi32(rq.zero);
            for (g, kk0) in (0..kc).step_by(KG_I8).enumerate() {
                for t in 0..4 {
                    let mask = avx512_prefix_mask((kc - kk0).saturating_sub(16 * t));
                    // SAFETY: row ir + i < r1 and columns pc + kk0 + 16t .. ≤ pc + kc ≤ k lie
                    // inside x (masked-off lanes are not read); the 16-byte store is part of
                    // group g, row i of this micro-panel, inside dst.
                    unsafe {
                        let src = x.wrapping_add((ir + i) * k + pc + kk0 + 16 * t);
                        let v = _mm512_maskz_loadu_ps(mask, src);
                        let r = _mm512_cvt_roundps_epi32::<NEAREST>(_mm512_mul_ps(v, inv));
                        let q = _mm512_min_epi32(
                            _mm512_max_epi32(_mm512_add_epi32(r, zero), low),
                            high,
                        );
                        let bytes = _mm512_maskz_cvtepi32_epi8(mask, q);
                        let at = panel.add(g * mr * KG_I8 + i * KG_I8 + 16 * t);
                        _mm_storeu_si128(at.cast(), bytes);
                    }
                }
            }
        }
    }
}

/// How many k quads ahead the microkernel prefetches B (each quad row is 128 bytes, as an
/// f32 k step's row).
const B_PREFETCH: usize = 24;

/// Dispatches on `rows` to a body with a compile-time row count.
///
/// # Safety
/// CPU has AVX-512F/BW and AVX512_VNNI; pointer contract of [`Microkernel::tile`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512_vnni(
    kc: usize,
    a: *const u8,
    b: *const i8,
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
            unsafe { tile_body::<$r>(kc, a, b, c, ldc, cols, mr, accumulate, epi) }
        };
    }
    dispatch_rows_14!(rows, go);
}

/// `acc = (accumulate ? C as i32 : 0) + Σ_k a·b` over the k quads, then either the `i32`
/// sums stored back to `C` (bit-cast; more K blocks follow) or, with `epi`, the rescaled and
/// finished `f32` tile.
///
/// # Safety
/// Called only from `tile_avx512_vnni` (features enabled); `R ≤ MR`, pointer contract of
/// [`Microkernel::tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<const R: usize>(
    kc: usize,
    a: *const u8,
    b: *const i8,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    mr: usize,
    accumulate: bool,
    epi: Option<TileEpilogue>,
) {
    let m0 = avx512_prefix_mask(cols);
    let m1 = avx512_prefix_mask(cols.saturating_sub(16));
    // SAFETY: (whole body) the features are enabled by the caller. C accesses use masks
    // m0/m1, which cover exactly columns < cols of rows < R (inside the caller's tile). A reads
    // stay within the mr·kc_pad micro-panel (the packing zero-fills the last group past kc),
    // B reads within ⌈kc/4⌉ quad rows of 4·NR bytes; the epilogue's row quantisation is read
    // for rows < R, its column scales / sums, outlier weights (rows c < outliers), bias and
    // residual under the column masks.
    unsafe {
        let mut acc0 = [_mm512_setzero_si512(); R];
        let mut acc1 = [_mm512_setzero_si512(); R];
        if accumulate {
            for i in 0..R {
                let ci = c.wrapping_add(i * ldc).cast::<i32>();
                acc0[i] = _mm512_maskz_loadu_epi32(m0, ci);
                acc1[i] = _mm512_maskz_loadu_epi32(m1, ci.wrapping_add(16));
            }
        }
        // One k quad: two B vectors (columns 0–15 and 16–31, quads interleaved), R broadcast
        // quads, 2R vpdpbusd. `$a` points at the quad in row 0; rows are KG_I8 apart.
        macro_rules! quad_step {
            ($a:expr, $b:expr) => {{
                let b0 = _mm512_loadu_si512($b.cast());
                let b1 = _mm512_loadu_si512($b.add(2 * NR).cast());
                for i in 0..R {
                    let quad = $a.add(i * KG_I8).cast::<i32>().read_unaligned();
                    let ai = _mm512_set1_epi32(quad);
                    acc0[i] = _mm512_dpbusd_epi32(acc0[i], ai, b0);
                    acc1[i] = _mm512_dpbusd_epi32(acc1[i], ai, b1);
                }
            }};
        }
        const QUADS_PER_GROUP: usize = KG_I8 / 4;
        let mut a = a;
        let mut b = b;
        for _ in 0..kc / KG_I8 {
            for u in 0..QUADS_PER_GROUP {
                // A hint only — it never faults, so running past the panel's end is harmless.
                let ahead = b.wrapping_add((u + B_PREFETCH) * 4 * NR);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(2 * NR).cast());
                quad_step!(a.add(4 * u), b.add(u * 4 * NR));
            }
            a = a.add(mr * KG_I8);
            b = b.add(KG_I8 * NR);
        }
        for u in 0..(kc % KG_I8).div_ceil(4) {
            quad_step!(a.add(4 * u), b.add(u * 4 * NR));
        }
        let Some(e) = epi else {
            for i in 0..R {
                let ci = c.wrapping_add(i * ldc).cast::<i32>();
                _mm512_mask_storeu_epi32(ci, m0, acc0[i]);
                _mm512_mask_storeu_epi32(ci.wrapping_add(16), m1, acc1[i]);
            }
            return;
        };
        let sum0 = _mm512_maskz_loadu_epi32(m0, e.col_sum);
        let sum1 = _mm512_maskz_loadu_epi32(m1, e.col_sum.wrapping_add(16));
        let scale0 = _mm512_maskz_loadu_ps(m0, e.col_scale);
        let scale1 = _mm512_maskz_loadu_ps(m1, e.col_scale.wrapping_add(16));
        let (bias0, bias1) = if e.bias.is_null() {
            (None, None)
        } else {
            (
                Some(_mm512_maskz_loadu_ps(m0, e.bias)),
                Some(_mm512_maskz_loadu_ps(m1, e.bias.wrapping_add(16))),
            )
        };
        // The outlier channels' weights for the tile's columns, loaded once for all rows.
        let mut outlier_weight0 = [_mm512_setzero_ps(); MAX_OUTLIER_CHANNELS];
        let mut outlier_weight1 = [_mm512_setzero_ps(); MAX_OUTLIER_CHANNELS];
        for c in 0..e.outliers.min(MAX_OUTLIER_CHANNELS) {
            let row = e.outlier_weight.wrapping_add(c * e.ld_outlier_weight);
            outlier_weight0[c] = _mm512_maskz_loadu_ps(m0, row);
            outlier_weight1[c] = _mm512_maskz_loadu_ps(m1, row.wrapping_add(16));
        }
        for i in 0..R {
            let rq: RowQuant = *e.row_quant.add(i);
            let zero = _mm512_set1_epi32(rq.zero);
            let row_scale = _mm512_set1_ps(rq.scale);
            // Same operations, in the same order, as the portable kernel. (A macro, not a
            // closure: a closure would not be compiled with this function's features.)
            macro_rules! finish {
                ($acc:expr, $sum:expr, $scale:expr, $bias:expr, $outlier_weight:expr) => {{
                    let d = _mm512_sub_epi32($acc, _mm512_mullo_epi32(zero, $sum));
                    let d = _mm512_cvt_roundepi32_ps::<NEAREST>(d);
                    let mut y = _mm512_mul_ps(d, _mm512_mul_ps(row_scale, $scale));
                    for c in 0..e.outliers.min(MAX_OUTLIER_CHANNELS) {
                        let x = _mm512_set1_ps(rq.exact[c]);
                        y = _mm512_add_ps(y, _mm512_mul_ps(x, $outlier_weight[c]));
                    }
                    if let Some(bias) = $bias {
                        y = _mm512_add_ps(y, bias);
                    }
                    if e.relu {
                        y = _mm512_max_ps(_mm512_setzero_ps(), y);
                    }
                    y
                }};
            }
            let mut y0 = finish!(acc0[i], sum0, scale0, bias0, outlier_weight0);
            let mut y1 = finish!(acc1[i], sum1, scale1, bias1, outlier_weight1);
            if !e.residual.is_null() {
                let ri = e.residual.wrapping_add(i * e.ld_residual);
                y0 = _mm512_add_ps(y0, _mm512_maskz_loadu_ps(m0, ri));
                y1 = _mm512_add_ps(y1, _mm512_maskz_loadu_ps(m1, ri.wrapping_add(16)));
            }
            let ci = c.wrapping_add(i * ldc);
            _mm512_mask_storeu_ps(ci, m0, y0);
            _mm512_mask_storeu_ps(ci.wrapping_add(16), m1, y1);
        }
    }
}
