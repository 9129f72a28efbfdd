//! The linear layer `Y = act(X·Wᵀ + b) + R`, BERT's every projection.
//!
//! Shapes: `X` is `[m, k]` (tokens × in_features), `W` is `[n, k]` in PyTorch `nn.Linear`
//! layout (out_features × in_features, row-major), `b` is `[n]`, `R` (residual) and `Y` are
//! `[m, n]`. All row-major `f32`.
//!
//! # Algorithm (BLIS / Goto)
//!
//! `W` is repacked once at load time ([`PackedLinear`]) into *panels* of `NR = 32` output
//! columns: panel `p` holds `W[p·NR .. p·NR+NR, 0..k]` transposed, k-major
//! (`panel[kk·NR + jj] = W[p·NR + jj, kk]`), the last panel zero-padded; 64-byte aligned. One
//! layout serves every ISA.
//!
//! Per call, work is split into tasks of (row block × panel range). A task walks `K` in
//! blocks of `KC`; for each it copies its rows of `X[:, pc..pc+KC]` into a per-thread buffer
//! with the constant row stride `KC` (*A micro-panels* are `MR` consecutive rows), then lets
//! each A micro-panel sweep a group of `NC_PANELS` B panels with the ISA's `MR × NR`
//! microkernel, which keeps the whole `MR × NR` tile of `Y` in registers and does one FMA
//! per (row, column, kk): per `kk`, `NR/16` vector loads of B, `MR` broadcasts of
//! `a[i·KC + kk]`, `MR·NR/16` FMAs.
//!
//! | ISA      | MR × NR        | accumulators          |
//! |----------|----------------|-----------------------|
//! | AVX-512  | 14 × 32        | 28 zmm (+2 B, 1 A)    |
//! | AVX2     | 6 × 16 (twice) | 12 ymm (+2 B, 1 A)    |
//! | scalar   | 4 × 4 (×8)     | 16 f32                |
//!
//! After the last K block, the epilogue applies `act(· + b) + R` to the tile while it is hot.
//!
//! # Determinism
//!
//! Every output element is one sequential chain `acc ← fma(x[i,kk], w[j,kk], acc)` for
//! `kk = 0, 1, …, k−1`, starting from 0: a tile continued in a later K block reloads the
//! stored `f32` accumulator, which is exactly the register value, so K blocking does not
//! change the chain. Edge rows use the same kernel body instantiated for fewer rows (same
//! chain per element), edge columns are masked, never reordered. Hence `Y[i, j]` depends only
//! on `X[i, :]`, `W` and the ISA: not on `m`, on which rows share a tile, on the task split or
//! on the number of threads. (AVX2 and AVX-512 both use FMA in the same order and agree
//! bit-for-bit on the product; `Scalar` uses separate multiply and add.)

#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
mod kernel_avx512;
mod kernel_scalar;

use std::cell::RefCell;

use rayon::prelude::*;

use crate::activation::Activation;
use crate::error::{check_len, checked_elems, KernelError};
use crate::isa::{active_isa, Isa};

/// Output columns per packed panel of `W` (and per microkernel tile).
pub const NR: usize = 32;
/// K block, and the row stride of packed A. An A micro-panel (`MR × KC` floats, 14 KiB for
/// AVX-512) stays in L1 while it sweeps a group of B micro-panels (`KC × NR`, 32 KiB each)
/// streaming from L2. Being a compile-time constant, the stride becomes immediate address
/// offsets in the microkernels' broadcast loads.
pub(crate) const KC: usize = 256;
/// Packed A groups `KG` consecutive k values per row (see [`pack_a_block`]).
pub(crate) const KG: usize = 16;
/// Panels swept per A micro-panel: a group's B micro-panels (`KC × NR × NC_PANELS`
/// floats, 768 KiB) stay in L2 while every A micro-panel of the task passes over them.
const NC_PANELS: usize = 16;
/// Most rows a task packs per K block: its A block (`MC_MAX × KC`) is ~230 KiB, well inside L2.
const MC_MAX: usize = 336;
/// Below this many multiply-adds a call runs on the calling thread: handing work to rayon
/// costs more than it saves.
const SEQUENTIAL_MACS: usize = 1 << 17;

