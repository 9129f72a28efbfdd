//! Element-wise activations, `y = act(x)`, as used after BERT's FFN up-projection.
//!
//! | variant    | formula                                    | HF `hidden_act`                  |
//! |------------|--------------------------------------------|----------------------------------|
//! | `Gelu`     | `½·x·(1 + erf(x/√2))` (exact, `nn.GELU()`) | `gelu`                           |
//! | `GeluTanh` | `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` | `gelu_new`, `gelu_pytorch_tanh`  |
//! | `Relu`     | `max(x, 0)`                                | `relu`                           |
//! | `Identity` | `x`                                        | `linear`                         |
//!
//! `Gelu` is evaluated as `x·Φ(x)` with `Φ` from `erfc` (see [`crate::math`]: one polynomial,
//! one `exp`, no cancellation for negative `x`); `GeluTanh` as `x / (1 + e^{−2u})`,
//! `u = √(2/π)·(x + 0.044715·x³)`, which equals `½·x·(1 + tanh u)` exactly in real
//! arithmetic. Both are within ~1·10⁻⁷·max(|x|, 1) of the f64 formulas.
//!
//! The same vector code runs as the GEMM epilogue (`epilogue_row`): bias, activation and
//! residual are applied once, after the full K reduction: `y = act(acc + b) + r`.

use crate::isa::{active_isa, Isa};
use crate::math::{erf_f64, exp, gelu};
use crate::simd::{isa_dispatch, Simd};

/// An element-wise activation function (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `y = x`.
    Identity,
    /// Exact GELU: `½·x·(1 + erf(x/√2))`, torch's `nn.GELU()`, HF `"gelu"`.
    Gelu,
    /// Tanh-approximated GELU, HF `"gelu_new"` / `"gelu_pytorch_tanh"`.
    GeluTanh,
    /// `y = max(x, 0)`.
    Relu,
    /// SiLU (swish): `x / (1 + e^{−x})`, torch's `nn.SiLU()`, HF `"silu"` / `"swish"` (the
    /// gate of SwiGLU feed-forwards: NomicBERT's).
    Silu,
}

impl Activation {
    /// Maps a Hugging Face `config.json` `hidden_act` string to an activation.
    ///
    /// ```
    /// use ember_cpu::Activation;
    /// assert_eq!(Activation::from_hf_name("gelu"), Some(Activation::Gelu));
    /// assert_eq!(Activation::from_hf_name("gelu_new"), Some(Activation::GeluTanh));
    /// assert_eq!(Activation::from_hf_name("swish"), Some(Activation::Silu));
    /// assert_eq!(Activation::from_hf_name("mish"), None);
    /// ```
    pub fn from_hf_name(name: &str) -> Option<Activation> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            "silu" | "swish" => Some(Activation::Silu),
            "linear" | "identity" => Some(Activation::Identity),
            _ => None,
        }
    }

    /// The activation in f64, for references.
    pub fn reference(self, x: f64) -> f64 {
        match self {
            Activation::Identity => x,
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Gelu => 0.5 * x * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + u.tanh())
            }
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_TANH_CUBIC: f32 = 0.044_715;

/// `act(v)` lane-wise.
#[inline(always)]
pub(crate) fn activate<S: Simd>(s: S, act: Activation, v: S::V) -> S::V {
    match act {
        Activation::Identity => v,
        Activation::Relu => s.relu(v),
        Activation::Gelu => gelu(s, v),
        Activation::GeluTanh => {
            // −2u = −2√(2/π)·x·(1 + 0.044715·x²)
            let v2 = s.mul(v, v);
            let inner = s.fma(v2, s.splat(GELU_TANH_CUBIC), s.splat(1.0));
            let minus_2u = s.mul(s.mul(v, s.splat(-2.0 * SQRT_2_OVER_PI)), inner);
            // Floor at −80: e^{−80} is still a normal float (subnormals trap to microcode on
            // x86) and 1 + e^{−80} = 1 exactly.
            let minus_2u = s.clamp(minus_2u, -80.0, f32::INFINITY);
            s.div(v, s.add(s.splat(1.0), exp(s, minus_2u)))
        }
        Activation::Silu => {
            // torch's x / (1 + e^{−x}), the exponent floored at −80 as above (x > 80 gives x).
            let minus_x = s.clamp(s.mul(v, s.splat(-1.0)), -80.0, f32::INFINITY);
            s.div(v, s.add(s.splat(1.0), exp(s, minus_x)))
        }
    }
}

