//! Portable microkernel: one row × 8 columns of scalar accumulators at a time, swept across
//! the tile (`MR = 4` rows per tile, 32-column panel). Separate multiply and add (no FMA),
//! so it is fast on any x86-64 and deterministic; its results differ from the FMA kernels in
//! the last bits.

use std::marker::PhantomData;

use super::panel_elem::PanelElem;
use super::{pack_a_block, Microkernel, RowQuant, TileEpilogue, KG, NR};
use crate::activation::{epilogue_row, epilogue_tile, Activation};
use crate::simd::ScalarToken;

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 4;
/// Columns per register block.
const NB: usize = 8;

/// The scalar kernel (always available), over B panels of `B`.
#[derive(Debug)]
pub(crate) struct ScalarKernel<B>(PhantomData<fn() -> B>);

impl<B> Clone for ScalarKernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for ScalarKernel<B> {}

impl<B> ScalarKernel<B> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<B: PanelElem> Microkernel for ScalarKernel<B> {
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
        let rows = rows.min(MR);
        let cols = cols.min(NR);
        // SAFETY: the caller guarantees b: kc·NR floats.
        let b = unsafe { std::slice::from_raw_parts(b, kc * NR) };
        for i in 0..rows {
            // SAFETY: the caller guarantees the micro-panel: MR·kc_pad floats.
            let a_panel = unsafe { std::slice::from_raw_parts(a, mr * kc.next_multiple_of(KG)) };
            for j0 in (0..cols).step_by(NB) {
                let nb = NB.min(cols - j0);
                let mut acc = [0.0f32; NB];
                if accumulate {
                    for (jj, v) in acc.iter_mut().enumerate().take(nb) {
                        // SAFETY: (i, j0 + jj) is inside the caller's rows × cols tile.
                        *v = unsafe { *c.add(i * ldc + j0 + jj) };
                    }
                }
                for kk in 0..kc {
                    let a_ik = a_panel[(kk / KG) * mr * KG + i * KG + kk % KG];
                    let b_k = &b[kk * NR + j0..kk * NR + j0 + NB];
                    for jj in 0..NB {
                        acc[jj] += a_ik * b_k[jj].to_f32();
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

/// The in-register epilogue of [`TileEpilogue`] on one element `v` at row `i`, column `j` of
/// the tile: `+ bias[j]`, ReLU, `+ R[i, j]`, in the order of the SIMD kernels. Shared by the
/// portable kernels.
///
/// # Safety
/// `e`'s bias is readable at `j` and its residual at `i·ld_residual + j` (when non-null).
#[inline(always)]
pub(super) unsafe fn finish_element(mut v: f32, e: &TileEpilogue, i: usize, j: usize) -> f32 {
    // SAFETY: the caller vouches for both positions.
    unsafe {
        if !e.bias.is_null() {
            v += *e.bias.add(j);
        }
        if e.relu && v < 0.0 {
            v = 0.0;
        }
        if !e.residual.is_null() {
            v += *e.residual.add(i * e.ld_residual + j);
        }
    }
    v
}
