//! AVX2 + FMA bf16 microkernel: [`Precision::Bf16`](super::Precision) on CPUs without
//! AVX512_BF16. `6 × 16` tiles (12 ymm accumulators), run twice per 32-column panel; the same
//! bits as `vdpbf16ps` and the portable kernel on normal (non-subnormal) inputs.
//!
//! Per k pair `(2p, 2p+1)` each element takes `acc ← fma(a₂ₚ₊₁, b₂ₚ₊₁, acc)` then
//! `acc ← fma(a₂ₚ, b₂ₚ, acc)`: the order of `vdpbf16ps`, and since a product of two bf16
//! values is exact in f32, each FMA rounds exactly once, as the hardware's step does.
//!
//! - B stays in the pair-interleaved panels (`b[(kk/2)·2NR + 2jj + kk%2]`): one 32-bit lane
//!   holds column `jj`'s pair, the even k in its low half. Widening is two integer
//!   operations on the loaded lane: `b_odd = lane & 0xFFFF0000`, `b_even = lane << 16`. Eight
//!   columns' pairs are one ymm, so a 16-column half takes two loads per pair.
//! - A is packed rounded to bf16 (nearest-even, as [`super::pack_a_block_bf16`]) but stored
//!   widened to f32 in the f32 kernels' layout (`pack_a_block_bf16_widened` in gemm.rs), so each
//!   row's `a_odd` and `a_even` are plain `vbroadcastss` loads.
//!
//! Per k pair and half-panel: 2 loads of B, 2 masks and 2 shifts, 12 broadcasts, 24 FMAs —
//! the f32 kernel's FMAs and broadcasts for two k, half its B bytes. The odd half of the
//! pair runs over all rows before the even half, so two widened B vectors are live at a time;
//! with 12 accumulators and the broadcast A that leaves no ymm for the two loaded lanes, which
//! LLVM keeps on the stack until the even half (two stores and two reloads per pair, both in
//! L1). On Zen 4 the kernel runs at the f32 kernel's speed (README).

use std::arch::x86_64::*;

use half::bf16;

use super::kernel_avx2::{
    dispatch_rows_6, finish_tile, for_each_half, lane_mask, load_tile, Avx2Kernel,
};
use super::{pack_a_request_fits, Microkernel, RowQuant, TileEpilogue, KC, KG, NR};
use crate::activation::Activation;

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 6;

/// The AVX2 bf16 kernel; holding one proves the CPU has AVX2, FMA and F16C (the f32 kernel's
/// features, whose epilogues it reuses).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Bf16Kernel {
    f32_kernel: Avx2Kernel<f32>,
}

impl Avx2Bf16Kernel {
    /// `Some` iff this CPU supports the kernel.
    pub(crate) fn detect() -> Option<Self> {
        Some(Self {
            f32_kernel: Avx2Kernel::detect()?,
        })
    }
}

// A k group of a row is 16 floats (one 64-byte line, two ymm): 8 whole pairs.
const _: () = assert!(KG == 16 && KC.is_multiple_of(2));

impl Microkernel for Avx2Bf16Kernel {
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
        for_each_half(cols, epi, |start, width, epi| {
            // SAFETY: `detect` proved AVX2 and FMA; this half's columns start..start+width
            // lie inside the caller's tile, and its pairs (2·start elements into each pair
            // row) inside the ⌈kc/2⌉·2NR panel slice.
            unsafe {
                tile_avx2_bf16(
                    kc,
                    a,
                    b.add(2 * start),
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
        // SAFETY: `detect` proved AVX2 and FMA; bounds were checked just above.
        unsafe { pack_a_avx2_bf16(x.as_ptr(), k, (r0, r1), pc, kc, mr, dst.as_mut_ptr()) }
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

/// `v` rounded to nearest-even bf16 and widened back to f32, lane by lane, bit for bit as
/// `half::bf16::from_f32(v).to_f32()`: `(bits + 0x7FFF + bit16) & 0xFFFF0000`, and a NaN
/// quieted (`bits | 0x00400000`) and truncated instead of rounded.
///
/// # Safety
/// AVX2 enabled in the caller.
#[inline(always)]
pub(super) unsafe fn round_to_bf16(v: __m256) -> __m256 {
    // SAFETY: register-only AVX2 operations, enabled in the caller.
    unsafe {
        let bits = _mm256_castps_si256(v);
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
        let rounded = _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), lsb);
        let quiet = _mm256_or_si256(bits, _mm256_set1_epi32(0x0040_0000));
        let magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFF_FFFF));
        let nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7F80_0000));
        let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        _mm256_castsi256_ps(_mm256_and_si256(
            _mm256_blendv_epi8(rounded, quiet, nan),
            high,
        ))
    }
}

