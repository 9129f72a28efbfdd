//! Portable bf16 microkernel: the [`Precision::Bf16`](super::Precision) path on CPUs without
//! AVX2 (and the reference of the AVX2 and AVX-512F fallbacks). `MR = 4` rows, one row × 8
//! columns of scalar accumulators at a time.
//!
//! Per k pair `(2p, 2p+1)` it computes `acc ← (acc + a₂ₚ₊₁·b₂ₚ₊₁) + a₂ₚ·b₂ₚ`, the order of
//! Intel's definition of `vdpbf16ps` (which Zen 4 was measured to follow). A product of two
//! bf16 values is exact in f32, so each step rounds once, as in the hardware: for normal
//! (non-subnormal) inputs the two kernels agree bit for bit.

use half::bf16;

use super::kernel_scalar::finish_element;
use super::{pack_a_block_bf16, Microkernel, RowQuant, TileEpilogue, KC_BF16, KG_BF16, NR};
use crate::activation::{epilogue_row, epilogue_tile, Activation};
use crate::simd::ScalarToken;

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 4;
/// Columns per register block.
const NB: usize = 8;

/// The portable bf16 kernel (always available).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarBf16Kernel;

impl Microkernel for ScalarBf16Kernel {
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
        let rows = rows.min(MR);
        let cols = cols.min(NR);
        let pairs = kc.div_ceil(2);
        // SAFETY: the caller guarantees b: kc (rounded up to 2) · NR elements.
        let b = unsafe { std::slice::from_raw_parts(b, pairs * 2 * NR) };
        // SAFETY: the caller guarantees the micro-panel: mr · kc_pad elements, and the
        // packing zero-pads an odd kc to a whole pair.
        let a_panel = unsafe { std::slice::from_raw_parts(a, mr * kc.next_multiple_of(KG_BF16)) };
        let a_at = |i: usize, kk: usize| {
            a_panel[(kk / KG_BF16) * mr * KG_BF16 + i * KG_BF16 + kk % KG_BF16].to_f32()
        };
        for i in 0..rows {
            for j0 in (0..cols).step_by(NB) {
                let nb = NB.min(cols - j0);
                let mut acc = [0.0f32; NB];
                if accumulate {
                    for (jj, v) in acc.iter_mut().enumerate().take(nb) {
                        // SAFETY: (i, j0 + jj) is inside the caller's rows × cols tile.
                        *v = unsafe { *c.add(i * ldc + j0 + jj) };
                    }
                }
                for p in 0..pairs {
                    let (a_even, a_odd) = (a_at(i, 2 * p), a_at(i, 2 * p + 1));
                    let row = &b[p * 2 * NR + 2 * j0..p * 2 * NR + 2 * (j0 + NB)];
                    for jj in 0..NB {
                        let (b_even, b_odd) = (row[2 * jj].to_f32(), row[2 * jj + 1].to_f32());
                        acc[jj] = (acc[jj] + a_odd * b_odd) + a_even * b_even;
                    }
                }
                for (jj, &v) in acc.iter().enumerate().take(nb) {
                    let v = match epi {
                        // SAFETY: row i < rows and column j0 + jj < cols are inside the
                        // bias / residual areas the caller vouches for.
                        Some(e) => unsafe { finish_element(v, &e, i, j0 + jj) },
                        None => v,
                    };
                    // SAFETY: (i, j0 + jj) is inside the caller's rows × cols tile.
                    unsafe { *c.add(i * ldc + j0 + jj) = v };
                }
            }
        }
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
        dst: &mut [bf16],
    ) {
        pack_a_block_bf16(x, k, rows, pc, kc, mr, dst);
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
        unsafe { epilogue_tile(ScalarToken, c, ldc, rows, cols, act, residual, ldr) }
    }

    fn epilogue_row(
        self,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    ) {
        epilogue_row(ScalarToken, row, bias, act, residual)
    }
}