/// A linear layer's weight `[n, k]` and optional bias `[n]`, repacked once into the GEMM's
/// panel layout (see the module docs). Costs `n_panels·NR·k` floats (≈ the weight's size).
///
/// ```
/// use ember_cpu::{gemm::linear, Activation, PackedLinear};
/// // W = [[1, 2], [3, 4], [5, 6]] : n = 3 outputs, k = 2 inputs.
/// let w = PackedLinear::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], Some(&[0.5, 0.0, -0.5]), 3, 2)?;
/// let x = [1.0, 1.0]; // m = 1 row
/// let mut y = [0.0f32; 3];
/// linear(&x, 1, &w, Activation::Identity, None, &mut y)?;
/// assert_eq!(y, [3.5, 7.0, 10.5]);
/// # Ok::<(), ember_cpu::error::KernelError>(())
/// ```
#[derive(Clone)]
pub struct PackedLinear {
    n: usize,
    k: usize,
    /// Backing store; the panels start at `offset` (64-byte aligned) and span
    /// `n_panels · k · NR` floats.
    storage: Vec<f32>,
    offset: usize,
    /// Bias zero-padded to `n_panels · NR`.
    bias: Option<Vec<f32>>,
}

impl std::fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedLinear")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("bias", &self.bias.is_some())
            .finish()
    }
}

impl PackedLinear {
    /// Packs `weight` (`[n, k]`, `nn.Linear` layout) and `bias` (`[n]`).
    ///
    /// Errors if `weight.len() != n·k` or `bias.len() != n`.
    pub fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
    ) -> Result<PackedLinear, KernelError> {
        const OP: &str = "PackedLinear::new";
        check_len(
            OP,
            "weight",
            checked_elems(OP, "weight", n, k)?,
            weight.len(),
        )?;
        if let Some(b) = bias {
            check_len(OP, "bias", n, b.len())?;
        }
        let n_panels = n.div_ceil(NR);
        let panel_len = checked_elems(OP, "weight", k, NR)?;
        let packed_len = checked_elems(OP, "weight", n_panels, panel_len)?;
        // 15 spare floats let the panels start on a 64-byte boundary.
        let mut storage = vec![0.0f32; packed_len + 15];
        let offset = storage.as_ptr().align_offset(64).min(15);
        let panels = &mut storage[offset..offset + packed_len];
        if panel_len > 0 {
            panels
                .par_chunks_mut(panel_len)
                .enumerate()
                .for_each(|(p, panel)| pack_b_panel(weight, k, n, p, panel));
        }
        let bias = bias.map(|b| {
            let mut padded = vec![0.0f32; n_panels * NR];
            padded[..n].copy_from_slice(b);
            padded
        });
        Ok(PackedLinear {
            n,
            k,
            storage,
            offset,
            bias,
        })
    }

    /// Output features (rows of `W`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of `W`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The bias, if any (`[n]`).
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref().map(|b| &b[..self.n])
    }

    /// Number of `NR`-column panels.
    fn n_panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Panel `p`: `k × NR` floats, k-major.
    fn panel(&self, p: usize) -> &[f32] {
        let len = self.k * NR;
        &self.storage[self.offset + p * len..self.offset + (p + 1) * len]
    }

    /// Unpacks back to `[n, k]` (for tests and debugging).
    pub fn unpack_weight(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.n * self.k];
        for j in 0..self.n {
            let panel = self.panel(j / NR);
            for kk in 0..self.k {
                w[j * self.k + kk] = panel[kk * NR + j % NR];
            }
        }
        w
    }
}

/// Writes panel `p` of `weight` (`[n, k]`): `panel[kk·NR + jj] = W[p·NR + jj, kk]`, zero for
/// columns past `n`.
fn pack_b_panel(weight: &[f32], k: usize, n: usize, p: usize, panel: &mut [f32]) {
    for jj in 0..NR {
        let j = p * NR + jj;
        if j >= n {
            break; // storage is zero-initialised: padding stays 0.
        }
        let w_row = &weight[j * k..(j + 1) * k];
        for (kk, &v) in w_row.iter().enumerate() {
            panel[kk * NR + jj] = v;
        }
    }
}

