//! NEON (aarch64) microkernel: `8 × 8` tiles (16 q-register accumulators), run four times per
//! 32-column panel.
//!
//! The packed A micro-panel keeps `KG = 16` consecutive k values of a row together, so one
//! 16-byte load brings a row's next four k; the FMAs then take A by lane
//! (`fmla vd.4s, vb.4s, va.s[lane]`) instead of broadcasting it. Per group of four k: eight A
//! loads, eight B loads (two 4-float vectors per k), 64 FMAs, i.e. four FMAs (16
//! multiply-adds) per 16 bytes loaded. Registers: 16 accumulators + 8 A + 2 B of the 32, the
//! rest free for loading ahead (the compiled 8-row loop spills nothing). The 8-wide pass
//! divides the 32-column panel; a wider one (BLIS armv8a: 8 × 12, 24 accumulators) would leave
//! no room for eight A registers, and 12 does not divide 32.
//!
//! B panels of f32, or of f16 / bf16 widened exactly as they are loaded (`fcvtl`, `ushll`;
//! see [`PanelElem::load4`]). Every element is the same sequential FMA chain over `kk` as in
//! the x86 kernels, followed by the same bias, ReLU and residual additions, so the results
//! equal theirs bit for bit. Partial tiles: the same body for fewer rows; a pass narrower than
//! 8 columns goes through a stack copy for C, bias and residual (NEON has no masked loads or
//! stores).

use std::arch::aarch64::*;

use std::marker::PhantomData;

use super::panel_elem::PanelElem;
use super::{pack_a_block, Microkernel, RowQuant, TileEpilogue, KG, NR};
use crate::activation::{epilogue_row, epilogue_tile, Activation};
use crate::simd::{neon_relu, NeonToken};

/// Tiles run so far (test builds only), for the ISA-coverage test.
#[cfg(test)]
pub(super) static TILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Rows per tile.
pub(super) const MR: usize = 8;
/// Columns per pass (two q registers per row).
const PASS: usize = 8;

/// The NEON kernel over B panels of `B`; holding one proves the CPU has NEON.
#[derive(Debug)]
pub(crate) struct NeonKernel<B>(NeonToken, PhantomData<fn() -> B>);

impl<B> Clone for NeonKernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for NeonKernel<B> {}

impl<B> NeonKernel<B> {
    /// `Some` iff this CPU supports the kernel.
    pub(crate) fn detect() -> Option<Self> {
        NeonToken::detect().map(|t| Self(t, PhantomData))
    }
}

impl<B: PanelElem> Microkernel for NeonKernel<B> {
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
        for_each_pass(cols, epi, |start, width, epi| {
            // SAFETY: the token proved NEON; this pass's columns start..start+width lie
            // inside the caller's tile, and b + start stays inside the kc·NR panel slice.
            unsafe {
                tile_neon::<B>(
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
        // SAFETY: forwarded contract; the token proves NEON.
        unsafe { epilogue_tile(self.0, c, ldc, rows, cols, act, residual, ldr) }
    }

    fn epilogue_row(
        self,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    ) {
        epilogue_row(self.0, row, bias, act, residual)
    }
}

/// Runs `pass(start, width, epi)` for each 8-column pass of a `cols`-wide tile that has
/// columns (`start` = 0, 8, 16, 24; `width ≤ 8`), with the epilogue's bias and residual
/// pointers shifted to that pass (null stays null).
#[inline(always)]
fn for_each_pass(
    cols: usize,
    epi: Option<TileEpilogue>,
    mut pass: impl FnMut(usize, usize, Option<TileEpilogue>),
) {
    for start in (0..NR).step_by(PASS) {
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
        pass(start, PASS.min(cols - start), epi);
    }
}

/// Dispatches on `rows` to a body with a compile-time row count.
///
/// # Safety
/// CPU has NEON; `b` readable for `kc` rows of stride `NR` and `width ≤ 8` columns; otherwise
/// the pointer contract of [`Microkernel::tile`] with `cols = width`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_neon<B: PanelElem>(
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
    match rows {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        6 => go!(6),
        7 => go!(7),
        8 => go!(8),
        _ => {}
    }
}

/// `C[0..R, 0..width] = (accumulate ? C : 0) + A·B[:, 0..8]`, then the in-register epilogue
/// if `epi` is given.
///
/// # Safety
/// As [`tile_neon`], with `R ≤ MR`.
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
    // SAFETY: (whole body) C is accessed only at rows < R and columns < width (by
    // `load_tile` / `finish_tile`). A is read at rows < R, k < kc of the micro-panel
    // (row i, k = g·KG + u at g·mr·KG + i·KG + u); B at k < kc, columns < 8 of stride NR.
    unsafe {
        let (mut acc0, mut acc1) = if accumulate {
            load_tile::<R>(c, ldc, width)
        } else {
            ([vdupq_n_f32(0.0); R], [vdupq_n_f32(0.0); R])
        };
        // One k step with A taken from lane $lane of each row's register `av`.
        macro_rules! k_step_lane {
            ($av:expr, $b:expr, $lane:literal) => {{
                let b0 = B::load4($b);
                let b1 = B::load4($b.add(4));
                for i in 0..R {
                    acc0[i] = vfmaq_laneq_f32::<$lane>(acc0[i], b0, $av[i]);
                    acc1[i] = vfmaq_laneq_f32::<$lane>(acc1[i], b1, $av[i]);
                }
            }};
        }
        // Four k steps: a row's four A values in one load (they are adjacent in the panel).
        macro_rules! four_k {
            ($a:expr, $b:expr) => {{
                let mut av = [vdupq_n_f32(0.0); R];
                for (i, v) in av.iter_mut().enumerate() {
                    *v = vld1q_f32($a.add(i * KG));
                }
                k_step_lane!(av, $b, 0);
                k_step_lane!(av, $b.add(NR), 1);
                k_step_lane!(av, $b.add(2 * NR), 2);
                k_step_lane!(av, $b.add(3 * NR), 3);
            }};
        }
        let mut a = a;
        let mut b = b;
        for _ in 0..kc / KG {
            for u in (0..KG).step_by(4) {
                four_k!(a.add(u), b.add(u * NR));
            }
            a = a.add(mr * KG);
            b = b.add(KG * NR);
        }
        // Tail group: fours while they fit, then single k (A broadcast), reading no A past kc.
        let tail = kc % KG;
        let mut u = 0;
        while u + 4 <= tail {
            four_k!(a.add(u), b.add(u * NR));
            u += 4;
        }
        while u < tail {
            let b0 = B::load4(b.add(u * NR));
            let b1 = B::load4(b.add(u * NR + 4));
            for i in 0..R {
                let ai = vdupq_n_f32(*a.add(i * KG + u));
                acc0[i] = vfmaq_f32(acc0[i], b0, ai);
                acc1[i] = vfmaq_f32(acc1[i], b1, ai);
            }
            u += 1;
        }
        finish_tile::<R>(acc0, acc1, c, ldc, width, epi);
    }
}

/// The first `width ≤ 8` floats at `p` as two q registers, zero past `width`.
///
/// # Safety
/// `p` readable for `width` floats.
#[inline(always)]
unsafe fn load_cols(p: *const f32, width: usize) -> (float32x4_t, float32x4_t) {
    // SAFETY: full loads only when width == 8; otherwise only `width` floats are copied
    // into the zeroed stack buffer.
    unsafe {
        if width == PASS {
            (vld1q_f32(p), vld1q_f32(p.add(4)))
        } else {
            let mut lanes = [0.0f32; PASS];
            std::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), width.min(PASS));
            (vld1q_f32(lanes.as_ptr()), vld1q_f32(lanes.as_ptr().add(4)))
        }
    }
}

