//! GEMM tests: every ISA against the f64 reference on edge shapes, determinism across row
//! counts and thread counts, input validation, and an ISA-coverage guard.

use super::*;
use crate::isa::supported_isas;
#[cfg(target_arch = "x86_64")]
use crate::probe::fma_peak_gflops;

pub(crate) use crate::test_util::SplitMix;

struct Case {
    m: usize,
    n: usize,
    k: usize,
    act: Activation,
    bias: bool,
    residual: bool,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "linear m={} n={} k={} act={:?} bias={} residual={}",
            self.m, self.n, self.k, self.act, self.bias, self.residual
        )
    }
}

fn cases() -> Vec<Case> {
    use Activation::*;
    let shapes: [(usize, usize, usize); 16] = [
        (0, 4, 4),
        (4, 0, 4),
        (4, 4, 0),
        (1, 1, 1),
        (63, 2, 10),
        (2, 63, 10),
        (7, 33, 127),
        (15, 31, 65),
        (14, 32, 256),
        (29, 65, 257),
        (1, 768, 768),
        (5, 768, 3072),
        (16, 3072, 768),
        (127, 768, 768),
        (33, 2304, 768),
        (230, 100, 300),
    ];
    let acts = [Identity, Gelu, GeluTanh, Relu];
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n, k))| Case {
            m,
            n,
            k,
            act: acts[i % 4],
            bias: i % 3 != 1,
            residual: i % 2 == 0,
        })
        .collect()
}

/// The f64 reference's results for a case and a per-element bound that scales with the
/// magnitude of the reduction (f32 summation error grows like √k·ε·Σ|x·w|): computed once, then
/// checked against every ISA's output ([`check`]).
struct Expected {
    want: Vec<f32>,
    tol: Vec<f64>,
}

fn expected(case: &Case, x: &[f32], w: &[f32], b: Option<&[f32]>, r: Option<&[f32]>) -> Expected {
    let (m, n, k) = (case.m, case.n, case.k);
    let mut want = vec![f32::NAN; m * n];
    linear_reference(x, m, w, b, n, k, case.act, r, &mut want).unwrap();
    let eps = f32::EPSILON as f64;
    let mut tol = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut abs_sum: f64 = (0..k)
                .map(|kk| (x[i * k + kk] as f64 * w[j * k + kk] as f64).abs())
                .sum();
            let mut pre: f64 = (0..k)
                .map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64)
                .sum();
            if let Some(b) = b {
                abs_sum += (b[j] as f64).abs();
                pre += b[j] as f64;
            }
            let reference = want[i * n + j] as f64;
            tol.push(
                1.2 * (4.0 * (k.max(1) as f64).sqrt() * eps * abs_sum + eps * pre.abs())
                    + 2e-7 * pre.abs().max(1.0)
                    + 2.0 * eps * reference.abs(),
            );
        }
    }
    Expected { want, tol }
}

/// Checks `fast` (from `isa`) against [`expected`]'s reference and bounds; NaN never passes.
fn check(case: &Case, isa: Isa, expected: &Expected, fast: &[f32]) {
    let n = case.n;
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for (index, ((&got, &want), &tol)) in fast
        .iter()
        .zip(&expected.want)
        .zip(&expected.tol)
        .enumerate()
    {
        let err = (got as f64 - want as f64).abs();
        if err.is_nan() || err > tol {
            let (i, j) = (index / n.max(1), index % n.max(1));
            failures.push(format!("  [{i},{j}] got {got} want {want} (tol {tol:.2e})"));
        }
        worst = worst.max(err / tol);
    }
    assert_eq!(fast.len(), expected.want.len(), "{case} on {isa}");
    assert!(
        failures.is_empty(),
        "{case} on {isa}: {} mismatches, first:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
    assert!(worst <= 1.0);
}

#[test]
fn every_isa_matches_reference_on_edge_shapes() {
    let mut rng = SplitMix(42);
    // Under Miri (scripts/miri.sh) only the small edge shapes: it interprets every
    // instruction, and these still cover edge rows, masked columns, odd k and k tails.
    let small_enough = |c: &Case| !cfg!(miri) || c.m * c.n * c.k <= 40_000;
    for case in cases().into_iter().filter(small_enough) {
        let (m, n, k) = (case.m, case.n, case.k);
        let x = rng.vec(m * k);
        let w = rng.vec(n * k);
        let b = case.bias.then(|| rng.vec(n));
        let r = case.residual.then(|| rng.vec(m * n));
        for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
            let packed = PackedLinear::with_precision(&w, b.as_deref(), n, k, precision).unwrap();
            // The reference multiplies exactly what the kernels see: for bf16, X and W
            // rounded to bf16 (products of bf16 values are exact in f32 and in f64); for
            // int8, X and W dequantised.
            let (x_seen, w_seen) = match precision {
                Precision::F32 => {
                    assert_eq!(packed.unpack_weight(), w);
                    (x.clone(), w.clone())
                }
                Precision::Bf16 => (round_bf16(&x), packed.unpack_weight()),
                Precision::Int8 => (dequantised_rows(&x, m, k), packed.unpack_weight()),
                Precision::F16 => unreachable!("not in the list"),
            };
            assert_eq!(w_seen, round_to(precision, &w, n, k));
            let want = expected(&case, &x_seen, &w_seen, b.as_deref(), r.as_deref());
            for isa in supported_isas() {
                let mut out = vec![f32::NAN; m * n];
                linear_with_isa(isa, &x, m, &packed, case.act, r.as_deref(), &mut out).unwrap();
                check(&case, isa, &want, &out);
                if precision == Precision::Int8 {
                    check_int8_against_f32(&case, &x, &w, b.as_deref(), r.as_deref(), &out);
                }
                // The per-task packing path (used for huge X) must agree bit for bit.
                let mut own = vec![f32::NAN; m * n];
                linear_impl(isa, &x, m, &packed, case.act, r.as_deref(), &mut own, 0).unwrap();
                assert!(
                    own.iter()
                        .zip(&out)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{case} {precision} on {isa}: per-task packing differs from shared packing"
                );
            }
        }
    }
}

#[test]
fn half_width_panels_give_the_widened_results_bit_for_bit() {
    // f16 / bf16 checkpoints kept at their width: every ISA widens exactly as it loads, so
    // the results equal those of the f32 weights holding the same values.
    use half::{bf16, f16};
    let mut rng = SplitMix(31);
    for (m, n, k) in [(1, 40, 33), (29, 65, 257), (37, 100, 600), (14, 768, 384)] {
        let x = rng.vec(m * k);
        let b = rng.vec(n);
        let r = rng.vec(m * n);
        let w = rng.vec(n * k);
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let stored = [
            (
                WeightData::F16(&w16),
                w16.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
            ),
            (
                WeightData::Bf16(&wb16),
                wb16.iter().map(|v| v.to_f32()).collect(),
            ),
        ];
        for (data, widened) in stored {
            let half = PackedLinear::from_weight(data, Some(&b), n, k, Precision::F32).unwrap();
            assert_eq!(half.weight_elem_bytes(), 2);
            assert_eq!(half.unpack_weight(), widened);
            let full = PackedLinear::new(&widened, Some(&b), n, k).unwrap();
            for isa in supported_isas() {
                for act in [Activation::Identity, Activation::Gelu] {
                    let mut got = vec![f32::NAN; m * n];
                    let mut want = vec![f32::NAN; m * n];
                    linear_with_isa(isa, &x, m, &half, act, Some(&r), &mut got).unwrap();
                    linear_with_isa(isa, &x, m, &full, act, Some(&r), &mut want).unwrap();
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{data:?} m={m} n={n} k={k} {isa} {act:?}: differs from widened f32",
                        data = half.layout
                    );
                }
            }
            // For bf16 products, a stored f16 / bf16 weight is rounded as its f32 value is.
            let pairs = PackedLinear::from_weight(data, None, n, k, Precision::Bf16).unwrap();
            let from_f32 =
                PackedLinear::with_precision(&widened, None, n, k, Precision::Bf16).unwrap();
            assert_eq!(pairs.unpack_weight(), from_f32.unpack_weight());
            // And quantised to int8 as its f32 value is.
            let quads = PackedLinear::from_weight(data, None, n, k, Precision::Int8).unwrap();
            let from_f32 =
                PackedLinear::with_precision(&widened, None, n, k, Precision::Int8).unwrap();
            assert_eq!(quads.weight_elem_bytes(), 1);
            assert_eq!(quads.unpack_weight(), from_f32.unpack_weight());
        }
    }
}

/// `values` rounded to nearest-even bf16 and widened back.
fn round_bf16(values: &[f32]) -> Vec<f32> {
    values
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect()
}

/// `values` (`[n, k]`) as a weight of `precision` holds them; for int8 computed here from
/// the definition (`s_j = max|W[j,:]|/127`, `s_j·round(W/s_j)`), independently of the packing.
fn round_to(precision: Precision, values: &[f32], n: usize, k: usize) -> Vec<f32> {
    match precision {
        Precision::F32 => values.to_vec(),
        Precision::Bf16 => round_bf16(values),
        Precision::F16 => unreachable!("the CPU refuses f16"),
        Precision::Int8 => (0..n)
            .flat_map(|j| {
                let row = &values[j * k..(j + 1) * k];
                let scale = row.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
                row.iter().map(move |&v| {
                    if scale == 0.0 {
                        0.0
                    } else {
                        scale * (v / scale).round_ties_even()
                    }
                })
            })
            .collect(),
    }
}

