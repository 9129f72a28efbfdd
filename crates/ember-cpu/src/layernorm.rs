//! LayerNorm over the rows of `[rows, hidden]`, in place:
//! `y = (x − μ) / √(σ² + ε) · γ + β`, with `σ²` the biased variance (as `torch.nn.LayerNorm`).
//!
//! Mean and variance are accumulated in f64 in two passes (`μ`, then `Σ(x − μ)²`), so the result
//! is the exactly-rounded statistic whatever the row length; rows run in parallel on rayon's
//! current pool and each row is computed by one thread in a fixed order.

use rayon::prelude::*;

use crate::error::{check_len, checked_elems, KernelError};

/// Rows per rayon task: enough work to amortise scheduling (a row is ~1 µs at H = 768).
const ROWS_PER_TASK: usize = 16;

/// In-place LayerNorm of `x` (`[rows, hidden]`) with `gamma`, `beta` (`[hidden]`).
pub fn layernorm(
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
    if hidden == 0 {
        return Ok(());
    }
    x.par_chunks_mut(hidden * ROWS_PER_TASK).for_each(|block| {
        for row in block.chunks_exact_mut(hidden) {
            normalize_row(row, gamma, beta, eps);
        }
    });
    Ok(())
}

#[inline]
fn normalize_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / n;
    let inv_std = 1.0 / (var + eps as f64).sqrt();
    let (mean, inv_std) = (mean as f32, inv_std as f32);
    for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv_std * g + b;
    }
}

/// The plain reference: everything in f64, one rounding at the end.
pub fn layernorm_reference(x: &mut [f32], rows: usize, hidden: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(hidden).take(rows) {
        let n = hidden as f64;
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (((*v as f64 - mean) / (var + eps as f64).sqrt()) * g as f64 + b as f64) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 + 3.0
            })
            .collect()
    }

    #[test]
    fn matches_reference_on_odd_shapes() {
        for (rows, hidden) in [(0, 8), (1, 1), (3, 52), (17, 384), (40, 768)] {
            let x = random(rows * hidden, 1);
            let gamma = random(hidden, 2);
            let beta = random(hidden, 3);
            let mut fast = x.clone();
            let mut reference = x.clone();
            layernorm(&mut fast, rows, hidden, &gamma, &beta, 1e-12).unwrap();
            layernorm_reference(&mut reference, rows, hidden, &gamma, &beta, 1e-12);
            for (a, b) in fast.iter().zip(&reference) {
                assert!((a - b).abs() <= 2e-6 * (1.0 + b.abs()), "{rows}x{hidden}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut x = vec![0.0; 10];
        assert!(layernorm(&mut x, 3, 4, &[1.0; 4], &[0.0; 4], 1e-5).is_err());
        assert!(layernorm(&mut x, 2, 5, &[1.0; 4], &[0.0; 5], 1e-5).is_err());
    }
}
