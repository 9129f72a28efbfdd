//! AVX2 int8 microkernel: [`Precision::Int8`](super::Precision) on CPUs with AVX2 but no
//! AVX512_VNNI. `6 × 8` tiles (12 ymm `i32` accumulators), run four times per 32-column panel;
//! same integers, hence the same results, as the VNNI and portable kernels (see
//! [`super::quant`]).
//!
//! `vpmaddubsw` (`u8 × i8` pairs into a *saturating* `i16`) is not exact here: `255·127·2`
//! exceeds `i16::MAX`. Instead both operands are widened to `i16` and multiplied with
//! `vpmaddwd`, `Σ_{t<2} a[2j+t]·b[2j+t]` per `i32` lane, exact (`|a·b| ≤ 255·127`):
//!
//! - B: one k quad of 4 columns is 16 bytes (`b[(kk/4)·4NR + 4jj + kk%4]`); `vpmovsxbw` from
//!   memory widens it to one ymm `[c0k0 c0k1 c0k2 c0k3 c1k0 … c3k3]`.
//! - A: each row's quad, zero-extended to four `i16` (8 bytes) and broadcast (`vpbroadcastq`,
//!   a plain load). The widening is done once per tile, into a stack copy of the micro-panel
//!   (`vpmovzxbw`, 16 bytes at a time), shared by the tile's four column passes.
//! - `vpmaddwd` of the two gives `[c0(k0+k1) c0(k2+k3) c1(…) c1(…) | c2 c2 c3 c3]`: two
//!   partial sums per column, so 8 columns take two accumulators per row.
//!
//! Per k quad and 8 columns: 2 `vpmovsxbw` (B), `R` broadcast loads (A), `2R` `vpmaddwd` and
//! `2R` `vpaddd`: with `R = 6`, 26 vector operations for 192 multiply-adds, against 8 per
//! FMA in the f32 kernel. After the last quad `vphaddd` + `vpermq` fold each row's two
//! accumulators into one `i32` per column, in column order; integer addition is exact (and
//! wraps as the portable kernel's), so the grouping changes nothing. Between K blocks the
//! sums wait in `C` bit-cast; after the last one they are rescaled,
//! `y = f32(acc − z_i·Σ_k w_q) · (s_i·s_j)`, the outlier channels added (`y + x_c·w_c`), and
//! finished as the AVX2 f32 kernel does. A is
//! quantised (`vcvtps2dq`, `+ z_i`, clamp, `vpackusdw`/`vpackuswb`) as it is packed.
//!
//! On a Zen 4 forced to AVX2 this runs at about 1.3× the f32 FMA peak (`vpmaddwd` and `vpaddd`
//! share four vector pipes), against 2× at best; see the README for measured figures.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::kernel_avx2::{dispatch_rows_6, lane_mask, Avx2Kernel};
use super::{pack_a_request_fits, Microkernel, RowQuant, TileEpilogue, KC_I8, KG_I8, NR};
use crate::activation::Activation;
use crate::simd::Avx2Token;

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 6;
/// Columns per pass (one `i32` ymm after folding).
const COLS: usize = 8;

/// The AVX2 int8 kernel; holding one proves the CPU has AVX2, FMA and F16C (the f32 kernel's
/// features, whose epilogues it reuses).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2I8Kernel {
    token: Avx2Token,
    f32_kernel: Avx2Kernel<f32>,
}

impl Avx2I8Kernel {
    /// `Some` iff this CPU supports the kernel.
    pub(crate) fn detect() -> Option<Self> {
        Some(Self {
            token: Avx2Token::detect()?,
            f32_kernel: Avx2Kernel::detect()?,
        })
    }
}

// A row's k group (64 bytes) widens to 128 bytes: four 16-byte `vpmovzxbw`.
const _: () = assert!(KG_I8 == 64 && NR == 4 * COLS);