/// `row[j] = act(row[j] + bias[j]) + residual[j]`, with absent terms skipped. This is the
/// GEMM epilogue; it is element-wise, so tiling cannot change its result.
///
/// `bias` and `residual`, when present, must be at least `row.len()` long (extra ignored).
#[inline(always)]
pub(crate) fn epilogue_row<S: Simd>(
    s: S,
    row: &mut [f32],
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
) {
    let n = row.len();
    if bias.is_some_and(|b| b.len() < n) || residual.is_some_and(|r| r.len() < n) {
        debug_assert!(false, "epilogue_row: short bias/residual");
        return;
    }
    if act == Activation::Identity && bias.is_none() && residual.is_none() {
        return;
    }
    // One monomorphic loop per activation keeps the `match` out of the inner loop.
    match act {
        Activation::Identity => epilogue_loop::<S, IdentityFn>(s, row, bias, residual),
        Activation::Relu => epilogue_loop::<S, ReluFn>(s, row, bias, residual),
        Activation::Gelu => epilogue_loop::<S, GeluFn>(s, row, bias, residual),
        Activation::GeluTanh => epilogue_loop::<S, GeluTanhFn>(s, row, bias, residual),
        Activation::Silu => epilogue_loop::<S, SiluFn>(s, row, bias, residual),
    }
}

/// [`epilogue_row`] over the rows of a strided tile: for `i < rows`,
/// `C[i·ldc .. i·ldc + cols] = act(C[..]) + R[i·ldr ..]` (no bias: the GEMM kernel added it).
/// One call per tile keeps the dispatch cost off the per-row path.
///
/// # Safety
/// For every `i < rows`, `c + i·ldc` must be valid for reading and writing `cols` floats (and
/// not aliased meanwhile), and, unless `residual` is null, `residual + i·ldr` valid for
/// reading `cols` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn epilogue_tile<S: Simd>(
    s: S,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    act: Activation,
    residual: *const f32,
    ldr: usize,
) {
    for i in 0..rows {
        // SAFETY: the caller guarantees row i of C (and of the residual, if any).
        let (row, res) = unsafe {
            (
                std::slice::from_raw_parts_mut(c.add(i * ldc), cols),
                (!residual.is_null())
                    .then(|| std::slice::from_raw_parts(residual.add(i * ldr), cols)),
            )
        };
        epilogue_row(s, row, None, act, res);
    }
}

/// An activation as a type, so loops are specialised by monomorphisation. (Not closures:
/// a closure's body is a separate function that does not inherit `#[target_feature]`, and
/// when it is too big to inline, every intrinsic in it becomes a call.)
trait Lanewise {
    fn apply<S: Simd>(s: S, v: S::V) -> S::V;
}

struct IdentityFn;
struct ReluFn;
struct GeluFn;
struct GeluTanhFn;
struct SiluFn;

impl Lanewise for IdentityFn {
    #[inline(always)]
    fn apply<S: Simd>(_: S, v: S::V) -> S::V {
        v
    }
}
impl Lanewise for ReluFn {
    #[inline(always)]
    fn apply<S: Simd>(s: S, v: S::V) -> S::V {
        s.relu(v)
    }
}
impl Lanewise for GeluFn {
    #[inline(always)]
    fn apply<S: Simd>(s: S, v: S::V) -> S::V {
        activate(s, Activation::Gelu, v)
    }
}
impl Lanewise for GeluTanhFn {
    #[inline(always)]
    fn apply<S: Simd>(s: S, v: S::V) -> S::V {
        activate(s, Activation::GeluTanh, v)
    }
}
impl Lanewise for SiluFn {
    #[inline(always)]
    fn apply<S: Simd>(s: S, v: S::V) -> S::V {
        activate(s, Activation::Silu, v)
    }
}