/// `X` (`[m, k]`) as the int8 kernels see it: each row quantised with its own scale and zero
/// point and dequantised, `s_i·(x_q − z_i)`.
fn dequantised_rows(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    (0..m)
        .flat_map(|i| {
            let row = &x[i * k..(i + 1) * k];
            let q = RowQuant::of_row(row);
            row.iter().map(move |&v| q.dequantise(q.quantise(v)))
        })
        .collect()
}

/// The int8 result against the exact f32 product: each operand is off by at most half a
/// step (`s_i/2`, `s_j/2`), so `|Δ(x·w)| ≤ s_j/2·Σ|x| + s_i/2·Σ|w| + k·s_i·s_j/4`, times
/// the activation's slope (≤ 1.13 for GELU), plus f32 rounding.
fn check_int8_against_f32(
    case: &Case,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    r: Option<&[f32]>,
    fast: &[f32],
) {
    let (m, n, k) = (case.m, case.n, case.k);
    let mut reference = vec![f32::NAN; m * n];
    linear_reference(x, m, w, b, n, k, case.act, r, &mut reference).unwrap();
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let s_i = RowQuant::of_row(row).scale as f64;
        let x_abs: f64 = row.iter().map(|&v| (v as f64).abs()).sum();
        for j in 0..n {
            let w_row = &w[j * k..(j + 1) * k];
            let s_j = w_row.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64 / 127.0;
            let w_abs: f64 = w_row.iter().map(|&v| (v as f64).abs()).sum();
            let bound = 1.2 * (s_j / 2.0 * x_abs + s_i / 2.0 * w_abs + k as f64 * s_i * s_j / 4.0)
                + 1e-5 * (1.0 + reference[i * n + j].abs() as f64);
            let err = (fast[i * n + j] as f64 - reference[i * n + j] as f64).abs();
            assert!(
                err <= bound,
                "{case} int8 [{i},{j}]: {} vs f32 {} (bound {bound:.2e})",
                fast[i * n + j],
                reference[i * n + j]
            );
        }
    }
}

#[test]
fn row_quantisation_follows_its_definition() {
    let mut rng = SplitMix(8);
    let shifted: Vec<f32> = rng.vec(300).iter().map(|v| 3.0 + v).collect();
    let rows: [Vec<f32>; 5] = [
        rng.vec(1000),
        shifted,                                        // all positive: lo = 0, z = 0
        rng.vec(77).iter().map(|v| -v.abs()).collect(), // all ≤ 0: z = 255
        vec![0.0; 10],                                  // all zero: s = 1, z = 0
        vec![1e-30, -2e-30, 0.0],                       // tiny range
    ];
    for row in &rows {
        let q = RowQuant::of_row(row);
        let lo = row.iter().fold(0.0f32, |a, &v| a.min(v));
        let hi = row.iter().fold(0.0f32, |a, &v| a.max(v));
        if hi == lo {
            assert_eq!(q, RowQuant::default());
        } else {
            assert_eq!(q.scale, (hi - lo) / 255.0);
            assert_eq!(q.inv_scale, 1.0 / q.scale);
            assert_eq!(q.zero as f32, (-lo * q.inv_scale).round_ties_even());
        }
        assert!((0..=255).contains(&q.zero));
        for &v in row {
            let back = q.dequantise(q.quantise(v));
            // Half a step, plus the rounding of 1/s and of the dequantised value.
            let tol = 0.5 * q.scale as f64 * (1.0 + 1e-5) + 1e-6 * (v as f64).abs();
            assert!(
                (back as f64 - v as f64).abs() <= tol,
                "{v} -> {back} (scale {})",
                q.scale
            );
        }
    }
    // As vcvtps2dq: NaN and out-of-range values convert to i32::MIN, then clamp to 0.
    let q = RowQuant::from_range(-1.0, 1.0);
    assert_eq!(q.quantise(f32::NAN), 0);
    assert_eq!(q.quantise(f32::INFINITY), 0);
    assert_eq!(q.quantise(1e30), 0);
    assert_eq!(q.quantise(-1e30), 0);
    assert_eq!(q.quantise(2.0), 255);
    assert_eq!(q.quantise(-2.0), 0);
    // Ties round to even, as vcvtps2dq does.
    let q = RowQuant {
        scale: 1.0,
        inv_scale: 1.0,
        zero: 100,
        ..RowQuant::default()
    };
    for (v, want) in [
        (0.5, 100),
        (1.5, 102),
        (2.5, 102),
        (-0.5, 100),
        (-1.5, 98),
        (3e6, 255),
    ] {
        assert_eq!(q.quantise(v), want, "{v}");
    }
}

