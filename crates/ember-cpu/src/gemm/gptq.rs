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
//! On all-MiniLM-L6-v2 (rotated, with outlier channels), calibrated on 480 sentences:
//! the mean `1 − cos` of int8 to f32 over the benchmark corpus falls from 1.9e-4 to
//! about 1.2e-4; the weights' share of it from 1.4e-4 to 0.5e-4.
//!
//! # Determinism
//!
//! `H` comes from the f32 GEMM (one fixed chain per element), summed over token chunks
//! in f64 in order; the factorisation and the rounding are fixed-order f64 loops over
//! independent rows. The packed weight depends on the calibration rows and the ISA (the
//! GEMM's: FMA or not), never on the thread count.

use rayon::prelude::*;

use super::quant::{flip_signs, hadamard_channels};
use super::{linear, PackedLinear};
use crate::activation::Activation;
use crate::error::KernelError;

/// `λ` of the damping `H + λ·mean(diag H)·I`.
const DAMPING: f64 = 0.01;

/// Calibration rows per GEMM when summing `XᵀX` (bounds the transposed copy to
/// `k · GRAM_CHUNK` floats).
const GRAM_CHUNK: usize = 2048;

/// Rows of the factor (or of `W`) that share one pass over the rows above them, so those
/// are read from memory once per group rather than once per row.
const ROW_GROUP: usize = 8;

/// `XᵀX` (`[k, k]`, f64) of the calibration `rows` (`[t, k]`) as the int8 panels see
/// them: channels `skip` zeroed, then rotated ([`flip_signs`], [`hadamard_channels`]) if
/// `block > 1`.
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
    // Rows transposed a tile at a time: `TILE` prepared rows, then their columns.
    const TILE: usize = 16;
    let mut product = vec![0.0f32; k * k];
    let mut transposed = Vec::new();
    let mut tile = vec![0.0f32; TILE * k];
    for chunk in rows.chunks(GRAM_CHUNK * k) {
        let t = chunk.len() / k;
        // Xᵀ of the chunk, `[k, t]`: as the activations (`m = k` rows of length t) and as
        // the weight (`n = k` rows), the GEMM gives `Xᵀ·X`.
        transposed.clear();
        transposed.resize(k * t, 0.0f32);
        for (i0, rows) in chunk.chunks(TILE * k).enumerate() {
            let tile = &mut tile[..rows.len()];
            tile.copy_from_slice(rows);
            for row in tile.chunks_exact_mut(k) {
                for &c in skip {
                    row[c] = 0.0;
                }
                if block > 1 {
                    flip_signs(row);
                    hadamard_channels(row, block);
                }
            }
            let first = i0 * TILE;
            for (c, column) in transposed.chunks_exact_mut(t).enumerate() {
                for (i, row) in tile.chunks_exact(k).enumerate() {
                    column[first + i] = row[c];
                }
            }
        }
        let packed = PackedLinear::new(&transposed, None, k, t)?;
        linear(
            &transposed,
            k,
            &packed,
            Activation::Identity,
            None,
            &mut product,
        )?;
        for (g, &p) in gram.iter_mut().zip(&product) {
            *g += f64::from(p);
        }
    }
    Ok(gram)
}