/// What the blocking loops need from an ISA: its tile height and two tile operations.
pub(crate) trait Microkernel: Copy + Send + Sync {
    /// Rows per A micro-panel / tile.
    const MR: usize;

    /// `C[0..rows, 0..cols] = (accumulate ? C : 0) + A·B` for one tile, where `A` is a packed
    /// micro-panel (`a[i·KC + kk]`, `i < rows`, `kk < kc ≤ KC`) and `B` a slice of a packed
    /// panel (`b[kk·NR + jj]`). Each element is one sequential FMA chain over `kk`. With `epi`
    /// (last K block), the tile is finished in registers before the store (see
    /// [`TileEpilogue`]).
    ///
    /// # Safety
    /// `rows ≤ MR`, `cols ≤ NR`, `kc ≤ KC`; `a` readable at `a[i·KC + kk]` for `i < rows`,
    /// `kk < kc`; `b` readable for `kc·NR` floats; `c` valid
    /// for reads and writes of `C[i·ldc + j]` for `i < rows`, `j < cols`, and not accessed by
    /// anyone else meanwhile; `epi`'s pointers as documented there.
    #[allow(clippy::too_many_arguments)]
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
        epi: Option<TileEpilogue>,
    );

    /// Packs `X[r0..r1, pc..pc+kc]` for this kernel; see [`pack_a_block`] for the layout and
    /// the bounds.
    fn pack_a(
        self,
        x: &[f32],
        k: usize,
        rows: (usize, usize),
        pc: usize,
        kc: usize,
        dst: &mut [f32],
    ) {
        pack_a_block(x, k, rows, pc, kc, Self::MR, dst);
    }

    /// `row = act(row + bias) + residual` (see [`crate::activation::epilogue_row`]).
    fn epilogue_row(
        self,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    );
}

/// The part of the epilogue a microkernel applies in registers after the last K block:
/// `acc ← acc + bias`, then `max(acc, 0)` if `relu`, then `acc ← acc + R`. (GELU, too long to
/// inline into a kernel holding 28 accumulators, runs afterwards over the stored tile.)
/// Element-wise in the same order as [`crate::activation::epilogue_row`], so results do not
/// depend on which path finished a tile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileEpilogue {
    /// Bias for the tile's columns, readable for `cols` floats; null for none.
    pub(crate) bias: *const f32,
    /// Residual tile, `R[i·ld_residual + j]` readable for `i < rows`, `j < cols`; null for none.
    pub(crate) residual: *const f32,
    /// Row stride of `residual`.
    pub(crate) ld_residual: usize,
    /// Apply `max(·, 0)` between bias and residual.
    pub(crate) relu: bool,
}

/// A reusable per-thread buffer for packed A blocks.
struct ScratchBuf(Vec<f32>);

impl ScratchBuf {
    /// A 64-byte-aligned slice of `len` floats, growing the buffer if needed (only during
    /// warm-up: the largest request is `MC_MAX × KC`).
    fn aligned(&mut self, len: usize) -> &mut [f32] {
        if self.0.len() < len + 15 {
            self.0 = vec![0.0; len + 15];
        }
        let offset = self.0.as_ptr().align_offset(64).min(15);
        &mut self.0[offset..offset + len]
    }
}

thread_local! {
    static PACKED_A: RefCell<ScratchBuf> = const { RefCell::new(ScratchBuf(Vec::new())) };
}

/// `Y = act(X·Wᵀ + b) + R` on the [`active_isa`].
///
/// `x`: `[m, k]`, `out`: `[m, n]`, `residual`: `[m, n]` (added after the activation), with
/// `n = w.n()`, `k = w.k()`. Runs on rayon's current pool. Errors on any length mismatch;
/// `out` is untouched then.
pub fn linear(
    x: &[f32],
    m: usize,
    w: &PackedLinear,
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    linear_with_isa(active_isa(), x, m, w, act, residual, out)
}