#[test]
fn int8_sums_are_exact_up_to_the_largest_k() {
    // The extremes: x_q − z_i = ±255 and w_q = ±127 in every k, at k = INT8_MAX_K, where
    // |Σ| is within 0.002 % of i32::MAX. Every kernel must give s_i·s_j·Σ, rounded once or
    // twice in f32.
    let k = INT8_MAX_K;
    let (m, n) = (2, 2);
    let mut x = vec![0.5f32; m * k]; // row 0: x_q = 255, z = 0
    x[k..].fill(-0.25); // row 1: x_q = 0, z = 255
    let mut w = vec![2.0f32; n * k]; // column 0: w_q = 127
    w[k..].fill(-3.0); // column 1: w_q = −127
    let packed = PackedLinear::with_precision(&w, None, n, k, Precision::Int8).unwrap();
    let sum = (255 * 127 * k) as f64;
    assert!(sum < i32::MAX as f64);
    let (s0, s1) = (0.5 / 255.0, 0.25 / 255.0);
    let (t0, t1) = (2.0 / 127.0, 3.0 / 127.0);
    let want = [sum * s0 * t0, -sum * s0 * t1, -sum * s1 * t0, sum * s1 * t1];
    for isa in supported_isas() {
        let mut out = vec![f32::NAN; m * n];
        linear_with_isa(isa, &x, m, &packed, Activation::Identity, None, &mut out).unwrap();
        for (got, want) in out.iter().zip(want) {
            assert!(
                (*got as f64 - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs(),
                "{isa}: {got} vs {want}"
            );
        }
    }
    // One more k could overflow: refused at packing.
    let k = INT8_MAX_K + 1;
    assert!(matches!(
        PackedLinear::with_precision(&vec![1.0; k], None, 1, k, Precision::Int8),
        Err(KernelError::InvalidShape { .. })
    ));
}

#[test]
fn bf16_kernels_agree_bit_for_bit() {
    // The portable kernel follows vdpbf16ps's order (odd k, then even k, per pair), and
    // products of bf16 values are exact: on normal inputs the two paths are identical.
    #[cfg(target_arch = "x86_64")]
    {
        let Some(fast) = kernel_avx512_bf16::Avx512Bf16Kernel::detect() else {
            println!("skipped: this CPU has no AVX512_BF16");
            return;
        };
        let mut rng = SplitMix(77);
        for (m, n, k) in [(37, 100, 600), (15, 33, 1025), (1, 2304, 768), (29, 65, 7)] {
            let x = rng.vec(m * k);
            let w = rng.vec(n * k);
            let b = rng.vec(n);
            let r = rng.vec(m * n);
            let packed = PackedLinear::with_precision(&w, Some(&b), n, k, Precision::Bf16).unwrap();
            let args = GemmArgs {
                x: &x,
                m,
                w: &packed,
                act: Activation::Identity,
                residual: Some(&r),
                shared_a_max: SHARED_A_MAX,
            };
            let mut hw = vec![f32::NAN; m * n];
            gemm_driver(fast, args, &mut hw);
            let mut portable = vec![f32::NAN; m * n];
            gemm_driver(kernel_scalar_bf16::ScalarBf16Kernel, args, &mut portable);
            let differ = hw
                .iter()
                .zip(&portable)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differ, 0, "m={m} n={n} k={k}: {differ} elements differ");
        }
        // Packing: the vcvtne2ps2bf16 path rounds exactly as the portable one.
        let (m, k) = (31, 700);
        let x = rng.vec(m * k);
        let len = m.div_ceil(14) * 14 * KC_BF16;
        let mut a = vec![half::bf16::NAN; len];
        let mut b = a.clone();
        for (pc, kc) in [(0, KC_BF16), (KC_BF16, k - KC_BF16), (3, 101)] {
            a.fill(half::bf16::NAN);
            b.fill(half::bf16::NAN);
            pack_a_block_bf16(&x, k, (0, m), pc, kc, 14, &mut a);
            fast.pack_a(&x, k, (0, m), pc, kc, 14, &[], &mut b);
            let used = |v: &[half::bf16]| -> Vec<u16> {
                (0..m.div_ceil(14))
                    .flat_map(|q| {
                        let start = q * 14 * KC_BF16;
                        v[start..start + 14 * kc.next_multiple_of(2).next_multiple_of(KG_BF16)]
                            .iter()
                            .map(|h| h.to_bits())
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            // Compare only the slots the portable packing writes (rows < m, k < kc rounded
            // up to a pair); the vector path also zero-fills the rest of each group.
            let (ua, ub) = (used(&a), used(&b));
            for (i, (&pa, &pb)) in ua.iter().zip(&ub).enumerate() {
                if !half::bf16::from_bits(pa).is_nan() {
                    assert_eq!(pa, pb, "pack differs at {i} (pc={pc} kc={kc})");
                }
            }
        }
    }
}

#[test]
fn bf16_fallback_kernels_agree_bit_for_bit() {
    // The AVX2 and AVX-512F bf16 kernels (for CPUs without AVX512_BF16) run the same steps
    // as widening FMAs: bit for bit the portable kernel's results (in-kernel epilogues) and
    // the native one's (every epilogue, GELU included, whose vector maths the SIMD kernels
    // share).
    #[cfg(target_arch = "x86_64")]
    {
        let mut ran = 0;
        if let Some(fast) = kernel_avx2_bf16::Avx2Bf16Kernel::detect() {
            bf16_kernel_matches_portable(fast, "avx2 bf16");
            ran += 1;
        } else {
            println!("skipped avx2 bf16: this CPU has no AVX2");
        }
        if let Some(fast) = kernel_avx512f_bf16::Avx512fBf16Kernel::detect() {
            bf16_kernel_matches_portable(fast, "avx512f bf16");
            ran += 1;
        } else {
            println!("skipped avx512f bf16: this CPU has no AVX-512F");
        }
        println!("{ran} bf16 fallback kernels checked against the portable one");
        let avx2 = kernel_avx2_bf16::Avx2Bf16Kernel::detect();
        let avx512f = kernel_avx512f_bf16::Avx512fBf16Kernel::detect();
        let native = kernel_avx512_bf16::Avx512Bf16Kernel::detect();
        if native.is_none() {
            println!("skipped comparison with vdpbf16ps: this CPU has no AVX512_BF16");
        }
        let mut rng = SplitMix(81);
        for (m, n, k) in [(1, 1, 1), (7, 33, 127), (37, 100, 601), (16, 3072, 768)] {
            let x = rng.vec(m * k);
            let w = rng.vec(n * k);
            let b = rng.vec(n);
            let r = rng.vec(m * n);
            let packed = PackedLinear::with_precision(&w, Some(&b), n, k, Precision::Bf16).unwrap();
            for act in [
                Activation::Identity,
                Activation::Relu,
                Activation::Gelu,
                Activation::GeluTanh,
            ] {
                let args = GemmArgs {
                    x: &x,
                    m,
                    w: &packed,
                    act,
                    residual: Some(&r),
                    shared_a_max: SHARED_A_MAX,
                };
                let run = |kern: &dyn Fn(&mut [f32])| {
                    let mut out = vec![f32::NAN; m * n];
                    kern(&mut out);
                    out
                };
                let mut outs: Vec<(&str, Vec<f32>)> = Vec::new();
                if let Some(kern) = native {
                    outs.push(("vdpbf16ps", run(&|o| gemm_driver(kern, args, o))));
                }
                if let Some(kern) = avx512f {
                    outs.push(("avx512f bf16", run(&|o| gemm_driver(kern, args, o))));
                }
                if let Some(kern) = avx2 {
                    outs.push(("avx2 bf16", run(&|o| gemm_driver(kern, args, o))));
                }
                for (name, out) in outs.iter().skip(1) {
                    let (first, expected) = &outs[0];
                    let differ = out
                        .iter()
                        .zip(expected)
                        .filter(|(a, b)| a.to_bits() != b.to_bits())
                        .count();
                    assert_eq!(
                        differ, 0,
                        "{name} vs {first}: m={m} n={n} k={k} {act:?}: {differ} differ"
                    );
                }
            }
        }
    }
}

/// `fast` against `portable` (kernels of `precision`), bit for bit, on GEMMs of `shapes`:
/// with and without bias, identity and ReLU (the in-kernel epilogues), with and without
/// residual, both packing paths, one to three threads, outputs poisoned with NaN first.
#[cfg(target_arch = "x86_64")]
fn gemms_match_portable<F: Microkernel, P: Microkernel>(
    fast: F,
    portable: P,
    precision: Precision,
    shapes: &[(usize, usize, usize)],
    rng: &mut SplitMix,
    name: &str,
) {
    for &(m, n, k) in shapes {
        let x = rng.vec(m * k);
        let w = rng.vec(n * k);
        let b = rng.vec(n);
        let r = rng.vec(m * n);
        for bias in [true, false] {
            let packed =
                PackedLinear::with_precision(&w, bias.then_some(&b[..]), n, k, precision).unwrap();
            for act in [Activation::Identity, Activation::Relu] {
                for (residual, shared_a_max, threads) in [
                    (Some(&r[..]), SHARED_A_MAX, 1),
                    (None, SHARED_A_MAX, 3),
                    (Some(&r[..]), 0, 2),
                ] {
                    let args = GemmArgs {
                        x: &x,
                        m,
                        w: &packed,
                        act,
                        residual,
                        shared_a_max,
                    };
                    let (got, want) = run_in_pool(threads, || {
                        let mut got = vec![f32::NAN; m * n];
                        gemm_driver(fast, args, &mut got);
                        let mut want = vec![f32::NAN; m * n];
                        gemm_driver(portable, args, &mut want);
                        (got, want)
                    });
                    assert!(got.iter().all(|v| !v.is_nan()), "{name}: NaN left in out");
                    let differ = got
                        .iter()
                        .zip(&want)
                        .filter(|(a, b)| a.to_bits() != b.to_bits())
                        .count();
                    assert_eq!(
                        differ,
                        0,
                        "{name}: m={m} n={n} k={k} bias={bias} {act:?} residual={} \
                         shared_a_max={shared_a_max} threads={threads}: {differ} differ",
                        residual.is_some()
                    );
                }
            }
        }
    }
}

/// `fast` against [`kernel_scalar_bf16::ScalarBf16Kernel`], bit for bit: GEMMs on edge shapes
/// (empty, one K block and several, an odd k whose last pair is padded, partial tiles in
/// both directions), with and without bias, identity and ReLU (the in-kernel epilogues),
/// with and without residual, both packing paths, one to three threads; then the packing
/// of A and its bf16 rounding value for value.
#[cfg(target_arch = "x86_64")]
fn bf16_kernel_matches_portable<K: Microkernel<A = f32, B = half::bf16>>(fast: K, name: &str) {
    let mut rng = SplitMix(80);
    let shapes = [
        (0, 4, 4),
        (4, 0, 4),
        (4, 4, 0),
        (1, 1, 1),
        (63, 2, 10),
        (2, 63, 10),
        (29, 65, 7),
        (7, 33, 127),
        (15, 31, 65),
        (14, 32, 256),
        (29, 65, 257),
        (37, 100, 601),
        (15, 33, 1025),
        (1, 2304, 768),
        (20, 70, 2101),
        (5, 768, 3072),
        (127, 768, 768),
    ];
    gemms_match_portable(
        fast,
        kernel_scalar_bf16::ScalarBf16Kernel,
        Precision::Bf16,
        &shapes,
        &mut rng,
        name,
    );
    // Packing: the vector rounding gives the portable packing's values, bit for bit, on
    // special values too (ties to even and odd, overflow to infinity, NaNs, subnormals, −0).
    let (m, k) = (31, 700);
    let mut x = rng.vec(m * k);
    let specials = [
        f32::from_bits(0x3F80_8000), // tie, even below: stays
        f32::from_bits(0x3F81_8000), // tie, odd below: rounds up
        f32::from_bits(0x3F80_8001),
        f32::from_bits(0xBF81_7FFF),
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0xFF80_0001), // signalling NaN, negative
        f32::from_bits(0x7FBF_FFFF),
        f32::from_bits(0x0000_8001), // subnormal
        f32::MIN_POSITIVE,
        -0.0,
    ];
    x[..specials.len()].copy_from_slice(&specials);
    x[5 * k + 300..5 * k + 300 + specials.len()].copy_from_slice(&specials);
    let mr = K::MR;
    let len = m.div_ceil(mr) * mr * KC;
    for (pc, kc) in [(0, KC), (KC, KC), (2 * KC, k - 2 * KC), (3, 101), (1, 16)] {
        let mut want = vec![f32::NAN; len];
        let mut got = want.clone();
        pack_a_block_bf16_widened(&x, k, (0, m), pc, kc, mr, &mut want);
        fast.pack_a(&x, k, (0, m), pc, kc, mr, &[], &mut got);
        // Compare the slots the portable packing writes (rows < m, k < kc rounded up to a
        // pair); the vector path also zero-fills the rest of each group.
        for (i, (&w, &g)) in want.iter().zip(&got).enumerate() {
            let (q, within) = (i / (mr * KC), i % (mr * KC));
            let (group, row, kk) = (within / (mr * KG), within % (mr * KG) / KG, within % KG);
            let written = q * mr + row < m && group * KG + kk < kc.next_multiple_of(2);
            if written {
                assert_eq!(
                    w.to_bits(),
                    g.to_bits(),
                    "{name}: packing differs at {i} (pc={pc} kc={kc})"
                );
            }
        }
    }
    // The widened packing holds the values the bf16 packing rounds to.
    let mut widened = vec![f32::NAN; len];
    pack_a_block_bf16_widened(&x, k, (0, m), 0, KC, mr, &mut widened);
    for i in 0..m {
        for kk in 0..KC {
            let v = widened[(i / mr) * mr * KC + (kk / KG) * mr * KG + (i % mr) * KG + kk % KG];
            let rounded = half::bf16::from_f32(x[i * k + kk]);
            assert_eq!(
                v.to_bits(),
                rounded.to_f32().to_bits(),
                "row {i} k {kk}: widened packing is not the bf16 rounding"
            );
        }
    }
}

#[test]
fn int8_kernels_agree_bit_for_bit() {
    // Integer sums are exact and the rescaling is the same f32 operations: the VNNI, AVX2 and
    // portable kernels agree on every input (activations applied inside the kernel).
    #[cfg(target_arch = "x86_64")]
    {
        let mut ran = 0;
        if let Some(fast) = kernel_avx512_vnni::Avx512VnniKernel::detect() {
            int8_kernel_matches_portable(fast, "avx512 vnni");
            ran += 1;
        } else {
            println!("skipped avx512 vnni: this CPU has no AVX512_VNNI");
        }
        if let Some(fast) = kernel_avx2_i8::Avx2I8Kernel::detect() {
            int8_kernel_matches_portable(fast, "avx2 int8");
            ran += 1;
        } else {
            println!("skipped avx2 int8: this CPU has no AVX2");
        }
        println!("{ran} int8 kernels checked against the portable one");
        // GELU runs after the kernel over the stored tile, with the ISA's vector maths (FMA):
        // the SIMD kernels agree with each other there, not with the portable epilogue.
        if let (Some(vnni), Some(avx2)) = (
            kernel_avx512_vnni::Avx512VnniKernel::detect(),
            kernel_avx2_i8::Avx2I8Kernel::detect(),
        ) {
            let mut rng = SplitMix(79);
            for (m, n, k) in [(1, 1, 1), (7, 33, 127), (37, 100, 600), (16, 3072, 768)] {
                let x = rng.vec(m * k);
                let w = rng.vec(n * k);
                let b = rng.vec(n);
                let r = rng.vec(m * n);
                let packed =
                    PackedLinear::with_precision(&w, Some(&b), n, k, Precision::Int8).unwrap();
                for act in [Activation::Gelu, Activation::GeluTanh] {
                    let args = GemmArgs {
                        x: &x,
                        m,
                        w: &packed,
                        act,
                        residual: Some(&r),
                        shared_a_max: SHARED_A_MAX,
                    };
                    let mut one = vec![f32::NAN; m * n];
                    gemm_driver(vnni, args, &mut one);
                    let mut two = vec![f32::NAN; m * n];
                    gemm_driver(avx2, args, &mut two);
                    assert!(
                        one.iter()
                            .zip(&two)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "avx2 int8 vs vnni: m={m} n={n} k={k} {act:?} differ"
                    );
                }
            }
        }
    }
}

/// `fast` against [`kernel_scalar_i8::ScalarI8Kernel`], bit for bit: GEMMs on edge shapes
/// (one K block and several, partial tiles in both directions), with and without the
/// in-kernel epilogues (bias, ReLU, residual), both packing paths, one and several threads; then row quantisation
/// and packing byte for byte.
#[cfg(target_arch = "x86_64")]
fn int8_kernel_matches_portable<K: Microkernel<A = u8, B = i8>>(fast: K, name: &str) {
    let mut rng = SplitMix(78);
    let shapes = [
        (1, 1, 1),
        (63, 2, 10),
        (2, 63, 10),
        (37, 100, 600),
        (15, 33, 1025),
        (1, 2304, 768),
        (29, 65, 7),
        (7, 33, 127),
        (20, 70, 2100),
        (5, 768, 3072),
        (127, 768, 768),
    ];
    gemms_match_portable(
        fast,
        kernel_scalar_i8::ScalarI8Kernel,
        Precision::Int8,
        &shapes,
        &mut rng,
        name,
    );
    // Row quantisation and packing: the vector paths give the same bytes.
    let (m, k) = (31, 1500);
    let mut x = rng.vec(m * k);
    x[5 * k..6 * k].fill(0.0); // an all-zero row
    x[7 * k + 3] = 40.0; // an outlier
    x[9 * k + 5] = f32::NAN; // quantises to 0 on every path
    x[11 * k + 1400] = f32::INFINITY; // an infinite scale
    let quant: Vec<RowQuant> = x.chunks_exact(k).map(RowQuant::of_row).collect();
    let quant_hw: Vec<RowQuant> = x.chunks_exact(k).map(|r| fast.row_quant(r, &[])).collect();
    let bits = |q: &[RowQuant]| -> Vec<(u32, u32, i32)> {
        q.iter()
            .map(|r| (r.scale.to_bits(), r.inv_scale.to_bits(), r.zero))
            .collect()
    };
    assert_eq!(
        bits(&quant),
        bits(&quant_hw),
        "{name}: row quantisation differs"
    );
    let mr = K::MR;
    let len = m.div_ceil(mr) * mr * KC_I8;
    for (pc, kc) in [(0, KC_I8), (KC_I8, k - KC_I8), (3, 101)] {
        let mut a = vec![0xAAu8; len];
        let mut b = a.clone();
        pack_a_block_i8(&x, k, (0, m), pc, kc, mr, &quant, &mut a);
        fast.pack_a(&x, k, (0, m), pc, kc, mr, &quant, &mut b);
        assert!(a == b, "{name}: packing differs (pc={pc} kc={kc})");
    }
}

#[test]
fn int8_outlier_channels_are_exact_and_kernels_agree_bit_for_bit() {
    // Channels with activations far above the rest, kept out of the int8 product: every
    // ISA matches the reference on what it multiplies (the other channels dequantised,
    // these exact), beats the plain int8 result against f32, and the VNNI and portable
    // kernels agree bit for bit (identity and ReLU, on both packing paths).
    let mut rng = SplitMix(91);
    let shapes = [(37, 100, 600), (15, 33, 1025), (5, 1536, 384), (29, 65, 7)];
    let acts = [Activation::Identity, Activation::Gelu, Activation::Relu];
    for (case_index, &(m, n, k)) in shapes.iter().enumerate() {
        let outliers = [k - 1, 0, k / 2];
        let mut x = rng.vec(m * k);
        for (i, row) in x.chunks_exact_mut(k).enumerate() {
            for (c, &ch) in outliers.iter().enumerate() {
                row[ch] = 30.0 * (1.0 + c as f32) * if i % 2 == 0 { 1.0 } else { -1.0 };
            }
        }
        let w = rng.vec(n * k);
        let b = rng.vec(n);
        let r = rng.vec(m * n);
        let data = WeightData::F32(&w);
        let packed = PackedLinear::from_weight_with_outliers(
            data,
            Some(&b),
            n,
            k,
            Precision::Int8,
            &outliers,
        )
        .unwrap();
        let plain = PackedLinear::with_precision(&w, Some(&b), n, k, Precision::Int8).unwrap();
        let mut sorted = outliers.to_vec();
        sorted.sort_unstable();
        assert_eq!(packed.outlier_channels(), sorted);
        let w_seen = packed.unpack_weight();
        for j in 0..n {
            for &ch in &outliers {
                assert_eq!(
                    w_seen[j * k + ch],
                    w[j * k + ch],
                    "outlier weight [{j},{ch}]"
                );
            }
        }
        let skip = &sorted;
        let x_seen: Vec<f32> = x
            .chunks_exact(k)
            .flat_map(|row| {
                let q = RowQuant::of_row_skipping(row, skip);
                row.iter().enumerate().map(move |(c, &v)| {
                    if skip.contains(&c) {
                        v
                    } else {
                        q.dequantise(q.quantise(v))
                    }
                })
            })
            .collect();
        let act = acts[case_index % acts.len()];
        let case = Case {
            m,
            n,
            k,
            act,
            bias: true,
            residual: true,
        };
        let mut exact = vec![f32::NAN; m * n];
        linear_reference(&x, m, &w, Some(&b), n, k, act, Some(&r), &mut exact).unwrap();
        let max_err = |y: &[f32]| -> f32 {
            y.iter()
                .zip(&exact)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        };
        let want = expected(&case, &x_seen, &w_seen, Some(&b), Some(&r));
        for isa in supported_isas() {
            let mut out = vec![f32::NAN; m * n];
            linear_with_isa(isa, &x, m, &packed, act, Some(&r), &mut out).unwrap();
            check(&case, isa, &want, &out);
            let mut without = vec![f32::NAN; m * n];
            linear_with_isa(isa, &x, m, &plain, act, Some(&r), &mut without).unwrap();
            assert!(
                max_err(&out) < 0.5 * max_err(&without),
                "{case} on {isa}: outliers exact {} vs plain int8 {}",
                max_err(&out),
                max_err(&without)
            );
        }
        #[cfg(target_arch = "x86_64")]
        fast_int8_kernels_match_portable((&x[..], m, &packed, &r[..], &sorted[..]));
    }
}

/// [`outliers_match_portable`] for every fast int8 kernel this CPU has (saying which it
/// skipped).
#[cfg(target_arch = "x86_64")]
fn fast_int8_kernels_match_portable(inputs: (&[f32], usize, &PackedLinear, &[f32], &[usize])) {
    match kernel_avx512_vnni::Avx512VnniKernel::detect() {
        Some(fast) => outliers_match_portable(fast, "avx512 vnni", inputs),
        None => println!("avx512 vnni part skipped: this CPU has no AVX512_VNNI"),
    }
    match kernel_avx2_i8::Avx2I8Kernel::detect() {
        Some(fast) => outliers_match_portable(fast, "avx2 int8", inputs),
        None => println!("avx2 int8 part skipped: this CPU has no AVX2"),
    }
}

/// With outlier channels, `fast` against [`kernel_scalar_i8::ScalarI8Kernel`], bit for bit
/// (identity and ReLU, both packing paths), and its row quantisation skipping them (and
/// rotating the row, for a rotated weight).
#[cfg(target_arch = "x86_64")]
fn outliers_match_portable<K: Microkernel<A = u8, B = i8>>(
    fast: K,
    name: &str,
    (x, m, packed, r, sorted): (&[f32], usize, &PackedLinear, &[f32], &[usize]),
) {
    let (n, k) = (packed.n(), packed.k());
    // (GELU is each ISA's own, as for every precision: not part of the claim.)
    for act in [Activation::Identity, Activation::Relu] {
        for shared_a_max in [SHARED_A_MAX, 0] {
            let args = GemmArgs {
                x,
                m,
                w: packed,
                act,
                residual: Some(r),
                shared_a_max,
            };
            let mut hw = vec![f32::NAN; m * n];
            gemm_driver(fast, args, &mut hw);
            let mut portable = vec![f32::NAN; m * n];
            gemm_driver(kernel_scalar_i8::ScalarI8Kernel, args, &mut portable);
            let differ = hw
                .iter()
                .zip(&portable)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "{name}: m={m} n={n} k={k} {act:?}: {differ} differ"
            );
        }
    }
    let quant: Vec<RowQuant> = x
        .chunks_exact(k)
        .map(|row| RowQuant::of_row_skipping(row, sorted))
        .collect();
    let quant_hw: Vec<RowQuant> = x
        .chunks_exact(k)
        .map(|row| fast.row_quant(row, sorted))
        .collect();
    assert_eq!(quant, quant_hw, "{name}: row quantisation differs");
    let block = packed.rotation_block();
    if block > 1 {
        for row in x.chunks_exact(k) {
            let (mut want, mut got) = (vec![f32::NAN; k], vec![f32::NAN; k]);
            let q = RowQuant::of_row_rotated(row, sorted, block, &mut want);
            let q_hw = fast.row_quant_rotated(row, sorted, block, &mut got);
            assert_eq!(q, q_hw, "{name}: rotated row quantisation differs");
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: rotated rows differ"
            );
        }
    }
}

