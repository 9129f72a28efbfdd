//! Multi-head self-attention over a packed, variable-length batch (no padding, no mask).
//!
//! Shapes: `qkv` is `[T, 3H]`, the fused QKV projection: columns `[0, H)` are Q, `[H, 2H)`
//! K, `[2H, 3H)` V, and head `h` owns columns `h·hd .. (h+1)·hd` of each. `seq_offsets` is
//! `[0, …, T]` (non-decreasing, `n_seq + 1` entries): sequence `s` is rows
//! `seq_offsets[s] .. seq_offsets[s+1]`. `out` is `[T, H]`:
//!
//! `out[t, h·hd ..] = softmax(q_t · K_sᵀ / √hd) · V_s` for the sequence `s` holding `t`.
//!
//! With a [`RelativeBias`] (MPNet's), a bias that depends only on the head and on `j − i` is
//! added to each score `(i, j)` after the scaling, as transformers adds its `position_bias`.
//! With a `window` `w` (ModernBERT's local attention), query `i` attends only to the keys `j`
//! with `|j − i| ≤ w` of its sequence (transformers' bidirectional sliding-window mask): the
//! softmax runs over those keys alone, and only the key tiles a block's windows touch are
//! scored (K and V of the whole sequence are still copied once per task).
//!
//! Work is split into (sequence, head[, query chunk]) tasks on rayon's current pool. A task
//! copies `K_hᵀ` and `V_h` of its sequence into a per-thread scratch buffer (zero-padded to
//! whole vectors), both in blocks of one register pair (`v2` floats): `Kᵀ` as `[⌈L/v2⌉][hd][v2]`
//! (each block of keys' `hd` rows contiguous) and `V` as `[⌈hd/v2⌉][L][v2]` (each block of dims'
//! `L` rows contiguous), so that a tile reads one sequential stream rather than `hd` strided
//! ones (a head's `K` and `V` outgrow the L2 past ~1,000 tokens). Then for each block of
//! `QB` (6) queries it computes scores with a register tile (`QB` queries × 2 vectors of keys,
//! one FMA chain over `d` per score), applies the softmax of [`crate::softmax`] but for its
//! last pass (the terms `e^{x − max}` and `1/Σ`), and accumulates `P·V` (`QB` queries × 2
//! vectors of `d`, one FMA chain over keys per output), scaling each output by its query's
//! `1/Σ` as it is stored. Every output
//! element therefore depends only on its own sequence and head, in a fixed order: results are
//! bit-identical whether a sequence is alone or batched, and for any thread count.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::error::{check_len, check_offsets, checked_elems, KernelError};
use crate::isa::{active_isa, Isa};
use crate::simd::{isa_dispatch, Simd};
use crate::softmax::softmax_terms;

/// Queries per register tile: 12 accumulators, with the two loaded vectors and a broadcast
/// 15 of AVX2's 16 registers. Measured on Zen 3 (`attention_throughput`, single thread,
/// 12 heads × 64, with the blocked layouts): against 4, +9–10 % on 4 × 512 tokens and +3–7 %
/// on 1 × 4,096, 0–2 % less on 1 × 128 and 8 × 16. 8 spills on AVX2 (before the blocked
/// layouts: 6–18 % slower than 4 on the shorter shapes).
const QB: usize = 6;

/// An additive bias on the attention scores that depends only on the head and on the position
/// `j − i` of key `j` relative to query `i` (MPNet's bucketed relative position bias, expanded
/// per distance): score `(i, j)` of head `h` gains `values[h·(2·span + 1) + span + j − i]`.
#[derive(Clone, Copy, Debug)]
pub struct RelativeBias<'a> {
    /// `[heads, 2·span + 1]`.
    pub values: &'a [f32],
    /// The largest `|j − i|` it covers: at least the longest sequence's length − 1.
    pub span: usize,
}

