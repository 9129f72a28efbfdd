//! GPTQ rounding of an int8 weight (Frantar et al. 2022), for [`Int8Rounding::Gptq`]
//! (see [`PackedLinear::from_weight_int8`]).
//!
//! Shapes: `W` is `[n, k]` (one row per output channel), calibration inputs `X` are
//! `[t, k]`, `H = XᵀX` is `[k, k]`.
//!
//! # Maths
//!
//! Rounding each weight to its nearest grid point `s_j·q` minimises `|W − Ŵ|²`, but what
//! matters is the product's error on real inputs, `|X·(W − Ŵ)ᵀ|² = Σ_j d_j·H·d_jᵀ` with
//! `d_j = W[j,:] − Ŵ[j,:]`. GPTQ rounds the k channels of a row one after the other and
//! lets the channels still to come absorb what was lost, weighted by how the inputs
//! correlate. Chen et al. (2025) show it is Babai's nearest-plane algorithm: with
//! `H = L̃ᵀ·L̃`, `L̃` lower triangular, `d·H·dᵀ = |L̃·dᵀ|²`, and row `c` of `L̃·dᵀ` involves
//! only `d_0 … d_c`; so, for `c = 0, 1, …, k−1`,
//!
//! `q_c = clamp(round((W[j,c] + Σ_{i<c} (L̃_ci / L̃_cc)·d_i) / s_j), −127, 127)`,
//! `d_c = W[j,c] − s_j·q_c`,
//!
//! which sets row `c` of `L̃·dᵀ` as near 0 as the grid allows. (This is GPTQ's update
//! `w_{>c} −= (d_c / U_cc)·U_{c,>c}`, `H⁻¹ = UᵀU`, without the inverse; the tests check the
//! two agree.) `L̃ = J·Cᵀ·J`, where `J` reverses the channel order and `J·H·J = C·Cᵀ` is
//! the ordinary Cholesky factorisation. The scale `s_j = max_c |W[j,c]| / 127` is the one
//! round to nearest uses (the packer is handed it), so the grid is unchanged: only which
//! neighbour each weight goes to.
//!
//! `H` is damped first, `H + λ·mean(diag H)·I` with `λ = 0.01` (as GPTQ does): it makes
//! `H` positive definite when the calibration rows span fewer than `k` directions (and for
//! the zeroed outlier channels) and keeps the compensation from leaning on directions the
//! calibration barely saw.
//!
//! The channels go in order of falling input energy (`diag H`; "act order", as in the
//! GPTQ authors' code): those that matter most are rounded first, while the most channels
//! are left to absorb their error.
//!
//! On all-MiniLM-L6-v2 (rotated, with outlier channels), calibrated on 480 sentences:
//! the mean `1 − cos` of int8 to f32 over the benchmark corpus falls from 1.88e-4 to
//! 1.20e-4 (1.24e-4 without act order); simulated, the weights' share of it falls from
//! 1.4e-4 to about 0.55e-4, and what is left is mostly the activations' `u8` steps.
//!
//! # Cost (load time only)
//!
//! `XᵀX` on the bf16 GEMM (`t·k²` multiply-adds, its lower half only), the factorisation
//! blocked, right-looking, its trailing updates f32 GEMMs (`k³/3`), the rounding blocked
//! likewise, "lazy batch" (`n·k²/2`): GEMM-bound. An int8 all-MiniLM-L6-v2 loads in about
//! 3.7 s instead of 0.3 s on 2 cores (the calibration's f32 forward pass included), the
//! BERT-base shape in about 27 s instead of 1.3 s.
//!
//! # Determinism
//!
//! `H` comes from the bf16 GEMM (the same bits on every ISA), summed over token chunks in
//! f64 in order; the factorisation and the rounding are fixed-order loops over independent
//! rows and f32 GEMMs (one fixed chain per element). The packed weight depends on the
//! calibration rows and the f32 GEMM's ISA (FMA or not), never on the thread count.

use std::ops::Range;

use rayon::prelude::*;

use super::quant::{flip_signs, hadamard_channels, weight_row_scale};
use super::{linear, PackedLinear, Precision};
use crate::activation::Activation;
use crate::error::KernelError;