#[inline(always)]
fn epilogue_loop<S: Simd, F: Lanewise>(
    s: S,
    row: &mut [f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) {
    let n = row.len();
    let full = n - n % S::LANES;
    let ptr = row.as_mut_ptr();
    let mut j = 0;
    while j < full {
        // SAFETY: j + LANES ≤ full ≤ n; bias/residual hold at least n floats.
        unsafe {
            let mut v = s.load(ptr.add(j));
            if let Some(b) = bias {
                v = s.add(v, s.load(b.as_ptr().add(j)));
            }
            v = F::apply(s, v);
            if let Some(r) = residual {
                v = s.add(v, s.load(r.as_ptr().add(j)));
            }
            s.store(ptr.add(j), v);
        }
        j += S::LANES;
    }
    if full < n {
        let w = n - full;
        // SAFETY: full + w = n; partial accesses touch only those w floats.
        unsafe {
            let mut v = s.load_partial(ptr.add(full), w);
            if let Some(b) = bias {
                v = s.add(v, s.load_partial(b.as_ptr().add(full), w));
            }
            v = F::apply(s, v);
            if let Some(r) = residual {
                v = s.add(v, s.load_partial(r.as_ptr().add(full), w));
            }
            s.store_partial(ptr.add(full), v, w);
        }
    }
}

#[inline(always)]
fn apply_activation_body<S: Simd>(s: S, act: Activation, x: &mut [f32]) {
    epilogue_row(s, x, None, act, None);
}

isa_dispatch!(
    /// [`apply_activation`] on an explicit instruction set (`Err` if this CPU lacks it).
    pub fn apply_activation_with_isa(act: Activation, x: &mut [f32]) -> () => apply_activation_body
);

/// `x[i] = act(x[i])` in place, on the [`active_isa`].
///
/// ```
/// use ember_cpu::{activation::apply_activation, Activation};
/// let mut x = [-1.0f32, 0.0, 2.0];
/// apply_activation(Activation::Relu, &mut x);
/// assert_eq!(x, [0.0, 0.0, 2.0]);
/// ```
pub fn apply_activation(act: Activation, x: &mut [f32]) {
    if apply_activation_with_isa(active_isa(), act, x).is_err() {
        // active_isa() is always supported; this cannot happen, but stay panic-free.
        let _ = apply_activation_with_isa(Isa::Scalar, act, x);
    }
}

/// Values of `x` (`rows · 2F`) below which [`gated_activation`] stays on the calling thread.
const SEQUENTIAL_GATED_VALUES: usize = 1 << 15;

/// A gated linear unit's gate, ModernBERT's GeGLU (transformers' `ModernBertMLP`:
/// `input, gate = Wi(x).chunk(2, dim=-1)`, then `act(input) * gate`): for `x` `[rows, 2F]`,
/// `out[r, j] = act(x[r, j]) · x[r, F + j]` into `out` `[rows, F]`, on the [`active_isa`].
/// Each value is the f32 activation times the gate, rounded once, as torch computes it.
pub fn gated_activation(
    act: Activation,
    x: &[f32],
    rows: usize,
    f: usize,
    out: &mut [f32],
) -> Result<(), crate::KernelError> {
    const OP: &str = "gated_activation";
    let width = crate::error::checked_elems(OP, "x", f, 2)?;
    crate::error::check_len(
        OP,
        "x",
        crate::error::checked_elems(OP, "x", rows, width)?,
        x.len(),
    )?;
    crate::error::check_len(
        OP,
        "out",
        crate::error::checked_elems(OP, "out", rows, f)?,
        out.len(),
    )?;
    if rows == 0 || f == 0 {
        return Ok(());
    }
    let gate = |(x, out): (&[f32], &mut [f32])| {
        let (input, gate) = x.split_at(f);
        out.copy_from_slice(input);
        apply_activation(act, out);
        for (o, g) in out.iter_mut().zip(gate) {
            *o *= g;
        }
    };
    if x.len() < SEQUENTIAL_GATED_VALUES {
        x.chunks_exact(width)
            .zip(out.chunks_exact_mut(f))
            .for_each(gate);
    } else {
        use rayon::prelude::*;
        x.par_chunks_exact(width)
            .zip(out.par_chunks_exact_mut(f))
            .for_each(gate);
    }
    Ok(())
}

/// Plain-loop reference of [`gated_activation`]: the activation in f64, rounded to f32,
/// times the gate.
pub fn gated_activation_reference(act: Activation, x: &[f32], f: usize, out: &mut [f32]) {
    if f == 0 {
        return;
    }
    for (x, out) in x.chunks_exact(2 * f).zip(out.chunks_exact_mut(f)) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = act.reference(x[j] as f64) as f32 * x[f + j];
        }
    }
}