/// [`linear`] on an explicit instruction set (`Err(UnsupportedIsa)` if this CPU lacks it).
pub fn linear_with_isa(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedLinear,
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "linear";
    let (n, k) = (w.n, w.k);
    check_len(OP, "x", checked_elems(OP, "x", m, k)?, x.len())?;
    let mn = checked_elems(OP, "out", m, n)?;
    check_len(OP, "out", mn, out.len())?;
    if let Some(r) = residual {
        check_len(OP, "residual", mn, r.len())?;
    }
    let unsupported = KernelError::UnsupportedIsa { op: OP, isa };
    match isa {
        Isa::Scalar => gemm_driver(kernel_scalar::ScalarKernel, x, m, w, act, residual, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let kern = kernel_avx2::Avx2Kernel::detect().ok_or(unsupported)?;
            gemm_driver(kern, x, m, w, act, residual, out)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            let kern = kernel_avx512::Avx512Kernel::detect().ok_or(unsupported)?;
            gemm_driver(kern, x, m, w, act, residual, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 => return Err(unsupported),
    }
    Ok(())
}

/// `*mut f32` that may cross threads: tasks write disjoint tiles of `out`.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the pointer is only dereferenced by tasks that own disjoint row/column ranges
// (see `gemm_driver`), and `out` outlives the parallel section.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// How the `m × n_panels` output is cut into tasks.
#[derive(Clone, Copy, Debug)]
struct Plan {
    rows_per_task: usize,
    panels_per_task: usize,
    row_tasks: usize,
    panel_tasks: usize,
}

/// Picks task sizes: rows in multiples of `mr` (≤ `MC_MAX`), then panels, aiming at ≥ 4
/// tasks per thread for balance, but never splitting `N` more than needed (each task packs
/// its own A block, so narrower tasks repack more). Only affects speed, never results.
fn plan(m: usize, n_panels: usize, mr: usize, threads: usize) -> Plan {
    let mc_max = (MC_MAX / mr).max(1) * mr;
    let m_panels = m.div_ceil(mr);
    let target = if threads <= 1 { 1 } else { 4 * threads };
    let mut row_tasks = m.div_ceil(mc_max).max(1);
    if row_tasks < target {
        row_tasks = target.min(m_panels).max(1);
    }
    let rows_per_task = m_panels.div_ceil(row_tasks) * mr;
    let row_tasks = m.div_ceil(rows_per_task).max(1);
    let panel_tasks = target.div_ceil(row_tasks).clamp(1, n_panels.max(1));
    let panels_per_task = n_panels.div_ceil(panel_tasks).max(1);
    let panel_tasks = n_panels.div_ceil(panels_per_task).max(1);
    Plan {
        rows_per_task,
        panels_per_task,
        row_tasks,
        panel_tasks,
    }
}

/// The blocking loops (module docs), generic over the microkernel. Lengths were validated.
fn gemm_driver<K: Microkernel>(
    kern: K,
    x: &[f32],
    m: usize,
    w: &PackedLinear,
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    let n_panels = w.n_panels();
    let bias = w.bias.as_deref();
    if k == 0 {
        // Empty reduction: Y = act(b) + R.
        out.fill(0.0);
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            let res = residual.map(|r| &r[i * n..(i + 1) * n]);
            kern.epilogue_row(row, bias, act, res);
        }
        return;
    }
    let macs = m.saturating_mul(n).saturating_mul(k);
    let threads = if macs < SEQUENTIAL_MACS {
        1
    } else {
        rayon::current_num_threads()
    };
    let plan = plan(m, n_panels, K::MR, threads);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let run_task = |task: usize| {
        let (rt, pt) = (task / plan.panel_tasks, task % plan.panel_tasks);
        let r0 = rt * plan.rows_per_task;
        let r1 = (r0 + plan.rows_per_task).min(m);
        let p0 = pt * plan.panels_per_task;
        let p1 = (p0 + plan.panels_per_task).min(n_panels);
        if r0 >= r1 || p0 >= p1 {
            return;
        }
        PACKED_A.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                let len = (r1 - r0).div_ceil(K::MR) * K::MR * KC;
                gemm_task(
                    kern,
                    x,
                    w,
                    act,
                    residual,
                    out_ptr,
                    (r0, r1),
                    (p0, p1),
                    buf.aligned(len),
                );
            }
            // Re-entered on this thread (cannot happen: tasks never nest); stay correct.
            Err(_) => {
                let mut own = ScratchBuf(Vec::new());
                let len = (r1 - r0).div_ceil(K::MR) * K::MR * KC;
                gemm_task(
                    kern,
                    x,
                    w,
                    act,
                    residual,
                    out_ptr,
                    (r0, r1),
                    (p0, p1),
                    own.aligned(len),
                );
            }
        });
    };
    let tasks = plan.row_tasks * plan.panel_tasks;
    if tasks == 1 {
        run_task(0);
    } else {
        (0..tasks).into_par_iter().for_each(run_task);
    }
}