/// `λ` of the damping `H + λ·mean(diag H)·I`.
const DAMPING: f64 = 0.01;

/// Calibration rows per GEMM when summing `XᵀX` (bounds the transposed copy to
/// `k · GRAM_CHUNK` floats).
const GRAM_CHUNK: usize = 2048;

/// Channels per row block of `XᵀX`: block `i` is computed against channels `0..=i` only
/// (the rest is its mirror image), which halves the GEMM work.
const GRAM_BLOCK: usize = 256;

/// `XᵀX` (`[k, k]`, f64) of the calibration `rows` (`[t, k]`) as the int8 panels see
/// them: channels `skip` zeroed, then rotated ([`flip_signs`], [`hadamard_channels`]) if
/// `block > 1`. The products are bf16 × bf16 summed in f32 (exact products; `X` rounded
/// to 8 significant bits errs by 2⁻⁹ at most per value, unbiased, far below what GPTQ's
/// damping already blurs), twice the f32 GEMM's speed where AVX512_BF16 is present.
pub(crate) fn input_gram(
    rows: &[f32],
    k: usize,
    skip: &[usize],
    block: usize,
) -> Result<Vec<f64>, KernelError> {
    let mut gram = vec![0.0f64; k * k];
    if k == 0 {
        return Ok(gram);
    }
    // Channels per task of the transposition: each writes its channels' rows of Xᵀ.
    const CHANNELS: usize = 16;
    let mut product = vec![0.0f32; GRAM_BLOCK.min(k) * k];
    let (mut prepared, mut transposed) = (Vec::new(), Vec::new());
    for chunk in rows.chunks(GRAM_CHUNK * k) {
        let t = chunk.len() / k;
        // The rows as the panels see them, in parallel.
        prepared.clear();
        prepared.extend_from_slice(chunk);
        prepared.par_chunks_mut(k).for_each(|row| {
            for &c in skip {
                row[c] = 0.0;
            }
            if block > 1 {
                flip_signs(row);
                hadamard_channels(row, block);
            }
        });
        // Xᵀ of the chunk, `[k, t]`: as the activations (`m = k` rows of length t) and as
        // the weight (`n = k` rows), the GEMM gives `Xᵀ·X`.
        transposed.resize(k * t, 0.0f32);
        transposed
            .par_chunks_mut(CHANNELS * t)
            .enumerate()
            .for_each(|(g, columns)| {
                let c0 = g * CHANNELS;
                let channels = columns.len() / t;
                for (i, row) in prepared.chunks_exact(k).enumerate() {
                    for (cc, &v) in row[c0..c0 + channels].iter().enumerate() {
                        columns[cc * t + i] = v;
                    }
                }
            });
        for r0 in (0..k).step_by(GRAM_BLOCK) {
            let r1 = (r0 + GRAM_BLOCK).min(k);
            // Rows r0..r1 of XᵀX, columns 0..r1: Xᵀ's rows r0..r1 against its first r1.
            let packed =
                PackedLinear::with_precision(&transposed[..r1 * t], None, r1, t, Precision::Bf16)?;
            let block = &mut product[..(r1 - r0) * r1];
            linear(
                &transposed[r0 * t..r1 * t],
                r1 - r0,
                &packed,
                Activation::Identity,
                None,
                block,
            )?;
            for (i, row) in block.chunks_exact(r1).enumerate() {
                let gram_row = &mut gram[(r0 + i) * k..(r0 + i) * k + r1];
                for (g, &p) in gram_row.iter_mut().zip(row) {
                    *g += f64::from(p);
                }
            }
        }
    }
    // The upper triangle from the lower one.
    for i in 0..k {
        for j in i + 1..k {
            gram[i * k + j] = gram[j * k + i];
        }
    }
    Ok(gram)
}

