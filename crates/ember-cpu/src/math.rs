//! Vectorised `exp`, `erf` and GELU in `f32`, written once over the crate's SIMD layer and
//! used by softmax, attention and the activation epilogues.
//!
//! **exp** (Cephes `expf` range reduction): `n = round(x·log₂e)`, `r = x − n·ln2` (ln2 split in
//! a 9-bit high part and a low part, so `n·ln2_hi` is exact), `eʳ ≈ 1 + r + r²·P(r)` with a
//! degree-5 minimax `P` on `|r| ≤ ln2/2`, then `eˣ = eʳ·2ⁿ`. `2ⁿ` is applied as two halves
//! `2^⌊n/2⌉·2^(n−⌊n/2⌉)`, so `n ∈ [−126, 128]` never overflows the exponent field and the last
//! multiply rounds correctly into the subnormal range or to infinity. Relative error ≤ 2 ulp
//! for `x ∈ [−87.3, 88.7]`; `x < ln(FLT_MIN) ≈ −87.34` gives exactly 0 (flush, as `-inf`
//! scores in a softmax need), `x > ln(FLT_MAX)` gives `+inf`, NaN gives NaN.
//!
//! **erf** in two pieces, both plain polynomials (fitted for Ember by Chebyshev interpolation
//! in f64, then checked in f32 arithmetic): `erf(x) = x + x·A(x²)` for `|x| < 1`, and
//! `erf(x) = sign(x)·(1 − e^{−x²}·B(|x| − 2.5))` for `|x| ≥ 1`, where `B ≈ erfc(x)·e^{x²}` on
//! `[1, 4]` (beyond 4, `e^{−x²}·B < 2⁻²⁵` and the result rounds to ±1). Maximum absolute
//! error ≈ 6·10⁻⁸ with FMA (about one ulp of the result); the cheaper single-rational forms
//! (Eigen/XLA's `x·P(x²)/Q(x²)`: 3.4·10⁻⁷, Abramowitz–Stegun 7.1.26: 1.5·10⁻⁷) miss 1·10⁻⁷.

use crate::simd::{ScalarToken, Simd};

const EXP_LO: f32 = -87.336_55; // ≈ ln(FLT_MIN): below this eˣ is subnormal; we flush to 0.
const EXP_HI: f32 = 88.722_84; // ≈ ln(FLT_MAX): above this eˣ overflows.
const LOG2_E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 355.0 / 512.0; // 0.693359375: n·LN2_HI is exact for |n| ≤ 2¹⁵.
const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
const EXP_P0: f32 = 1.987_569_1e-4;
const EXP_P1: f32 = 1.398_199_9e-3;
const EXP_P2: f32 = 8.333_452e-3;
const EXP_P3: f32 = 4.166_579_6e-2;
const EXP_P4: f32 = 1.666_666_5e-1;
const EXP_P5: f32 = 0.5; // Cephes' 5.0000001201e-1 rounds to 0.5 in f32.

/// `eˣ` lane-wise (see the module docs for accuracy and special values).
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    let xc = s.clamp(x, EXP_LO, EXP_HI);
    let (er, n) = exp_reduced(s, xc);
    // 2ⁿ = 2^n1 · 2^n2 with n1, n2 ∈ [−63, 64].
    let n1 = s.round(s.mul(n, s.splat(0.5)));
    let n2 = s.sub(n, n1);
    let y = s.mul(s.mul(er, s.pow2i(n1)), s.pow2i(n2));
    let y = s.select_lt(x, s.splat(EXP_LO), s.splat(0.0), y);
    s.select_lt(s.splat(EXP_HI), x, s.splat(f32::INFINITY), y)
}

/// `eˣ` for `x ∈ [−80, 0]`, a softmax's `x − max` once the terms under `e^{−80}` are flushed:
/// [`exp`]'s reduction and polynomial (so the same ≤ 2 ulp) without the clamp and with `2ⁿ` in
/// one step (`n ∈ [−116, 0]`: a normal number). NaN gives NaN; anything else outside the range
/// gives an unspecified value, for the caller to select away.
#[inline(always)]
pub(crate) fn exp_softmax_term<S: Simd>(s: S, x: S::V) -> S::V {
    let (er, n) = exp_reduced(s, x);
    s.mul(er, s.pow2i(n))
}

