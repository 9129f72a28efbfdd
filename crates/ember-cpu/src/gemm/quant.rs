//! Int8 quantisation for [`Precision::Int8`](super::Precision): weights per output channel
//! (symmetric `i8`), activations per row of `X`, i.e. per token (asymmetric `u8`), products
//! summed exactly in `i32`.
//!
//! # Maths
//!
//! Weight `W` (`[n, k]`), at load: `s_j = max_k |W[j,k]| / 127` and
//! `w_q[j,k] = round(W[j,k] / s_j) ∈ [−127, 127]` (ties to even; an all-zero row has
//! `s_j = 0`, `w_q = 0`), or, calibrated, the neighbour GPTQ picks on the same grid
//! (`gemm/gptq.rs`). The panels hold `w_q` in k quads, `panel[(kk/4)·4NR + 4jj + kk%4]`
//! (zero past `n` and past `k`); `s_j` and `Σ_k w_q[j,k]` sit beside them, padded to whole
//! panels.
//!
//! Activations, per row `i` of `X` (`[m, k]`), over the *whole* row (never per K block):
//! `lo = min(0, min_k x)`, `hi = max(0, max_k x)`, `s_i = (hi − lo) / 255` (1 for an
//! all-zero row), `z_i = round(−lo / s_i) ∈ [0, 255]` and
//! `x_q = clamp(round(x · (1/s_i)) + z_i, 0, 255)`. Keeping 0 in the range keeps `z_i` a
//! `u8`, so `|x_q − z_i| ≤ 255`.
//!
//! Product (`vpdpbusd`: `u8 × i8`, four k at a time, into `i32`):
//! `acc_ij = Σ_k x_q[i,k]·w_q[j,k]`, then
//! `y_ij = f32(acc_ij − z_i·Σ_k w_q[j,k]) · (s_i·s_j) + b_j`. The integer is
//! `Σ_k (x_q[i,k] − z_i)·w_q[j,k]` exactly: every partial sum is bounded by `255·127·k`, which
//! fits in `i32` for `k ≤` [`INT8_MAX_K`] (and wrapping arithmetic is exact whenever the
//! true result fits). Against `X·Wᵀ` each operand is off by at most half its step:
//! `|x − s_i(x_q − z_i)| ≤ s_i/2`, `|W − s_j w_q| ≤ s_j/2`.
//!
//! # Outlier channels
//!
//! A weight may keep a few input channels `C` (at most [`MAX_OUTLIER_CHANNELS`]) out of
//! the int8 product: `W[:, c]` is zeroed before the quantisation above (so it sets no
//! `s_j`) and kept in f32, `lo`/`hi` are taken over the row without `C` (which equals the
//! range of the row with those entries zeroed, 0 being always inside), and the rescaling
//! becomes `y_ij = f32(acc_ij − z_i·Σ_k w_q[j,k])·(s_i·s_j) + Σ_{c∈C} x[i,c]·W[j,c] + b_j`,
//! channel by channel in `C`'s ascending order, each a rounded product then a rounded sum.
//! The packed `x_q` of those channels is whatever the clamp makes of them: their weights
//! are 0.
//!
//! # Rotated channels
//!
//! An int8 weight may also be *rotated* along `k` (see
//! [`PackedLinear::from_weight_int8`](super::PackedLinear::from_weight_int8)): with
//! `Q = D·H`, `D` a fixed diagonal of pseudo-random signs ([`flip_signs`]) and `H` the
//! unnormalised block Hadamard matrix of [`hadamard_channels`] (symmetric, `H·H = b·I`), so
//! `Q·Qᵀ = b·I` and `X·Wᵀ = (X·Q)·(W·Q/b)ᵀ`, the panels hold `W·Q/b` (outlier columns
//! zeroed first, rotated in f64, rounded once to f32, then quantised as above) and each row
//! of `X` is rotated (outlier channels zeroed first) before its range is taken and it is
//! quantised. The signs keep a row's mean (GELU outputs have one) from piling up in the
//! first channel of every block, as `H` alone would do.
//! A Hadamard transform spreads a row's few large values over `b` channels and leaves sums
//! of many values behind, so the `u8` step is set by a far smaller range, and likewise the
//! weights' `i8` step: on all-MiniLM-L6-v2 with outlier channels, the mean `1 − cos` of
//! int8 to f32 falls from 3.3e-4 to about 2e-4 (QuaRot, Ashkboos et al. 2024, does the
//! same for 4-bit LLMs). The outlier channels' exact products use the unrotated `x`.
//! The transform is additions and subtractions in a fixed order, the same on every ISA.
//!
//! # Determinism
//!
//! Integer sums are exact, so `acc_ij` does not depend on K blocking (a tile's `i32` partial
//! sums wait in the output buffer, bit-cast, between K blocks), on the tile, the task split
//! or the thread count; the rescaling is the same f32 operations in every kernel. So the
//! portable, the VNNI and the AVX2 kernels agree bit for bit, and a row's result depends only on the
//! row. (A NaN in `X` quantises to `x_q = 0` instead of propagating; ±∞ makes the row's
//! scale infinite and its outputs non-finite.)