#[test]
fn row_quantisation_skipping_equals_zeroing_those_columns() {
    // 0 is always inside a row's range, so leaving columns out is zeroing them (and their
    // values are kept for the f32 products).
    let mut rng = SplitMix(92);
    for k in [1, 7, 16, 17, 100, 1537] {
        let mut row = rng.vec(k);
        row[k - 1] = 90.0;
        row[0] = -70.0;
        let mut skips = vec![vec![], vec![0], vec![k - 1], vec![0, k - 1], vec![k / 2]];
        skips.retain(|s| s.windows(2).all(|w| w[0] < w[1]));
        for skip in skips {
            let mut zeroed = row.clone();
            skip.iter().for_each(|&c| zeroed[c] = 0.0);
            let skipping = RowQuant::of_row_skipping(&row, &skip);
            let mut exact = [0.0; MAX_OUTLIER_CHANNELS];
            skip.iter().zip(&mut exact).for_each(|(&c, e)| *e = row[c]);
            let want = RowQuant {
                exact,
                ..RowQuant::of_row(&zeroed)
            };
            assert_eq!(skipping, want, "k={k} skip={skip:?}");
        }
    }
}

#[test]
fn channel_rotation_is_signs_then_the_block_hadamard_matrix() {
    assert_eq!(
        [0, 16, 32, 64, 100, 384, 704, 768, 1536, 3072].map(quant::rotation_block),
        [1, 1, 2, 4, 1, 8, 4, 16, 32, 32]
    );
    let mut rng = SplitMix(93);
    for (k, block) in [(32, 2), (384, 8), (1536, 32), (96, 2)] {
        // Small integers: every sum is exact, so the transform must equal x·H exactly,
        // H[c][d] = (−1)^popcount(t_c & t_d) for channels c, d of one lane of one run
        // (t = the channel's index within its lane), 0 otherwise.
        let row: Vec<f32> = (0..k).map(|_| (rng.uniform() * 64.0).round()).collect();
        let mut rotated = row.clone();
        quant::hadamard_channels(&mut rotated, block);
        let lanes = quant::ROTATION_LANES;
        let run = lanes * block;
        for (d, &got) in rotated.iter().enumerate() {
            let want: f32 = (0..k)
                .filter(|&c| c / run == d / run && c % lanes == d % lanes)
                .map(|c| {
                    let (tc, td) = ((c % run) / lanes, (d % run) / lanes);
                    let sign = if (tc & td).count_ones() % 2 == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    sign * row[c]
                })
                .sum();
            assert_eq!(got, want, "k={k} block={block} channel {d}");
        }
        // H·H = block·I.
        quant::hadamard_channels(&mut rotated, block);
        let scaled: Vec<f32> = row.iter().map(|&v| v * block as f32).collect();
        assert_eq!(rotated, scaled, "k={k}: H·H ≠ {block}·I");
    }
    // D·D = I, and D is not all one sign (about half the channels flip, in any window).
    let mut row: Vec<f32> = (0..1536).map(|c| c as f32).collect();
    quant::flip_signs(&mut row);
    for window in row.chunks(64) {
        let negative = window.iter().filter(|&&v| v < 0.0).count();
        assert!(
            (16..=48).contains(&negative),
            "{negative} of 64 signs negative"
        );
    }
    quant::flip_signs(&mut row);
    assert!(row.iter().enumerate().all(|(c, &v)| v == c as f32));
}