impl Microkernel for Avx2I8Kernel {
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
        unsafe { tile_avx2_i8(kc, a, b, c, ldc, rows, cols, mr, accumulate, epi) }
    }

    fn row_quant(self, row: &[f32], skip: &[usize]) -> RowQuant {
        /// [`RowQuant::of_row_skipping`] vectorised with AVX2 (min and max are exact: same
        /// result).
        #[target_feature(enable = "avx2,fma")]
        fn run(_: Avx2Token, row: &[f32], skip: &[usize]) -> RowQuant {
            RowQuant::of_row_skipping(row, skip)
        }
        // SAFETY: the token proves the CPU has AVX2 and FMA.
        unsafe { run(self.token, row, skip) }
    }

    fn row_quant_rotated(
        self,
        row: &[f32],
        skip: &[usize],
        block: usize,
        rotated: &mut [f32],
    ) -> RowQuant {
        /// [`RowQuant::of_row_rotated`] vectorised with AVX2 (additions, subtractions, min
        /// and max in the same order: same result).
        #[target_feature(enable = "avx2,fma")]
        fn run(
            _: Avx2Token,
            row: &[f32],
            skip: &[usize],
            block: usize,
            rotated: &mut [f32],
        ) -> RowQuant {
            RowQuant::of_row_rotated(row, skip, block, rotated)
        }
        // SAFETY: the token proves the CPU has AVX2 and FMA.
        unsafe { run(self.token, row, skip, block, rotated) }
    }

    fn pack_a(
        self,
        x: &[f32],
        k: usize,
        rows: (usize, usize),
        pc: usize,
        kc: usize,
        mr: usize,
        quant: &[RowQuant],
        dst: &mut [u8],
    ) {
        let (r0, r1) = rows;
        if !pack_a_request_fits::<Self>((x, k), (r0, r1), (pc, kc), mr, quant, dst.len()) {
            debug_assert!(false, "pack_a: out-of-bounds request");
            return;
        }
        // SAFETY: the token proves the CPU features; bounds were checked just above.
        unsafe { pack_a_avx2_i8(x.as_ptr(), k, rows, pc, kc, mr, quant, dst.as_mut_ptr()) }
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
        // SAFETY: forwarded contract.
        unsafe {
            self.f32_kernel
                .epilogue_tile(c, ldc, rows, cols, act, residual, ldr)
        }
    }

    fn epilogue_row(
        self,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    ) {
        self.f32_kernel.epilogue_row(row, bias, act, residual)
    }
}

/// [`super::pack_a_block_i8`] vectorised: each row's 64-value group is eight (masked) 8-float
/// loads, each multiplied by `1/s_i`, converted (`vcvtps2dq`, nearest-even, as
/// [`RowQuant::quantise`] models it), `+ z_i`, clamped to `[0, 255]`, zeroed past `kc`, and
/// narrowed four at a time to one 32-byte store.
///
/// # Safety
/// CPU has AVX2; `x` readable for `r1·k` floats, `quant` for `r1` entries, `kc ≤ KC_I8`,
/// `pc + kc ≤ k`, `1 ≤ mr ≤ MR`, `dst` writable for the layout of
/// [`super::pack_a_block_i8`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a_avx2_i8(
    x: *const f32,
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    quant: &[RowQuant],
    dst: *mut u8,
) {
    let low = _mm256_setzero_si256();
    let high = _mm256_set1_epi32(255);
    // packus leaves 32-bit pieces [q0 q1 q2 q3 | q0 q1 q2 q3] (low, high halves of each
    // chunk); this puts them back in k order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = dst.wrapping_add(q * mr * KC_I8);
        for i in 0..rows {
            let rq = quant[ir + i];
            let inv = _mm256_set1_ps(rq.inv_scale);
            let zero = _mm256_set1_epi32(rq.zero);
            let src = x.wrapping_add((ir + i) * k + pc);
            for (g, kk0) in (0..kc).step_by(KG_I8).enumerate() {
                for half in 0..2 {
                    let mut chunks = [low; 4];
                    for (t, chunk) in chunks.iter_mut().enumerate() {
                        let kk = kk0 + 32 * half + 8 * t;
                        let left = kc.saturating_sub(kk);
                        // SAFETY: row ir + i < r1 and columns pc + kk .. pc + kk + 8 ≤ pc + kc
                        // ≤ k lie inside x when left ≥ 8; otherwise the masked load reads only
                        // the `left` lanes below kc (none if left = 0).
                        unsafe {
                            let v = if left >= 8 {
                                _mm256_loadu_ps(src.add(kk))
                            } else {
                                _mm256_maskload_ps(src.wrapping_add(kk), lane_mask(left))
                            };
                            let r = _mm256_cvtps_epi32(_mm256_mul_ps(v, inv));
                            let c = _mm256_min_epi32(
                                _mm256_max_epi32(_mm256_add_epi32(r, zero), low),
                                high,
                            );
                            // Slots past kc hold 0, as the portable packing writes.
                            *chunk = _mm256_and_si256(c, lane_mask(left));
                        }
                    }
                    let words01 = _mm256_packus_epi32(chunks[0], chunks[1]);
                    let words23 = _mm256_packus_epi32(chunks[2], chunks[3]);
                    let bytes = _mm256_packus_epi16(words01, words23);
                    let bytes = _mm256_permutevar8x32_epi32(bytes, order);
                    // SAFETY: bytes 32·half .. + 32 of group g, row i of this micro-panel,
                    // inside dst.
                    unsafe {
                        let at = panel.add(g * mr * KG_I8 + i * KG_I8 + 32 * half);
                        _mm256_storeu_si256(at.cast(), bytes);
                    }
                }
            }
        }
    }
}

