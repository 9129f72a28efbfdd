//! Numerically stable softmax over a row, in place:
//! `y_j = e^{x_j − m} / Σ_k e^{x_k − m}`, `m = max_k x_k`.
//!
//! Three passes on the active ISA: the maximum, then `e^{x−m}` (the vectorised `exp` of
//! [`crate::math`] for arguments in `[−80, 0]`, ≤ 2 ulp) written back while summing (runs of
//! up to 8 vectors summed lane-wise in f32, each run reduced in f32 and the runs accumulated in
//! f64), then a multiply by `1/Σ`; attention stops after the second pass and scales its
//! outputs by `1/Σ` instead. Lanes are combined in a fixed order, so a row's result depends
//! only on the row. A row of all `-inf` gives NaN (as torch); `-inf` entries otherwise give
//! 0, and so does any entry more than 80 below the row maximum (its true value is < 2·10⁻³⁵;
//! flushing it keeps subnormals, which are slow on x86, out of the row).

use crate::isa::{active_isa, Isa};
use crate::math::exp_softmax_term;
use crate::simd::{isa_dispatch, Simd};

/// Softmax of `row` in place, on the [`active_isa`].
///
/// ```
/// let mut row = [1.0f32, 2.0, 3.0];
/// ember_cpu::softmax::softmax_inplace(&mut row);
/// let sum: f32 = row.iter().sum();
/// assert!((sum - 1.0).abs() < 1e-6 && row[2] > row[1] && row[1] > row[0]);
/// ```
pub fn softmax_inplace(row: &mut [f32]) {
    if softmax_inplace_with_isa(active_isa(), row).is_err() {
        // active_isa() is always supported; stay panic-free regardless.
        let _ = softmax_inplace_with_isa(Isa::Scalar, row);
    }
}

isa_dispatch!(
    /// [`softmax_inplace`] on an explicit instruction set (`Err` if this CPU lacks it).
    pub fn softmax_inplace_with_isa(row: &mut [f32]) -> () => softmax_row
);

/// The generic body.
#[inline(always)]
fn softmax_row<S: Simd>(s: S, row: &mut [f32]) {
    let inv = s.splat(softmax_terms(s, row));
    let (n, ptr) = (row.len(), row.as_mut_ptr());
    // Pass 3: normalise.
    let mut j = 0;
    while j < n {
        let w = S::LANES.min(n - j);
        // SAFETY: j + w ≤ n.
        unsafe {
            let v = s.load_partial(ptr.add(j), w);
            s.store_partial(ptr.add(j), s.mul(v, inv), w);
        }
        j += w;
    }
}

/// Vectors summed lane-wise in f32 before one reduction into the f64 total: few enough that
/// the f32 sums lose nothing that matters (each ≤ 8 terms ≤ 1 a lane), many enough that the
/// horizontal reductions stop costing as much as the exponentials.
const SUM_RUN: usize = 8;

/// Softmax's first two passes, shared with attention: `row` becomes `e^{x − max}` (not yet
/// normalised) and the result is `1/Σ` (NaN for an all `-inf` row; 1 for an empty one).
#[inline(always)]
pub(crate) fn softmax_terms<S: Simd>(s: S, row: &mut [f32]) -> f32 {
    let n = row.len();
    if n == 0 {
        return 1.0;
    }
    let ptr = row.as_mut_ptr();
    // Pass 1: maximum (partial vectors padded with -inf).
    let mut vmax = s.splat(f32::NEG_INFINITY);
    let mut j = 0;
    while j < n {
        let w = S::LANES.min(n - j);
        // SAFETY: j + w ≤ n.
        let v = unsafe { s.load_partial(ptr.add(j), w) };
        let v = if w == S::LANES {
            v
        } else {
            pad_with(s, v, w, f32::NEG_INFINITY)
        };
        vmax = s.max(vmax, v);
        j += w;
    }
    let max = s.splat(s.reduce_max(vmax));
    // Pass 2: e^{x − max}, stored and summed: runs of SUM_RUN vectors are summed lane-wise
    // and reduced in f32 (a short tree), the runs are summed in f64, so long rows lose
    // nothing to a long f32 chain.
    let mut total = 0.0f64;
    let mut j = 0;
    while j < n {
        let mut run = s.splat(0.0);
        for _ in 0..SUM_RUN {
            if j >= n {
                break;
            }
            let w = S::LANES.min(n - j);
            // SAFETY: j + w ≤ n.
            unsafe {
                // Terms below e^{−80} (relative to the largest, so < 2·10⁻³⁵ of the sum) are
                // flushed to 0: they would turn subnormal after normalisation, and subnormal
                // operands trap to microcode on x86 (here and in attention's P·V). A NaN
                // (from an all -inf or a +inf row) stays NaN.
                let d = s.sub(s.load_partial(ptr.add(j), w), max);
                let e = s.select_lt(d, s.splat(-80.0), s.splat(0.0), exp_softmax_term(s, d));
                s.store_partial(ptr.add(j), e, w);
                let e = if w == S::LANES {
                    e
                } else {
                    pad_with(s, e, w, 0.0)
                };
                run = s.add(run, e);
            }
            j += w;
        }
        total += s.reduce_add(run) as f64;
    }
    (1.0 / total) as f32
}

/// `v` with lanes `≥ w` replaced by `fill`.
#[inline(always)]
fn pad_with<S: Simd>(s: S, v: S::V, w: usize, fill: f32) -> S::V {
    let mut lanes = [fill; 16];
    // SAFETY: LANES ≤ 16; we store all LANES lanes of v and read back LANES floats.
    unsafe {
        s.store(lanes.as_mut_ptr(), v);
        for lane in lanes.iter_mut().take(S::LANES).skip(w) {
            *lane = fill;
        }
        s.load(lanes.as_ptr())
    }
}

/// Plain-loop reference in f64.
pub fn softmax_reference(row: &mut [f32]) {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    for (v, e) in row.iter_mut().zip(exps) {
        *v = (e / sum) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::supported_isas;
    use crate::test_util::SplitMix;

    #[test]
    fn every_isa_matches_reference() {
        let mut rng = SplitMix(21);
        for &len in &[1usize, 2, 7, 15, 16, 17, 100, 128, 511, 512, 4097] {
            for scale in [1.0f32, 10.0, 80.0] {
                let x: Vec<f32> = rng.vec(len).iter().map(|v| v * scale).collect();
                let mut want = x.clone();
                softmax_reference(&mut want);
                for isa in supported_isas() {
                    let mut got = x.clone();
                    softmax_inplace_with_isa(isa, &mut got).unwrap();
                    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        // f32 rounding of x − max alone costs |x − max|·ε relative in e^{x−max}.
                        let rel = 3e-7 + 1.2e-7 * (max - x[j]);
                        assert!(
                            (g - w).abs() <= rel * w + 1e-30,
                            "{isa} len={len} scale={scale} [{j}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn masked_entries_and_degenerate_rows() {
        for isa in supported_isas() {
            let mut row = vec![0.0, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 1e30];
            softmax_inplace_with_isa(isa, &mut row).unwrap();
            assert_eq!(row, [0.0, 0.0, 0.0, 0.0, 1.0], "{isa}");
            let mut row = vec![5.0f32; 33];
            softmax_inplace_with_isa(isa, &mut row).unwrap();
            assert!(row.iter().all(|&v| (v - 1.0 / 33.0).abs() < 1e-8), "{isa}");
            let mut empty: Vec<f32> = vec![];
            softmax_inplace_with_isa(isa, &mut empty).unwrap();
        }
    }
}