#[test]
fn rotated_int8_matches_its_definition_and_kernels_agree_bit_for_bit() {
    // A rotated int8 weight: every ISA computes exactly what the definition multiplies (X
    // with the outlier channels zeroed, rotated and quantised per row, times the rotated
    // weight dequantised; plus the outlier channels exact), the fast kernels agree with the
    // portable one bit for bit, and on rows with a few large values the result is closer
    // to f32 than without rotation.
    let mut rng = SplitMix(94);
    let shapes = [(37, 100, 384), (15, 33, 1536), (5, 64, 96), (29, 7, 768)];
    let acts = [Activation::Identity, Activation::Gelu, Activation::Relu];
    for (case_index, &(m, n, k)) in shapes.iter().enumerate() {
        let outliers = [k - 1, 0, k / 2];
        let mut x = rng.vec(m * k);
        for (i, row) in x.chunks_exact_mut(k).enumerate() {
            for (c, &ch) in outliers.iter().enumerate() {
                row[ch] = 30.0 * (1.0 + c as f32) * if i % 2 == 0 { 1.0 } else { -1.0 };
            }
            // Spikes that are not outlier channels: a different pair in every row.
            row[(7 * i + 3) % k] = 8.0;
            row[(13 * i + 5) % k] = -6.0;
        }
        let w = rng.vec(n * k);
        let b = rng.vec(n);
        let r = rng.vec(m * n);
        let data = WeightData::F32(&w);
        let pack = |rotation| {
            let nearest = Int8Rounding::Nearest;
            PackedLinear::from_weight_int8(data, Some(&b), n, k, &outliers, rotation, nearest)
                .unwrap()
        };
        let (packed, unrotated) = (pack(Int8Rotation::Always), pack(Int8Rotation::Never));
        let block = quant::rotation_block(k);
        assert!(block > 1 && packed.rotation_block() == block);
        assert_eq!(unrotated.rotation_block(), 1);
        let mut sorted = outliers.to_vec();
        sorted.sort_unstable();
        // What the kernels multiply: k rotated, dequantised columns, then the outliers.
        let wide = k + sorted.len();
        let mut x_seen = vec![0.0f32; m * wide];
        for (row, seen) in x.chunks_exact(k).zip(x_seen.chunks_exact_mut(wide)) {
            let mut rotated = vec![0.0; k];
            let q = RowQuant::of_row_rotated(row, &sorted, block, &mut rotated);
            for (s, &v) in seen.iter_mut().zip(&rotated) {
                *s = q.dequantise(q.quantise(v));
            }
            for (s, &c) in seen[k..].iter_mut().zip(&sorted) {
                *s = row[c];
            }
        }
        let wq = packed.quant.as_ref().unwrap();
        let columns = packed.outliers.as_ref().unwrap();
        let mut w_seen = vec![0.0f32; n * wide];
        for (j, seen) in w_seen.chunks_exact_mut(wide).enumerate() {
            let panel = packed.panel::<i8>(j / NR, 4);
            for (kk, s) in seen[..k].iter_mut().enumerate() {
                let q = panel[(kk / 4) * 4 * NR + 4 * (j % NR) + kk % 4];
                *s = wq.scale[j] * f32::from(q);
            }
            for (c, s) in seen[k..].iter_mut().enumerate() {
                *s = columns.weight[c * columns.n_pad + j];
            }
        }
        // Rotated back, the weight is the original, up to its int8 step.
        let back = packed.unpack_weight();
        for j in 0..n {
            let step = wq.scale[j] * block as f32;
            for kk in 0..k {
                let (got, want) = (back[j * k + kk], w[j * k + kk]);
                assert!(
                    (got - want).abs() <= step,
                    "unpacked [{j},{kk}]: {got} vs {want}"
                );
            }
        }
        let act = acts[case_index % acts.len()];
        let case = Case {
            m,
            n,
            k: wide,
            act,
            bias: true,
            residual: true,
        };
        let mut exact = vec![f32::NAN; m * n];
        linear_reference(&x, m, &w, Some(&b), n, k, act, Some(&r), &mut exact).unwrap();
        let rms_err = |y: &[f32]| -> f64 {
            let sum: f64 = y
                .iter()
                .zip(&exact)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            (sum / y.len() as f64).sqrt()
        };
        let want = expected(&case, &x_seen, &w_seen, Some(&b), Some(&r));
        for isa in supported_isas() {
            let mut out = vec![f32::NAN; m * n];
            linear_with_isa(isa, &x, m, &packed, act, Some(&r), &mut out).unwrap();
            check(&case, isa, &want, &out);
            let mut own = vec![f32::NAN; m * n];
            linear_impl(isa, &x, m, &packed, act, Some(&r), &mut own, 0).unwrap();
            assert!(
                own.iter()
                    .zip(&out)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{case} rotated on {isa}: per-task packing differs from shared packing"
            );
            let mut plain = vec![f32::NAN; m * n];
            linear_with_isa(isa, &x, m, &unrotated, act, Some(&r), &mut plain).unwrap();
            // A block of 2 mixes pairs only: it must not hurt; from 8 up it must help.
            let gain = if block >= 8 { 0.8 } else { 1.0 };
            assert!(
                rms_err(&out) < gain * rms_err(&plain),
                "{case} on {isa}: rotated rms error {:.3e} vs unrotated {:.3e}",
                rms_err(&out),
                rms_err(&plain)
            );
        }
        #[cfg(target_arch = "x86_64")]
        fast_int8_kernels_match_portable((&x[..], m, &packed, &r[..], &sorted[..]));
    }
}