/// Dispatches on `rows` to a body with a compile-time row count.
///
/// # Safety
/// CPU has AVX2; pointer contract of [`Microkernel::tile`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2_i8(
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
    dispatch_rows_6!(rows, go);
}

/// The tile's A rows widened to `i16`: row `i`'s k quad `p` at `[i·KC_I8 + 4p ..][..4]`.
type WideA = [MaybeUninit<__m256i>; MR * KC_I8 / 16];

/// Widens rows `0..R` of the micro-panel `a` (`mr` rows, k in groups of `KG_I8`), k below
/// `kc` rounded up to a group, into `wide` (row `i` at `i16` offset `i·KC_I8`).
///
/// # Safety
/// Called from AVX2-enabled code; `R ≤ mr`, `a` readable for `mr · kc.next_multiple_of(KG_I8)`
/// bytes, `kc ≤ KC_I8`.
#[inline(always)]
unsafe fn widen_a<const R: usize>(kc: usize, a: *const u8, mr: usize, wide: &mut WideA) {
    let out = wide.as_mut_ptr().cast::<i16>();
    for g in 0..kc.div_ceil(KG_I8) {
        for i in 0..R {
            for t in 0..4 {
                // SAFETY: group g of row i lies in the micro-panel (the packing zero-fills
                // past kc up to the group's end); the 32-byte store is i16 elements
                // i·KC_I8 + 64g + 16t .. + 16 < R·KC_I8 of `wide` (64g + 64 ≤ KC_I8).
                unsafe {
                    let src = a.add(g * mr * KG_I8 + i * KG_I8 + 16 * t);
                    let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(src.cast()));
                    let dst = out.add(i * KC_I8 + KG_I8 * g + 16 * t);
                    _mm256_storeu_si256(dst.cast(), v);
                }
            }
        }
    }
}