/// `(eʳ, n)` with `eˣ = eʳ·2ⁿ`: `n = round(x·log₂e)`, `r = x − n·ln2` in two steps, then the
/// polynomial. `x` must be finite and in [`exp`]'s range for `n` to be usable.
#[inline(always)]
fn exp_reduced<S: Simd>(s: S, x: S::V) -> (S::V, S::V) {
    let n = s.round(s.mul(x, s.splat(LOG2_E)));
    // r = x − n·ln2 in two steps; n ∈ [−126, 128].
    let r = s.fma(n, s.splat(-LN2_HI), x);
    let r = s.fma(n, s.splat(-LN2_LO), r);
    let mut p = s.splat(EXP_P0);
    p = s.fma(p, r, s.splat(EXP_P1));
    p = s.fma(p, r, s.splat(EXP_P2));
    p = s.fma(p, r, s.splat(EXP_P3));
    p = s.fma(p, r, s.splat(EXP_P4));
    p = s.fma(p, r, s.splat(EXP_P5));
    let r2 = s.mul(r, r);
    (s.fma(p, r2, s.add(r, s.splat(1.0))), n)
}

// erf on |x| < 1: erf(x) = x + x·A(x²), A a degree-6 polynomial (Chebyshev interpolant of
// erf(√z)/√z − 1 on z ∈ [0, 1]; adding x last keeps the rounding of the leading term exact).
const ERF_SMALL: [f32; 7] = [
    1.283_791_7e-1,
    -3.761_262_6e-1,
    1.128_359_4e-1,
    -2.685_421_1e-2,
    5.189_087_2e-3,
    -8.016_864_3e-4,
    7.875_875e-5,
];
// erf on 1 ≤ |x| ≤ 4: erf(|x|) = 1 − e^{−x²}·B(|x| − 2.5), B a degree-11 polynomial
// (Chebyshev interpolant of erfc(x)·e^{x²} on [1, 4]; no division needed).
const ERF_TAIL: [f32; 12] = [
    2.108_063_5e-1,
    -7.434_735e-2,
    2.493_82e-2,
    -8.001_617e-3,
    2.465_999_7e-3,
    -7.333_449e-4,
    2.129_504_7e-4,
    -5.932_730_3e-5,
    1.436_468_2e-5,
    -3.834_632e-6,
    1.669_836_7e-6,
    -4.123_142_8e-7,
];

/// `c[0] + c[1]·t + … + c[N−1]·t^{N−1}` by Horner's rule.
#[inline(always)]
fn polynomial<S: Simd, const N: usize>(s: S, t: S::V, c: &[f32; N]) -> S::V {
    let mut p = s.splat(c[N - 1]);
    for &ci in c[..N - 1].iter().rev() {
        p = s.fma(p, t, s.splat(ci));
    }
    p
}

/// `erf(x)` lane-wise (see the module docs for accuracy).
#[inline(always)]
pub(crate) fn erf<S: Simd>(s: S, x: S::V) -> S::V {
    let ax = s.abs(x);
    let z = s.mul(x, x);
    // |x| < 1: odd polynomial.
    let small = s.fma(x, polynomial(s, z, &ERF_SMALL), x);
    // |x| ≥ 1: 1 − e^{−x²}·B(|x| − 2.5); the clamp keeps B finite for huge |x|, where
    // e^{−x²} is 0 anyway.
    let t = s.sub(s.clamp(ax, 1.0, 4.0), s.splat(2.5));
    // z is capped at 80 (e^{−80}·B ≈ 10⁻³⁶ rounds away against 1 anyway) so that no
    // subnormal product is formed: those trap to microcode on x86.
    let tail = s.sub(
        s.splat(1.0),
        s.mul(
            exp(s, s.sub(s.splat(0.0), s.clamp(z, 0.0, 80.0))),
            polynomial(s, t, &ERF_TAIL),
        ),
    );
    // NaN fails `ax < 1` and propagates through the tail (z is NaN).
    s.select_lt(ax, s.splat(1.0), small, s.copysign(tail, x))
}

// erfcx(z) = erfc(z)·e^{z²} on [0, 4] ≈ C(z − 2), C a degree-14 polynomial (Chebyshev
// interpolant; erfcx is smooth and bounded, 0.14…1, so no division is needed).
const ERFCX_0_4: [f32; 15] = [
    2.553_956_8e-1,
    -1.067_966_9e-1,
    4.180_280_5e-2,
    -1.545_854_1e-2,
    5.440_24e-3,
    -1.837_241_6e-3,
    5.937_979e-4,
    -1.783_105_5e-4,
    5.418_711e-5,
    -2.007_516_4e-5,
    5.530_562_2e-6,
    -1.354_811_7e-7,
    7.114_251_6e-8,
    -2.523_307e-7,
    6.221_409e-8,
];