impl RelativeBias<'_> {
    /// The biases of query `i` of head `head` against keys `0..len`.
    fn row(&self, head: usize, i: usize, len: usize) -> &[f32] {
        let start = head * (2 * self.span + 1) + self.span - i;
        &self.values[start..start + len]
    }

    fn validate(
        &self,
        op: &'static str,
        heads: usize,
        seq_offsets: &[usize],
    ) -> Result<(), KernelError> {
        let width = checked_elems(op, "bias", 2, self.span)? + 1;
        check_len(
            op,
            "bias",
            checked_elems(op, "bias", heads, width)?,
            self.values.len(),
        )?;
        let longest = seq_offsets.windows(2).map(|w| w[1] - w[0]).max();
        if let Some(len) = longest.filter(|&len| len > self.span + 1) {
            return Err(KernelError::InvalidShape {
                op,
                reason: format!(
                    "a sequence of {len} tokens is longer than the bias's span {} allows",
                    self.span
                ),
            });
        }
        Ok(())
    }
}
/// What may be added to the plain `softmax(Q·Kᵀ/√hd)·V` of [`attention_varlen`]: both off by
/// default.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionTerms<'a> {
    /// A relative position bias added to the scaled scores (MPNet).
    pub bias: Option<RelativeBias<'a>>,
    /// Query `i` attends only to keys `j` with `|j − i| ≤ window` (ModernBERT's local
    /// layers: `local_attention / 2`).
    pub window: Option<usize>,
}

impl AttentionTerms<'_> {
    /// The keys `[a, b)` query `i` of a sequence of `len` tokens attends to.
    fn keys(&self, i: usize, len: usize) -> (usize, usize) {
        match self.window {
            None => (0, len),
            Some(w) => (
                i.saturating_sub(w),
                i.saturating_add(w).saturating_add(1).min(len),
            ),
        }
    }
}

/// Below this many multiply-adds (`Σ L²·H`) a call stays on the calling thread.
const SEQUENTIAL_MACS: usize = 1 << 17;

/// `out = softmax(Q·Kᵀ/√hd)·V` per sequence and head, on the [`active_isa`]. See the module
/// docs for the shapes. Errors (leaving `out` untouched) on inconsistent shapes or offsets.
///
/// ```
/// // One sequence of 2 tokens, 1 head of dim 1: q = k = 0, so the weights are uniform.
/// let qkv = [0.0, 0.0, 1.0, /* token 1: */ 0.0, 0.0, 3.0];
/// let mut out = [0.0f32; 2];
/// ember_cpu::attention_varlen(&qkv, &[0, 2], 1, 1, &mut out)?;
/// assert_eq!(out, [2.0, 2.0]);
/// # Ok::<(), ember_cpu::error::KernelError>(())
/// ```
pub fn attention_varlen(
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    attention_varlen_with_isa(active_isa(), qkv, seq_offsets, heads, head_dim, out)
}

/// [`attention_varlen`] with `bias` (if any) added to the scaled scores.
pub fn attention_varlen_biased(
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    bias: Option<RelativeBias<'_>>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let terms = AttentionTerms { bias, window: None };
    attention_impl(active_isa(), qkv, seq_offsets, heads, head_dim, terms, out)
}

/// [`attention_varlen`] with `terms` (a relative bias, a sliding window, both or neither).
pub fn attention_varlen_with_terms(
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    terms: AttentionTerms<'_>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    attention_impl(active_isa(), qkv, seq_offsets, heads, head_dim, terms, out)
}

/// Checks shapes, offsets and the bias (if any); returns `(T, H)`.
fn validate(
    op: &'static str,
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    terms: AttentionTerms<'_>,
    out: &[f32],
) -> Result<(usize, usize), KernelError> {
    let t = check_offsets(op, seq_offsets)?;
    if t > 0 && (heads == 0 || head_dim == 0) {
        return Err(KernelError::InvalidShape {
            op,
            reason: format!("heads = {heads}, head_dim = {head_dim}: both must be > 0"),
        });
    }
    let h = checked_elems(op, "out", heads, head_dim)?;
    let h3 = checked_elems(op, "qkv", h, 3)?;
    check_len(op, "qkv", checked_elems(op, "qkv", t, h3)?, qkv.len())?;
    check_len(op, "out", checked_elems(op, "out", t, h)?, out.len())?;
    if let Some(bias) = &terms.bias {
        bias.validate(op, heads, seq_offsets)?;
    }
    Ok((t, h))
}