/// Rounds `weight` (`[n, k]`, in place) to the int8 grid `scales[j]·q`, `q ∈ [−127, 127]`,
/// by GPTQ against `gram` (`XᵀX`, `[k, k]`, consumed). Returns `false`, leaving `weight`
/// as it was, if `gram` is not usable (no energy, not finite); the caller then rounds to
/// nearest.
pub(crate) fn round_gptq(weight: &mut [f32], k: usize, scales: &[f32], gram: Vec<f64>) -> bool {
    // Channels in order of falling input energy (`diag H`, ties by index): the channels
    // that matter most are rounded first, while the most channels are left to absorb their
    // error ("act order", Frantar et al.'s reference code; 1.29e-4 → 1.24e-4 in the module
    // docs' setting).
    let order = {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| gram[b * k + b].total_cmp(&gram[a * k + a]).then(a.cmp(&b)));
        order
    };
    let mut permuted = vec![0.0f64; k * k];
    for (a, &pa) in order.iter().enumerate() {
        for (b, &pb) in order.iter().enumerate() {
            permuted[a * k + b] = gram[pa * k + pb];
        }
    }
    drop(gram);
    let Some(coefficients) = nearest_plane_coefficients(permuted, k) else {
        return false;
    };
    weight
        .par_chunks_mut(ROW_GROUP * k)
        .zip(scales.par_chunks(ROW_GROUP))
        .for_each(|(rows, scales)| {
            let mut permuted_rows = vec![0.0f32; rows.len()];
            for (src, dst) in rows.chunks_exact(k).zip(permuted_rows.chunks_exact_mut(k)) {
                for (d, &c) in dst.iter_mut().zip(&order) {
                    *d = src[c];
                }
            }
            round_rows(&mut permuted_rows, k, scales, &coefficients);
            for (dst, src) in rows.chunks_exact_mut(k).zip(permuted_rows.chunks_exact(k)) {
                for (&v, &c) in src.iter().zip(&order) {
                    dst[c] = v;
                }
            }
        });
    true
}

/// `P[c, i] = L̃_ci / L̃_cc` for `i < c` (`[k, k]`, row-major, only the strict lower
/// triangle meaningful) for the damped `gram` (module docs); `None` if it has no energy,
/// is not finite, or is not positive definite.
fn nearest_plane_coefficients(mut gram: Vec<f64>, k: usize) -> Option<Vec<f64>> {
    let mean_diagonal = (0..k).map(|c| gram[c * k + c]).sum::<f64>() / k as f64;
    if !(mean_diagonal.is_finite() && mean_diagonal > 0.0) {
        return None;
    }
    for c in 0..k {
        gram[c * k + c] += DAMPING * mean_diagonal;
    }
    // `J·H·J` is `H` with both indices reversed: the flat array reversed.
    gram.reverse();
    let mut factor = gram;
    if !cholesky_lower(&mut factor, k) {
        return None;
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
    Some(factor)
}

/// A group of weight rows (`[r, k]`, r ≤ [`ROW_GROUP`]) rounded by nearest plane (module
/// docs), channel by channel, each channel's coefficient row read once for the group.
fn round_rows(rows: &mut [f32], k: usize, scales: &[f32], coefficients: &[f64]) {
    let r = rows.len() / k;
    // d = W − Ŵ per row, f64.
    let mut residual = vec![0.0f64; r * k];
    for c in 0..k {
        let p = &coefficients[c * k..c * k + c];
        for (j, &scale) in scales.iter().enumerate().take(r) {
            let w = f64::from(rows[j * k + c]);
            let d = &residual[j * k..j * k + c];
            let target = w + dot(p, d);
            let q = if scale == 0.0 {
                0.0
            } else {
                (target / f64::from(scale))
                    .round_ties_even()
                    .clamp(-127.0, 127.0)
            };
            // Exactly representable: |q| ≤ 127 times an f32 has at most 31 significant bits,
            // and the packer's `round(v / s)` gives q back.
            let value = (q * f64::from(scale)) as f32;
            residual[j * k + c] = w - f64::from(value);
            rows[j * k + c] = value;
        }
    }
}

/// `Σ a_i·b_i` in a fixed order (8 running sums, then the tail), which the compiler
/// vectorises.
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    const LANES: usize = 8;
    let mut sums = [0.0f64; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            sums[l] += x[l] * y[l];
        }
    }
    sums.iter().sum::<f64>() + tail
}

