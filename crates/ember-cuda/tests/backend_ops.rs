//! The backend-ops harness (after ggml's `test-backend-ops`): every CUDA op against the CPU's
//! plain-loop reference (`ember_cpu::*_reference`, `ember_pooling`), one case at a time.
//!
//! A case is named `op/shape/dtype` (`gemm-mma128x128/300x3072x768+b+gelu/bf16`). Its inputs are
//! fresh random values (never zeros), rounded to the case's dtype first so that the reference
//! computes on exactly what the GPU reads; the output is poisoned with NaN before the launch.
//! Error: `NMSE = Σ(got − want)² / Σ want²`, bounded per op and dtype ([`Case::bound`]); a NaN
//! or infinity anywhere fails.
//!
//! Without a GPU (or driver, or NVRTC) each test prints that it skipped and passes;
//! `EMBER_REQUIRE_CUDA=1` makes that a failure. `EMBER_CUDA_CASES=attention` runs only the cases
//! whose name contains the string; `EMBER_TEST_SEED=n` changes the inputs. On a GPU machine:
//!
//! ```sh
//! cargo test --release -p ember-cuda --test backend_ops -- --nocapture --test-threads 1
//! ```
//!
//! On the emulated driver (`LD_LIBRARY_PATH=$(scripts/emulated-cuda.sh)`, kernels run on the CPU)
//! the cases above [`EMULATED_MAX_MULTIPLY_ADDS`] say they skipped.

use ember_bert::PositionIds;
use ember_cpu::activation::gated_activation_reference;
use ember_cpu::attention::attention_varlen_reference_with_terms;
use ember_cpu::gemm::linear_reference;
use ember_cpu::layernorm::layernorm_reference;
use ember_cpu::rotary::apply_rotary_reference;
use ember_cpu::{Activation, Isa, PackedLinear};
use ember_cuda::activation::gated_activation;
use ember_cuda::attention::{attention_varlen, attention_varlen_windowed, DeviceRelativeBias};
use ember_cuda::embedding::{embedding_layernorm, EmbeddingTables, Positions};
use ember_cuda::gemm::{linear, linear_with_kernel, DeviceLinear, GemmKernel};
use ember_cuda::layernorm::{layernorm, layernorm_into};
use ember_cuda::pooling::{normalize_rows, pool};
use ember_cuda::rotary::{apply_rotary, DeviceRotary};
use ember_cuda::{CudaDevice, CudaError, Dtype, Element};
use ember_pooling::{PoolingConfig, PoolingMode};

/// splitmix64: deterministic inputs without a `rand` dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `len` values uniform in [-scale, scale).
    fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform() * scale).collect()
    }
}

/// Multiply-adds above which a case is skipped on the emulated driver (tens of millions per
/// second there): the large GEMM, attention and the f32 bit-identity shapes.
const EMULATED_MAX_MULTIPLY_ADDS: usize = 20_000_000;

/// Whether `device` is the emulated driver's (crates/ember-cuda/emu/driver), which names itself so.
fn emulated(device: &CudaDevice) -> bool {
    device.name().contains("emulated")
}

/// The device, or `None` after saying why `test` is skipped (a failure under
/// `EMBER_REQUIRE_CUDA=1`).
fn device_or_skip(test: &str) -> Option<CudaDevice> {
    match CudaDevice::open(0) {
        Ok(device) => {
            println!(
                "{test}: {} ({}, {} SMs), NVRTC {:?} from {}",
                device.name(),
                device.arch(),
                device.multiprocessors(),
                device.nvrtc().version(),
                device.nvrtc().path().display()
            );
            Some(device)
        }
        Err(err) if std::env::var("EMBER_REQUIRE_CUDA").as_deref() == Ok("1") => {
            panic!("{test}: EMBER_REQUIRE_CUDA=1 but no CUDA device: {err}")
        }
        Err(err) => {
            eprintln!("{test}: skipped: {err}");
            None
        }
    }
}

/// `x` rounded to `E` and back: what the device holds.
fn quantize<E: Element>(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| E::decode(E::encode(v))).collect()
}

/// `Σ(got − want)² / Σ want²`; NaN if `got` has a non-finite value, infinite on a length
/// mismatch.
fn nmse(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    if got.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        err += (g as f64 - w as f64).powi(2);
        norm += (w as f64).powi(2);
    }
    if norm == 0.0 {
        err
    } else {
        err / norm
    }
}

/// Whether an NMSE is within `bound`: false for NaN, which therefore never passes.
fn passes(nmse: f64, bound: f64) -> bool {
    nmse <= bound
}