#[test]
fn calibrated_rotation_follows_the_rows() {
    // Rows spread evenly (uniform): rotated, they turn Gaussian and their range widens, so
    // rotation does not pay. The same rows with a large value somewhere in each: it does.
    // Calibration rows of the wrong length are an error.
    let mut rng = SplitMix(95);
    let (n, k, rows) = (64, 768, 40);
    let w = rng.vec(n * k);
    let even = rng.vec(rows * k);
    let mut spiky = even.clone();
    for (i, row) in spiky.chunks_exact_mut(k).enumerate() {
        row[(37 * i + 11) % k] = 25.0;
    }
    let data = WeightData::F32(&w);
    let pack = |x: &[f32]| {
        let (rotation, nearest) = (Int8Rotation::Calibrated(x), Int8Rounding::Nearest);
        PackedLinear::from_weight_int8(data, None, n, k, &[], rotation, nearest)
    };
    assert_eq!(pack(&even).unwrap().rotation_block(), 1);
    assert_eq!(pack(&spiky).unwrap().rotation_block(), 16);
    assert!(matches!(
        pack(&even[..k + 1]),
        Err(KernelError::InvalidShape { .. })
    ));
}

#[test]
fn gptq_rounding_lowers_the_error_on_inputs_like_the_calibration_and_ignores_threads() {
    let mut rng = SplitMix(77);
    let (n, k) = (48, 384);
    // Inputs whose channels move together (a few shared factors, as activations do) and
    // two channels far larger than the rest.
    let factors = 24;
    let mixing = rng.vec(factors * k);
    let mut draw = |rows: usize| -> Vec<f32> {
        let mut x = vec![0.0f32; rows * k];
        for row in x.chunks_exact_mut(k) {
            let z = rng.vec(factors);
            for (c, v) in row.iter_mut().enumerate() {
                let shared: f32 = (0..factors).map(|f| z[f] * mixing[f * k + c]).sum();
                *v = shared + 0.2 * rng.uniform();
            }
            row[5] *= 40.0;
            row[100] *= 25.0;
        }
        x
    };
    let calibration = draw(1500);
    let held_out = draw(64);
    let w = SplitMix(78).vec(n * k);
    let b = SplitMix(79).vec(n);
    let pack = |rounding| {
        let rotation = Int8Rotation::Calibrated(&calibration);
        PackedLinear::from_weight_int8(
            WeightData::F32(&w),
            Some(&b),
            n,
            k,
            &[5, 100],
            rotation,
            rounding,
        )
        .unwrap()
    };
    let run = |packed: &PackedLinear| {
        let mut y = vec![f32::NAN; 64 * n];
        linear(&held_out, 64, packed, Activation::Identity, None, &mut y).unwrap();
        y
    };
    let exact = {
        let mut y = vec![0.0; 64 * n];
        linear_reference(
            &held_out,
            64,
            &w,
            Some(&b),
            n,
            k,
            Activation::Identity,
            None,
            &mut y,
        )
        .unwrap();
        y
    };
    let error = |y: &[f32]| -> f64 {
        y.iter()
            .zip(&exact)
            .map(|(a, e)| f64::from(a - e).powi(2))
            .sum()
    };
    let nearest = run(&pack(Int8Rounding::Nearest));
    let gptq = run(&pack(Int8Rounding::Gptq(&calibration)));
    assert!(
        error(&gptq) < 0.85 * error(&nearest),
        "GPTQ {} vs nearest {}",
        error(&gptq),
        error(&nearest)
    );
    // The packed weight does not depend on the threads that packed it.
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let again = pool.install(|| run(&pack(Int8Rounding::Gptq(&calibration))));
        assert!(
            again
                .iter()
                .zip(&gptq)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{threads} threads"
        );
    }
    // Rows of the wrong length are refused, as for the rotation's.
    let rows = Int8Rounding::Gptq(&calibration[..k + 1]);
    let refused = PackedLinear::from_weight_int8(
        WeightData::F32(&w),
        None,
        n,
        k,
        &[],
        Int8Rotation::Never,
        rows,
    );
    assert!(matches!(refused, Err(KernelError::InvalidShape { .. })));
}

#[test]
fn bad_outlier_channels_are_errors() {
    let w = vec![1.0f32; 16];
    for outliers in [&[8usize][..], &[1, 1], &[0, 1, 2, 3, 4]] {
        let packed = PackedLinear::from_weight_with_outliers(
            WeightData::F32(&w),
            None,
            2,
            8,
            Precision::Int8,
            outliers,
        );
        assert!(
            matches!(packed, Err(KernelError::InvalidShape { .. })),
            "{outliers:?} accepted"
        );
    }
}

#[test]
fn fma_isas_agree_bit_for_bit() {
    // AVX2 and AVX-512 run the same FMA chain per element, and the same epilogue maths.
    let isas: Vec<Isa> = supported_isas()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect();
    if isas.len() < 2 {
        println!("skipped: fewer than two FMA ISAs on this CPU ({isas:?})");
        return;
    }
    let mut rng = SplitMix(7);
    let (m, n, k) = (37, 100, 600);
    let x = rng.vec(m * k);
    let w = rng.vec(n * k);
    let b = rng.vec(n);
    let packed = PackedLinear::new(&w, Some(&b), n, k).unwrap();
    let mut outs = Vec::new();
    for &isa in &isas {
        let mut out = vec![f32::NAN; m * n];
        linear_with_isa(isa, &x, m, &packed, Activation::Identity, None, &mut out).unwrap();
        outs.push(out);
    }
    for (isa, out) in isas.iter().zip(&outs).skip(1) {
        assert!(
            out.iter()
                .zip(&outs[0])
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{isa} differs from {}",
            isas[0]
        );
    }
}

fn run_in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn rows_are_independent_of_batch_and_threads() {
    let mut rng = SplitMix(1234);
    // Big enough to be split into many tasks (rows and panels) on several threads.
    // (k = 704 = 16·44: an int8 weight rotates it in Hadamard blocks of 4.)
    let (m, n, k) = (301, 200, 704);
    let x = rng.vec(m * k);
    let w = rng.vec(n * k);
    let b = rng.vec(n);
    let r = rng.vec(m * n);
    let rotated = PackedLinear::from_weight_int8(
        WeightData::F32(&w),
        Some(&b),
        n,
        k,
        &[3, 500],
        Int8Rotation::Always,
        Int8Rounding::Nearest,
    )
    .unwrap();
    assert_eq!(rotated.rotation_block(), 4);
    let packings = [Precision::F32, Precision::Bf16, Precision::Int8]
        .map(|precision| PackedLinear::with_precision(&w, Some(&b), n, k, precision).unwrap());
    for (packed, rotation) in packings
        .iter()
        .map(|p| (p, ""))
        .chain([(&rotated, " rotated")])
    {
        let precision = format!("{}{rotation}", packed.precision());
        for isa in supported_isas() {
            for act in [Activation::Gelu, Activation::Identity] {
                let full = |threads: usize| {
                    run_in_pool(threads, || {
                        let mut out = vec![f32::NAN; m * n];
                        linear_with_isa(isa, &x, m, packed, act, Some(&r), &mut out).unwrap();
                        out
                    })
                };
                let one = full(1);
                for threads in [2, 3, 4] {
                    let many = full(threads);
                    assert!(
                        one.iter()
                            .zip(&many)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa} {precision} {act:?}: 1 vs {threads} threads differ"
                    );
                }
                // Row windows of every alignment relative to MR, computed alone.
                for (start, len) in [
                    (0, 1),
                    (1, 1),
                    (13, 1),
                    (14, 2),
                    (100, 7),
                    (290, 11),
                    (5, 64),
                ] {
                    let xs = &x[start * k..(start + len) * k];
                    let rs = &r[start * n..(start + len) * n];
                    let mut out = vec![f32::NAN; len * n];
                    run_in_pool(2, || {
                        linear_with_isa(isa, xs, len, packed, act, Some(rs), &mut out)
                    })
                    .unwrap();
                    let expected = &one[start * n..(start + len) * n];
                    assert!(
                        out.iter()
                            .zip(expected)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa} {precision} {act:?}: rows {start}..{} alone differ from the batch",
                        start + len
                    );
                }
            }
        }
    }
}