use rayon::prelude::*;

use super::{WeightData, KC, KG, NR};

/// K block of the int8 kernels: four times [`KC`], so that the A and B micro-panels take the
/// same bytes as the f32 kernels' (14 KiB and 32 KiB).
pub(crate) const KC_I8: usize = 4 * KC;
/// k values per row and group in a packed `u8` A micro-panel: one 64-byte line.
pub(crate) const KG_I8: usize = 4 * KG;
/// Largest `k` for which the `i32` accumulators cannot overflow: `255·127·k ≤ i32::MAX`.
pub const INT8_MAX_K: usize = i32::MAX as usize / (255 * 127);
/// Most input channels an int8 weight keeps exact (f32) beside its int8 product (see
/// [`PackedLinear::from_weight_with_outliers`](super::PackedLinear::from_weight_with_outliers)).
pub const MAX_OUTLIER_CHANNELS: usize = 4;

/// Lanes of the channel rotation: it mixes channels `c ≡ l (mod ROTATION_LANES)`, so that
/// every butterfly is an add or subtract of whole 16-float vectors (no shuffles).
pub(crate) const ROTATION_LANES: usize = 16;
/// Largest Hadamard block of the channel rotation.
pub const MAX_ROTATION_BLOCK: usize = 32;

/// Period of the sign pattern `D` of the rotation (a multiple of every `16·b`).
const SIGN_PERIOD: usize = 512;