/// Rounds `weight` (`[n, k]`, in place) by GPTQ against `gram` (`XᵀX`, `[k, k]`,
/// consumed) to the grid round to nearest would use, `s_j·q` with
/// `s_j = max_c |W[j,c]| / 127` ([`weight_row_scale`]), and returns those scales for the
/// packer (the rounded row's own maximum may no longer give `s_j`). `Ok(None)`, leaving
/// `weight` as it was, if `gram` is not usable (no energy, not finite); the caller then
/// rounds to nearest.
pub(crate) fn round_gptq(
    weight: &mut [f32],
    k: usize,
    gram: Vec<f64>,
) -> Result<Option<Vec<f32>>, KernelError> {
    let scales: Vec<f32> = weight.chunks_exact(k).map(weight_row_scale).collect();
    Ok(round_on_grid(weight, k, &scales, gram)?.then_some(scales))
}

/// [`round_gptq`] on the grids of the given `scales` (`[n]`); `Ok(false)` if `gram` is not
/// usable.
fn round_on_grid(
    weight: &mut [f32],
    k: usize,
    scales: &[f32],
    gram: Vec<f64>,
) -> Result<bool, KernelError> {
    // Channels in order of falling input energy (`diag H`, ties by index): the channels
    // that matter most are rounded first, while the most channels are left to absorb their
    // error ("act order", Frantar et al.'s reference code; on all-MiniLM-L6-v2 the mean
    // `1 − cos` to f32 goes from 1.24e-4 to 1.20e-4).
    let order = {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| gram[b * k + b].total_cmp(&gram[a * k + a]).then(a.cmp(&b)));
        order
    };
    let mut permuted = vec![0.0f64; k * k];
    permuted
        .par_chunks_mut(k.max(1))
        .zip(order.par_iter())
        .for_each(|(row, &pa)| {
            for (v, &pb) in row.iter_mut().zip(&order) {
                *v = gram[pa * k + pb];
            }
        });
    drop(gram);
    let Some(coefficients) = nearest_plane_coefficients(permuted, k)? else {
        return Ok(false);
    };
    let mut permuted_rows = vec![0.0f32; weight.len()];
    permuted_rows
        .par_chunks_mut(k)
        .zip(weight.par_chunks(k))
        .for_each(|(dst, src)| {
            for (d, &c) in dst.iter_mut().zip(&order) {
                *d = src[c];
            }
        });
    round_rows(&mut permuted_rows, k, scales, &coefficients)?;
    weight
        .par_chunks_mut(k)
        .zip(permuted_rows.par_chunks(k))
        .for_each(|(dst, src)| {
            for (&v, &c) in src.iter().zip(&order) {
                dst[c] = v;
            }
        });
    Ok(true)
}

/// `P[c, i] = L̃_ci / L̃_cc` for `i < c` (`[k, k]`, row-major, only the strict lower
/// triangle meaningful) for the damped `gram` (module docs); `None` if it has no energy,
/// is not finite, or is not positive definite.
fn nearest_plane_coefficients(
    mut gram: Vec<f64>,
    k: usize,
) -> Result<Option<Vec<f64>>, KernelError> {
    let mean_diagonal = (0..k).map(|c| gram[c * k + c]).sum::<f64>() / k as f64;
    if !(mean_diagonal.is_finite() && mean_diagonal > 0.0) {
        return Ok(None);
    }
    for c in 0..k {
        gram[c * k + c] += DAMPING * mean_diagonal;
    }
    // `J·H·J` is `H` with both indices reversed: the flat array reversed.
    gram.reverse();
    let mut factor = gram;
    if !cholesky_lower(&mut factor, k)? {
        return Ok(None);
    }
    // `L̃[c, i] = C[k−1−i, k−1−c]`: the lower triangle, diagonal included, mirrored about
    // the anti-diagonal, an involution, done by swapping pairs in place; then each row over
    // its diagonal.
    for a in 0..k {
        for b in 0..=a {
            let (pa, pb) = (k - 1 - b, k - 1 - a);
            if (pa, pb) > (a, b) {
                factor.swap(a * k + b, pa * k + pb);
            }
        }
    }
    for c in 0..k {
        let diagonal = factor[c * k + c];
        for v in &mut factor[c * k..c * k + c] {
            *v /= diagonal;
        }
    }
    Ok(Some(factor))
}