/// One task: rows `r0..r1` × panels `p0..p1`, all of K.
#[allow(clippy::too_many_arguments)]
fn gemm_task<K: Microkernel>(
    kern: K,
    x: &[f32],
    w: &PackedLinear,
    act: Activation,
    residual: Option<&[f32]>,
    out: OutPtr,
    (r0, r1): (usize, usize),
    (p0, p1): (usize, usize),
    packed_a: &mut [f32],
) {
    let (n, k) = (w.n, w.k);
    let mr = K::MR;
    let mut pc = 0;
    while pc < k {
        let kc = KC.min(k - pc);
        let last = pc + kc == k;
        kern.pack_a(x, k, (r0, r1), pc, kc, packed_a);
        // Tile order: groups of NC_PANELS panels; in a group, each A micro-panel (MR × kc,
        // stays in L1) sweeps the group's B micro-panels (≤ 768 KiB, in L2 after the first
        // sweep). Nested loops, not a flat index: the per-tile bookkeeping must stay far
        // below the tile's few thousand cycles.
        let row_panels = (r1 - r0).div_ceil(mr);
        let in_kernel_act = matches!(act, Activation::Identity | Activation::Relu);
        for g0 in (p0..p1).step_by(NC_PANELS) {
            let g1 = (g0 + NC_PANELS).min(p1);
            for q in 0..row_panels {
                let ir = r0 + q * mr;
                let rows = mr.min(r1 - ir);
                let kc_pad = kc.next_multiple_of(KG);
                let a = &packed_a[q * mr * kc_pad..(q + 1) * mr * kc_pad];
                for p in g0..g1 {
                    let c0 = p * NR;
                    let cols = NR.min(n - c0);
                    // The next tile's C (and residual) rows are `n` floats apart, too far
                    // apart for the hardware prefetchers; fetch them one tile ahead.
                    let next = if p + 1 < g1 {
                        Some((ir, rows, c0 + NR))
                    } else if q + 1 < row_panels {
                        Some((ir + mr, mr.min(r1 - ir - mr), g0 * NR))
                    } else if g1 < p1 {
                        Some((r0, mr.min(r1 - r0), g1 * NR))
                    } else {
                        None
                    };
                    if let Some((row, rows, col)) = next {
                        let tile = (row, rows, col, NR.min(n - col));
                        prefetch_tile(out.0, n, tile);
                        if let (true, Some(r)) = (last, residual) {
                            prefetch_tile(r.as_ptr(), n, tile);
                        }
                    }
                    let b = &w.panel(p)[pc * NR..(pc + kc) * NR];
                    // After the last K block: bias (+ relu + residual) in registers; GELU
                    // runs over the stored tile below.
                    let epi = last.then(|| TileEpilogue {
                        bias: w
                            .bias
                            .as_deref()
                            .map_or(std::ptr::null(), |b| b[c0..].as_ptr()),
                        residual: match (in_kernel_act, residual) {
                            (true, Some(r)) => r[ir * n + c0..].as_ptr(),
                            _ => std::ptr::null(),
                        },
                        ld_residual: n,
                        relu: act == Activation::Relu,
                    });
                    // SAFETY: rows ≤ MR, cols ≤ NR, kc ≤ KC; `a` holds `rows` rows of stride
                    // KC and `b` kc·NR floats;
                    // the tile C[ir..ir+rows, c0..c0+cols] lies inside `out` ([m, n],
                    // validated) and belongs to this task alone (tasks own disjoint row ×
                    // panel ranges). The bias is padded to whole panels; the residual tile
                    // lies inside `residual` ([m, n]).
                    unsafe {
                        kern.tile(
                            kc,
                            a.as_ptr(),
                            b.as_ptr(),
                            out.0.add(ir * n + c0),
                            n,
                            rows,
                            cols,
                            pc > 0,
                            epi,
                        );
                    }
                    if last && !in_kernel_act {
                        for i in ir..ir + rows {
                            // SAFETY: row i, columns c0..c0+cols of `out`: inside `out` and
                            // owned by this task (as above); no other reference to it exists.
                            let row = unsafe {
                                std::slice::from_raw_parts_mut(out.0.add(i * n + c0), cols)
                            };
                            let res = residual.map(|r| &r[i * n + c0..i * n + c0 + cols]);
                            kern.epilogue_row(row, None, act, res);
                        }
                    }
                }
            }
        }
        pc += kc;
    }
}