/// The signs of `D`: `+1` or `−1` by the low bit of splitmix64 of the channel index, which
/// looks random to any structure a model's channels have.
const ROTATION_SIGNS: [f32; SIGN_PERIOD] = {
    let mut signs = [1.0f32; SIGN_PERIOD];
    let mut c = 0;
    while c < SIGN_PERIOD {
        let mut z = (c as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if z & 1 == 1 {
            signs[c] = -1.0;
        }
        c += 1;
    }
    signs
};

/// `row ← row·D` in place (see the module docs): channel `c` times the sign of
/// `c mod 512`. Exact.
#[inline(always)]
pub(crate) fn flip_signs<T>(row: &mut [T])
where
    T: Copy + std::ops::Mul<Output = T> + From<f32>,
{
    for chunk in row.chunks_mut(SIGN_PERIOD) {
        for (v, &sign) in chunk.iter_mut().zip(&ROTATION_SIGNS) {
            *v = *v * T::from(sign);
        }
    }
}

/// The Hadamard block `b` used to rotate `k` channels: the largest power of two up to
/// [`MAX_ROTATION_BLOCK`] with `16·b` dividing `k` (384 → 8, 768 → 16, 1536 and 3072 →
/// 32); 1 (no rotation) if `k` is 0 or not a multiple of 32.
pub(crate) fn rotation_block(k: usize) -> usize {
    if k == 0 {
        return 1;
    }
    let mut block = MAX_ROTATION_BLOCK;
    while block > 1 && !k.is_multiple_of(ROTATION_LANES * block) {
        block /= 2;
    }
    block
}

/// `row ← row·H` in place, `H` the unnormalised block Hadamard (Sylvester) matrix that mixes,
/// within each run of `16·block` channels, the `block` channels `c0 + l + 16·t`
/// (`t < block`) of each lane `l < 16`. `block` is a power of two dividing
/// `row.len() / 16` (see [`rotation_block`]); `H` is symmetric and `H·H = block·I`.
/// Butterflies `(u, v) → (u + v, u − v)` in a fixed order: the same values on every ISA
/// (`#[inline(always)]`, so that an ISA's `#[target_feature]` wrapper vectorises it).
#[inline(always)]
pub(crate) fn hadamard_channels<T>(row: &mut [T], block: usize)
where
    T: Copy + std::ops::Add<Output = T> + std::ops::Sub<Output = T>,
{
    const L: usize = ROTATION_LANES;
    debug_assert!(block.is_power_of_two() && row.len().is_multiple_of(L * block));
    // Stage by stage over the whole row: the pairs `half·16` channels apart within each
    // run of `2·half·16` (a run of `16·block` is a whole number of those), as contiguous
    // slices zipped, a loop the compiler vectorises without bounds checks; two stages per
    // pass where there are two left (the same additions, half the loads and stores).
    let mut half = 1;
    while 2 * half < block {
        for quad in row.chunks_exact_mut(4 * half * L) {
            let (low, high) = quad.split_at_mut(2 * half * L);
            let (q0, q1) = low.split_at_mut(half * L);
            let (q2, q3) = high.split_at_mut(half * L);
            let lanes = q0
                .iter_mut()
                .zip(q1.iter_mut())
                .zip(q2.iter_mut().zip(q3.iter_mut()));
            for ((a, b), (c, d)) in lanes {
                // Stage `half`: (a, b) and (c, d); stage `2·half`: (a, c) and (b, d).
                let (s0, s1) = (*a + *b, *a - *b);
                let (s2, s3) = (*c + *d, *c - *d);
                *a = s0 + s2;
                *c = s0 - s2;
                *b = s1 + s3;
                *d = s1 - s3;
            }
        }
        half *= 4;
    }
    if half < block {
        for pairs in row.chunks_exact_mut(2 * half * L) {
            let (low, high) = pairs.split_at_mut(half * L);
            for (a, b) in low.iter_mut().zip(high.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = x + y;
                *b = x - y;
            }
        }
    }
}

/// Rotates every row of `weight` (`[n, k]`, f32) to `W·D·H/block` (module docs): in f64,
/// rounded once.
pub(crate) fn rotate_weight_rows(weight: &mut [f32], k: usize, block: usize) {
    let inv = 1.0 / block as f64;
    weight.par_chunks_mut(k).for_each(|row| {
        let mut wide: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        flip_signs(&mut wide);
        hadamard_channels(&mut wide, block);
        for (dst, v) in row.iter_mut().zip(wide) {
            *dst = (v * inv) as f32;
        }
    });
}

/// Whether rotating pays for a weight: the expected squared error of one output,
/// `Σ_i s_i²·|W|²/12 + Σ_j s_j²·|x|²/12` up to a common factor, is lower rotated than not.
/// `plain` is the weight (`[n, k]`) with the outlier channels `skip` zeroed, `rotated` the
/// same rotated ([`rotate_weight_rows`], `W·Q/b`), `rows` sample inputs (`[r, k]`). Rotated,
/// an activation step counts `1/b` (`|W·Q/b|² = |W|²/b`) and a weight step `b` times
/// (`|x·Q|² = b·|x|²`). With no rows, rotation pays.
pub(crate) fn rotation_pays(
    plain: &[f32],
    rotated: &[f32],
    rows: &[f32],
    k: usize,
    skip: &[usize],
    block: usize,
) -> bool {
    if rows.is_empty() || plain.is_empty() {
        return true;
    }
    let b = block as f64;
    let mean_step2 = |w: &[f32]| -> f64 {
        let sum: f64 = w
            .chunks_exact(k)
            .map(|row| f64::from(weight_row_scale(row)).powi(2))
            .sum();
        sum / (w.len() / k) as f64
    };
    let weight_norm2 =
        plain.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / (plain.len() / k) as f64;
    // Per row in parallel, then summed in row order (the same sums on any thread count).
    let per_row: Vec<[f64; 3]> = rows
        .par_chunks_exact(k)
        .map_init(
            || vec![0.0f32; k],
            |scratch, row| {
                let plain = f64::from(RowQuant::of_row_skipping(row, skip).scale).powi(2);
                let rotated =
                    f64::from(RowQuant::of_row_rotated(row, skip, block, scratch).scale).powi(2);
                let norm2 = row
                    .iter()
                    .enumerate()
                    .filter(|(c, _)| !skip.contains(c))
                    .map(|(_, &v)| f64::from(v).powi(2))
                    .sum::<f64>();
                [plain, rotated, norm2]
            },
        )
        .collect();
    let (mut plain_act, mut rotated_act, mut x_norm2) = (0.0f64, 0.0f64, 0.0f64);
    for [plain, rotated, norm2] in per_row {
        plain_act += plain;
        rotated_act += rotated;
        x_norm2 += norm2;
    }
    let plain_error = plain_act * weight_norm2 + mean_step2(plain) * x_norm2;
    let rotated_error = rotated_act / b * weight_norm2 + b * mean_step2(rotated) * x_norm2;
    rotated_error < plain_error
}

/// One row's activation quantisation: `x_q = clamp(round(x·inv_scale) + zero, 0, 255)`,
/// `x ≈ scale·(x_q − zero)`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub(crate) struct RowQuant {
    /// `s_i`.
    pub(crate) scale: f32,
    /// `1 / s_i`, rounded once; every kernel multiplies by this same value.
    pub(crate) inv_scale: f32,
    /// `z_i ∈ [0, 255]`.
    pub(crate) zero: i32,
    /// The row's values in the weight's outlier channels (see [`OutlierColumns`]), which
    /// the kernels multiply in f32; 0 past their count.
    pub(crate) exact: [f32; MAX_OUTLIER_CHANNELS],
}

