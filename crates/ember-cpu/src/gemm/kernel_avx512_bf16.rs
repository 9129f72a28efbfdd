//! AVX512_BF16 microkernel: a `14 × 32` f32 tile of `Y` in 28 zmm accumulators, bf16 operands.
//!
//! `vdpbf16ps acc, a, b` adds, per f32 lane `j`, `a[2j+1]·b[2j+1]` and then `a[2j]·b[2j]` to
//! `acc[j]`: two k per instruction. B panels hold k pairs interleaved per column
//! (`b[(kk/2)·2NR + 2jj + kk%2]`), so one k pair of the tile's 32 columns is two zmm; A
//! supplies each row's pair as one broadcast 32-bit value. Per k pair: 2 loads of B, 14
//! broadcasts, 28 `vdpbf16ps` — the f32 kernel's instruction count for twice the k.
//! The A micro-panel is packed (and rounded to bf16 with `vcvtne2ps2bf16`) here as well.

use std::arch::x86_64::*;

use half::bf16;

use super::kernel_avx512::{
    dispatch_rows_14, epilogue_row_avx512, epilogue_tile_avx512, finish_tile, load_tile,
};
use super::{pack_a_request_fits, Microkernel, RowQuant, TileEpilogue, KC_BF16, KG_BF16, NR};
use crate::activation::Activation;
use crate::simd::{avx512_prefix_mask, Avx512Token};

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 14;

/// The AVX512_BF16 kernel; holding one proves the CPU has AVX-512F/BW, AVX512_BF16, AVX2 and
/// FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Bf16Kernel(Avx512Token);

impl Avx512Bf16Kernel {
    /// `Some` iff this CPU supports the kernel.
    pub(crate) fn detect() -> Option<Self> {
        let bf16 = std::is_x86_feature_detected!("avx512bf16")
            && std::is_x86_feature_detected!("avx512bw");
        Avx512Token::detect().filter(|_| bf16).map(Self)
    }
}

// One k group of a row is 32 bf16: one zmm, one cache line.
const _: () = assert!(KG_BF16 == 32);

impl Microkernel for Avx512Bf16Kernel {
    type A = bf16;
    type B = bf16;
    const MR: usize = MR;
    const KC: usize = KC_BF16;
    const KG: usize = KG_BF16;
    const KSTEP: usize = 2;

    unsafe fn tile(
        self,
        kc: usize,
        a: *const bf16,
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
        // SAFETY: the token proves the CPU features; the caller upholds the pointer contract.
        unsafe { tile_avx512_bf16(kc, a, b, c, ldc, rows, cols, mr, accumulate, epi) }
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
        dst: &mut [bf16],
    ) {
        if !pack_a_request_fits::<Self>((x, k), (r0, r1), (pc, kc), mr, quant, dst.len()) {
            debug_assert!(false, "pack_a: out-of-bounds request");
            return;
        }
        // SAFETY: the token proves the CPU features; bounds were checked just above.
        unsafe { pack_a_avx512_bf16(x.as_ptr(), k, (r0, r1), pc, kc, mr, dst.as_mut_ptr()) }
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

/// [`super::pack_a_block_bf16`] with `vcvtne2ps2bf16`: each row's 32-value group is two
/// masked zmm loads (zeros past `kc`, which also completes an odd last pair) and one 64-byte
/// store.
///
/// # Safety
/// CPU has AVX-512F and AVX512_BF16; `x` readable for `r1·k` floats, `kc ≤ KC_BF16`,
/// `pc + kc ≤ k`, `mr ≥ 1`, `dst` writable for the layout of [`super::pack_a_block_bf16`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
unsafe fn pack_a_avx512_bf16(
    x: *const f32,
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    dst: *mut bf16,
) {
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = dst.wrapping_add(q * mr * KC_BF16);
        for (g, kk0) in (0..kc).step_by(KG_BF16).enumerate() {
            let lo = avx512_prefix_mask(kc - kk0);
            let hi = avx512_prefix_mask((kc - kk0).saturating_sub(16));
            for i in 0..rows {
                // SAFETY: row ir + i < r1 and columns pc + kk0 .. pc + min(kc, kk0 + 32) ≤ k
                // lie inside x (masked-off lanes are not read); the 64-byte store is group g,
                // row i of this micro-panel, inside dst (rows hold whole groups of KG_BF16).
                unsafe {
                    let src = x.add((ir + i) * k + pc + kk0);
                    let v_lo = _mm512_maskz_loadu_ps(lo, src);
                    let v_hi = _mm512_maskz_loadu_ps(hi, src.wrapping_add(16));
                    let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(v_hi, v_lo));
                    _mm512_storeu_si512(panel.add(g * mr * KG_BF16 + i * KG_BF16).cast(), packed);
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
/// CPU has AVX-512F and AVX512_BF16; pointer contract of [`Microkernel::tile`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512_bf16(
    kc: usize,
    a: *const bf16,
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

/// `C[0..R, 0..cols] = (accumulate ? C : 0) + A·B`, one `vdpbf16ps` chain per element over
/// the k pairs, then the in-register epilogue if `epi` is given.
///
/// # Safety
/// Called only from `tile_avx512_bf16` (features enabled); `R ≤ MR`, pointer contract of
/// [`Microkernel::tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<const R: usize>(
    kc: usize,
    a: *const bf16,
    b: *const bf16,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    mr: usize,
    accumulate: bool,
    epi: Option<TileEpilogue>,
) {
    // SAFETY: (whole body) the features are enabled by the caller. `load_tile` and
    // `finish_tile` touch only columns < cols of rows < R of C (inside the caller's tile). A reads
    // stay within the mr·kc_pad micro-panel (an odd kc's last pair was zero-padded by the
    // packing), B reads within ⌈kc/2⌉ pair rows of 2·NR elements.
    unsafe {
        let (mut acc0, mut acc1) = if accumulate {
            load_tile::<R>(c, ldc, cols)
        } else {
            ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R])
        };
        // One k pair: two B vectors (columns 0–15 and 16–31, pairs interleaved), R broadcast
        // pairs, 2R vdpbf16ps. `$a` points at the pair in row 0; rows are KG_BF16 apart.
        macro_rules! pair_step {
            ($a:expr, $b:expr) => {{
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512($b.cast()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512($b.add(NR).cast()));
                for i in 0..R {
                    let pair = $a.add(i * KG_BF16).cast::<i32>().read_unaligned();
                    let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
                    acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
                }
            }};
        }
        const PAIRS_PER_GROUP: usize = KG_BF16 / 2;
        let mut a = a;
        let mut b = b;
        for _ in 0..kc / KG_BF16 {
            for u in 0..PAIRS_PER_GROUP {
                // A hint only — it never faults, so running past the panel's end is harmless.
                let ahead = b.wrapping_add((u + B_PREFETCH) * 2 * NR);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(NR).cast());
                pair_step!(a.add(2 * u), b.add(u * 2 * NR));
            }
            a = a.add(mr * KG_BF16);
            b = b.add(KG_BF16 * NR);
        }
        for u in 0..(kc % KG_BF16).div_ceil(2) {
            pair_step!(a.add(2 * u), b.add(u * 2 * NR));
        }
        finish_tile::<R>(acc0, acc1, c, ldc, cols, epi);
    }
}