/// `acc = (accumulate ? C as i32 : 0) + Σ_k a·b` over the k quads, for the tile's `cols`
/// columns in passes of 8, then either the `i32` sums stored back to `C` (bit-cast; more K
/// blocks follow) or, with `epi`, the rescaled and finished `f32` tile.
///
/// # Safety
/// Called only from `tile_avx2_i8` (features enabled); `R ≤ mr ≤ MR`, pointer contract of
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
    let mut wide: WideA = [MaybeUninit::uninit(); MR * KC_I8 / 16];
    // SAFETY: forwarded contract.
    unsafe { widen_a::<R>(kc, a, mr, &mut wide) };
    let wide = wide.as_ptr().cast::<i16>();
    let quads = kc.div_ceil(4);
    for pass in 0..cols.min(NR).div_ceil(COLS) {
        let c0 = pass * COLS;
        let m = lane_mask(cols - c0);
        let full = cols - c0 >= COLS;
        // SAFETY: (whole pass) AVX2 is enabled by the caller. A reads are quads < ⌈kc/4⌉ of
        // rows < R of `wide`, all written by `widen_a`; B reads are quads < ⌈kc/4⌉ of the
        // caller's panel (16 bytes at 4·(c0 + 4h) inside its 4·NR-byte quad row). C, bias,
        // residual, column scales and sums are accessed at rows < R and columns c0 + j < cols
        // only (full loads / stores only when all 8 are; masked lanes are not touched and
        // `wrapping_add` keeps the address arithmetic defined); row quantisation for rows < R;
        // outlier weights (rows ch < outliers, read only when outliers > 0) under the mask.
        unsafe {
            let mut acc0 = [_mm256_setzero_si256(); R];
            let mut acc1 = [_mm256_setzero_si256(); R];
            let mut bq = b.add(4 * c0);
            for p in 0..quads {
                // Columns c0..c0+4 and c0+4..c0+8 of this quad, widened.
                let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bq.cast()));
                let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bq.add(16).cast()));
                for i in 0..R {
                    let quad = wide.add(i * KC_I8 + 4 * p).cast::<i64>().read_unaligned();
                    let ai = _mm256_set1_epi64x(quad);
                    acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(ai, b0));
                    acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(ai, b1));
                }
                bq = bq.add(4 * NR);
            }
            // Fold the two partial sums of each column: hadd gives columns [0 1 4 5 | 2 3 6 7],
            // the 64-bit permute [0 1 2 3 | 4 5 6 7].
            let mut sums = [_mm256_setzero_si256(); R];
            for i in 0..R {
                let h = _mm256_hadd_epi32(acc0[i], acc1[i]);
                sums[i] = _mm256_permute4x64_epi64::<0b11_01_10_00>(h);
            }
            if accumulate {
                for (i, s) in sums.iter_mut().enumerate() {
                    let ci = c.wrapping_add(i * ldc + c0).cast::<i32>();
                    let prev = if full {
                        _mm256_loadu_si256(ci.cast())
                    } else {
                        _mm256_maskload_epi32(ci, m)
                    };
                    *s = _mm256_add_epi32(*s, prev);
                }
            }
            let Some(e) = epi else {
                for (i, &s) in sums.iter().enumerate() {
                    let ci = c.wrapping_add(i * ldc + c0).cast::<i32>();
                    if full {
                        _mm256_storeu_si256(ci.cast(), s);
                    } else {
                        _mm256_maskstore_epi32(ci, m, s);
                    }
                }
                continue;
            };
            let col_sum = _mm256_maskload_epi32(e.col_sum.wrapping_add(c0), m);
            let col_scale = _mm256_maskload_ps(e.col_scale.wrapping_add(c0), m);
            // (No closures here: they would not be compiled with this function's features.)
            let bias = if e.bias.is_null() {
                None
            } else {
                Some(_mm256_maskload_ps(e.bias.wrapping_add(c0), m))
            };
            for (i, &s) in sums.iter().enumerate() {
                let rq: RowQuant = *e.row_quant.add(i);
                // Same operations, in the same order, as the portable kernel.
                let d =
                    _mm256_sub_epi32(s, _mm256_mullo_epi32(_mm256_set1_epi32(rq.zero), col_sum));
                let d = _mm256_cvtepi32_ps(d);
                let mut y = _mm256_mul_ps(d, _mm256_mul_ps(_mm256_set1_ps(rq.scale), col_scale));
                // The outlier channels, exact in f32: multiply, then add, channel by channel.
                for (ch, &x) in rq.exact.iter().enumerate().take(e.outliers) {
                    let w = e.outlier_weight.wrapping_add(ch * e.ld_outlier_weight + c0);
                    y = _mm256_add_ps(
                        y,
                        _mm256_mul_ps(_mm256_set1_ps(x), _mm256_maskload_ps(w, m)),
                    );
                }
                if let Some(bias) = bias {
                    y = _mm256_add_ps(y, bias);
                }
                if e.relu {
                    // max(0, y): a NaN in y is returned (second operand), as the portable
                    // `if y < 0 { 0 }`.
                    y = _mm256_max_ps(_mm256_setzero_ps(), y);
                }
                if !e.residual.is_null() {
                    let ri = e.residual.wrapping_add(i * e.ld_residual + c0);
                    y = _mm256_add_ps(y, _mm256_maskload_ps(ri, m));
                }
                let ci = c.wrapping_add(i * ldc + c0);
                if full {
                    _mm256_storeu_ps(ci, y);
                } else {
                    _mm256_maskstore_ps(ci, m, y);
                }
            }
        }
    }
}