/// Stores the first `width ≤ 8` lanes of `(v0, v1)` to `p`.
///
/// # Safety
/// `p` writable for `width` floats.
#[inline(always)]
unsafe fn store_cols(p: *mut f32, width: usize, v0: float32x4_t, v1: float32x4_t) {
    // SAFETY: full stores only when width == 8; otherwise only `width` floats are copied
    // out of the stack buffer.
    unsafe {
        if width == PASS {
            vst1q_f32(p, v0);
            vst1q_f32(p.add(4), v1);
        } else {
            let mut lanes = [0.0f32; PASS];
            vst1q_f32(lanes.as_mut_ptr(), v0);
            vst1q_f32(lanes.as_mut_ptr().add(4), v1);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, width.min(PASS));
        }
    }
}

/// The `R × width` tile of `C` at `c` (`width ≤ 8`) as two q registers per row, zero past
/// `width`.
///
/// # Safety
/// `c` readable at `C[i·ldc + j]` for `i < R`, `j < width`.
#[inline(always)]
unsafe fn load_tile<const R: usize>(
    c: *const f32,
    ldc: usize,
    width: usize,
) -> ([float32x4_t; R], [float32x4_t; R]) {
    // SAFETY: row i < R, columns < width: inside the caller's tile; NEON is in the baseline.
    unsafe {
        let mut acc0 = [vdupq_n_f32(0.0); R];
        let mut acc1 = [vdupq_n_f32(0.0); R];
        for i in 0..R {
            (acc0[i], acc1[i]) = load_cols(c.add(i * ldc), width);
        }
        (acc0, acc1)
    }
}

/// Applies `epi` (bias, ReLU, residual: [`TileEpilogue`]) to the accumulators if given and
/// stores them to the `R × width` tile of `C` at `c` (`width ≤ 8`).
///
/// # Safety
/// `c` writable at `C[i·ldc + j]` for `i < R`, `j < width`; `epi`'s pointers readable for
/// those columns (and rows).
#[inline(always)]
unsafe fn finish_tile<const R: usize>(
    mut acc0: [float32x4_t; R],
    mut acc1: [float32x4_t; R],
    c: *mut f32,
    ldc: usize,
    width: usize,
    epi: Option<TileEpilogue>,
) {
    // SAFETY: C, bias and residual are accessed only at columns < width of rows < R
    // (`load_cols` / `store_cols` touch nothing past `width`).
    unsafe {
        if let Some(e) = epi {
            if !e.bias.is_null() {
                let (bias0, bias1) = load_cols(e.bias, width);
                for i in 0..R {
                    acc0[i] = vaddq_f32(acc0[i], bias0);
                    acc1[i] = vaddq_f32(acc1[i], bias1);
                }
            }
            if e.relu {
                for i in 0..R {
                    acc0[i] = neon_relu(acc0[i]);
                    acc1[i] = neon_relu(acc1[i]);
                }
            }
            if !e.residual.is_null() {
                for i in 0..R {
                    let (r0, r1) = load_cols(e.residual.add(i * e.ld_residual), width);
                    acc0[i] = vaddq_f32(acc0[i], r0);
                    acc1[i] = vaddq_f32(acc1[i], r1);
                }
            }
        }
        for i in 0..R {
            store_cols(c.add(i * ldc), width, acc0[i], acc1[i]);
        }
    }
}