#[test]
fn bad_lengths_are_errors_and_leave_out_untouched() {
    let w = PackedLinear::new(&[1.0; 6], None, 3, 2).unwrap();
    let mut out = vec![7.0f32; 3];
    assert!(matches!(
        linear(&[1.0; 3], 1, &w, Activation::Identity, None, &mut out),
        Err(KernelError::LengthMismatch { tensor: "x", .. })
    ));
    assert!(matches!(
        linear(&[1.0; 2], 1, &w, Activation::Identity, None, &mut out[..2]),
        Err(KernelError::LengthMismatch { tensor: "out", .. })
    ));
    assert!(matches!(
        linear(
            &[1.0; 2],
            1,
            &w,
            Activation::Identity,
            Some(&[0.0; 4]),
            &mut out
        ),
        Err(KernelError::LengthMismatch {
            tensor: "residual",
            ..
        })
    ));
    assert_eq!(out, [7.0; 3]);
    assert!(PackedLinear::new(&[1.0; 5], None, 3, 2).is_err());
    assert!(PackedLinear::new(&[1.0; 6], Some(&[0.0; 2]), 3, 2).is_err());
    assert!(PackedLinear::new(&[], None, usize::MAX, 2).is_err());
    assert!(matches!(
        linear(&[], usize::MAX, &w, Activation::Identity, None, &mut out),
        Err(KernelError::ShapeOverflow { .. })
    ));
}

