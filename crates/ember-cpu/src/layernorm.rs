//! Layer normalisation over the last dimension, in place: `x` is `[rows, hidden]`,
//!
//! `y = (x − μ) / √(σ² + ε) · γ + β`, with `μ = Σx / hidden` and the *biased* variance
//! `σ² = Σ(x − μ)² / hidden` (as `torch.nn.LayerNorm`).
//!
//! Statistics are two-pass and accumulated in f64 (8 independent partial sums combined in a
//! fixed order, which the compiler vectorises), so μ and σ² are essentially exact and the
//! result does not depend on how rows are split across threads. The normalisation itself is
//! one f32 FMA per element on the active ISA. Rows run in parallel on rayon's current pool.

use rayon::prelude::*;

use crate::error::{check_len, checked_elems, KernelError};
use crate::isa::{active_isa, Isa};
use crate::simd::{isa_dispatch, Simd};

/// Below this many elements the call stays on the calling thread.
const SEQUENTIAL_ELEMS: usize = 1 << 15;

/// Normalises every `hidden`-long row of `x` (`[rows, hidden]`) in place on the
/// [`active_isa`]. Errors (leaving `x` untouched) if `x.len() != rows·hidden` or `gamma`/`beta`
/// are not `[hidden]`.
///
/// ```
/// let mut x = [1.0f32, 2.0, 3.0, 4.0];
/// ember_cpu::layernorm(&mut x, 1, 4, &[1.0; 4], &[0.0; 4], 0.0)?;
/// let expected = [-1.3416408, -0.4472136, 0.4472136, 1.3416408];
/// assert!(x.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6));
/// # Ok::<(), ember_cpu::error::KernelError>(())
/// ```
pub fn layernorm(
    x: &mut [f32],
    rows: usize,
    hidden: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), KernelError> {
    layernorm_with_isa(active_isa(), x, rows, hidden, gamma, beta, eps)
}

/// [`layernorm`] on an explicit instruction set (`Err(UnsupportedIsa)` if this CPU lacks it).
pub fn layernorm_with_isa(
    isa: Isa,
    x: &mut [f32],
    rows: usize,
    hidden: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), KernelError> {
    const OP: &str = "layernorm";
    check_len(OP, "x", checked_elems(OP, "x", rows, hidden)?, x.len())?;
    check_len(OP, "gamma", hidden, gamma.len())?;
    check_len(OP, "beta", hidden, beta.len())?;
    if !isa.is_supported() {
        return Err(KernelError::UnsupportedIsa { op: OP, isa });
    }
    if x.is_empty() {
        return Ok(());
    }
    let run = |row: &mut [f32]| {
        // Support was checked above, so dispatch cannot fail.
        let _ = layernorm_row_with_isa(isa, row, gamma, beta, eps);
    };
    if x.len() < SEQUENTIAL_ELEMS {
        x.chunks_exact_mut(hidden).for_each(run);
    } else {
        x.par_chunks_exact_mut(hidden).for_each(run);
    }
    Ok(())
}

/// Mean and biased variance of `row` in f64, two-pass, fixed summation order.
#[inline(always)]
fn row_moments(row: &[f32]) -> (f64, f64) {
    const LANES: usize = 8;
    let n = row.len() as f64;
    let mut sum = [0.0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            sum[j] += c[j] as f64;
        }
    }
    let mut total: f64 = sum.iter().sum();
    total += tail.iter().map(|&v| v as f64).sum::<f64>();
    let mean = total / n;
    let mut sq = [0.0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            let d = c[j] as f64 - mean;
            sq[j] += d * d;
        }
    }
    let mut total_sq: f64 = sq.iter().sum();
    total_sq += tail
        .iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>();
    (mean, total_sq / n)
}