/// `out` as a raw pointer that tasks may share: they write disjoint (row, head) blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint regions (rows of their own sequence and query chunk, columns
// of their own head), and `out` outlives the parallel section.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// What one task computes.
#[derive(Clone, Copy)]
struct Task<'b> {
    /// First row of the sequence in `qkv` / `out`.
    s0: usize,
    /// Sequence length.
    len: usize,
    /// Query rows (relative to `s0`) this task owns.
    q0: usize,
    q1: usize,
    head: usize,
    /// The bias and window, if any.
    terms: AttentionTerms<'b>,
}

/// [`attention_varlen`] on an explicit instruction set (`Err(UnsupportedIsa)` if this CPU
/// lacks it).
pub fn attention_varlen_with_isa(
    isa: Isa,
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let terms = AttentionTerms::default();
    attention_impl(isa, qkv, seq_offsets, heads, head_dim, terms, out)
}

fn attention_impl(
    isa: Isa,
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    terms: AttentionTerms<'_>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "attention_varlen";
    let (_, h) = validate(OP, qkv, seq_offsets, heads, head_dim, terms, out)?;
    if !isa.is_supported() {
        return Err(KernelError::UnsupportedIsa { op: OP, isa });
    }
    let n_seq = seq_offsets.len() - 1;
    if n_seq == 0 || h == 0 {
        return Ok(());
    }
    let macs: usize = seq_offsets
        .windows(2)
        .map(|w| (w[1] - w[0]).saturating_mul(w[1] - w[0]))
        .fold(0usize, |a, b| a.saturating_add(b))
        .saturating_mul(h);
    let threads = if macs < SEQUENTIAL_MACS {
        1
    } else {
        rayon::current_num_threads()
    };
    // Split queries only when (sequence, head) pairs alone cannot keep the threads busy.
    let pairs = n_seq * heads;
    let chunks = if pairs >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(pairs)
    };
    let out_ptr = OutPtr(out.as_mut_ptr());
    let run = |index: usize| {
        let (pair, chunk) = (index / chunks, index % chunks);
        let (seq, head) = (pair / heads, pair % heads);
        let s0 = seq_offsets[seq];
        let len = seq_offsets[seq + 1] - s0;
        let per_chunk = len.div_ceil(chunks);
        let q0 = (chunk * per_chunk).min(len);
        let q1 = (q0 + per_chunk).min(len);
        if q0 < q1 {
            let task = Task {
                s0,
                len,
                q0,
                q1,
                head,
                terms,
            };
            with_scratch(task_scratch_len(isa, len, head_dim), |scratch| {
                // Support was checked above: dispatch cannot fail.
                let _ = attention_task_with_isa(isa, qkv, heads, head_dim, task, out_ptr, scratch);
            });
        }
    };
    let tasks = pairs * chunks;
    if threads == 1 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
    Ok(())
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer grown to at least `len` floats.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                *buf = vec![0.0; len];
            }
            f(&mut buf[..len])
        }
        // Re-entered on this thread (tasks never nest, but stay correct): use a fresh one.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Floats of scratch one task needs for a sequence of `len` tokens (see [`padded_dims`]).
fn task_scratch_len(isa: Isa, len: usize, head_dim: usize) -> usize {
    let (lp, hdp) = padded_dims(isa, len, head_dim);
    head_dim * lp + len * hdp + QB * lp
}

/// Grows the calling thread's scratch to fit a task of any sequence of up to `max_len`
/// tokens and heads of `head_dim`, on the [`active_isa`], so that later calls allocate
/// nothing on this thread.
///
/// Which worker runs which (sequence, head) task is up to work stealing, so a worker that has
/// not yet drawn a long sequence would grow its buffer whenever it first does; to rule that
/// out, run this on every worker of the pool once (e.g. with `ThreadPool::broadcast`).
pub fn reserve_attention_scratch(max_len: usize, head_dim: usize) {
    with_scratch(task_scratch_len(active_isa(), max_len, head_dim), |_| {});
}