/// Prefetches (into L1) the `rows × cols` tile at `(row, col)` of a row-major matrix with `ld`
/// floats per row. A hint only: never faults, never changes results.
#[inline(always)]
fn prefetch_tile(
    base: *const f32,
    ld: usize,
    (row, rows, col, cols): (usize, usize, usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    for i in row..row + rows {
        let first = base.wrapping_add(i * ld + col);
        let last = first.wrapping_add(cols - 1);
        // SAFETY: prefetch is a hint that cannot fault, whatever the address; SSE is part
        // of the x86-64 baseline.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(first.cast());
            _mm_prefetch::<_MM_HINT_T0>(last.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (base, ld, row, rows, col, cols);
}

/// Packs `X[r0..r1, pc..pc+kc]` (`X` row-major, `k` columns) into micro-panels of `mr` rows.
/// Within a micro-panel, k runs in groups of `KG`: element `(i, kk)` sits at
/// `(kk / KG)·mr·KG + i·KG + kk % KG`, and micro-panel `q` starts at `q·mr·kc_pad`
/// (`kc_pad` = `kc` rounded up to `KG`). Packing is then a copy of `KG`-float pieces (no
/// transpose), while one k step's `mr` broadcasts still fall in a few cache lines. Rows past
/// `r1` are left as they are: kernels never read them. `dst.len() ≥ ⌈(r1−r0)/mr⌉·mr·kc_pad`.
fn pack_a_block(
    x: &[f32],
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    dst: &mut [f32],
) {
    let kc_pad = kc.next_multiple_of(KG);
    let full_groups = kc / KG;
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = &mut dst[q * mr * kc_pad..(q + 1) * mr * kc_pad];
        let src_row = |i: usize| &x[(ir + i) * k + pc..(ir + i) * k + pc + kc];
        // Full groups: the destination is written sequentially, KG floats per row.
        for (g, group) in panel
            .chunks_exact_mut(mr * KG)
            .take(full_groups)
            .enumerate()
        {
            for (i, piece) in group.chunks_exact_mut(KG).take(rows).enumerate() {
                piece.copy_from_slice(&src_row(i)[g * KG..g * KG + KG]);
            }
        }
        // Tail group (kc not a multiple of KG).
        let tail = kc - full_groups * KG;
        if tail > 0 {
            let group = &mut panel[full_groups * mr * KG..];
            for i in 0..rows {
                group[i * KG..i * KG + tail].copy_from_slice(&src_row(i)[full_groups * KG..]);
            }
        }
    }
}

/// Plain-loop reference: `out = act(x·weightᵀ + bias) + residual`, f64 accumulation, on the
/// unpacked `weight` (`[n, k]`).
#[allow(clippy::too_many_arguments)]
pub fn linear_reference(
    x: &[f32],
    m: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    k: usize,
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "linear_reference";
    check_len(OP, "x", checked_elems(OP, "x", m, k)?, x.len())?;
    check_len(
        OP,
        "weight",
        checked_elems(OP, "weight", n, k)?,
        weight.len(),
    )?;
    let mn = checked_elems(OP, "out", m, n)?;
    check_len(OP, "out", mn, out.len())?;
    if let Some(b) = bias {
        check_len(OP, "bias", n, b.len())?;
    }
    if let Some(r) = residual {
        check_len(OP, "residual", mn, r.len())?;
    }
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for kk in 0..k {
                acc += x[i * k + kk] as f64 * weight[j * k + kk] as f64;
            }
            if let Some(b) = bias {
                acc += b[j] as f64;
            }
            let mut y = act.reference(acc);
            if let Some(r) = residual {
                y += r[i * n + j] as f64;
            }
            out[i * n + j] = y as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