/// One row: `row = (row − μ)·rstd·γ + β`.
#[inline(always)]
fn layernorm_row<S: Simd>(s: S, row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len();
    if gamma.len() < n || beta.len() < n {
        debug_assert!(false, "layernorm_row: short gamma/beta");
        return;
    }
    let (mean, var) = row_moments(row);
    let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
    let (mean, rstd) = (s.splat(mean as f32), s.splat(rstd));
    let mut j = 0;
    while j < n {
        let w = S::LANES.min(n - j);
        // SAFETY: j + w ≤ n ≤ gamma.len(), beta.len(): every partial access is in bounds.
        unsafe {
            let v = s.load_partial(row.as_ptr().add(j), w);
            let g = s.load_partial(gamma.as_ptr().add(j), w);
            let b = s.load_partial(beta.as_ptr().add(j), w);
            let normed = s.mul(s.sub(v, mean), rstd);
            s.store_partial(row.as_mut_ptr().add(j), s.fma(normed, g, b), w);
        }
        j += w;
    }
}

isa_dispatch!(
    fn layernorm_row_with_isa(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) -> ()
        => layernorm_row
);

/// Plain-loop reference: the same maths entirely in f64.
pub fn layernorm_reference(
    x: &mut [f32],
    rows: usize,
    hidden: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), KernelError> {
    const OP: &str = "layernorm_reference";
    check_len(OP, "x", checked_elems(OP, "x", rows, hidden)?, x.len())?;
    check_len(OP, "gamma", hidden, gamma.len())?;
    check_len(OP, "beta", hidden, beta.len())?;
    if hidden == 0 {
        return Ok(());
    }
    for row in x.chunks_exact_mut(hidden) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / hidden as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / hidden as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            *v = ((*v as f64 - mean) * rstd * gamma[j] as f64 + beta[j] as f64) as f32;
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
    fn every_isa_matches_reference() {
        let mut rng = SplitMix(11);
        for &(rows, hidden) in &[
            (0, 768),
            (1, 1),
            (3, 7),
            (5, 768),
            (64, 768),
            (2, 1000),
            (40, 1024),
        ] {
            // Offset rows (|μ| ≫ σ) stress the variance; torch-like eps.
            let x: Vec<f32> = (0..rows * hidden)
                .map(|i| rng.uniform() * 3.0 + (i / hidden) as f32)
                .collect();
            let gamma: Vec<f32> = (0..hidden).map(|_| 1.0 + 0.5 * rng.uniform()).collect();
            let beta = rng.vec(hidden);
            let mut want = x.clone();
            layernorm_reference(&mut want, rows, hidden, &gamma, &beta, 1e-12).unwrap();
            for isa in supported_isas() {
                let mut got = x.clone();
                layernorm_with_isa(isa, &mut got, rows, hidden, &gamma, &beta, 1e-12).unwrap();
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 2e-6 * (1.0 + w.abs()),
                        "{isa} rows={rows} hidden={hidden} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn constant_row_gives_beta_and_threads_do_not_matter() {
        let hidden = 768;
        let rows = 100;
        let mut rng = SplitMix(12);
        let x = rng.vec(rows * hidden);
        let gamma = rng.vec(hidden);
        let beta = rng.vec(hidden);
        let run = |threads: usize| {
            let mut y = x.clone();
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| layernorm(&mut y, rows, hidden, &gamma, &beta, 1e-5))
                .unwrap();
            y
        };
        let one = run(1);
        let three = run(3);
        assert!(one
            .iter()
            .zip(&three)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        // A row alone equals the same row inside the batch.
        let mut row = x[7 * hidden..8 * hidden].to_vec();
        layernorm(&mut row, 1, hidden, &gamma, &beta, 1e-5).unwrap();
        assert!(row
            .iter()
            .zip(&one[7 * hidden..8 * hidden])
            .all(|(a, b)| a.to_bits() == b.to_bits()));

        let mut constant = vec![3.5f32; hidden];
        layernorm(&mut constant, 1, hidden, &gamma, &beta, 1e-5).unwrap();
        assert_eq!(constant, beta);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut x = vec![1.0f32; 10];
        assert!(layernorm(&mut x, 2, 4, &[1.0; 4], &[0.0; 4], 1e-5).is_err());
        assert!(layernorm(&mut x, 2, 5, &[1.0; 4], &[0.0; 5], 1e-5).is_err());
        assert!(layernorm(&mut x, 2, 5, &[1.0; 5], &[0.0; 6], 1e-5).is_err());
        assert_eq!(x, vec![1.0f32; 10]);
        assert!(layernorm(&mut x, 2, 5, &[1.0; 5], &[0.0; 5], 1e-5).is_ok());
    }
}