/// Exact GELU `x·Φ(x)`, `Φ(x) = ½·(1 + erf(x/√2))`, lane-wise, in one branch-free path:
/// with `z = |x|/√2`, `q = ½·erfc(z) = ½·e^{−z²}·erfcx(z)`, and `Φ = q` for `x < 0`,
/// `1 − q` otherwise. Cheaper than going through [`erf`] (one polynomial instead of two, no
/// select between them), and free of the cancellation in `1 + erf(x/√2)` for negative `x`.
/// Absolute error ≲ 1·10⁻⁷·max(|x|, 1).
#[inline(always)]
pub(crate) fn gelu<S: Simd>(s: S, x: S::V) -> S::V {
    let zero = s.splat(0.0);
    let z = s.mul(s.abs(x), s.splat(std::f32::consts::FRAC_1_SQRT_2));
    // Beyond z = 4, e^{−z²} < 1.2·10⁻⁷ and erfcx varies slowly: the clamp costs nothing.
    let t = s.sub(s.clamp(z, 0.0, 4.0), s.splat(2.0));
    // z² is capped at 80 so that ½·e^{−z²}·erfcx stays a normal float: subnormal operands
    // trap to microcode on x86 (≈ 100× slower), and q < 10⁻³⁵ is 0 for every purpose here.
    let minus_z2 = s.sub(zero, s.clamp(s.mul(z, z), 0.0, 80.0));
    let half_exp = s.mul(s.splat(0.5), exp(s, minus_z2));
    let q = s.mul(half_exp, polynomial(s, t, &ERFCX_0_4));
    let phi = s.select_lt(x, zero, q, s.sub(s.splat(1.0), q));
    s.mul(x, phi)
}

/// Scalar `erf(x)` in `f32`, the same approximation as the SIMD kernels use (with separate
/// multiply and add instead of FMA). Maximum absolute error ≈ 1·10⁻⁷.
///
/// ```
/// let y = ember_cpu::math::erf_f32(0.5);
/// assert!((y - 0.520_499_9).abs() < 1e-7);
/// ```
pub fn erf_f32(x: f32) -> f32 {
    erf(ScalarToken, x)
}

/// Scalar `eˣ` in `f32`, the same algorithm as the SIMD kernels (relative error ≤ 2 ulp on
/// `[−87.3, 88.7]`, 0 below `ln(FLT_MIN)`).
pub fn exp_f32(x: f32) -> f32 {
    exp(ScalarToken, x)
}