impl Default for RowQuant {
    fn default() -> Self {
        RowQuant {
            scale: 1.0,
            inv_scale: 1.0,
            zero: 0,
            exact: [0.0; MAX_OUTLIER_CHANNELS],
        }
    }
}

impl RowQuant {
    /// The quantisation of `row` (see the module docs). `#[inline(always)]` so that an ISA's
    /// `#[target_feature]` wrapper vectorises it; the result is the same on every ISA (min
    /// and max are exact, and NaN never enters them).
    #[cfg(test)]
    #[inline(always)]
    pub(crate) fn of_row(row: &[f32]) -> RowQuant {
        Self::of_row_skipping(row, &[])
    }

    /// The quantisation of `row` with the columns `skip` (ascending, each `< row.len()`, at
    /// most [`MAX_OUTLIER_CHANNELS`]) left out of its range and their values kept in
    /// `exact`: the outlier channels of a [`PackedLinear`](super::PackedLinear), whose
    /// products are computed in f32 instead.
    #[inline(always)]
    pub(crate) fn of_row_skipping(row: &[f32], skip: &[usize]) -> RowQuant {
        let (mut lo, mut hi) = (0.0f32, 0.0f32);
        let mut start = 0;
        for &end in skip.iter().chain(std::iter::once(&row.len())) {
            let (l, h) = range_with_zero(&row[start.min(end)..end]);
            lo = if l < lo { l } else { lo };
            hi = if h > hi { h } else { hi };
            start = end + 1;
        }
        let mut quant = Self::from_range(lo, hi);
        for (exact, &c) in quant.exact.iter_mut().zip(skip) {
            *exact = row[c];
        }
        quant
    }

