//! AVX-512F bf16 microkernel: [`Precision::Bf16`](super::Precision) on AVX-512 CPUs without
//! AVX512_BF16 (Skylake-X/SP, Cascade Lake, Ice Lake, Tiger Lake, Rocket Lake). A `14 × 32`
//! tile in 28 zmm accumulators; the same bits as `vdpbf16ps` and the portable kernel on
//! normal (non-subnormal) inputs.
//!
//! The maths and data layout are those of the AVX2 fallback ([`super::kernel_avx2_bf16`]):
//! per k pair `acc ← fma(a_odd, b_odd, acc)` then `acc ← fma(a_even, b_even, acc)`, exact
//! products, one rounding per step as in the hardware; B widened in registers from the
//! pair-interleaved panels (`lane & 0xFFFF0000`, `lane << 16`), A packed rounded to bf16 and
//! stored as f32. Per k pair: 2 loads of B, 2 masks and 2 shifts, 28 broadcasts, 56 FMAs —
//! the f32 kernel's work for two k, with half its B bytes. 28 accumulators, 2 widened B, the
//! broadcast A, the mask and the 2 loaded lanes are 2 more than the 32 zmm: for the full
//! 14-row tile LLVM keeps a loaded lane and one accumulator on the stack (a few L1 stores and
//! reloads per 56 FMAs). On Zen 4 the kernel runs at 0.94–1.02 of the f32 kernel's speed.

use std::arch::x86_64::*;

use half::bf16;

use super::kernel_avx512::{
    dispatch_rows_14, epilogue_row_avx512, epilogue_tile_avx512, finish_tile, load_tile,
};
use super::{pack_a_request_fits, Microkernel, RowQuant, TileEpilogue, KC, KG, NR};
use crate::activation::Activation;
use crate::simd::{avx512_prefix_mask, Avx512Token};

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 14;

/// The AVX-512F bf16 kernel; holding one proves the CPU has AVX-512F, AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512fBf16Kernel(Avx512Token);

impl Avx512fBf16Kernel {
    /// `Some` iff this CPU supports the kernel.
    pub(crate) fn detect() -> Option<Self> {
        Avx512Token::detect().map(Self)
    }
}

// A k group of a row is 16 floats (one zmm, one cache line): 8 whole pairs.
const _: () = assert!(KG == 16 && KC.is_multiple_of(2));

impl Microkernel for Avx512fBf16Kernel {
    type A = f32;
    type B = bf16;
    const MR: usize = MR;
    const KSTEP: usize = 2;

    unsafe fn tile(
        self,
        kc: usize,
        a: *const f32,
        b: *const bf16,
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
        unsafe { tile_avx512f_bf16(kc, a, b, c, ldc, rows, cols, mr, accumulate, epi) }
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
        unsafe { pack_a_avx512f_bf16(x.as_ptr(), k, (r0, r1), pc, kc, mr, dst.as_mut_ptr()) }
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

/// `v` rounded to nearest-even bf16 and widened back to f32, lane by lane, bit for bit as
/// `half::bf16::from_f32(v).to_f32()` (see the AVX2 twin,
/// [`super::kernel_avx2_bf16::round_to_bf16`]).
///
/// # Safety
/// AVX-512F enabled in the caller.
#[inline(always)]
unsafe fn round_to_bf16(v: __m512) -> __m512 {
    // SAFETY: register-only AVX-512F operations, enabled in the caller.
    unsafe {
        let bits = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), lsb);
        let quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000));
        let magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(0x7FFF_FFFF));
        let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7F80_0000));
        let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_mask_blend_epi32(nan, rounded, quiet),
            high,
        ))
    }
}

/// `pack_a_block_bf16_widened` in gemm.rs with AVX-512F: each row's 16-value group is one
/// masked load (zeros past `kc`, which also completes an odd last pair), the rounding of
/// [`round_to_bf16`], and one 64-byte store.
///
/// # Safety
/// CPU has AVX-512F; `x` readable for `r1·k` floats, `kc ≤ KC`, `pc + kc ≤ k`, `mr ≥ 1`,
/// `dst` writable for the layout of `pack_a_block_bf16_widened` in gemm.rs.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pack_a_avx512f_bf16(
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
                // lie inside x (masked-off lanes are not read); the store is group g, row i
                // of this micro-panel, inside dst (rows hold whole groups of KG).
                unsafe {
                    let v = _mm512_maskz_loadu_ps(mask, x.add((ir + i) * k + pc + kk0));
                    _mm512_storeu_ps(panel.add(g * mr * KG + i * KG), round_to_bf16(v));
                }
            }
        }
    }
}

/// How many k pairs ahead the microkernel prefetches B (each pair row is 128 bytes, as an
/// f32 k step's row).
const B_PREFETCH: usize = 24;

/// Dispatches on `rows` to a body with a compile-time row count.
///
/// # Safety
/// CPU has AVX-512F; pointer contract of [`Microkernel::tile`].
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512f_bf16(
    kc: usize,
    a: *const f32,
    b: *const bf16,
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

/// `C[0..R, 0..cols] = (accumulate ? C : 0) + A·B`, per element the FMA chain odd k, even k
/// over the k pairs, then the in-register epilogue if `epi` is given.
///
/// # Safety
/// Called only from `tile_avx512f_bf16` (AVX-512F enabled); `R ≤ MR`, pointer contract of
/// [`Microkernel::tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const bf16,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    mr: usize,
    accumulate: bool,
    epi: Option<TileEpilogue>,
) {
    // SAFETY: (whole body) AVX-512F is enabled by the caller. `load_tile` and `finish_tile`
    // touch only columns < cols of rows < R of C (inside the caller's tile). A reads stay
    // within the mr·kc_pad micro-panel (an odd kc's last pair was zero-padded by the
    // packing), B reads within ⌈kc/2⌉ pair rows of 2·NR elements.
    unsafe {
        let (mut acc0, mut acc1) = if accumulate {
            load_tile::<R>(c, ldc, cols)
        } else {
            ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R])
        };
        let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        // One k pair: `$a` points at the pair in row 0 (rows KG apart), `$b` at the pair row
        // (columns 0–15, then 16–31); odd k over all rows, then even k.
        macro_rules! pair_step {
            ($a:expr, $b:expr) => {{
                let lanes0 = _mm512_loadu_si512($b.cast());
                let lanes1 = _mm512_loadu_si512($b.add(NR).cast());
                let b0 = _mm512_castsi512_ps(_mm512_and_si512(lanes0, high));
                let b1 = _mm512_castsi512_ps(_mm512_and_si512(lanes1, high));
                for i in 0..R {
                    let ai = _mm512_set1_ps(*$a.add(i * KG + 1));
                    acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
                    acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
                }
                let b0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lanes0));
                let b1 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lanes1));
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
            for u in 0..KG / 2 {
                // A hint only — it never faults, so running past the panel's end is harmless.
                let ahead = b.wrapping_add((u + B_PREFETCH) * 2 * NR);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(NR).cast());
                pair_step!(a.add(2 * u), b.add(u * 2 * NR));
            }
            a = a.add(mr * KG);
            b = b.add(KG * NR);
        }
        for u in 0..(kc % KG).div_ceil(2) {
            pair_step!(a.add(2 * u), b.add(u * 2 * NR));
        }
        finish_tile::<R>(acc0, acc1, c, ldc, cols, epi);
    }
}