/// Rounds `rows` (`[n, k]`, channels already in the order to round them) by nearest plane
/// (module docs), in blocks of [`BLOCK`] channels: within a block channel by channel, each
/// row on its own (`Σ_{c0≤i<c} P_ci·d_i` in f64); then what the block's errors contribute
/// to every later channel's target, `T[:, c1..] += D[:, c0..c1]·P[c1.., c0..c1]ᵀ`, as one
/// f32 GEMM (GPTQ's "lazy batch" updates). Returns `Err` only if the GEMM does.
fn round_rows(
    rows: &mut [f32],
    k: usize,
    scales: &[f32],
    coefficients: &[f64],
) -> Result<(), KernelError> {
    let n = rows.len() / k;
    // Targets before this block's own channels: W plus the earlier blocks' shares.
    let mut target: Vec<f64> = rows.iter().map(|&v| f64::from(v)).collect();
    let mut residual = vec![0.0f64; n * k];
    let (mut errors, mut block_coefficients, mut shares) = (Vec::new(), Vec::new(), Vec::new());
    for c0 in (0..k).step_by(BLOCK) {
        let c1 = (c0 + BLOCK).min(k);
        rows.par_chunks_mut(k)
            .zip(residual.par_chunks_mut(k))
            .zip(target.par_chunks(k))
            .zip(scales.par_iter())
            .for_each(|(((row, d), target), &scale)| {
                for c in c0..c1 {
                    let p = &coefficients[c * k..c * k + c];
                    let inside: f64 = (c0..c).map(|i| p[i] * d[i]).sum();
                    let goal = target[c] + inside;
                    let q = if scale == 0.0 {
                        0.0
                    } else {
                        (goal / f64::from(scale))
                            .round_ties_even()
                            .clamp(-127.0, 127.0)
                    };
                    // Exactly representable: |q| ≤ 127 times an f32 has at most 31
                    // significant bits, and the packer's `round(v / s)` gives q back.
                    let value = (q * f64::from(scale)) as f32;
                    d[c] = f64::from(row[c]) - f64::from(value);
                    row[c] = value;
                }
            });
        if c1 == k {
            break;
        }
        let (w, later) = (c1 - c0, k - c1);
        gather_columns(&mut errors, &residual, k, c0..c1);
        gather_columns(&mut block_coefficients, &coefficients[c1 * k..], k, c0..c1);
        shares.resize(n * later, 0.0f32);
        let packed = PackedLinear::new(&block_coefficients, None, later, w)?;
        linear(&errors, n, &packed, Activation::Identity, None, &mut shares)?;
        for (t, share) in target.chunks_exact_mut(k).zip(shares.chunks_exact(later)) {
            for (t, &v) in t[c1..].iter_mut().zip(share) {
                *t += f64::from(v);
            }
        }
    }
    Ok(())
}

/// Channels per block of the blocked factorisation and rounding: the f32 GEMMs that carry
/// a block's effect onward have this inner dimension.
const BLOCK: usize = 64;