    /// The quantisation of `row` for a rotated weight (module docs, "Rotated channels"):
    /// `rotated ← row·D·H` with the columns `skip` of `row` zeroed (the signs of
    /// [`flip_signs`], then [`hadamard_channels`] with `block`); the range is that of `rotated`, and `exact`
    /// keeps `row`'s values of `skip`.
    #[inline(always)]
    pub(crate) fn of_row_rotated(
        row: &[f32],
        skip: &[usize],
        block: usize,
        rotated: &mut [f32],
    ) -> RowQuant {
        // rotated ← row·D, then the outlier channels zeroed (a sign flip would make their
        // zero −0.0, which the butterflies treat as +0.0 anyway).
        for (chunk, source) in rotated.chunks_mut(SIGN_PERIOD).zip(row.chunks(SIGN_PERIOD)) {
            for ((dst, &v), &sign) in chunk.iter_mut().zip(source).zip(&ROTATION_SIGNS) {
                *dst = v * sign;
            }
        }
        for &c in skip {
            rotated[c] = 0.0;
        }
        hadamard_channels(rotated, block);
        let (lo, hi) = range_with_zero(rotated);
        let mut quant = Self::from_range(lo, hi);
        for (exact, &c) in quant.exact.iter_mut().zip(skip) {
            *exact = row[c];
        }
        quant
    }

    /// The quantisation of values in `[lo, hi]` (`lo ≤ 0 ≤ hi`).
    pub(crate) fn from_range(lo: f32, hi: f32) -> RowQuant {
        let range = hi - lo;
        if range == 0.0 {
            return RowQuant::default();
        }
        let scale = range / 255.0;
        let inv_scale = 1.0 / scale;
        // −lo·(1/s) ≤ 255 (a little more after rounding); a NaN here (lo = −∞) becomes 0.
        let zero = round_ties_even_small(-lo * inv_scale).clamp(0.0, 255.0) as i32;
        RowQuant {
            scale,
            inv_scale,
            zero,
            exact: [0.0; MAX_OUTLIER_CHANNELS],
        }
    }

    /// `x_q` for `v`, exactly as the vector packing computes it (`vcvtps2dq` rounding to
    /// nearest-even, whose out-of-range and NaN result is `i32::MIN`; then `+ z`, clamp).
    #[inline(always)]
    pub(crate) fn quantise(self, v: f32) -> u8 {
        let p = v * self.inv_scale;
        let q = if p.abs() < 4_194_304.0 {
            round_ties_even_small(p) as i32
        } else if (-2_147_483_648.0..2_147_483_648.0).contains(&p) {
            // |p| ≥ 2²²: far outside 0..=255 whichever way it rounds, so truncation clamps
            // to the same byte.
            p as i32
        } else {
            i32::MIN
        };
        q.wrapping_add(self.zero).clamp(0, 255) as u8
    }

    /// `s_i·(x_q − z_i)`, the value the kernels multiply (for tests).
    #[cfg(test)]
    pub(crate) fn dequantise(self, q: u8) -> f32 {
        self.scale * (i32::from(q) - self.zero) as f32
    }
}

/// A weight's per-output-channel quantisation, padded to whole panels of `NR` columns.
#[derive(Clone, Debug)]
pub(crate) struct WeightQuant {
    /// `s_j` (0 for padding and for all-zero rows).
    pub(crate) scale: Vec<f32>,
    /// `Σ_k w_q[j,k]`.
    pub(crate) col_sum: Vec<i32>,
}