/// Plain-loop reference: `x[i] = act(x[i])` evaluated in f64.
pub fn apply_activation_reference(act: Activation, x: &mut [f32]) {
    for v in x {
        *v = act.reference(*v as f64) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::supported_isas;

    #[inline(always)]
    fn epilogue_body<S: Simd>(
        s: S,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    ) {
        epilogue_row(s, row, bias, act, residual)
    }
    isa_dispatch!(fn epilogue_with_isa(
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    ) -> () => epilogue_body);

    const ALL: [Activation; 5] = [
        Activation::Identity,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Relu,
        Activation::Silu,
    ];

    #[test]
    fn gated_activation_matches_its_reference() {
        for (rows, f) in [(1, 1), (3, 17), (5, 96), (70, 300), (0, 8), (4, 0)] {
            let x: Vec<f32> = (0..rows * 2 * f)
                .map(|i| ((i * 7919 % 1000) as f32 / 125.0) - 4.0)
                .collect();
            for act in ALL {
                let mut want = vec![f32::NAN; rows * f];
                gated_activation_reference(act, &x, f, &mut want);
                let mut got = vec![f32::NAN; rows * f];
                gated_activation(act, &x, rows, f, &mut got).unwrap();
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 4e-7 * (1.0 + w.abs()),
                        "{act:?} rows={rows} f={f} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
        let mut out = [0.0f32; 4];
        assert!(gated_activation(Activation::Gelu, &[0.0; 7], 1, 4, &mut out).is_err());
        assert!(gated_activation(Activation::Gelu, &[0.0; 8], 1, 4, &mut out[..3]).is_err());
    }

    fn inputs() -> Vec<f32> {
        // Dense grid over the interesting range plus extremes; odd length exercises tails.
        let mut xs: Vec<f32> = (0..20_001).map(|i| -10.0 + i as f32 * 1e-3).collect();
        xs.extend([-1e30, -100.0, -30.0, 30.0, 100.0, 1e30, 0.0, -0.0, 1e-30]);
        xs
    }

    #[test]
    fn every_isa_matches_reference() {
        let xs = inputs();
        for isa in supported_isas() {
            for act in ALL {
                let mut fast = xs.clone();
                apply_activation_with_isa(isa, act, &mut fast).unwrap();
                let mut worst = 0.0f64;
                for (&x, &y) in xs.iter().zip(&fast) {
                    let r = act.reference(x as f64);
                    // ~1e-7 absolute on erf/tanh, scaled by |x|, plus a couple of ulp of y.
                    let tol =
                        2e-7 * (x.abs() as f64).max(1.0) + 3.0 * f32::EPSILON as f64 * r.abs();
                    let err = (y as f64 - r).abs();
                    assert!(err <= tol, "{isa} {act:?} x={x}: got {y}, want {r}");
                    worst = worst.max(err / (x.abs() as f64).max(1.0));
                }
                println!("{isa} {act:?}: max |err|/max(|x|,1) = {worst:.2e}");
            }
        }
    }

    /// Elements per ns for each activation and ISA.
    /// `cargo test --release -p ember-cpu activation_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn activation_throughput() {
        let x: Vec<f32> = (0..1 << 16)
            .map(|i| (i as f32 * 1e-3).sin() * 4.0)
            .collect();
        for isa in supported_isas() {
            for act in ALL {
                let mut y = x.clone();
                let mut best = f64::MAX;
                for _ in 0..50 {
                    y.copy_from_slice(&x);
                    let t = std::time::Instant::now();
                    apply_activation_with_isa(isa, act, &mut y).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "{isa:7} {act:?}: {:.2} elements/ns",
                    x.len() as f64 / best / 1e9
                );
            }
        }
    }

    #[test]
    fn nan_propagates() {
        for isa in supported_isas() {
            for act in ALL {
                let mut x = vec![f32::NAN; 19];
                apply_activation_with_isa(isa, act, &mut x).unwrap();
                assert!(x.iter().all(|v| v.is_nan()), "{isa} {act:?}");
            }
        }
    }

    #[test]
    fn epilogue_adds_bias_and_residual_around_activation() {
        for isa in supported_isas() {
            let n = 37;
            let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.5).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let r: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut y = x.clone();
            epilogue_with_isa(isa, &mut y, Some(&b), Activation::Gelu, Some(&r)).unwrap();
            for j in 0..n {
                let want = Activation::Gelu.reference((x[j] + b[j]) as f64) + r[j] as f64;
                assert!((y[j] as f64 - want).abs() < 1e-6, "{isa} j={j}");
            }
        }
    }
}
