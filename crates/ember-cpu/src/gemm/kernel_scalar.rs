//! Portable microkernel: `4 × 4` blocks of scalar accumulators swept across the 32-column
//! panel. Separate multiply and add (no FMA), so it is fast on any x86-64 and deterministic;
//! its results differ from the FMA kernels in the last bits.

use super::{Microkernel, NR};
use crate::activation::{epilogue_row, Activation};
use crate::simd::ScalarToken;

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 4;
/// Columns per register block.
const NB: usize = 4;

/// The scalar kernel (always available).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarKernel;

impl Microkernel for ScalarKernel {
    const MR: usize = MR;

    unsafe fn tile(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) {
        #[cfg(test)]
        TILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller guarantees a: kc·MR floats, b: kc·NR floats.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, kc * MR),
                std::slice::from_raw_parts(b, kc * NR),
            )
        };
        let rows = rows.min(MR);
        let cols = cols.min(NR);
        for j0 in (0..cols).step_by(NB) {
            let nb = NB.min(cols - j0);
            let mut acc = [[0.0f32; NB]; MR];
            if accumulate {
                for (i, acc_row) in acc.iter_mut().enumerate().take(rows) {
                    for (jj, v) in acc_row.iter_mut().enumerate().take(nb) {
                        // SAFETY: (i, j0 + jj) is inside the caller's rows × cols tile.
                        *v = unsafe { *c.add(i * ldc + j0 + jj) };
                    }
                }
            }
            for kk in 0..kc {
                let a_k = &a[kk * MR..kk * MR + MR];
                let b_k = &b[kk * NR + j0..kk * NR + j0 + NB];
                for i in 0..MR {
                    for jj in 0..NB {
                        acc[i][jj] += a_k[i] * b_k[jj];
                    }
                }
            }
            for (i, acc_row) in acc.iter().enumerate().take(rows) {
                for (jj, &v) in acc_row.iter().enumerate().take(nb) {
                    // SAFETY: (i, j0 + jj) is inside the caller's rows × cols tile.
                    unsafe { *c.add(i * ldc + j0 + jj) = v };
                }
            }
        }
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