/// Cholesky factorisation `A = C·Cᵀ` in place: `a` (`[k, k]`, row-major, symmetric; only
/// the lower triangle is read) becomes `C` in its lower triangle (the upper one is left as
/// it was). Blocked, right-looking: per block of [`BLOCK`] columns, its diagonal block is
/// factored and the rows below solved against it (f64, `C_ab = (A_ab − Σ C_ap·C_bp) / C_bb`
/// over the block's columns), then the trailing matrix loses `P·Pᵀ` (`P` those rows' block
/// columns), one f32 GEMM subtracted in f64. The f32 update errs by about 1e-7 of `|A|`,
/// far below the damping that keeps every pivot at least 1 % of `A`'s mean diagonal.
/// `Ok(false)` if a pivot is not positive (not positive definite, or NaN).
fn cholesky_lower(a: &mut [f64], k: usize) -> Result<bool, KernelError> {
    let (mut panel, mut update) = (Vec::new(), Vec::new());
    for j0 in (0..k).step_by(BLOCK) {
        let j1 = (j0 + BLOCK).min(k);
        // The diagonal block, row by row.
        for r in j0..j1 {
            let (above, rest) = a.split_at_mut(r * k);
            let row = &mut rest[..k];
            for b in j0..r {
                let row_b = &above[b * k..b * k + b + 1];
                row[b] = (row[b] - dot(&row[j0..b], &row_b[j0..b])) / row_b[b];
            }
            let pivot = row[r] - dot(&row[j0..r], &row[j0..r]);
            // (Written so that a NaN pivot fails too.)
            if pivot.is_nan() || pivot <= 0.0 {
                return Ok(false);
            }
            row[r] = pivot.sqrt();
        }
        if j1 == k {
            break;
        }
        // The rows below, against it: independent rows.
        let (top, below) = a.split_at_mut(j1 * k);
        let diagonal = &top[j0 * k..];
        below.par_chunks_mut(k).for_each(|row| {
            for b in j0..j1 {
                let row_b = &diagonal[(b - j0) * k..(b - j0) * k + b + 1];
                row[b] = (row[b] - dot(&row[j0..b], &row_b[j0..b])) / row_b[b];
            }
        });
        // The trailing matrix: A[j1.., j1..] −= P·Pᵀ, lower triangle.
        let (m, w) = (k - j1, j1 - j0);
        gather_columns(&mut panel, below, k, j0..j1);
        update.resize(m * m, 0.0f32);
        let packed = PackedLinear::new(&panel, None, m, w)?;
        linear(&panel, m, &packed, Activation::Identity, None, &mut update)?;
        below
            .par_chunks_mut(k)
            .zip(update.par_chunks(m))
            .enumerate()
            .for_each(|(r, (row, update))| {
                for (v, &u) in row[j1..=j1 + r].iter_mut().zip(update) {
                    *v -= f64::from(u);
                }
            });
    }
    Ok(true)
}

/// `columns` of every row of `rows` (`[r, k]`), rounded to f32, into `out`
/// (`[r, columns.len()]`): a GEMM operand.
fn gather_columns(out: &mut Vec<f32>, rows: &[f64], k: usize, columns: Range<usize>) {
    out.clear();
    out.extend(
        rows.chunks_exact(k)
            .flat_map(|row| row[columns.clone()].iter().map(|&v| v as f32)),
    );
}