/// Keys and head dims padded to whole register pairs of `isa`: `(lp, hdp)`.
fn padded_dims(isa: Isa, len: usize, hd: usize) -> (usize, usize) {
    let lanes = match isa {
        Isa::Scalar => 1,
        Isa::Avx2 => 8,
        Isa::Avx512 => 16,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => 4,
    };
    (
        len.next_multiple_of(2 * lanes),
        hd.next_multiple_of(2 * lanes),
    )
}

/// One task (see the module docs). `scratch` holds `hd·lp + len·hdp + QB·lp` floats (see
/// [`padded_dims`]); it is passed in rather than borrowed here because closures inside SIMD
/// code would not inherit the `#[target_feature]` of the dispatch wrapper.
#[inline(always)]
fn attention_task<S: Simd>(
    s: S,
    qkv: &[f32],
    heads: usize,
    hd: usize,
    task: Task<'_>,
    out: OutPtr,
    scratch: &mut [f32],
) {
    let v2 = 2 * S::LANES; // floats per register pair
    let h = heads * hd;
    let ld = 3 * h;
    let Task {
        s0,
        len,
        q0,
        q1,
        head,
        terms,
    } = task;
    let lp = len.next_multiple_of(v2);
    let hdp = hd.next_multiple_of(v2);
    let scale = s.splat(1.0 / (hd as f32).sqrt());
    if scratch.len() < hd * lp + len * hdp + QB * lp {
        debug_assert!(false, "attention_task: scratch too small");
        return;
    }
    {
        let (kt, rest) = scratch.split_at_mut(hd * lp);
        let (vp, scores) = rest.split_at_mut(len * hdp);
        // Kᵀ in blocks of v2 keys, each block's hd rows contiguous (one stream per block of
        // scores, not hd strided ones): kt[(j / v2)·hd·v2 + d·v2 + j % v2] = K[j, d];
        // V in blocks of v2 dims, each block's len rows contiguous (one sequential stream per
        // block of outputs): vp[(d / v2)·len·v2 + j·v2 + d % v2] = V[j, d]; padding zero.
        kt.fill(0.0);
        vp.fill(0.0);
        for j in 0..len {
            let row = &qkv[(s0 + j) * ld..(s0 + j + 1) * ld];
            let k = &row[h + head * hd..h + (head + 1) * hd];
            let v = &row[2 * h + head * hd..2 * h + (head + 1) * hd];
            let (block, lane) = (j / v2, j % v2);
            let block = &mut kt[block * hd * v2..(block + 1) * hd * v2];
            for (kt_d, &kd) in block.chunks_exact_mut(v2).zip(k) {
                kt_d[lane] = kd;
            }
            for (b, dims) in v.chunks(v2).enumerate() {
                let at = b * v2 * len + j * v2;
                vp[at..at + dims.len()].copy_from_slice(dims);
            }
        }
        let q_col = head * hd;
        for i0 in (q0..q1).step_by(QB) {
            let qb = QB.min(q1 - i0);
            // Rows past the block's end repeat its last query: computed, never stored.
            let q_rows: [&[f32]; QB] = std::array::from_fn(|r| {
                let i = s0 + i0 + r.min(qb - 1);
                &qkv[i * ld + q_col..i * ld + q_col + hd]
            });
            // The keys any query of the block attends to: [j_lo, j_hi).
            let j_lo = terms.keys(i0, len).0;
            let j_hi = terms.keys(i0 + qb - 1, len).1;
            // Scores: QB queries × 2 vectors of keys, one FMA chain over d per score.
            for jc in (j_lo - j_lo % v2..j_hi).step_by(v2) {
                let mut acc = [[s.splat(0.0); 2]; QB];
                let block = &kt[jc * hd..(jc + v2) * hd];
                for (d, kt_d) in block.chunks_exact(v2).enumerate() {
                    // SAFETY: kt_d holds v2 floats: both loads stay in it.
                    let (k0, k1) = unsafe {
                        let p = kt_d.as_ptr();
                        (s.load(p), s.load(p.add(S::LANES)))
                    };
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let qd = s.splat(q_rows[r][d]);
                        acc_r[0] = s.fma(qd, k0, acc_r[0]);
                        acc_r[1] = s.fma(qd, k1, acc_r[1]);
                    }
                }
                for (r, acc_r) in acc.iter().enumerate() {
                    // SAFETY: row r of `scores` holds lp ≥ jc + v2 floats.
                    unsafe {
                        let p = scores.as_mut_ptr().add(r * lp + jc);
                        s.store(p, s.mul(acc_r[0], scale));
                        s.store(p.add(S::LANES), s.mul(acc_r[1], scale));
                    }
                }
            }
            // Each query's 1/Σ: its row of `scores` holds e^{x − max}, and the P·V outputs are
            // scaled instead (hd multiplies a query rather than a row's L).
            let mut inv_sum = [1.0f32; QB];
            for (r, inv_r) in inv_sum.iter_mut().enumerate().take(qb) {
                let (a, b) = terms.keys(i0 + r, len);
                let row = &mut scores[r * lp..r * lp + len];
                if let Some(bias) = &terms.bias {
                    // Added after the scaling, as transformers adds MPNet's position_bias.
                    let biases = &bias.row(head, i0 + r, len)[a..b];
                    for (score, bias) in row[a..b].iter_mut().zip(biases) {
                        *score += bias;
                    }
                }
                *inv_r = softmax_terms(s, &mut row[a..b]);
                // Keys of the block outside this query's window weigh nothing.
                row[j_lo..a].fill(0.0);
                row[b..j_hi].fill(0.0);
            }
            // P·V: QB queries × 2 vectors of d, one FMA chain over keys per output.
            for dc in (0..hdp).step_by(v2) {
                let mut acc = [[s.splat(0.0); 2]; QB];
                let block = &vp[dc * len..(dc + v2) * len];
                for j in j_lo..j_hi {
                    // SAFETY: j < len, so both loads stay in row j (v2 floats) of the block.
                    let (v0, v1) = unsafe {
                        let p = block.as_ptr().add(j * v2);
                        (s.load(p), s.load(p.add(S::LANES)))
                    };
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let pj = s.splat(scores[r * lp + j]);
                        acc_r[0] = s.fma(pj, v0, acc_r[0]);
                        acc_r[1] = s.fma(pj, v1, acc_r[1]);
                    }
                }
                let w0 = S::LANES.min(hd.saturating_sub(dc));
                let w1 = S::LANES.min(hd.saturating_sub(dc + S::LANES));
                for (r, acc_r) in acc.iter().enumerate().take(qb) {
                    let t = s0 + i0 + r;
                    let inv = s.splat(inv_sum[r]);
                    // SAFETY: row t < T and columns head·hd + dc .. + w0 + w1 ≤ (head+1)·hd
                    // lie inside `out` ([T, H], validated); this task alone owns them.
                    unsafe {
                        let p = out.0.add(t * h + head * hd + dc);
                        s.store_partial(p, s.mul(acc_r[0], inv), w0);
                        if w1 > 0 {
                            s.store_partial(p.add(S::LANES), s.mul(acc_r[1], inv), w1);
                        }
                    }
                }
            }
        }
    }
}