impl WeightQuant {
    /// Scales and column sums of `weight` (`[n, k]`, `k ≤ INT8_MAX_K`): the scales its rows
    /// give ([`weight_row_scale`]), or `scales` (`[n]`) if given (GPTQ's weight is already
    /// on the grid of its rows' scales before rounding, which its own maxima may not
    /// reproduce).
    pub(crate) fn new(
        weight: WeightData<'_>,
        n: usize,
        k: usize,
        scales: Option<&[f32]>,
    ) -> WeightQuant {
        let padded = n.div_ceil(NR) * NR;
        let mut scale = vec![0.0f32; padded];
        let mut col_sum = vec![0i32; padded];
        scale[..n]
            .par_iter_mut()
            .zip(col_sum[..n].par_iter_mut())
            .enumerate()
            .for_each(|(j, (s, sum))| {
                let row = widen_row(weight, j, k);
                *s = scales.map_or_else(|| weight_row_scale(&row), |scales| scales[j]);
                *sum = row.iter().map(|&v| i32::from(quantise_weight(v, *s))).sum();
            });
        WeightQuant { scale, col_sum }
    }

    /// Writes panel `p` of the quantised `weight`:
    /// `panel[(kk/4)·4NR + 4jj + kk%4] = w_q[p·NR + jj, kk]`; the panel must be zeroed
    /// (padding past `n` and `k` stays 0).
    pub(crate) fn pack_panel(
        &self,
        weight: WeightData<'_>,
        k: usize,
        n: usize,
        p: usize,
        panel: &mut [i8],
    ) {
        for jj in 0..NR {
            let j = p * NR + jj;
            if j >= n {
                break;
            }
            for (kk, &v) in widen_row(weight, j, k).iter().enumerate() {
                panel[(kk / 4) * 4 * NR + 4 * jj + kk % 4] = quantise_weight(v, self.scale[j]);
            }
        }
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        4 * (self.scale.len() + self.col_sum.len())
    }
}

/// `(min(0, min values), max(0, max values))`, vectorisable: `if v < lo { v } else { lo }`
/// is `minps(v, lo)`. Lanes start at +0.0, so −0.0 and NaN never replace a lane's value.
#[inline(always)]
fn range_with_zero(values: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let mut lo = [0.0f32; LANES];
    let mut hi = [0.0f32; LANES];
    let mut update = |l: usize, v: f32| {
        lo[l] = if v < lo[l] { v } else { lo[l] };
        hi[l] = if v > hi[l] { v } else { hi[l] };
    };
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in chunk.iter().enumerate() {
            update(l, v);
        }
    }
    for (l, &v) in tail.iter().enumerate() {
        update(l, v);
    }
    let lo = lo.iter().fold(0.0f32, |a, &v| if v < a { v } else { a });
    let hi = hi.iter().fold(0.0f32, |a, &v| if v > a { v } else { a });
    (lo, hi)
}

/// The input channels of a weight kept out of the int8 product ("outliers", whose
/// activations are far larger than the rest and would coarsen every row's `u8` step): the
/// kernels add `Σ_c X[i, channels[c]] · W[j, channels[c]]` in f32 to the rescaled integer
/// product, channel by channel, each a rounded product then a rounded sum (no FMA), before
/// the bias (see [`super::PackedLinear::from_weight_with_outliers`]).
#[derive(Clone, Debug)]
pub(crate) struct OutlierColumns {
    /// The channels, ascending and distinct, each `< k`.
    pub(crate) channels: Vec<usize>,
    /// `weight[c·n_pad + j] = W[j, channels[c]]` (widened to f32), zero past `n`.
    pub(crate) weight: Vec<f32>,
    /// `n` rounded up to whole panels.
    pub(crate) n_pad: usize,
}