/// `Σ a_i·b_i` in a fixed order (8 running sums, then the tail), which the compiler
/// vectorises.
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    const L: usize = 8;
    let len = a.len().min(b.len());
    let (a_chunks, a_tail) = a[..len].as_chunks::<L>();
    let (b_chunks, b_tail) = b[..len].as_chunks::<L>();
    let mut sums = [0.0f64; L];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..L {
            sums[l] += x[l] * y[l];
        }
    }
    let tail: f64 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    sums.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::SplitMix;

    /// `C·Cᵀ` of the factor in `a`'s lower triangle.
    fn reconstruct(c: &[f64], k: usize) -> Vec<f64> {
        let mut out = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                out[i * k + j] = (0..=i.min(j)).map(|p| c[i * k + p] * c[j * k + p]).sum();
            }
        }
        out
    }

    fn random_gram(k: usize, t: usize, rng: &mut SplitMix) -> (Vec<f32>, Vec<f64>) {
        // Channels of very different sizes that move together, as activations do: a few
        // shared factors mixed into every channel, plus noise of its own.
        let sizes: Vec<f32> = (0..k).map(|_| 0.1 + 3.0 * rng.uniform().abs()).collect();
        let factors = k / 4 + 1;
        let mixing = rng.vec(factors * k);
        let mut rows = vec![0.0f32; t * k];
        for row in rows.chunks_exact_mut(k) {
            let z = rng.vec(factors);
            for (c, v) in row.iter_mut().enumerate() {
                let shared: f32 = (0..factors).map(|f| z[f] * mixing[f * k + c]).sum();
                *v = sizes[c] * (shared + 0.1 * rng.uniform());
            }
        }
        let mut gram = vec![0.0f64; k * k];
        for row in rows.chunks_exact(k) {
            for i in 0..k {
                for j in 0..k {
                    gram[i * k + j] += f64::from(row[i]) * f64::from(row[j]);
                }
            }
        }
        (rows, gram)
    }

    #[test]
    fn cholesky_reconstructs_the_matrix_and_refuses_an_indefinite_one() {
        let mut rng = SplitMix(11);
        for k in [1, 7, 33, 70, 200] {
            let (_, mut gram) = random_gram(k, 2 * k + 3, &mut rng);
            for c in 0..k {
                gram[c * k + c] += 0.1;
            }
            let mut factor = gram.clone();
            assert!(cholesky_lower(&mut factor, k).unwrap());
            let back = reconstruct(&factor, k);
            // Past the first block the trailing updates are f32 products: within a few
            // f32 roundings of the diagonal's size; a single block is f64 throughout.
            let tolerance = if k <= BLOCK { 1e-12 } else { 1e-6 };
            for i in 0..k {
                for j in 0..k {
                    let (x, y) = (back[i * k + j], gram[i * k + j]);
                    let size = (gram[i * k + i] * gram[j * k + j]).sqrt();
                    assert!((x - y).abs() <= tolerance * size, "k = {k}: {x} vs {y}");
                }
            }
        }
        let mut indefinite = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_lower(&mut indefinite, 2).unwrap());
        let mut nan = vec![f64::NAN];
        assert!(!cholesky_lower(&mut nan, 1).unwrap());
    }

    #[test]
    fn gram_is_xt_x_of_the_prepared_rows() {
        let mut rng = SplitMix(5);
        let (k, t) = (64, 37);
        let (rows, _) = random_gram(k, t, &mut rng);
        let skip = [3, 40];
        let bf16_value = |v: f32| f64::from(half::bf16::from_f32(v).to_f32());
        for block in [1, 2, 4] {
            let gram = input_gram(&rows, k, &skip, block).unwrap();
            let prepared: Vec<Vec<f64>> = rows
                .chunks_exact(k)
                .map(|row| {
                    let mut r = row.to_vec();
                    for &c in &skip {
                        r[c] = 0.0;
                    }
                    if block > 1 {
                        flip_signs(&mut r);
                        hadamard_channels(&mut r, block);
                    }
                    // What the bf16 GEMM multiplies.
                    r.into_iter().map(bf16_value).collect()
                })
                .collect();
            let energy = |c: usize| prepared.iter().map(|r| r[c] * r[c]).sum::<f64>();
            for i in 0..k {
                for j in 0..k {
                    let want: f64 = prepared.iter().map(|r| r[i] * r[j]).sum();
                    let got = gram[i * k + j];
                    // Exact products, f32 sums: relative to the Cauchy–Schwarz bound of
                    // the entry, which a cancelling sum can be far below.
                    let bound = (energy(i) * energy(j)).sqrt().max(1e-30);
                    assert!(
                        (got - want).abs() <= 1e-5 * bound,
                        "block {block} ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }

    /// GPTQ as published (Frantar et al. 2022, Algorithm 1 without lazy batches, channels
    /// in the given order): the
    /// inverse of the damped `H`, its upper Cholesky factor `U` (`H⁻¹ = UᵀU`), and
    /// `w_{>c} −= ((w_c − ŵ_c) / U_cc)·U_{c,>c}` after each channel.
    fn gptq_reference(weight: &[f32], k: usize, scales: &[f32], gram: &[f64]) -> Vec<f32> {
        let mut h = gram.to_vec();
        let mean = (0..k).map(|c| h[c * k + c]).sum::<f64>() / k as f64;
        for c in 0..k {
            h[c * k + c] += DAMPING * mean;
        }
        // H⁻¹ by Gauss–Jordan, then its lower Cholesky factor L (H⁻¹ = L·Lᵀ, U = Lᵀ).
        let mut inv = vec![0.0f64; k * k];
        for c in 0..k {
            inv[c * k + c] = 1.0;
        }
        for c in 0..k {
            let pivot = h[c * k + c];
            for j in 0..k {
                h[c * k + j] /= pivot;
                inv[c * k + j] /= pivot;
            }
            for r in 0..k {
                if r != c {
                    let f = h[r * k + c];
                    for j in 0..k {
                        h[r * k + j] -= f * h[c * k + j];
                        inv[r * k + j] -= f * inv[c * k + j];
                    }
                }
            }
        }
        assert!(cholesky_lower(&mut inv, k).unwrap());
        let u = |row: usize, col: usize| inv[col * k + row];
        let mut out = weight.to_vec();
        for (row, &s) in out.chunks_exact_mut(k).zip(scales) {
            let mut w: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            for c in 0..k {
                let q = (w[c] / f64::from(s)).round_ties_even().clamp(-127.0, 127.0);
                let value = (q * f64::from(s)) as f32;
                let err = (w[c] - f64::from(value)) / u(c, c);
                for (i, wi) in w.iter_mut().enumerate().skip(c + 1) {
                    *wi -= err * u(c, i);
                }
                row[c] = value;
            }
        }
        out
    }

    #[test]
    fn nearest_plane_is_gptq_in_act_order_and_beats_round_to_nearest_on_the_inputs() {
        let mut rng = SplitMix(7);
        for (n, k) in [(3, 1), (5, 24), (19, 48), (9, 96), (40, 150)] {
            let (rows, gram) = random_gram(k, 3 * k, &mut rng);
            let weight: Vec<f32> = (0..n * k).map(|_| rng.uniform()).collect();
            // A coarse grid (as a few bits would give) makes the choices matter.
            let scales: Vec<f32> = weight
                .chunks_exact(k)
                .map(|row| row.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0 * 20.0)
                .collect();
            let mut ours = weight.clone();
            assert!(round_on_grid(&mut ours, k, &scales, gram.clone()).unwrap());
            // The reference in act order: columns by falling `diag H`, ties by index.
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| gram[b * k + b].total_cmp(&gram[a * k + a]).then(a.cmp(&b)));
            let permuted_gram: Vec<f64> = order
                .iter()
                .flat_map(|&a| order.iter().map(move |&b| (a, b)))
                .map(|(a, b)| gram[a * k + b])
                .collect();
            let permuted: Vec<f32> = weight
                .chunks_exact(k)
                .flat_map(|row| order.iter().map(|&c| row[c]))
                .collect();
            let rounded = gptq_reference(&permuted, k, &scales, &permuted_gram);
            let mut reference = vec![0.0f32; n * k];
            for (dst, src) in reference.chunks_exact_mut(k).zip(rounded.chunks_exact(k)) {
                for (&v, &c) in src.iter().zip(&order) {
                    dst[c] = v;
                }
            }
            let differ = ours.iter().zip(&reference).filter(|(a, b)| a != b).count();
            // Float rounding may tip an exact tie; nothing more.
            assert!(differ <= n * k / 100, "({n}, {k}): {differ} weights differ");
            // Every weight is on its row's grid, within the clamp.
            for (row, &s) in ours.chunks_exact(k).zip(&scales) {
                for &v in row {
                    let q = v / s;
                    assert!(q.abs() <= 127.0 + 1e-3, "{v} is past the clamp of grid {s}");
                    assert!((q - q.round()).abs() < 1e-4, "{v} is not on the grid {s}");
                }
            }
            // The product's error on the calibration rows is smaller than nearest's.
            let nearest: Vec<f32> = weight
                .chunks_exact(k)
                .zip(&scales)
                .flat_map(|(row, &s)| row.iter().map(move |&v| (v / s).round_ties_even() * s))
                .collect();
            let error = |w: &[f32]| -> f64 {
                rows.chunks_exact(k)
                    .map(|x| {
                        (0..n)
                            .map(|j| {
                                (0..k)
                                    .map(|c| {
                                        f64::from(x[c])
                                            * f64::from(weight[j * k + c] - w[j * k + c])
                                    })
                                    .sum::<f64>()
                                    .powi(2)
                            })
                            .sum::<f64>()
                    })
                    .sum()
            };
            if k > 1 {
                assert!(
                    error(&ours) < 0.8 * error(&nearest),
                    "({n}, {k}): {} vs nearest {}",
                    error(&ours),
                    error(&nearest)
                );
            }
        }
    }

    #[test]
    fn unusable_grams_leave_the_weight_alone() {
        let k = 4;
        let mut weight = vec![0.3f32; 2 * k];
        assert!(round_gptq(&mut weight, k, vec![0.0; k * k])
            .unwrap()
            .is_none());
        let mut nan = vec![0.0; k * k];
        nan[5] = f64::NAN;
        assert!(round_gptq(&mut weight, k, nan).unwrap().is_none());
        assert_eq!(weight, vec![0.3f32; 2 * k]);
    }
}