/// The first few elements that differ most from the reference, for the failure message.
fn worst(got: &[f32], want: &[f32]) -> String {
    let mut diffs: Vec<(usize, f64)> = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| {
            let d = (g as f64 - w as f64).abs();
            (i, if d.is_nan() { f64::INFINITY } else { d })
        })
        .collect();
    diffs.sort_by(|a, b| b.1.total_cmp(&a.1));
    diffs
        .iter()
        .take(4)
        .map(|&(i, _)| format!("[{i}] {} vs {}", got[i], want[i]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a case computes.
#[derive(Clone, Debug)]
enum Op {
    Gemm {
        kernel: Option<GemmKernel>,
        m: usize,
        n: usize,
        k: usize,
        bias: bool,
        act: Activation,
        residual: bool,
    },
    Attention {
        seq_offsets: Vec<usize>,
        heads: usize,
        head_dim: usize,
        /// `Some(span)`: a random relative position bias (MPNet's) of that span.
        bias_span: Option<usize>,
        /// `Some(w)`: keys within `w` of each query only (ModernBERT's local layers).
        window: Option<usize>,
    },
    LayerNorm {
        rows: usize,
        hidden: usize,
        residual: bool,
        eps: f32,
        /// Into another buffer, the input kept (`layernorm_into`; no residual).
        into: bool,
    },
    /// ModernBERT's rotary positions on Q and K of a `[T, 3H]` buffer.
    Rotary {
        seq_offsets: Vec<usize>,
        heads: usize,
        head_dim: usize,
        theta: f64,
    },
    /// ModernBERT's GeGLU gate: `[rows, 2F]` → `[rows, F]`.
    Gated {
        rows: usize,
        f: usize,
        act: Activation,
    },
    Embedding {
        seq_offsets: Vec<usize>,
        hidden: usize,
        vocab: usize,
        max_positions: usize,
        /// `Some`: the RoBERTa family's position rows after this padding id, with the id
        /// also inside sequences.
        pad_token_id: Option<u32>,
        /// No position table (ModernBERT's rotary positions).
        rotary: bool,
    },
    Pool {
        seq_offsets: Vec<usize>,
        hidden: usize,
        modes: Vec<PoolingMode>,
        /// Tokens at each sequence's start left out (`include_prompt: false`).
        excluded: usize,
    },
    Normalize {
        rows: usize,
        dim: usize,
    },
}

#[derive(Clone, Debug)]
struct Case {
    op: Op,
    dtype: Dtype,
}

fn act_name(act: Activation) -> &'static str {
    match act {
        Activation::Identity => "",
        Activation::Gelu => "+gelu",
        Activation::GeluTanh => "+gelu_tanh",
        Activation::Relu => "+relu",
        Activation::Silu => "+silu",
    }
}

fn lens(seq_offsets: &[usize]) -> String {
    let lens: Vec<String> = seq_offsets
        .windows(2)
        .map(|w| (w[1] - w[0]).to_string())
        .collect();
    format!("L[{}]", lens.join(","))
}

impl Case {
    /// The case's size, in multiply-adds (elements touched for the memory-bound ops).
    fn multiply_adds(&self) -> usize {
        match &self.op {
            Op::Gemm { m, n, k, .. } => m * n * k,
            Op::Attention {
                seq_offsets,
                heads,
                head_dim,
                ..
            } => {
                let squares: usize = seq_offsets.windows(2).map(|w| (w[1] - w[0]).pow(2)).sum();
                2 * squares * heads * head_dim
            }
            Op::LayerNorm { rows, hidden, .. } => rows * hidden,
            Op::Rotary {
                seq_offsets,
                heads,
                head_dim,
                ..
            } => seq_offsets.last().copied().unwrap_or(0) * 2 * heads * head_dim,
            Op::Gated { rows, f, .. } => rows * f,
            Op::Embedding {
                seq_offsets,
                hidden,
                ..
            } => seq_offsets.last().copied().unwrap_or(0) * hidden,
            Op::Pool {
                seq_offsets,
                hidden,
                modes,
                ..
            } => seq_offsets.last().copied().unwrap_or(0) * hidden * modes.len(),
            Op::Normalize { rows, dim } => rows * dim,
        }
    }

    fn name(&self) -> String {
        let (op, shape) = match &self.op {
            Op::Gemm {
                kernel,
                m,
                n,
                k,
                bias,
                act,
                residual,
            } => {
                let kernel = match kernel {
                    None => "auto",
                    Some(GemmKernel::Mma128x128) => "mma128x128",
                    Some(GemmKernel::Mma64x64) => "mma64x64",
                    Some(GemmKernel::WgmmaTma128x256) => "wgmmatma128x256",
                    Some(GemmKernel::WgmmaTma128x128) => "wgmmatma128x128",
                    Some(GemmKernel::WgmmaTma128x128Occ2) => "wgmmatma128x128occ2",
                    Some(GemmKernel::WgmmaPingpong128x128) => "wgmmapingpong128x128",
                    Some(GemmKernel::WgmmaPingpongMc128x128) => "wgmmapingpongmc128x128",
                    Some(GemmKernel::WgmmaTmaStore128x256) => "wgmmatmastore128x256",
                    Some(GemmKernel::Wgmma128x256) => "wgmma128x256",
                    Some(GemmKernel::Wgmma128x128) => "wgmma128x128",
                    Some(GemmKernel::Wgmma64x128) => "wgmma64x128",
                    Some(GemmKernel::Simt) => "simt",
                };
                (
                    format!("gemm-{kernel}"),
                    format!(
                        "{m}x{n}x{k}{}{}{}",
                        if *bias { "+b" } else { "" },
                        act_name(*act),
                        if *residual { "+r" } else { "" }
                    ),
                )
            }
            Op::Attention {
                seq_offsets,
                heads,
                head_dim,
                bias_span,
                window,
            } => (
                "attention".to_owned(),
                format!(
                    "{}x{heads}x{head_dim}{}{}",
                    lens(seq_offsets),
                    bias_span.map_or(String::new(), |span| format!("+bias{span}")),
                    window.map_or(String::new(), |w| format!("+window{w}"))
                ),
            ),
            Op::LayerNorm {
                rows,
                hidden,
                residual,
                eps,
                into,
            } => (
                if *into { "layernorm-into" } else { "layernorm" }.to_owned(),
                format!(
                    "{rows}x{hidden}{},eps={eps:e}",
                    if *residual { "+r" } else { "" }
                ),
            ),
            Op::Rotary {
                seq_offsets,
                heads,
                head_dim,
                theta,
            } => (
                "rotary".to_owned(),
                format!("{}x{heads}x{head_dim},theta={theta}", lens(seq_offsets)),
            ),
            Op::Gated { rows, f, act } => {
                ("gated".to_owned(), format!("{rows}x{f}{}", act_name(*act)))
            }
            Op::Embedding {
                seq_offsets,
                hidden,
                vocab,
                max_positions,
                pad_token_id,
                rotary,
            } => (
                "embedding".to_owned(),
                format!(
                    "{}x{hidden},vocab={vocab},pos={max_positions}{}{}",
                    lens(seq_offsets),
                    pad_token_id.map_or(String::new(), |pad| format!(",pad={pad}")),
                    if *rotary { ",no-table" } else { "" }
                ),
            ),
            Op::Pool {
                seq_offsets,
                hidden,
                modes,
                excluded,
            } => {
                let modes: Vec<&str> = modes.iter().map(|m| m.name()).collect();
                let excluded = match excluded {
                    0 => String::new(),
                    p => format!(",excluding={p}"),
                };
                (
                    "pool".to_owned(),
                    format!(
                        "{}x{hidden},{}{excluded}",
                        lens(seq_offsets),
                        modes.join("+")
                    ),
                )
            }
            Op::Normalize { rows, dim } => ("normalize".to_owned(), format!("{rows}x{dim}")),
        };
        format!("{op}/{shape}/{}", self.dtype)
    }

    /// The NMSE a correct kernel stays under. Outputs in bf16/f16 carry one rounding each
    /// (relative ≤ 2⁻⁹ / 2⁻¹², NMSE ≈ 1e-6 / 2e-8 on average); f32 ops differ from the f64
    /// reference by accumulation order and libm (NMSE ≈ 1e-14); pooling writes f32 from f64
    /// sums of exactly representable inputs.
    fn bound(&self) -> f64 {
        match (&self.op, self.dtype) {
            (Op::Pool { .. } | Op::Normalize { .. }, _) => 1e-12,
            (_, Dtype::F32) => 1e-10,
            (_, Dtype::Bf16) => 2e-5,
            (_, Dtype::F16) => 1e-6,
        }
    }

    /// Runs the reference on the CPU and, given a device, the case on it: `(got, want)`.
    fn run(
        &self,
        device: Option<&CudaDevice>,
        rng: &mut SplitMix,
    ) -> Result<(Option<Vec<f32>>, Vec<f32>), CudaError> {
        match self.dtype {
            Dtype::F32 => self.run_as::<f32>(device, rng),
            Dtype::Bf16 => self.run_as::<half::bf16>(device, rng),
            Dtype::F16 => self.run_as::<half::f16>(device, rng),
        }
    }

    fn run_as<E: Element>(
        &self,
        device: Option<&CudaDevice>,
        rng: &mut SplitMix,
    ) -> Result<(Option<Vec<f32>>, Vec<f32>), CudaError> {
        match &self.op {
            &Op::Gemm {
                kernel,
                m,
                n,
                k,
                bias,
                act,
                residual,
            } => {
                // Weights scaled by 1/√k, as in a trained layer: outputs stay O(1).
                let x = quantize::<E>(&rng.vec(m * k, 1.0));
                let w = quantize::<E>(&rng.vec(n * k, 1.0 / (k as f32).sqrt()));
                let b = bias.then(|| rng.vec(n, 0.5));
                let r = residual.then(|| quantize::<E>(&rng.vec(m * n, 1.0)));
                let mut want = vec![0.0f32; m * n];
                linear_reference(&x, m, &w, b.as_deref(), n, k, act, r.as_deref(), &mut want)
                    .expect("reference shapes");

                let Some(device) = device else {
                    return Ok((None, want));
                };
                let x_d = device.upload::<E>(&x)?;
                let w_d = DeviceLinear::<E>::upload(device, &w, b.as_deref(), n, k)?;
                let r_d = r.as_deref().map(|r| device.upload::<E>(r)).transpose()?;
                let mut y_d = device.upload::<E>(&vec![f32::NAN; m * n])?;
                match kernel {
                    Some(kernel) => linear_with_kernel(
                        device,
                        kernel,
                        &x_d,
                        m,
                        &w_d,
                        act,
                        r_d.as_ref(),
                        &mut y_d,
                    )?,
                    None => linear(device, &x_d, m, &w_d, act, r_d.as_ref(), &mut y_d)?,
                }
                Ok((Some(device.download(&y_d)?), want))
            }
            Op::Attention {
                seq_offsets,
                heads,
                head_dim,
                bias_span,
                window,
            } => {
                let (t, h) = (*seq_offsets.last().unwrap(), heads * head_dim);
                // ×2 makes the softmax peaked enough for the online rescaling to matter.
                let qkv = quantize::<E>(&rng.vec(t * 3 * h, 2.0));
                let bias_values = bias_span.map(|span| rng.vec(heads * (2 * span + 1), 3.0));
                let bias = bias_span
                    .zip(bias_values.as_deref())
                    .map(|(span, values)| ember_cpu::RelativeBias { values, span });
                let mut want = vec![0.0f32; t * h];
                let terms = ember_cpu::AttentionTerms {
                    bias,
                    window: *window,
                };
                attention_varlen_reference_with_terms(
                    &qkv,
                    seq_offsets,
                    *heads,
                    *head_dim,
                    terms,
                    &mut want,
                )
                .expect("reference shapes");

                let Some(device) = device else {
                    return Ok((None, want));
                };
                let qkv_d = device.upload::<E>(&qkv)?;
                let offsets_d = device.upload_offsets(seq_offsets)?;
                let bias_d = bias
                    .map(|b| DeviceRelativeBias::upload(device, b.values, *heads, b.span))
                    .transpose()?;
                let mut out_d = device.upload::<E>(&vec![f32::NAN; t * h])?;
                attention_varlen_windowed(
                    device,
                    &qkv_d,
                    &offsets_d,
                    *heads,
                    *head_dim,
                    bias_d.as_ref(),
                    *window,
                    &mut out_d,
                )?;
                Ok((Some(device.download(&out_d)?), want))
            }
            &Op::LayerNorm {
                rows,
                hidden,
                residual,
                eps,
                into,
            } => {
                // Rows offset by their index: |μ| ≫ σ stresses the variance.
                let x: Vec<f32> = (0..rows * hidden)
                    .map(|i| rng.uniform() * 3.0 + (i / hidden) as f32)
                    .collect();
                let x = quantize::<E>(&x);
                let r = residual.then(|| quantize::<E>(&rng.vec(rows * hidden, 1.0)));
                let gamma: Vec<f32> = (0..hidden).map(|_| 1.0 + 0.5 * rng.uniform()).collect();
                let beta = rng.vec(hidden, 1.0);
                // The kernel adds the residual in f32 and normalises the sum.
                let mut want: Vec<f32> = match &r {
                    Some(r) => x.iter().zip(r).map(|(a, b)| a + b).collect(),
                    None => x.clone(),
                };
                layernorm_reference(&mut want, rows, hidden, &gamma, &beta, eps)
                    .expect("reference shapes");

                let Some(device) = device else {
                    return Ok((None, want));
                };
                let mut x_d = device.upload::<E>(&x)?;
                let r_d = r.as_deref().map(|r| device.upload::<E>(r)).transpose()?;
                let gamma_d = device.upload::<f32>(&gamma)?;
                let beta_d = device.upload::<f32>(&beta)?;
                if into {
                    let mut out_d = device.upload::<E>(&vec![f32::NAN; rows * hidden])?;
                    let (g, b) = (&gamma_d, &beta_d);
                    layernorm_into(device, &x_d, &mut out_d, rows, hidden, g, b, eps)?;
                    // The input is kept.
                    assert_eq!(
                        device.download(&x_d)?,
                        x,
                        "layernorm_into changed its input"
                    );
                    return Ok((Some(device.download(&out_d)?), want));
                }
                layernorm(
                    device,
                    &mut x_d,
                    r_d.as_ref(),
                    rows,
                    hidden,
                    &gamma_d,
                    &beta_d,
                    eps,
                )?;
                Ok((Some(device.download(&x_d)?), want))
            }
            &Op::Rotary {
                ref seq_offsets,
                heads,
                head_dim,
                theta,
            } => {
                let (t, h) = (*seq_offsets.last().unwrap(), heads * head_dim);
                let qkv = quantize::<E>(&rng.vec(t * 3 * h, 2.0));
                let max_len = seq_offsets
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .max()
                    .unwrap_or(0);
                let tables =
                    ember_cpu::Rotary::new(theta, head_dim, max_len).expect("rotary shapes");
                let mut want = qkv.clone();
                apply_rotary_reference(&mut want, seq_offsets, heads, theta, &tables)
                    .expect("reference shapes");

                let Some(device) = device else {
                    return Ok((None, want));
                };
                let mut qkv_d = device.upload::<E>(&qkv)?;
                let offsets_d = device.upload_offsets(seq_offsets)?;
                let rotary_d = DeviceRotary::upload(device, &tables)?;
                apply_rotary(device, &mut qkv_d, &offsets_d, heads, &rotary_d)?;
                Ok((Some(device.download(&qkv_d)?), want))
            }
            &Op::Gated { rows, f, act } => {
                let x = quantize::<E>(&rng.vec(rows * 2 * f, 3.0));
                let mut want = vec![0.0f32; rows * f];
                gated_activation_reference(act, &x, f, &mut want);

                let Some(device) = device else {
                    return Ok((None, want));
                };
                let x_d = device.upload::<E>(&x)?;
                let mut out_d = device.upload::<E>(&vec![f32::NAN; rows * f])?;
                gated_activation(device, act, &x_d, rows, f, &mut out_d)?;
                Ok((Some(device.download(&out_d)?), want))
            }
            &Op::Embedding {
                ref seq_offsets,
                hidden,
                vocab,
                max_positions,
                pad_token_id,
                rotary,
            } => {
                let position_ids = match pad_token_id {
                    None => PositionIds::FromZero,
                    Some(pad_token_id) => PositionIds::AfterPadding { pad_token_id },
                };
                let t = *seq_offsets.last().unwrap();
                let word = quantize::<E>(&rng.vec(vocab * hidden, 1.0));
                let position = if rotary {
                    vec![0.0; max_positions * hidden]
                } else {
                    quantize::<E>(&rng.vec(max_positions * hidden, 1.0))
                };
                let token_type = quantize::<E>(&rng.vec(2 * hidden, 1.0));
                let gamma: Vec<f32> = (0..hidden).map(|_| 1.0 + 0.5 * rng.uniform()).collect();
                let beta = rng.vec(hidden, 1.0);
                let ids: Vec<u32> = (0..t)
                    .map(|_| match pad_token_id {
                        // A quarter of the tokens are the padding id, inside the texts.
                        Some(pad) if rng.next_u64().is_multiple_of(4) => pad,
                        _ => (rng.next_u64() % vocab as u64) as u32,
                    })
                    .collect();
                // ember-bert's embedding step: (word + type[0]) + position, then LayerNorm.
                let mut want = vec![0.0f32; t * hidden];
                for w in seq_offsets.windows(2) {
                    let rows = position_ids.rows(&ids[w[0]..w[1]]);
                    for (pos, tok) in rows.zip(w[0]..w[1]) {
                        let id = ids[tok] as usize;
                        for j in 0..hidden {
                            want[tok * hidden + j] = (word[id * hidden + j] + token_type[j])
                                + position[pos * hidden + j];
                        }
                    }
                }
                layernorm_reference(&mut want, t, hidden, &gamma, &beta, 1e-12)
                    .expect("reference shapes");

                let Some(device) = device else {
                    return Ok((None, want));
                };
                let positions = match rotary {
                    true => Positions::Rotary { max_positions },
                    false => Positions::Table(&position),
                };
                let tables = EmbeddingTables::<E>::upload(
                    device,
                    &word,
                    positions,
                    &token_type,
                    &gamma,
                    &beta,
                    hidden,
                    position_ids,
                )?;
                let ids_d = device.upload_token_ids(&ids)?;
                let offsets_d = device.upload_offsets(seq_offsets)?;
                let mut out_d = device.upload::<E>(&vec![f32::NAN; t * hidden])?;
                embedding_layernorm(device, &ids_d, &offsets_d, &tables, 1e-12, &mut out_d)?;
                Ok((Some(device.download(&out_d)?), want))
            }
            Op::Pool {
                seq_offsets,
                hidden,
                modes,
                excluded,
            } => {
                let (t, n) = (*seq_offsets.last().unwrap(), seq_offsets.len() - 1);
                let x = quantize::<E>(&rng.vec(t * hidden, 2.0));
                let config = PoolingConfig {
                    embedding_dimension: *hidden,
                    modes: modes.clone(),
                    include_prompt: *excluded == 0,
                };
                let mut want = vec![0.0f32; n * config.output_dim()];
                ember_pooling::pool_excluding(&config, &x, seq_offsets, *excluded, &mut want)
                    .expect("reference");

                let Some(device) = device else {
                    return Ok((None, want));
                };
                let x_d = device.upload::<E>(&x)?;
                let offsets_d = device.upload_offsets(seq_offsets)?;
                let mut out_d = device.upload::<f32>(&vec![f32::NAN; want.len()])?;
                pool(
                    device, &x_d, &offsets_d, *hidden, modes, *excluded, &mut out_d,
                )?;
                Ok((Some(device.download(&out_d)?), want))
            }
            &Op::Normalize { rows, dim } => {
                let mut x = rng.vec(rows * dim, 3.0);
                // A zero row stays zero (‖x‖ is clamped to 1e-12).
                x[..dim].fill(0.0);
                let mut want = x.clone();
                ember_pooling::normalize_rows(&mut want, dim);

                let Some(device) = device else {
                    return Ok((None, want));
                };
                let mut x_d = device.upload::<f32>(&x)?;
                normalize_rows(device, &mut x_d, dim)?;
                Ok((Some(device.download(&x_d)?), want))
            }
        }
    }
}

/// Every case: shapes from 1 up to BERT-base at T = 300 and 2400, odd ones (not multiples of
/// any tile), every epilogue, every dtype an op handles.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let gemm = |kernel, m, n, k, bias, act, residual| Op::Gemm {
        kernel,
        m,
        n,
        k,
        bias,
        act,
        residual,
    };
    use Activation::{Gelu, GeluTanh, Identity, Relu, Silu};
    // Tensor cores: k % 8 == 0.
    let mma_shapes = [
        (1, 8, 8, false, Identity, false),
        (5, 24, 0, true, Gelu, true), // no k: act(b) + R
        (7, 13, 24, true, Relu, false),
        (64, 64, 32, false, Identity, true),
        (127, 129, 40, true, Gelu, true),
        (130, 200, 72, true, GeluTanh, false),
        (70, 96, 48, true, Silu, false),
        (300, 768, 768, true, Identity, true), // attention output + residual
        (300, 3072, 768, true, Gelu, false),   // FFN up + GELU
        (300, 768, 3072, true, Identity, true), // FFN down + residual
        (300, 2304, 768, true, Identity, false), // fused QKV
        // More tiles than the 132 multiprocessors of an H100 / H200 (and the emulated GPU's),
        // partial in m and n: several blocks a multiprocessor, or waves of them. The first is
        // small enough for the emulated GPU (18 M multiply-adds).
        (8500, 264, 8, true, Gelu, true), // 67 × 2 tiles of 128 × 256, 67 × 3 of 128 × 128
        (2100, 2056, 40, true, Identity, true), // 17 × 9 tiles of 128 × 256
    ];
    for dtype in [Dtype::Bf16, Dtype::F16] {
        // Every tensor-core kernel (all but the SIMT f32 one).
        for kernel in GemmKernel::ALL
            .into_iter()
            .filter(|&kernel| kernel != GemmKernel::Simt)
        {
            for &(m, n, k, bias, act, residual) in &mma_shapes {
                cases.push(Case {
                    op: gemm(Some(kernel), m, n, k, bias, act, residual),
                    dtype,
                });
            }
        }
        // The kernel `linear` chooses (in the family EMBER_CUDA_GEMM names, or the device's
        // default): BERT-base's attention output at T = 2400 and FFN up at T = 1536 (where the
        // default family takes WgmmaTma128x128Occ2 on an H100 / H200), and two shapes small
        // enough for the emulated GPU, one with fewer tiles than multiprocessors and one with more.
        for (m, n, k) in [
            (2400, 768, 768),
            (1536, 3072, 768),
            (130, 200, 72),
            (8500, 264, 8),
        ] {
            cases.push(Case {
                op: gemm(None, m, n, k, true, Gelu, true),
                dtype,
            });
        }
    }
    for &(m, n, k, bias, act, residual) in &[
        (1, 1, 1, false, Identity, false),
        (3, 5, 7, true, Relu, true),
        (65, 63, 17, true, GeluTanh, false),
        (33, 40, 24, true, Silu, true),
        (64, 96, 52, true, Gelu, false), // tiny BERT: H = 52
        (200, 384, 1536, true, Identity, true),
        (129, 1536, 384, true, Gelu, false),
    ] {
        cases.push(Case {
            op: gemm(Some(GemmKernel::Simt), m, n, k, bias, act, residual),
            dtype: Dtype::F32,
        });
    }
    cases.push(Case {
        op: gemm(None, 300, 768, 768, true, Gelu, true),
        dtype: Dtype::F32,
    });

    for dtype in Dtype::ALL {
        for (seq_offsets, heads, head_dim) in [
            (vec![0, 1], 1, 1),
            (vec![0, 5, 22], 4, 13),
            (vec![0, 3, 3, 7], 2, 8), // an empty sequence
            (vec![0, 40, 41, 74, 138, 238], 12, 32),
            (vec![0, 128, 256], 12, 64),
            (vec![0, 300], 2, 128),
        ] {
            cases.push(Case {
                op: Op::Attention {
                    seq_offsets,
                    heads,
                    head_dim,
                    bias_span: None,
                    window: None,
                },
                dtype,
            });
        }
        // ModernBERT's sliding windows: only the query itself; narrower than a 32-key tile
        // (whole tiles skipped, queries whose first tiles hold none of their keys); ModernBERT's
        // ±64 on sequences past it; wider than every sequence; with MPNet's bias too.
        for (seq_offsets, heads, head_dim, window, bias_span) in [
            (vec![0, 5, 22], 4, 13, 0, None),
            (vec![0, 100, 101, 140], 2, 16, 8, None),
            (vec![0, 40, 41, 74, 300], 12, 64, 64, None),
            (vec![0, 33, 34, 50], 2, 32, 200, None),
            (vec![0, 1, 3, 3, 70], 2, 64, 20, Some(100)),
        ] {
            cases.push(Case {
                op: Op::Attention {
                    seq_offsets,
                    heads,
                    head_dim,
                    bias_span,
                    window: Some(window),
                },
                dtype,
            });
        }
        for (seq_offsets, heads, head_dim, theta) in [
            (vec![0, 1], 1, 2, 10_000.0),
            (vec![0, 5, 22, 22, 90], 4, 16, 160_000.0),
            (vec![0, 300, 301], 12, 64, 10_000.0),
        ] {
            cases.push(Case {
                op: Op::Rotary {
                    seq_offsets,
                    heads,
                    head_dim,
                    theta,
                },
                dtype,
            });
        }
        for (rows, f, act) in [
            (1, 1, Gelu),
            (7, 96, Gelu),
            (300, 1152, Gelu),
            (33, 50, GeluTanh),
            (300, 3072, Silu), // NomicBERT's SwiGLU
            (5, 80, Silu),
        ] {
            cases.push(Case {
                op: Op::Gated { rows, f, act },
                dtype,
            });
        }
        // MPNet's relative position bias: spans just wide enough and wider; sequences past
        // one 32-key tile and one 16-query block.
        for (seq_offsets, heads, head_dim, span) in [
            (vec![0, 5, 22], 4, 13, 16),
            (vec![0, 40, 41, 74, 138], 12, 32, 127),
            (vec![0, 1, 3, 3, 70], 2, 64, 200),
        ] {
            cases.push(Case {
                op: Op::Attention {
                    seq_offsets,
                    heads,
                    head_dim,
                    bias_span: Some(span),
                    window: None,
                },
                dtype,
            });
        }
        for (rows, hidden, residual, eps) in [
            (1, 1, false, 1e-12),
            (3, 7, true, 1e-5),
            (64, 768, true, 1e-12),
            (40, 1024, false, 1e-12),
            (2, 1000, false, 1e-5),
            (300, 384, true, 1e-12),
        ] {
            cases.push(Case {
                op: Op::LayerNorm {
                    rows,
                    hidden,
                    residual,
                    eps,
                    into: false,
                },
                dtype,
            });
        }
        // ModernBERT's pre-LayerNorm: the input kept.
        cases.push(Case {
            op: Op::LayerNorm {
                rows: 65,
                hidden: 768,
                residual: false,
                eps: 1e-5,
                into: true,
            },
            dtype,
        });
        for hidden in [52, 384] {
            cases.push(Case {
                op: Op::Embedding {
                    seq_offsets: vec![0, 3, 10, 11, 31, 95],
                    hidden,
                    vocab: 100,
                    max_positions: 64,
                    pad_token_id: None,
                    rotary: false,
                },
                dtype,
            });
        }
        // ModernBERT: no position table.
        cases.push(Case {
            op: Op::Embedding {
                seq_offsets: vec![0, 3, 10, 11, 31, 95],
                hidden: 64,
                vocab: 100,
                max_positions: 64,
                pad_token_id: None,
                rotary: true,
            },
            dtype,
        });
        // RoBERTa: positions from pad_token_id + 1 = 2, so 62 tokens fill the 64 rows.
        cases.push(Case {
            op: Op::Embedding {
                seq_offsets: vec![0, 3, 10, 11, 31, 93],
                hidden: 52,
                vocab: 100,
                max_positions: 64,
                pad_token_id: Some(1),
                rotary: false,
            },
            dtype,
        });
        let every_mode = vec![
            PoolingMode::Cls,
            PoolingMode::Max,
            PoolingMode::Mean,
            PoolingMode::MeanSqrtLen,
            PoolingMode::WeightedMean,
            PoolingMode::LastToken,
        ];
        for hidden in [52, 384, 768] {
            cases.push(Case {
                op: Op::Pool {
                    seq_offsets: vec![0, 1, 6, 39, 300],
                    hidden,
                    modes: every_mode.clone(),
                    excluded: 0,
                },
                dtype,
            });
        }
        // A prompt's tokens left out: every mode where each sequence keeps some; and, past
        // whole sequences (1 and 5 tokens under 5 excluded), the modes that give a finite row
        // there (max gives -inf, which the harness refuses).
        cases.push(Case {
            op: Op::Pool {
                seq_offsets: vec![0, 2, 6, 39, 300],
                hidden: 384,
                modes: every_mode.clone(),
                excluded: 1,
            },
            dtype,
        });
        cases.push(Case {
            op: Op::Pool {
                seq_offsets: vec![0, 1, 6, 39, 300],
                hidden: 52,
                modes: every_mode
                    .iter()
                    .copied()
                    .filter(|&m| m != PoolingMode::Max)
                    .collect(),
                excluded: 5,
            },
            dtype,
        });
    }
    for (rows, dim) in [(5, 384), (3, 52), (2, 1)] {
        cases.push(Case {
            op: Op::Normalize { rows, dim },
            dtype: Dtype::F32,
        });
    }
    cases
}