/// Cholesky factorisation `A = C·Cᵀ` in place: `a` (`[k, k]`, row-major, symmetric; only
/// the lower triangle is read) becomes `C` in its lower triangle (the upper one is left as
/// it was). Row by row (`C_ab = (A_ab − Σ_{p<b} C_ap·C_bp) / C_bb`), in groups of
/// [`ROW_GROUP`] rows that share each pass over the finished rows above. `false` if a pivot
/// is not positive (not positive definite, or NaN).
fn cholesky_lower(a: &mut [f64], k: usize) -> bool {
    const BLOCK: usize = 4 * ROW_GROUP;
    for a0 in (0..k).step_by(BLOCK) {
        let a1 = (a0 + BLOCK).min(k);
        let (done, block) = a.split_at_mut(a0 * k);
        let done = &*done;
        // The block's columns left of it, from the finished rows only: the groups are
        // independent.
        block[..(a1 - a0) * k]
            .par_chunks_mut(ROW_GROUP * k)
            .for_each(|group| {
                for b in 0..a0 {
                    let row_b = &done[b * k..b * k + b + 1];
                    for row in group.chunks_exact_mut(k) {
                        row[b] = (row[b] - dot(&row[..b], &row_b[..b])) / row_b[b];
                    }
                }
            });
        // The block's own triangle, in order.
        for r in a0..a1 {
            let (above, rest) = a.split_at_mut(r * k);
            let row = &mut rest[..k];
            for b in a0..r {
                let row_b = &above[b * k..b * k + b + 1];
                row[b] = (row[b] - dot(&row[..b], &row_b[..b])) / row_b[b];
            }
            let pivot = row[r] - dot(&row[..r], &row[..r]);
            // (Written so that a NaN pivot fails too.)
            if pivot.is_nan() || pivot <= 0.0 {
                return false;
            }
            row[r] = pivot.sqrt();
        }
    }
    true
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
        for k in [1, 7, 33, 70] {
            let (_, mut gram) = random_gram(k, 2 * k + 3, &mut rng);
            for c in 0..k {
                gram[c * k + c] += 0.1;
            }
            let mut factor = gram.clone();
            assert!(cholesky_lower(&mut factor, k));
            let back = reconstruct(&factor, k);
            for (x, y) in back.iter().zip(&gram) {
                assert!(
                    (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                    "k = {k}: {x} vs {y}"
                );
            }
        }
        let mut indefinite = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_lower(&mut indefinite, 2));
        let mut nan = vec![f64::NAN];
        assert!(!cholesky_lower(&mut nan, 1));
    }

    #[test]
    fn gram_is_xt_x_of_the_prepared_rows() {
        let mut rng = SplitMix(5);
        let (k, t) = (64, 37);
        let (rows, _) = random_gram(k, t, &mut rng);
        let skip = [3, 40];
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
                    r.into_iter().map(f64::from).collect()
                })
                .collect();
            let energy = |c: usize| prepared.iter().map(|r| r[c] * r[c]).sum::<f64>();
            for i in 0..k {
                for j in 0..k {
                    let want: f64 = prepared.iter().map(|r| r[i] * r[j]).sum();
                    let got = gram[i * k + j];
                    // f32 products and sums: relative to the Cauchy–Schwarz bound of the
                    // entry, which a cancelling sum can be far below.
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
        assert!(cholesky_lower(&mut inv, k));
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
        for (n, k) in [(3, 1), (5, 24), (19, 48), (9, 96)] {
            let (rows, gram) = random_gram(k, 3 * k, &mut rng);
            let weight: Vec<f32> = (0..n * k).map(|_| rng.uniform()).collect();
            // A coarse grid (as a few bits would give) makes the choices matter.
            let scales: Vec<f32> = weight
                .chunks_exact(k)
                .map(|row| row.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0 * 20.0)
                .collect();
            let mut ours = weight.clone();
            assert!(round_gptq(&mut ours, k, &scales, gram.clone()));
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
        let scales = [0.01f32, 0.01];
        assert!(!round_gptq(&mut weight, k, &scales, vec![0.0; k * k]));
        let mut nan = vec![0.0; k * k];
        nan[5] = f64::NAN;
        assert!(!round_gptq(&mut weight, k, &scales, nan));
        assert_eq!(weight, vec![0.3f32; 2 * k]);
    }
}