/// `pack_a_block_bf16_widened` in gemm.rs with AVX2: each row's 16-value group is two masked
/// loads (zeros past `kc`, which also completes an odd last pair), the rounding of
/// [`round_to_bf16`], and two stores.
///
/// # Safety
/// CPU has AVX2; `x` readable for `r1·k` floats, `kc ≤ KC`, `pc + kc ≤ k`, `mr ≥ 1`, `dst`
/// writable for the layout of `pack_a_block_bf16_widened` in gemm.rs.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a_avx2_bf16(
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
            let m0 = lane_mask(kc - kk0);
            let m1 = lane_mask((kc - kk0).saturating_sub(8));
            for i in 0..rows {
                // SAFETY: row ir + i < r1 and columns pc + kk0 .. pc + min(kc, kk0 + 16) ≤ k
                // lie inside x (masked-off lanes are not read); the two stores are group g,
                // row i of this micro-panel, inside dst (rows hold whole groups of KG).
                unsafe {
                    let src = x.add((ir + i) * k + pc + kk0);
                    let v0 = _mm256_maskload_ps(src, m0);
                    let v1 = _mm256_maskload_ps(src.wrapping_add(8), m1);
                    let d = panel.add(g * mr * KG + i * KG);
                    _mm256_storeu_ps(d, round_to_bf16(v0));
                    _mm256_storeu_ps(d.add(8), round_to_bf16(v1));
                }
            }
        }
    }
}

/// Dispatches on `rows` to a body with a compile-time row count.
///
/// # Safety
/// CPU has AVX2 and FMA; `b` readable for `⌈kc/2⌉` pair rows of stride `2NR` and 32 elements
/// (16 columns); otherwise the pointer contract of [`Microkernel::tile`] with `cols = width`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2_bf16(
    kc: usize,
    a: *const f32,
    b: *const bf16,
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
            unsafe { tile_body::<$r>(kc, a, b, c, ldc, width, mr, accumulate, epi) }
        };
    }
    dispatch_rows_6!(rows, go);
}

/// `C[0..R, 0..width] = (accumulate ? C : 0) + A·B[:, 0..16]`, per element the FMA chain
/// odd k, even k over the k pairs, then the in-register epilogue if `epi` is given.
///
/// # Safety
/// As [`tile_avx2_bf16`], with `R ≤ MR`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const bf16,
    c: *mut f32,
    ldc: usize,
    width: usize,
    mr: usize,
    accumulate: bool,
    epi: Option<TileEpilogue>,
) {
    // SAFETY: (whole body) AVX2+FMA enabled by the caller. `load_tile` and `finish_tile`
    // touch only columns < width of rows < R of C. A reads stay within the mr·kc_pad
    // micro-panel (an odd kc's last pair was zero-padded by the packing), B reads within
    // ⌈kc/2⌉ pair rows.
    unsafe {
        let (mut acc0, mut acc1) = if accumulate {
            load_tile::<R>(c, ldc, width)
        } else {
            ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R])
        };
        let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        // One k pair: `$a` points at the pair in row 0 (rows KG apart), `$b` at this half's
        // pair row (columns 0–7, then 8–15); odd k over all rows, then even k.
        macro_rules! pair_step {
            ($a:expr, $b:expr) => {{
                let lanes0 = _mm256_loadu_si256($b.cast::<__m256i>());
                let lanes1 = _mm256_loadu_si256($b.add(16).cast::<__m256i>());
                let b0 = _mm256_castsi256_ps(_mm256_and_si256(lanes0, high));
                let b1 = _mm256_castsi256_ps(_mm256_and_si256(lanes1, high));
                for i in 0..R {
                    let ai = _mm256_set1_ps(*$a.add(i * KG + 1));
                    acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
                    acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
                }
                let b0 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lanes0));
                let b1 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lanes1));
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
            for u in 0..KG / 2 {
                pair_step!(a.add(2 * u), b.add(u * 2 * NR));
            }
            a = a.add(mr * KG);
            b = b.add(KG * NR);
        }
        for u in 0..(kc % KG).div_ceil(2) {
            pair_step!(a.add(2 * u), b.add(u * 2 * NR));
        }
        finish_tile::<R>(acc0, acc1, c, ldc, width, epi);
    }
}