impl OutlierColumns {
    /// Takes `channels` (ascending, distinct, `< k`) out of `weight` (`[n, k]`): returns
    /// them and the weight, widened to f32, with those columns zeroed (what the int8 panels
    /// then hold).
    pub(crate) fn split(
        weight: WeightData<'_>,
        n: usize,
        k: usize,
        channels: &[usize],
    ) -> (OutlierColumns, Vec<f32>) {
        let n_pad = n.div_ceil(NR) * NR;
        let mut rest = vec![0.0f32; n * k];
        let mut exact = vec![0.0f32; channels.len() * n_pad];
        for j in 0..n {
            let row = widen_row(weight, j, k);
            for (c, &ch) in channels.iter().enumerate() {
                exact[c * n_pad + j] = row[ch];
            }
            let dst = &mut rest[j * k..(j + 1) * k];
            dst.copy_from_slice(&row);
            for &ch in channels {
                dst[ch] = 0.0;
            }
        }
        let columns = OutlierColumns {
            channels: channels.to_vec(),
            weight: exact,
            n_pad,
        };
        (columns, rest)
    }

    /// Heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        4 * self.weight.len() + std::mem::size_of::<usize>() * self.channels.len()
    }
}

/// A weight row's `i8` step, `s_j = max_k |W[j,k]| / 127` (0 for an all-zero row).
pub(crate) fn weight_row_scale(row: &[f32]) -> f32 {
    row.iter().fold(0.0f32, |a, &v| a.max(v.abs())) / 127.0
}

/// `round(v / scale)` clamped to `[−127, 127]` (0 if `scale` is 0).
fn quantise_weight(v: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    // |v / scale| ≤ 127 (a little more after rounding) since scale = max|v| / 127; `as`
    // maps a NaN (non-finite weight) to 0.
    round_ties_even_small(v / scale).clamp(-127.0, 127.0) as i8
}

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2²²` (NaN stays NaN).
/// Adding and subtracting `1.5·2²³` leaves no fraction bits, so the addition rounds as the
/// FPU does (nearest-even). `f32::round_ties_even` is the same value, but without SSE4.1
/// it is a libm call: 20 ns a weight at load.
#[inline(always)]
fn round_ties_even_small(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 · 2²³
    (x + SHIFT) - SHIFT
}

/// Row `j` of `weight` (`[n, k]`) widened to f32.
fn widen_row(weight: WeightData<'_>, j: usize, k: usize) -> Vec<f32> {
    let range = j * k..(j + 1) * k;
    match weight {
        WeightData::F32(w) => w[range].to_vec(),
        WeightData::F16(w) => w[range].iter().map(|v| v.to_f32()).collect(),
        WeightData::Bf16(w) => w[range].iter().map(|v| v.to_f32()).collect(),
    }
}

/// Packs `X[r0..r1, pc..pc+kc]` quantised with `quant` (indexed by row of `X`) into `u8`
/// micro-panels of `mr` rows: the layout of [`super::pack_a_block`] with [`KC_I8`] and
/// [`KG_I8`] (element `(i, kk)` at `(kk/KG_I8)·mr·KG_I8 + i·KG_I8 + kk%KG_I8`, micro-panel
/// `q` at `q·mr·KC_I8`). Slots past `kc` in the last group are 0 (a kernel reads up to `kc`
/// rounded up to a quad, where B holds the panel's zero padding).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_a_block_i8(
    x: &[f32],
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    quant: &[RowQuant],
    dst: &mut [u8],
) {
    const G: usize = KG_I8;
    let kc_pad = kc.next_multiple_of(G);
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = &mut dst[q * mr * KC_I8..q * mr * KC_I8 + mr * kc_pad];
        for i in 0..rows {
            let rq = quant[ir + i];
            let src = &x[(ir + i) * k + pc..(ir + i) * k + pc + kc];
            for (g, group) in panel.chunks_exact_mut(mr * G).enumerate() {
                let piece = &mut group[i * G..(i + 1) * G];
                for (t, slot) in piece.iter_mut().enumerate() {
                    *slot = src.get(g * G + t).map_or(0, |&v| rq.quantise(v));
                }
            }
        }
    }
}