isa_dispatch!(fn attention_task_with_isa(
    qkv: &[f32],
    heads: usize,
    hd: usize,
    task: Task<'_>,
    out: OutPtr,
    scratch: &mut [f32],
) -> () => attention_task);

/// Plain-loop reference: f64 scores, softmax and weighted sum.
pub fn attention_varlen_reference(
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    attention_varlen_reference_biased(qkv, seq_offsets, heads, head_dim, None, out)
}

/// [`attention_varlen_reference`] with `bias` (if any) added to the scaled scores.
pub fn attention_varlen_reference_biased(
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    bias: Option<RelativeBias<'_>>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let terms = AttentionTerms { bias, window: None };
    attention_varlen_reference_with_terms(qkv, seq_offsets, heads, head_dim, terms, out)
}

/// [`attention_varlen_reference`] with `terms`: the bias (if any) added to the scaled scores,
/// each query's softmax over the keys of its window (if any) alone.
pub fn attention_varlen_reference_with_terms(
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    terms: AttentionTerms<'_>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "attention_varlen_reference";
    let (_, h) = validate(OP, qkv, seq_offsets, heads, head_dim, terms, out)?;
    let ld = 3 * h;
    let scale = 1.0 / (head_dim as f64).sqrt();
    for w in seq_offsets.windows(2) {
        let (s0, s1) = (w[0], w[1]);
        for head in 0..heads {
            let col = head * head_dim;
            for i in s0..s1 {
                let (a, b) = terms.keys(i - s0, s1 - s0);
                let keys = s0 + a..s0 + b;
                let scores: Vec<f64> = keys
                    .clone()
                    .map(|j| {
                        let dot = (0..head_dim)
                            .map(|d| {
                                qkv[i * ld + col + d] as f64 * qkv[j * ld + h + col + d] as f64
                            })
                            .sum::<f64>();
                        let bias = terms.bias;
                        let b = bias.map_or(0.0, |b| b.row(head, i - s0, s1 - s0)[j - s0] as f64);
                        dot * scale + b
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|&v| (v - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for d in 0..head_dim {
                    let acc: f64 = keys
                        .clone()
                        .zip(&exps)
                        .map(|(j, e)| e / sum * qkv[j * ld + 2 * h + col + d] as f64)
                        .sum();
                    out[i * h + col + d] = acc as f32;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::supported_isas;
    use crate::test_util::SplitMix;

    #[test]
    fn reserved_scratch_fits_every_shorter_sequence() {
        // On a fresh thread, whose scratch starts empty.
        std::thread::spawn(|| {
            reserve_attention_scratch(77, 24);
            let reserved = SCRATCH.with(|cell| cell.borrow().len());
            for len in 1..=77 {
                assert!(
                    task_scratch_len(active_isa(), len, 24) <= reserved,
                    "len {len}"
                );
            }
        })
        .join()
        .unwrap();
    }

    fn run_case(offsets: &[usize], heads: usize, hd: usize, seed: u64) {
        let t = *offsets.last().unwrap();
        let h = heads * hd;
        let mut rng = SplitMix(seed);
        let qkv: Vec<f32> = rng.vec(t * 3 * h).iter().map(|v| v * 2.0).collect();
        let mut want = vec![f32::NAN; t * h];
        attention_varlen_reference(&qkv, offsets, heads, hd, &mut want).unwrap();
        let close = |got: &[f32], want: &[f32], what: &str| {
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 2e-6 * (1.0 + w.abs()),
                    "{what} offsets={offsets:?} heads={heads} hd={hd} [{i}]: {g} vs {w}"
                );
            }
        };
        for isa in supported_isas() {
            let mut got = vec![f32::NAN; t * h];
            attention_varlen_with_isa(isa, &qkv, offsets, heads, hd, &mut got).unwrap();
            close(&got, &want, &isa.to_string());
        }
        // A relative bias of a span wider than needed (every distance its own value).
        let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let span = longest + 2;
        let values: Vec<f32> = rng
            .vec(heads * (2 * span + 1))
            .iter()
            .map(|v| v * 3.0)
            .collect();
        let bias = Some(RelativeBias {
            values: &values,
            span,
        });
        let mut want_biased = vec![f32::NAN; t * h];
        attention_varlen_reference_biased(&qkv, offsets, heads, hd, bias, &mut want_biased)
            .unwrap();
        let terms = AttentionTerms { bias, window: None };
        for isa in supported_isas() {
            let mut got = vec![f32::NAN; t * h];
            attention_impl(isa, &qkv, offsets, heads, hd, terms, &mut got).unwrap();
            close(&got, &want_biased, &format!("{isa} biased"));
        }
        if longest > 1 {
            assert!(want_biased
                .iter()
                .zip(&want)
                .any(|(a, b)| (a - b).abs() > 1e-3));
        }
        // Sliding windows (ModernBERT's local layers): narrower than a register block, as wide
        // as one, and wider than every sequence (which must equal no window at all, bit for
        // bit); alone and with the bias.
        for window in [0, 1, 3, 8, 16, 33, longest] {
            for bias in [None, bias] {
                let terms = AttentionTerms {
                    bias,
                    window: Some(window),
                };
                let mut want_windowed = vec![f32::NAN; t * h];
                attention_varlen_reference_with_terms(
                    &qkv,
                    offsets,
                    heads,
                    hd,
                    terms,
                    &mut want_windowed,
                )
                .unwrap();
                let full = if bias.is_some() { &want_biased } else { &want };
                if window + 1 < longest {
                    assert!(
                        want_windowed
                            .iter()
                            .zip(full)
                            .any(|(a, b)| (a - b).abs() > 1e-3),
                        "window {window} changes nothing"
                    );
                }
                for isa in supported_isas() {
                    let mut got = vec![f32::NAN; t * h];
                    attention_impl(isa, &qkv, offsets, heads, hd, terms, &mut got).unwrap();
                    let what = format!("{isa} window {window} bias {}", bias.is_some());
                    close(&got, &want_windowed, &what);
                    if window + 1 >= longest {
                        let mut unwindowed = vec![f32::NAN; t * h];
                        let terms = AttentionTerms { bias, window: None };
                        attention_impl(isa, &qkv, offsets, heads, hd, terms, &mut unwindowed)
                            .unwrap();
                        assert!(
                            got.iter()
                                .zip(&unwindowed)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{what}: a window wider than the sequence changed the result"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_isa_matches_reference() {
        run_case(&[0, 1], 1, 1, 1);
        run_case(&[0, 5], 2, 3, 2);
        run_case(&[0, 3, 3, 10, 11], 3, 8, 3); // includes an empty sequence
        run_case(&[0, 17, 50, 83], 4, 16, 4);
        run_case(&[0, 128], 12, 64, 5);
        run_case(&[0, 33, 100, 257], 2, 64, 6);
        run_case(&[0, 40], 2, 80, 7); // head_dim not a multiple of the vector width
        run_case(&[0], 12, 64, 8); // empty batch
    }

    #[test]
    fn sequences_are_independent_of_batch_and_threads() {
        let (heads, hd) = (4, 64);
        let h = heads * hd;
        let offsets = [0usize, 9, 70, 71, 200, 333];
        let t = *offsets.last().unwrap();
        let mut rng = SplitMix(9);
        let qkv = rng.vec(t * 3 * h);
        for isa in supported_isas() {
            let run = |threads: usize, qkv: &[f32], offsets: &[usize]| {
                let t = *offsets.last().unwrap();
                let mut out = vec![f32::NAN; t * h];
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| attention_varlen_with_isa(isa, qkv, offsets, heads, hd, &mut out))
                    .unwrap();
                out
            };
            let one = run(1, &qkv, &offsets);
            for threads in [2, 5] {
                let many = run(threads, &qkv, &offsets);
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa}"
                );
            }
            for s in 0..offsets.len() - 1 {
                let (s0, s1) = (offsets[s], offsets[s + 1]);
                let alone = run(2, &qkv[s0 * 3 * h..s1 * 3 * h], &[0, s1 - s0]);
                assert!(
                    alone
                        .iter()
                        .zip(&one[s0 * h..s1 * h])
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa}: sequence {s} alone differs from batched"
                );
            }
        }
    }

    #[test]
    fn query_chunking_does_not_change_results() {
        // One sequence, one head: on several threads the queries are split into chunks.
        let (heads, hd, len) = (1, 64, 300);
        let mut rng = SplitMix(10);
        let qkv = rng.vec(len * 3 * heads * hd);
        let run = |threads: usize| {
            let mut out = vec![f32::NAN; len * hd];
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| attention_varlen(&qkv, &[0, len], heads, hd, &mut out))
                .unwrap();
            out
        };
        let one = run(1);
        for threads in [4, 7] {
            assert!(one
                .iter()
                .zip(&run(threads))
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    /// Single-thread GFLOP/s of BERT-base attention (12 heads × 64) for a few batch shapes, and
    /// their share of one core's FMA peak measured in the same run.
    /// `cargo test --release -p ember-cpu attention_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn attention_throughput() {
        let (heads, hd) = (12, 64);
        let h = heads * hd;
        for (name, offsets) in [
            ("1 × 128", vec![0usize, 128]),
            ("8 × 16", (0..=8).map(|i| i * 16).collect::<Vec<_>>()),
            ("4 × 512", (0..=4).map(|i| i * 512).collect()),
            // Long documents (JinaBERT, ModernBERT, GTE: 8192 positions): Kᵀ and V of a head
            // outgrow the L2.
            ("1 × 4096", vec![0, 4096]),
        ] {
            let t = *offsets.last().unwrap();
            let mut rng = SplitMix(1);
            // EMBER_ATTN_SHAPES=4096 (names, comma-separated): only those.
            if let Ok(only) = std::env::var("EMBER_ATTN_SHAPES") {
                if !only.split(',').any(|o| name.ends_with(o.trim())) {
                    continue;
                }
            }
            let qkv = rng.vec(t * 3 * h);
            let mut out = vec![0.0f32; t * h];
            // QKᵀ and P·V: 2 · 2·L²·hd flops per head and sequence.
            let flops: f64 = offsets
                .windows(2)
                .map(|w| 4.0 * ((w[1] - w[0]) as f64).powi(2) * h as f64)
                .sum();
            for isa in supported_isas() {
                let best = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap()
                    .install(|| {
                        let mut best = f64::MAX;
                        for _ in 0..((2e9 / flops) as usize).clamp(3, 200) {
                            let start = std::time::Instant::now();
                            attention_varlen_with_isa(isa, &qkv, &offsets, heads, hd, &mut out)
                                .unwrap();
                            best = best.min(start.elapsed().as_secs_f64());
                        }
                        best
                    });
                // The ratio to one core's FMA peak, measured right after (none for scalar).
                let gflops = flops / best / 1e9;
                let peak = crate::probe::fma_peak_gflops(isa, 5.0);
                let percent = peak.map_or(f64::NAN, |p| 100.0 * gflops / p);
                println!(
                    "{isa:7} {name:8}: {gflops:6.1} GFLOP/s ({percent:5.1}% of the FMA peak), {:8.1} µs",
                    best * 1e6
                );
            }
        }
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let qkv = vec![0.0f32; 4 * 3 * 8];
        let mut out = vec![7.0f32; 4 * 8];
        let err = |offsets: &[usize], heads, hd, qkv: &[f32], out: &mut [f32]| {
            attention_varlen(qkv, offsets, heads, hd, out).unwrap_err()
        };
        // A relative bias too narrow for the longest sequence, or of the wrong size.
        let values = [0.0f32; 2 * (2 * 2 + 1)];
        for (span, values) in [(2, &values[..]), (3, &values[..])] {
            let bias = Some(RelativeBias { values, span });
            let err = attention_varlen_biased(&qkv, &[0, 4], 2, 4, bias, &mut out).unwrap_err();
            assert!(
                matches!(
                    err,
                    KernelError::InvalidShape { .. } | KernelError::LengthMismatch { .. }
                ),
                "{err}"
            );
        }
        assert_eq!(out, vec![7.0f32; 4 * 8], "out untouched");
        assert!(matches!(
            err(&[], 2, 4, &qkv, &mut out),
            KernelError::InvalidOffsets { .. }
        ));
        assert!(matches!(
            err(&[1, 4], 2, 4, &qkv, &mut out),
            KernelError::InvalidOffsets { .. }
        ));
        assert!(matches!(
            err(&[0, 3, 2, 4], 2, 4, &qkv, &mut out),
            KernelError::InvalidOffsets { .. }
        ));
        assert!(matches!(
            err(&[0, 5], 2, 4, &qkv, &mut out),
            KernelError::LengthMismatch { .. }
        ));
        assert!(matches!(
            err(&[0, 4], 0, 4, &qkv, &mut out),
            KernelError::InvalidShape { .. }
        ));
        assert!(matches!(
            err(&[0, 4], 2, 4, &qkv[1..], &mut out),
            KernelError::LengthMismatch { .. }
        ));
        assert!(matches!(
            err(&[0, 4], 2, 4, &qkv, &mut out[1..]),
            KernelError::LengthMismatch { .. }
        ));
        assert!(out.iter().all(|&v| v == 7.0));
        attention_varlen(&qkv, &[0, 2, 4], 2, 4, &mut out).unwrap();
    }
}