#[test]
fn plan_covers_every_row_and_panel_once() {
    for mr in [4, 6, 14] {
        for threads in [1, 2, 3, 8, 16] {
            for m in [1, 2, 13, 14, 15, 100, 128, 512, 4096] {
                for (n_panels, shared) in [1, 2, 3, 24, 96]
                    .into_iter()
                    .flat_map(|n| [(n, false), (n, true)])
                {
                    let p = plan(m, n_panels, mr, threads, shared);
                    assert_eq!(p.rows_per_task % mr, 0);
                    assert!(p.row_tasks * p.rows_per_task >= m);
                    assert!((p.row_tasks - 1) * p.rows_per_task < m);
                    assert!(p.panel_tasks * p.panels_per_task >= n_panels);
                    assert!((p.panel_tasks - 1) * p.panels_per_task < n_panels);
                    assert!(p.rows_per_task <= MC_MAX.max(mr));
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// The CI guard of `bluss/matrixmultiply`: if this CPU has AVX-512F (or `EMBER_EXPECT_ISA`
/// names an ISA), that path must be detected *and* actually executed.
#[test]
fn expected_isa_paths_are_exercised() {
    let mut expected = Vec::new();
    if std::is_x86_feature_detected!("avx512f") {
        expected.push(Isa::Avx512);
    }
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        expected.push(Isa::Avx2);
    }
    if let Ok(name) = std::env::var("EMBER_EXPECT_ISA") {
        let isa = Isa::from_name(&name).expect("EMBER_EXPECT_ISA must be avx512, avx2 or scalar");
        assert!(
            isa.is_supported(),
            "EMBER_EXPECT_ISA={name} but this CPU lacks it"
        );
        expected.push(isa);
    }
    let mut rng = SplitMix(99);
    let (m, n, k) = (20, 40, 30);
    let x = rng.vec(m * k);
    let w = PackedLinear::new(&rng.vec(n * k), None, n, k).unwrap();
    for isa in expected {
        assert!(
            supported_isas().contains(&isa),
            "{isa} detected by the CPU but not offered"
        );
        let before = kernel_tiles_run(isa);
        let mut out = vec![f32::NAN; m * n];
        linear_with_isa(isa, &x, m, &w, Activation::Identity, None, &mut out).unwrap();
        assert!(
            kernel_tiles_run(isa) > before,
            "{isa} path was not exercised"
        );
        println!("{isa}: exercised");
    }
    if std::is_x86_feature_detected!("avx512bf16") && Isa::Avx512.is_supported() {
        let before = kernel_avx512_bf16::TILES.load(std::sync::atomic::Ordering::Relaxed);
        let w = PackedLinear::with_precision(&rng.vec(n * k), None, n, k, Precision::Bf16).unwrap();
        let mut out = vec![f32::NAN; m * n];
        linear_with_isa(Isa::Avx512, &x, m, &w, Activation::Identity, None, &mut out).unwrap();
        assert!(
            kernel_avx512_bf16::TILES.load(std::sync::atomic::Ordering::Relaxed) > before,
            "avx512 bf16 path was not exercised"
        );
        println!("avx512 bf16: exercised");
    }
    if Isa::Avx2.is_supported() {
        // Bf16 on the AVX2 path is the AVX2 bf16 kernel (with or without AVX512_BF16).
        let before = kernel_avx2_bf16::TILES.load(std::sync::atomic::Ordering::Relaxed);
        let w = PackedLinear::with_precision(&rng.vec(n * k), None, n, k, Precision::Bf16).unwrap();
        let mut out = vec![f32::NAN; m * n];
        linear_with_isa(Isa::Avx2, &x, m, &w, Activation::Identity, None, &mut out).unwrap();
        assert!(
            kernel_avx2_bf16::TILES.load(std::sync::atomic::Ordering::Relaxed) > before,
            "avx2 bf16 path was not exercised"
        );
        println!("avx2 bf16: exercised");
    }
    if Isa::Avx512.is_supported() {
        // Without AVX512_BF16 the AVX-512 path runs the AVX-512F bf16 kernel; with it, that
        // kernel is unreachable through `linear`, so run it directly.
        let before = kernel_avx512f_bf16::TILES.load(std::sync::atomic::Ordering::Relaxed);
        let w = PackedLinear::with_precision(&rng.vec(n * k), None, n, k, Precision::Bf16).unwrap();
        let mut out = vec![f32::NAN; m * n];
        if std::is_x86_feature_detected!("avx512bf16") {
            let args = GemmArgs {
                x: &x,
                m,
                w: &w,
                act: Activation::Identity,
                residual: None,
                shared_a_max: SHARED_A_MAX,
            };
            let kern = kernel_avx512f_bf16::Avx512fBf16Kernel::detect()
                .expect("AVX-512F is supported, so is its bf16 kernel");
            gemm_driver(kern, args, &mut out);
        } else {
            linear_with_isa(Isa::Avx512, &x, m, &w, Activation::Identity, None, &mut out).unwrap();
        }
        assert!(
            kernel_avx512f_bf16::TILES.load(std::sync::atomic::Ordering::Relaxed) > before,
            "avx512f bf16 path was not exercised"
        );
        println!("avx512f bf16: exercised");
    }
    if std::is_x86_feature_detected!("avx512vnni") && Isa::Avx512.is_supported() {
        let before = kernel_avx512_vnni::TILES.load(std::sync::atomic::Ordering::Relaxed);
        let w = PackedLinear::with_precision(&rng.vec(n * k), None, n, k, Precision::Int8).unwrap();
        let mut out = vec![f32::NAN; m * n];
        linear_with_isa(Isa::Avx512, &x, m, &w, Activation::Identity, None, &mut out).unwrap();
        assert!(
            kernel_avx512_vnni::TILES.load(std::sync::atomic::Ordering::Relaxed) > before,
            "avx512 vnni (int8) path was not exercised"
        );
        println!("avx512 vnni int8: exercised");
    }
    if Isa::Avx2.is_supported() {
        // Int8 on the AVX2 path is the AVX2 int8 kernel (with or without VNNI on the CPU).
        let before = kernel_avx2_i8::TILES.load(std::sync::atomic::Ordering::Relaxed);
        let w = PackedLinear::with_precision(&rng.vec(n * k), None, n, k, Precision::Int8).unwrap();
        let mut out = vec![f32::NAN; m * n];
        linear_with_isa(Isa::Avx2, &x, m, &w, Activation::Identity, None, &mut out).unwrap();
        assert!(
            kernel_avx2_i8::TILES.load(std::sync::atomic::Ordering::Relaxed) > before,
            "avx2 int8 path was not exercised"
        );
        println!("avx2 int8: exercised");
    }
    if std::env::var_os("EMBER_ISA").is_none() {
        assert_eq!(
            active_isa(),
            crate::isa::best_isa(),
            "active ISA is not the best one"
        );
    }
}

#[cfg(target_arch = "aarch64")]
/// The aarch64 side of `expected_isa_paths_are_exercised`: NEON is in every aarch64 CPU, so
/// it must be offered, be the best ISA, and its kernel must actually run for f32, f16 and
/// bf16 panels. `EMBER_ISA=scalar` must still force the portable path.
#[test]
fn neon_path_is_exercised() {
    use half::{bf16, f16};
    use std::sync::atomic::Ordering;
    assert!(
        supported_isas().contains(&Isa::Neon),
        "NEON not offered on aarch64"
    );
    assert_eq!(crate::isa::best_isa(), Isa::Neon);
    let mut rng = SplitMix(99);
    let (m, n, k) = (20, 40, 30);
    let x = rng.vec(m * k);
    let w = rng.vec(n * k);
    let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
    for (name, data) in [
        ("f32", WeightData::F32(&w)),
        ("f16", WeightData::F16(&w16)),
        ("bf16", WeightData::Bf16(&wb16)),
    ] {
        let packed = PackedLinear::from_weight(data, None, n, k, Precision::F32).unwrap();
        let before = kernel_neon::TILES.load(Ordering::Relaxed);
        let mut out = vec![f32::NAN; m * n];
        linear_with_isa(
            Isa::Neon,
            &x,
            m,
            &packed,
            Activation::Identity,
            None,
            &mut out,
        )
        .unwrap();
        assert!(
            kernel_neon::TILES.load(Ordering::Relaxed) > before,
            "neon {name} panels: path was not exercised"
        );
        println!("neon {name} panels: exercised");
    }
    match std::env::var("EMBER_ISA").as_deref() {
        Err(_) => assert_eq!(active_isa(), Isa::Neon, "active ISA is not NEON"),
        Ok("scalar") => assert_eq!(active_isa(), Isa::Scalar, "EMBER_ISA=scalar ignored"),
        Ok(_) => {}
    }
}

#[cfg(target_arch = "x86_64")]
/// Tiles run by an ISA's microkernel so far (test builds count them).
fn kernel_tiles_run(isa: Isa) -> usize {
    use std::sync::atomic::Ordering;
    match isa {
        Isa::Scalar => kernel_scalar::TILES.load(Ordering::Relaxed),
        Isa::Avx2 => kernel_avx2::TILES.load(Ordering::Relaxed),
        Isa::Avx512 => kernel_avx512::TILES.load(Ordering::Relaxed),
    }
}

#[cfg(target_arch = "x86_64")]
/// Single-thread GFLOP/s on BERT-base shapes, per ISA. Run with
/// `cargo test --release -p ember-cpu gemm_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn gemm_throughput() {
    let shapes = [
        ("qkv      [128,768]x[2304,768]", 128, 2304, 768),
        ("attn_out [128,768]x[768,768] ", 128, 768, 768),
        ("ffn_up   [128,768]x[3072,768]", 128, 3072, 768),
        ("ffn_down [128,3072]x[768,3072]", 128, 768, 3072),
        ("small    [16,768]x[768,768]  ", 16, 768, 768),
        ("large    [1024,768]x[3072,768]", 1024, 3072, 768),
    ];
    // EMBER_GEMM_SHAPES="m,n,k;m,n,k" replaces the list (for tuning experiments).
    let custom: Vec<(String, usize, usize, usize)> = std::env::var("EMBER_GEMM_SHAPES")
        .map(|v| {
            v.split(';')
                .map(|t| {
                    let d: Vec<usize> = t.split(',').map(|x| x.trim().parse().unwrap()).collect();
                    (
                        format!("[{},{}]x[{},{}]", d[0], d[2], d[1], d[2]),
                        d[0],
                        d[1],
                        d[2],
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let shapes: Vec<(String, usize, usize, usize)> = if custom.is_empty() {
        shapes
            .iter()
            .map(|&(s, m, n, k)| (s.to_string(), m, n, k))
            .collect()
    } else {
        custom
    };
    let isas: Vec<Isa> = match std::env::var("EMBER_ISA") {
        Ok(name) => Isa::from_name(&name).into_iter().collect(),
        Err(_) => supported_isas(),
    };
    let mut rng = SplitMix(5);
    for isa in isas {
        for (name, m, n, k) in shapes.iter().cloned() {
            let x = rng.vec(m * k);
            // EMBER_BENCH_DTYPE=bf16|int8: those kernels (GFLOP/s counts 2·m·n·k whatever the
            // dtype; the ratio stays to the f32 FMA peak).
            let precision = std::env::var("EMBER_BENCH_DTYPE")
                .ok()
                .and_then(|d| Precision::from_name(d.trim_end_matches("-avx512f")))
                .unwrap_or_default();
            let w =
                PackedLinear::with_precision(&rng.vec(n * k), Some(&rng.vec(n)), n, k, precision)
                    .unwrap();
            let mut out = vec![0.0f32; m * n];
            let flops = 2.0 * (m * n * k) as f64;
            // Host noise (shared machine, turbo) moves absolute numbers by ±10%: interleave
            // short peak measurements and report the median of per-round ratios.
            // EMBER_BENCH_THREADS (default 1): pool size; the ratio is to threads × peak.
            // EMBER_BENCH_ACT=gelu|gelu_new|relu (default identity): the fused epilogue.
            let act = std::env::var("EMBER_BENCH_ACT")
                .ok()
                .and_then(|a| Activation::from_hf_name(&a))
                .unwrap_or(Activation::Identity);
            // EMBER_BENCH_DTYPE=bf16-avx512f: bf16 on the AVX-512 path through the AVX-512F
            // kernel of CPUs without AVX512_BF16 (unreachable through `linear` on a CPU with it).
            let avx512f_bf16 = match std::env::var("EMBER_BENCH_DTYPE").as_deref() {
                Ok("bf16-avx512f") => kernel_avx512f_bf16::Avx512fBf16Kernel::detect(),
                _ => None,
            };
            let threads: usize = std::env::var("EMBER_BENCH_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let mut rounds: Vec<(f64, f64)> = run_in_pool(threads, || {
                (0..7)
                    .map(|_| {
                        let peak = fma_peak_gflops(isa, 5.0);
                        let reps = ((6e9 / flops) as usize).clamp(3, 400);
                        let mut best = f64::MAX;
                        for _ in 0..reps {
                            let t = std::time::Instant::now();
                            match avx512f_bf16 {
                                Some(kern) if isa == Isa::Avx512 => {
                                    let args = GemmArgs {
                                        x: &x,
                                        m,
                                        w: &w,
                                        act,
                                        residual: None,
                                        shared_a_max: SHARED_A_MAX,
                                    };
                                    gemm_driver(kern, args, &mut out);
                                }
                                _ => linear_with_isa(isa, &x, m, &w, act, None, &mut out).unwrap(),
                            }
                            best = best.min(t.elapsed().as_secs_f64());
                        }
                        let gflops = flops / best / 1e9;
                        (
                            gflops,
                            peak.map_or(f64::NAN, |p| gflops / (p * threads as f64)),
                        )
                    })
                    .collect()
            });
            rounds.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
            let (gflops, ratio) = rounds[rounds.len() / 2];
            if ratio.is_nan() {
                println!("{isa:7} {name}: {gflops:7.1} GFLOP/s");
            } else {
                let percent = ratio * 100.0;
                let kernel = if avx512f_bf16.is_some() && isa == Isa::Avx512 {
                    " (avx512f kernel)"
                } else {
                    ""
                };
                println!(
                    "{isa:7} {precision}{kernel} {name}: {gflops:7.1} GFLOP/s  ({percent:5.1}% of f32 FMA peak)"
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// Measured FMA peak of one core (GFLOP/s), the denominator of the GEMM ratio.
#[test]
#[ignore]
fn fma_peak() {
    for isa in supported_isas() {
        if let Some(g) = fma_peak_gflops(isa, 200.0) {
            println!("{isa}: FMA peak {g:.1} GFLOP/s per core");
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// Microkernel alone, operands hot in cache: the ceiling the blocking loops can reach.
#[test]
#[ignore]
fn microkernel_throughput() {
    let Some(kern) = kernel_avx512::Avx512Kernel::<f32>::detect() else {
        println!("skipped: no AVX-512");
        return;
    };
    let mr = kernel_avx512::MR;
    for kc in [128usize, 256] {
        let a = vec![0.5f32; KC * mr];
        let b = vec![0.25f32; kc * NR];
        let mut c = vec![0.0f32; mr * NR];
        let reps = 20_000_000 / kc;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                // SAFETY: a, b, c are sized for one full tile.
                unsafe {
                    kern.tile(
                        kc,
                        a.as_ptr(),
                        b.as_ptr(),
                        c.as_mut_ptr(),
                        NR,
                        mr,
                        NR,
                        mr,
                        true,
                        None,
                    )
                };
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let flops = 2.0 * (reps * kc * mr * NR) as f64;
        println!(
            "avx512 microkernel kc={kc}: {:.1} GFLOP/s",
            flops / best / 1e9
        );
    }
}

#[cfg(target_arch = "x86_64")]
fn d_len(m: usize) -> usize {
    m.div_ceil(14) * 14 * KC
}

#[cfg(target_arch = "x86_64")]
/// Cost of packing A (a strided row copy), in ns per element.
#[test]
#[ignore]
fn pack_a_throughput() {
    let mut rng = SplitMix(3);
    let (m, k, kc) = (128, 768, 256);
    let x = rng.vec(m * k);
    let mut dst = vec![0.0f32; m.div_ceil(14) * 14 * KC];
    let reps = 2000;
    let mut time = |name: &str, pack: &dyn Fn(&mut [f32])| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                pack(&mut dst);
                std::hint::black_box(&mut dst);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name}: {:.3} ns/element",
            best / reps as f64 / (m * kc) as f64 * 1e9
        );
    };
    time("portable pack_a", &|d| {
        pack_a_block(&x, k, (0, m), 256, kc, 14, d)
    });
    if let Some(kern) = kernel_avx512::Avx512Kernel::<f32>::detect() {
        time("avx512 pack_a", &|d| {
            kern.pack_a(&x, k, (0, m), 256, kc, 14, &[], d)
        });
        // Both packings must agree exactly.
        let mut a = vec![0.0f32; d_len(m)];
        let mut b = vec![0.0f32; d_len(m)];
        pack_a_block(&x, k, (0, m), 256, kc, 14, &mut a);
        kern.pack_a(&x, k, (0, m), 256, kc, 14, &[], &mut b);
        assert_eq!(a, b);
    }
}

#[test]
fn f16_is_refused_on_the_cpu() {
    let err = PackedLinear::with_precision(&[1.0; 8], None, 2, 4, Precision::F16).unwrap_err();
    assert!(
        matches!(err, KernelError::UnsupportedPrecision { .. }),
        "{err}"
    );
    assert_eq!(Precision::from_name("fp16"), Some(Precision::F16));
}
