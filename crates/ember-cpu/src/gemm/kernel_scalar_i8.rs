//! Portable int8 microkernel: the [`Precision::Int8`](super::Precision) path on CPUs without
//! AVX512_VNNI. `MR = 4` rows, one row × 8 columns of `i32` accumulators at a time.
//!
//! Per k quad it adds `Σ_{t<4} a[4p+t]·b[4p+t]` (`u8 × i8`) to the accumulator, which is what
//! `vpdpbusd` computes; integer sums are exact, so this kernel's integers, and (with the same
//! f32 rescaling and outlier-channel products, see [`super::quant`]) its results, equal the
//! VNNI kernel's bit for bit.
//! Between K blocks the tile's `i32` partial sums are kept in `C`, bit-cast.

use super::kernel_scalar::finish_element;
use super::{pack_a_block_i8, Microkernel, RowQuant, TileEpilogue, KC_I8, KG_I8, NR};
use crate::activation::{epilogue_row, epilogue_tile, Activation};
use crate::simd::ScalarToken;

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 4;
/// Columns per register block.
const NB: usize = 8;

/// The portable int8 kernel (always available).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarI8Kernel;

impl Microkernel for ScalarI8Kernel {
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
        let rows = rows.min(MR);
        let cols = cols.min(NR);
        let quads = kc.div_ceil(4);
        // SAFETY: the caller guarantees b: kc (rounded up to 4) · NR elements.
        let b = unsafe { std::slice::from_raw_parts(b, quads * 4 * NR) };
        // SAFETY: the caller guarantees the micro-panel: mr · kc_pad elements (the packing
        // zero-fills the last group past kc).
        let a_panel = unsafe { std::slice::from_raw_parts(a, mr * kc.next_multiple_of(KG_I8)) };
        // Between K blocks C holds i32 partial sums.
        let c_int = c.cast::<i32>();
        for i in 0..rows {
            for j0 in (0..cols).step_by(NB) {
                let nb = NB.min(cols - j0);
                let mut acc = [0i32; NB];
                if accumulate {
                    for (jj, v) in acc.iter_mut().enumerate().take(nb) {
                        // SAFETY: (i, j0 + jj) is inside the caller's rows × cols tile.
                        *v = unsafe { *c_int.add(i * ldc + j0 + jj) };
                    }
                }
                for p in 0..quads {
                    let kk = 4 * p;
                    let at = (kk / KG_I8) * mr * KG_I8 + i * KG_I8 + kk % KG_I8;
                    let a4 = &a_panel[at..at + 4];
                    let row = &b[p * 4 * NR + 4 * j0..p * 4 * NR + 4 * (j0 + NB)];
                    for (jj, v) in acc.iter_mut().enumerate() {
                        let b4 = &row[4 * jj..4 * jj + 4];
                        let dot: i32 = (0..4).map(|t| i32::from(a4[t]) * i32::from(b4[t])).sum();
                        *v = v.wrapping_add(dot);
                    }
                }
                for (jj, &v) in acc.iter().enumerate().take(nb) {
                    let j = j0 + jj;
                    let Some(e) = epi else {
                        // SAFETY: (i, j) is inside the caller's rows × cols tile.
                        unsafe { *c_int.add(i * ldc + j) = v };
                        continue;
                    };
                    // SAFETY: row i < rows and column j < cols are inside the row
                    // quantisation, column scale / sum, outlier weight (c < outliers), bias
                    // and residual areas the caller vouches for (the int8 pointers are never
                    // null for this kernel; the outlier weights are read only if outliers > 0).
                    let y = unsafe {
                        let rq: RowQuant = *e.row_quant.add(i);
                        let d = v.wrapping_sub(rq.zero.wrapping_mul(*e.col_sum.add(j)));
                        let mut y = d as f32 * (rq.scale * *e.col_scale.add(j));
                        for (c, &x) in rq.exact.iter().enumerate().take(e.outliers) {
                            let product = x * *e.outlier_weight.add(c * e.ld_outlier_weight + j);
                            y += product;
                        }
                        finish_element(y, &e, i, j)
                    };
                    // SAFETY: (i, j) is inside the caller's rows × cols tile.
                    unsafe { *c.add(i * ldc + j) = y };
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
        quant: &[RowQuant],
        dst: &mut [u8],
    ) {
        pack_a_block_i8(x, k, rows, pc, kc, mr, quant, dst);
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