#[test]
fn case_names_are_unique_and_say_op_shape_dtype() {
    let names: Vec<String> = cases().iter().map(Case::name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate case names");
    for name in &names {
        let parts: Vec<&str> = name.split('/').collect();
        assert_eq!(parts.len(), 3, "{name}");
        assert!(["f32", "bf16", "f16"].contains(&parts[2]), "{name}");
    }
}

/// Runs without a GPU: every case's inputs and reference can be built, and the reference is
/// finite and not all zeros (so a kernel that writes nothing cannot pass). Cases above 10⁸
/// multiply-adds are left to the GPU run (their f64 reference takes seconds).
#[test]
fn every_case_has_a_finite_nonzero_reference() {
    for (index, case) in cases().iter().enumerate() {
        if let Op::Gemm { m, n, k, .. } = case.op {
            if m * n * k > 100_000_000 {
                continue;
            }
        }
        let (got, want) = case.run(None, &mut SplitMix(index as u64)).unwrap();
        assert!(got.is_none());
        let name = case.name();
        assert!(!want.is_empty(), "{name}");
        assert!(want.iter().all(|v| v.is_finite()), "{name}");
        assert!(want.iter().any(|&v| v != 0.0), "{name}");
    }
}

#[test]
fn nmse_fails_nan_and_mismatched_lengths() {
    assert_eq!(nmse(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
    assert!((nmse(&[1.0, 2.0], &[1.0, 1.0]) - 0.5).abs() < 1e-12);
    assert!(!passes(nmse(&[f32::NAN, 2.0], &[1.0, 2.0]), 1.0));
    assert!(!passes(nmse(&[f32::INFINITY, 2.0], &[1.0, 2.0]), 1.0));
    assert!(!passes(nmse(&[1.0], &[1.0, 2.0]), 1.0));
}

/// Runs without a GPU: asking for CUDA there is a clear error, not a crash.
#[test]
fn open_without_a_driver_is_a_clear_error() {
    match CudaDevice::open(0) {
        Err(err @ CudaError::NoDriver) => {
            let text = err.to_string();
            assert!(
                text.starts_with("no CUDA driver found (libcuda.so)"),
                "{text}"
            );
            println!("as expected here: {text}");
        }
        Err(err) => println!("driver present, but: {err}"),
        Ok(device) => println!("a GPU is present: {}", device.name()),
    }
}

/// `EMBER_CUDA_CASES`: comma-separated substrings of case names; a case runs if it contains one
/// of the plain ones (or there are none) and none of those written `-substring`
/// (`EMBER_CUDA_CASES=-wgmma`: every case but the wgmma kernels').
struct CaseFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl CaseFilter {
    fn from_env() -> CaseFilter {
        Self::parse(&std::env::var("EMBER_CUDA_CASES").unwrap_or_default())
    }

    fn parse(text: &str) -> CaseFilter {
        let (exclude, include): (Vec<&str>, Vec<&str>) = text
            .split(',')
            .filter(|part| !part.is_empty())
            .partition(|part| part.starts_with('-'));
        CaseFilter {
            include: include.into_iter().map(str::to_owned).collect(),
            exclude: exclude.iter().map(|part| part[1..].to_owned()).collect(),
        }
    }

    fn admits(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|s| name.contains(s.as_str())))
            && !self.exclude.iter().any(|s| name.contains(s.as_str()))
    }
}

#[test]
fn case_filter_includes_and_excludes() {
    let all = CaseFilter::parse("");
    assert!(all.admits("gemm-wgmma128x128/1x8x8/bf16"));
    let no_wgmma = CaseFilter::parse("-wgmma");
    assert!(!no_wgmma.admits("gemm-wgmma128x128/1x8x8/bf16"));
    assert!(no_wgmma.admits("gemm-mma128x128/1x8x8/bf16"));
    let some = CaseFilter::parse("attention,gemm-simt,-/f16");
    assert!(some.admits("attention/L[3]x2x32/bf16"));
    assert!(!some.admits("attention/L[3]x2x32/f16"));
    assert!(!some.admits("layernorm/4x52/f32"));
}

#[test]
fn every_op_matches_the_cpu_reference() {
    let Some(device) = device_or_skip("every_op_matches_the_cpu_reference") else {
        return;
    };
    let filter = CaseFilter::from_env();
    let seed: u64 = std::env::var("EMBER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut failures = Vec::new();
    let (mut admitted, mut ran) = (0, 0);
    for (index, case) in cases().iter().enumerate() {
        let name = case.name();
        if !filter.admits(&name) {
            continue;
        }
        admitted += 1;
        if let Op::Gemm {
            kernel: Some(kernel),
            ..
        } = case.op
        {
            if !kernel.runs_on(device.arch()) {
                println!(
                    "skip {name:60} {kernel:?} does not run on {}",
                    device.arch()
                );
                continue;
            }
        }
        if emulated(&device) && case.multiply_adds() > EMULATED_MAX_MULTIPLY_ADDS {
            println!("skip {name:60} (emulated device)");
            continue;
        }
        ran += 1;
        let mut rng = SplitMix(seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
        let start = std::time::Instant::now();
        match case.run(Some(&device), &mut rng) {
            Ok((got, want)) => {
                let got = got.expect("a device ran the case");
                let err = nmse(&got, &want);
                let ok = passes(err, case.bound());
                println!(
                    "{:4} {name:60} NMSE {err:9.2e} (≤ {:7.1e}) {:6.0} ms",
                    if ok { "ok" } else { "FAIL" },
                    case.bound(),
                    start.elapsed().as_secs_f64() * 1e3
                );
                if !ok {
                    failures.push(format!(
                        "{name}: NMSE {err:.3e} > {:.1e}; worst: {}",
                        case.bound(),
                        worst(&got, &want)
                    ));
                }
            }
            Err(err) => {
                println!("FAIL {name:60} {err}");
                failures.push(format!("{name}: {err}"));
            }
        }
    }
    println!("{ran} cases, {} failed (seed {seed})", failures.len());
    // A filter that names no case (a typo, a renamed case) must not pass for having run nothing.
    assert!(admitted > 0, "EMBER_CUDA_CASES admits none of the cases");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// On AVX2/AVX-512 CPUs, ember-cpu's f32 GEMM is one FMA chain per output over k in order, then
/// `+ b`, ReLU, `+ R`: the SIMT kernel does the same operations in the same order, so the
/// results agree bit for bit (GELU excepted: the erf implementations differ).
#[test]
fn gemm_f32_is_bit_identical_to_the_cpu() {
    let Some(device) = device_or_skip("gemm_f32_is_bit_identical_to_the_cpu") else {
        return;
    };
    if ember_cpu::active_isa() == Isa::Scalar {
        eprintln!("gemm_f32_is_bit_identical_to_the_cpu: skipped: the CPU runs the scalar ISA");
        return;
    }
    let mut rng = SplitMix(41);
    for &(m, n, k, act) in &[
        (37, 70, 300, Activation::Identity),
        (300, 768, 768, Activation::Relu),
    ] {
        if emulated(&device) && m * n * k > EMULATED_MAX_MULTIPLY_ADDS {
            println!("skip {m}x{n}x{k} (emulated device)");
            continue;
        }
        let x = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 1.0 / (k as f32).sqrt());
        let b = rng.vec(n, 0.5);
        let r = rng.vec(m * n, 1.0);
        let packed = PackedLinear::new(&w, Some(&b), n, k).unwrap();
        let mut want = vec![0.0f32; m * n];
        ember_cpu::linear(&x, m, &packed, act, Some(&r), &mut want).unwrap();

        let w_d = DeviceLinear::<f32>::upload(&device, &w, Some(&b), n, k).unwrap();
        let x_d = device.upload::<f32>(&x).unwrap();
        let r_d = device.upload::<f32>(&r).unwrap();
        let mut y_d = device.upload::<f32>(&vec![f32::NAN; m * n]).unwrap();
        linear_with_kernel(
            &device,
            GemmKernel::Simt,
            &x_d,
            m,
            &w_d,
            act,
            Some(&r_d),
            &mut y_d,
        )
        .unwrap();
        let got = device.download(&y_d).unwrap();
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{m}x{n}x{k} {act:?}: {differ} of {} outputs differ",
            m * n
        );
    }
}

/// Bad shapes are refused on the host, before any launch.
#[test]
fn bad_shapes_are_errors() {
    let Some(device) = device_or_skip("bad_shapes_are_errors") else {
        return;
    };
    let bf16 = |len| device.zeros::<half::bf16>(len).unwrap();
    let w = DeviceLinear::<half::bf16>::upload(&device, &[0.5; 12 * 4], None, 4, 12).unwrap();
    let mut y = bf16(2 * 4);
    // k = 12 is not a multiple of 8: the tensor-core kernels refuse it.
    let err = linear(
        &device,
        &bf16(2 * 12),
        2,
        &w,
        Activation::Identity,
        None,
        &mut y,
    );
    assert!(
        matches!(err, Err(CudaError::InvalidShape { .. })),
        "{err:?}"
    );
    let err = linear(
        &device,
        &bf16(3 * 12),
        2,
        &w,
        Activation::Identity,
        None,
        &mut y,
    );
    assert!(
        matches!(err, Err(CudaError::LengthMismatch { .. })),
        "{err:?}"
    );
    let err = linear_with_kernel(
        &device,
        GemmKernel::Simt,
        &bf16(2 * 12),
        2,
        &w,
        Activation::Identity,
        None,
        &mut y,
    );
    assert!(
        matches!(err, Err(CudaError::InvalidShape { .. })),
        "{err:?}"
    );

    let offsets = device.upload_offsets(&[0, 2, 2, 4]).unwrap();
    let err = attention_varlen(
        &device,
        &bf16(4 * 3 * 129),
        &offsets,
        1,
        129,
        None,
        &mut bf16(4 * 129),
    );
    assert!(
        matches!(err, Err(CudaError::InvalidShape { .. })),
        "{err:?}"
    );
    let mut pooled = device.zeros::<f32>(3 * 8).unwrap();
    let err = pool(
        &device,
        &bf16(4 * 8),
        &offsets,
        8,
        &[PoolingMode::Mean],
        0,
        &mut pooled,
    );
    assert!(
        matches!(err, Err(CudaError::InvalidOffsets { .. })),
        "{err:?}"
    );
    assert!(device.upload_offsets(&[0, 3, 2]).is_err());

    // Offsets that fail write_offsets' checks leave the host and device copies as they were,
    // still in step: a launch sized by the refused offsets is refused, not run on the old
    // device offsets past the end of its buffers.
    let mut offsets = device.upload_offsets(&[0, 64, 128]).unwrap();
    for refused in [&[0, 8, 1 << 32][..], &[0, 8, 4], &[1, 8], &[]] {
        let err = device.write_offsets(refused, &mut offsets);
        assert!(
            matches!(err, Err(CudaError::InvalidOffsets { .. })),
            "{refused:?}: {err:?}"
        );
        assert_eq!(offsets.host(), [0, 64, 128], "{refused:?}");
        assert_eq!(offsets.max_len(), 64, "{refused:?}");
    }
    let err = attention_varlen(
        &device,
        &bf16(8 * 3 * 8),
        &offsets,
        1,
        8,
        None,
        &mut bf16(8 * 8),
    );
    assert!(
        matches!(err, Err(CudaError::LengthMismatch { .. })),
        "{err:?}"
    );
    device.write_offsets(&[0, 3, 3, 8], &mut offsets).unwrap();
    assert_eq!(offsets.host(), [0, 3, 3, 8]);
    assert_eq!(offsets.max_len(), 5);
}

/// A row holding a NaN normalises to all NaN, as torch's F.normalize and ember-pooling do (the
/// clamp of ‖x‖ to 1e-12 must not drop the NaN); the other rows as usual.
#[test]
fn normalize_keeps_a_nan_row_nan() {
    let Some(device) = device_or_skip("normalize_keeps_a_nan_row_nan") else {
        return;
    };
    let mut x = device
        .upload::<f32>(&[f32::NAN, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0])
        .unwrap();
    normalize_rows(&device, &mut x, 3).unwrap();
    let got = device.download(&x).unwrap();
    assert!(got[..3].iter().all(|v| v.is_nan()), "{got:?}");
    assert_eq!(got[3..], [0.6, 0.8, 0.0, 0.0, 0.0, 0.0], "{got:?}");
}

/// `time_each_ms` (gemm_bench's timer): one time per call, the work done as without it, an
/// error from a call returned with the stream open again, and every call queued behind the gate
/// (on the emulated driver too, which queues work behind a stream wait).
#[test]
fn time_each_times_every_call_behind_the_gate() {
    let Some(device) = device_or_skip("time_each_times_every_call_behind_the_gate") else {
        return;
    };
    let (m, n, k) = (96, 64, 128);
    let mut rng = SplitMix(0x71AE);
    let x = device.upload::<half::bf16>(&rng.vec(m * k, 1.0)).unwrap();
    let w = DeviceLinear::<half::bf16>::upload(&device, &rng.vec(n * k, 0.1), None, n, k).unwrap();
    let gemm = |y: &mut ember_cuda::DeviceTensor<half::bf16>| {
        linear(&device, &x, m, &w, Activation::Identity, None, y)
    };
    let mut y = device.zeros::<half::bf16>(m * n).unwrap();
    gemm(&mut y).unwrap();
    let want = device.download(&y).unwrap();

    let mut ys: Vec<_> = (0..3)
        .map(|_| device.zeros::<half::bf16>(m * n).unwrap())
        .collect();
    let times = device.time_each_ms(6, |i| gemm(&mut ys[i % 3])).unwrap();
    println!("time_each_ms: {:?} gated: {}", times.ms, times.gated);
    assert_eq!(times.ms.len(), 6);
    assert!(
        times.ms.iter().all(|t| t.is_finite() && *t >= 0.0),
        "{times:?}"
    );
    assert!(times.median_ms().is_some());
    assert!(times.gated, "{times:?}");
    for y in &ys {
        assert_eq!(device.download(y).unwrap(), want);
    }

    let err = device.time_each_ms(4, |i| {
        if i == 2 {
            return Err(CudaError::InvalidShape {
                op: "test",
                reason: "planted".to_owned(),
            });
        }
        gemm(&mut ys[0])
    });
    assert!(
        matches!(&err, Err(CudaError::InvalidShape { reason, .. }) if reason == "planted"),
        "{err:?}"
    );
    device.synchronize().unwrap();
    // Several gated groups (GATE_GROUP calls at most behind one gate): one time per call still.
    let count = 2 * ember_cuda::timing::GATE_GROUP + 3;
    let mut calls = 0;
    let times = device
        .time_each_ms(count, |i| {
            assert_eq!(i, calls);
            calls += 1;
            gemm(&mut ys[i % 3])
        })
        .unwrap();
    assert_eq!((calls, times.ms.len()), (count, count));
    assert!(times.gated, "{times:?}");
}