/// `erf(x)` in f64 to ~1·10⁻¹⁵, for the plain-loop references: the all-positive series
/// `erf(x) = 2/√π · e^{−x²} · Σₙ 2ⁿ x^{2n+1} / (1·3·…·(2n+1))` has no cancellation, and
/// `|erf(x)| = 1` in f64 beyond |x| = 6.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let ax = x.abs();
    if ax > 6.0 {
        return 1.0f64.copysign(x);
    }
    let mut term = ax;
    let mut sum = ax;
    let mut n = 0.0;
    while term > sum * 1e-17 {
        n += 1.0;
        term *= 2.0 * ax * ax / (2.0 * n + 1.0);
        sum += term;
    }
    let v = 2.0 / std::f64::consts::PI.sqrt() * (-ax * ax).exp() * sum;
    v.min(1.0).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{supported_isas, Isa};
    use crate::simd::isa_dispatch;

    #[inline(always)]
    fn map<S: Simd>(s: S, xs: &mut [f32], f: impl Fn(S, S::V) -> S::V) {
        for chunk in xs.chunks_mut(S::LANES) {
            // SAFETY: load/store_partial touch exactly chunk.len() ≤ LANES floats.
            unsafe {
                let v = s.load_partial(chunk.as_ptr(), chunk.len());
                s.store_partial(chunk.as_mut_ptr(), f(s, v), chunk.len());
            }
        }
    }
    #[inline(always)]
    fn map_exp<S: Simd>(s: S, xs: &mut [f32]) {
        map(s, xs, exp);
    }
    #[inline(always)]
    fn map_exp_softmax_term<S: Simd>(s: S, xs: &mut [f32]) {
        map(s, xs, exp_softmax_term);
    }
    #[inline(always)]
    fn map_erf<S: Simd>(s: S, xs: &mut [f32]) {
        map(s, xs, erf);
    }
    isa_dispatch!(fn exp_with_isa(xs: &mut [f32]) -> () => map_exp);
    isa_dispatch!(fn exp_softmax_term_with_isa(xs: &mut [f32]) -> () => map_exp_softmax_term);
    isa_dispatch!(fn erf_with_isa(xs: &mut [f32]) -> () => map_erf);

    fn grid(lo: f32, hi: f32, count: usize) -> Vec<f32> {
        (0..count)
            .map(|i| lo + (hi - lo) * i as f32 / (count - 1) as f32)
            .collect()
    }

    fn ulp_diff(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = (f32::from_bits(b32.to_bits() + 1) - b32).abs() as f64;
        (a as f64 - b).abs() / ulp
    }

    #[test]
    fn exp_is_accurate_on_every_isa() {
        type Map = fn(Isa, &mut [f32]) -> Result<(), crate::error::KernelError>;
        let cases: [(&str, Map, f32, f32); 2] = [
            ("exp", exp_with_isa, -87.0, 88.5),
            ("exp_softmax_term", exp_softmax_term_with_isa, -80.0, 0.0),
        ];
        for (name, f, lo, hi) in cases {
            let xs = grid(lo, hi, 200_001);
            for isa in supported_isas() {
                let mut ys = xs.clone();
                f(isa, &mut ys).unwrap();
                let mut worst = (0.0f64, 0.0f32);
                for (&x, &y) in xs.iter().zip(&ys) {
                    let u = ulp_diff(y, (x as f64).exp());
                    if u > worst.0 {
                        worst = (u, x);
                    }
                }
                println!("{name} {isa}: max {:.2} ulp at x = {}", worst.0, worst.1);
                assert!(
                    worst.0 <= 2.0,
                    "{name} {isa}: {:.2} ulp at x = {}",
                    worst.0,
                    worst.1
                );
            }
        }
        for isa in supported_isas() {
            let mut ys = [f32::NAN, 0.0];
            exp_softmax_term_with_isa(isa, &mut ys).unwrap();
            assert!(ys[0].is_nan(), "{isa}");
            assert_eq!(ys[1], 1.0, "{isa}");
        }
    }

    #[test]
    fn exp_special_values() {
        for isa in supported_isas() {
            let mut ys = vec![
                f32::NEG_INFINITY,
                -1000.0,
                -88.0,
                0.0,
                89.0,
                f32::INFINITY,
                f32::NAN,
            ];
            exp_with_isa(isa, &mut ys).unwrap();
            assert_eq!(
                &ys[..6],
                &[0.0, 0.0, 0.0, 1.0, f32::INFINITY, f32::INFINITY],
                "{isa}"
            );
            assert!(ys[6].is_nan(), "{isa}");
        }
    }

    #[test]
    fn erf_is_accurate_on_every_isa() {
        let xs = grid(-7.0, 7.0, 400_001);
        for isa in supported_isas() {
            let mut ys = xs.clone();
            erf_with_isa(isa, &mut ys).unwrap();
            let mut worst = (0.0f64, 0.0f32);
            for (&x, &y) in xs.iter().zip(&ys) {
                let err = (y as f64 - erf_f64(x as f64)).abs();
                if err > worst.0 {
                    worst = (err, x);
                }
            }
            println!(
                "erf {isa}: max abs error {:.3e} at x = {}",
                worst.0, worst.1
            );
            let bound = if isa == Isa::Scalar { 1.5e-7 } else { 1.0e-7 };
            assert!(
                worst.0 <= bound,
                "erf {isa}: {:.3e} at x = {}",
                worst.0,
                worst.1
            );
        }
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
    }

    #[test]
    fn reference_erf_matches_known_values() {
        // Values from Abramowitz & Stegun table 7.1 / high-precision tables.
        let known = [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
        ];
        for (x, v) in known {
            assert!((erf_f64(x) - v).abs() < 1e-14, "erf({x})");
            assert!((erf_f64(-x) + v).abs() < 1e-14, "erf(-{x})");
        }
    }
}
