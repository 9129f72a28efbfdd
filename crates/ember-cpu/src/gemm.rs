//! The linear layer `Y = act(X·Wᵀ + b) + R`, BERT's every projection.
//!
//! Shapes: `X` is `[m, k]` (tokens × in_features), `W` is `[n, k]` in PyTorch `nn.Linear`
//! layout (out_features × in_features, row-major), `b` is `[n]`, `R` (residual) and `Y` are
//! `[m, n]`. All row-major `f32`.
//!
//! # Algorithm (BLIS / Goto)
//!
//! `W` is repacked once at load time ([`PackedLinear`]) into *panels* of `NR = 32` output
//! columns: panel `p` holds `W[p·NR .. p·NR+NR, 0..k]` transposed, k-major
//! (`panel[kk·NR + jj] = W[p·NR + jj, kk]`), the last panel zero-padded; 64-byte aligned. One
//! layout serves every ISA.
//!
//! Per call, `X` is packed once (in parallel) into a buffer of the calling thread: per K
//! block of `KC = 256`, *A micro-panels* of `MR` rows with k in groups of `KG = 16` (one
//! cache line per row and group, so packing is a copy of 64-byte pieces while one k step's
//! `MR` broadcasts stay within `MR` adjacent lines). The output is then cut into tasks of
//! (row block × panel range) on rayon's current pool, N first for small `m` so each thread
//! streams only its share of `W`. In a task, for each K block, each A micro-panel (in L1)
//! sweeps a group of B micro-panels (half the L2: `nc_panels`) with the ISA's `MR × NR`
//! microkernel, which keeps the whole tile of `Y` in registers: per k step, `NR/LANES` loads
//! of B, `MR` broadcasts of A, `MR·NR/LANES` FMAs. (For a huge `X`, over 64 MiB packed, each
//! task instead packs its own row block per K block into a per-worker buffer.)
//!
//! | ISA      | MR × NR        | accumulators          |
//! |----------|----------------|-----------------------|
//! | AVX-512  | 14 × 32        | 28 zmm (+2 B, 1 A)    |
//! | AVX2     | 6 × 16 (twice) | 12 ymm (+2 B, 1 A)    |
//! | NEON     | 8 × 8 (4×)     | 16 q (+2 B, 8 A)      |
//! | scalar   | 4 × 32         | 1 × 8 f32 at a time   |
//!
//! After the last K block the tile is finished in registers (`+ b`, ReLU, `+ R`) before its
//! store; GELU runs right after over the stored tile while it is in L1.
//!
//! # Determinism
//!
//! Every output element is one sequential chain `acc ← fma(x[i,kk], w[j,kk], acc)` for
//! `kk = 0, 1, …, k−1`, starting from 0: a tile continued in a later K block reloads the
//! stored `f32` accumulator, which is exactly the register value, so K blocking does not
//! change the chain. Edge rows use the same kernel body instantiated for fewer rows (same
//! chain per element), edge columns are masked, never reordered. Hence `Y[i, j]` depends only
//! on `X[i, :]`, `W` and the ISA: not on `m`, on which rows share a tile, on the task split or
//! on the number of threads. (AVX2, AVX-512 and NEON all use FMA in the same order and agree
//! bit-for-bit on the product; `Scalar` uses separate multiply and add.)
//!
//! # Bf16
//!
//! [`Precision::Bf16`]: `W` is rounded to bf16 at load into panels of k pairs
//! (`panel[(kk/2)·2NR + 2jj + kk%2]`, zero-padded), `X` while it is packed. Each element is
//! the chain, per k pair, `acc ← fma(x₂ₚ₊₁, w₂ₚ₊₁, acc)` then `acc ← fma(x₂ₚ, w₂ₚ, acc)`:
//! Intel's order for `vdpbf16ps`, and a product of two bf16 values is exact in f32, so each
//! step rounds once. `vdpbf16ps` (AVX512_BF16, 14 × 32, `KC = 512`) runs it two k per
//! instruction; without it, AVX-512F (14 × 32) and AVX2 (6 × 16 twice) kernels run it as two
//! FMAs, B widened in registers (`lane & 0xFFFF0000`, `lane << 16`) and A packed already
//! widened to f32 (`KC = 256`, `KG = 16`); a portable kernel elsewhere. All agree bit for bit
//! on normal inputs (the hardware flushes subnormals), whatever the K blocking.
//!
//! # Int8
//!
//! [`Precision::Int8`] (maths in `gemm/quant.rs`): `W` is quantised per output channel at
//! load into `i8` panels of k quads (`panel[(kk/4)·4NR + 4jj + kk%4]`, zero-padded), with
//! `s_j` and `Σ_k w_q[j,k]` beside them. Per call, a pre-pass computes each row's scale
//! `s_i` and zero point `z_i` over the *whole* row (never per K block); `X` is quantised to
//! `u8` while it is packed (`KC = 1024`, `KG = 64`: the f32 kernels' bytes). The microkernel
//! (`vpdpbusd` on AVX512_VNNI, 14 × 32; on AVX2 without VNNI, operands widened to `i16` and
//! `vpmaddwd`, 6 × 8 four times per panel — never `vpmaddubsw`, whose `i16` pair sums
//! saturate; a portable twin elsewhere; all giving the same integers) sums exactly in `i32`; between K blocks a tile's partial sums wait in `Y`, bit-cast, so
//! the sum is the same integer whatever the blocking. After the last K block the tile is
//! rescaled, `y = f32(acc − z_i·Σ_k w_q[j,k])·(s_i·s_j)`, and finished as above; the result
//! depends only on the row, as for f32.
//!
//! A few input channels (BERT has some whose activations are 10–20× the rest, after its
//! LayerNorms and in the GELU output) would set every row's `u8` step. A weight may keep up
//! to [`MAX_OUTLIER_CHANNELS`] of them out of the int8 product
//! ([`PackedLinear::from_weight_with_outliers`]): their columns are zero in the `i8` panels
//! and kept in f32, the row's range is taken over the other channels, and the epilogue adds
//! `x_c·w_c` per channel (rounded product, rounded sum; the same operations in both
//! kernels) to the rescaled sum before the bias. ember-bert picks the 4 channels with the
//! largest `|x|` per linear from a calibration pass at load: on all-MiniLM-L6-v2 that takes
//! the mean `1 − cos` to the f32 embeddings from 1.1e-3 to 3.1e-4 for 3–6.5 % more time per
//! product. A weight may also be rotated along `k` ([`PackedLinear::from_weight_int8`]:
//! fixed signs, then a block Hadamard transform, on `W` at load and on each row of `X` before
//! its range is taken), which spreads a row's large values over many channels; ember-bert
//! rotates where its calibration rows say it pays (MiniLM: 3.1e-4 → 1.9e-4).

mod gptq;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2_bf16;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2_i8;
#[cfg(target_arch = "x86_64")]
mod kernel_avx512;
#[cfg(target_arch = "x86_64")]
mod kernel_avx512_bf16;
#[cfg(target_arch = "x86_64")]
mod kernel_avx512_vnni;
#[cfg(target_arch = "x86_64")]
mod kernel_avx512f_bf16;
#[cfg(target_arch = "aarch64")]
mod kernel_neon;
mod kernel_scalar;
mod kernel_scalar_bf16;
mod kernel_scalar_i8;
mod panel_elem;
mod quant;

use std::cell::RefCell;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::activation::Activation;
use crate::error::{check_len, checked_elems, KernelError};
use crate::isa::{active_isa, Isa};
pub(crate) use quant::{pack_a_block_i8, OutlierColumns, RowQuant, KC_I8, KG_I8};
pub use quant::{INT8_MAX_K, MAX_OUTLIER_CHANNELS, MAX_ROTATION_BLOCK};

/// Output columns per packed panel of `W` (and per microkernel tile).
pub const NR: usize = 32;
/// K block. An A micro-panel (`MR × KC` floats, 14 KiB for AVX-512) stays in L1 while it
/// sweeps a group of B micro-panels (`KC × NR`, 32 KiB each) streaming from L2. Fixed, never
/// derived from `m`: K blocking is part of no result (see Determinism), but keeping it
/// constant keeps that argument trivial.
pub(crate) const KC: usize = 256;
/// Packed A groups `KG` consecutive k values per row (see [`pack_a_block`]).
pub(crate) const KG: usize = 16;
/// Panels swept per A micro-panel where the L2 size is unknown: a group's B micro-panels
/// (`KC × NR × NC_PANELS` floats, 512 KiB) stay in L2 while every A micro-panel of the task
/// passes over them (see [`nc_panels`]).
const NC_PANELS: usize = 16;
/// Bytes of one f32 B micro-panel, `KC × NR` floats (bf16 panels: `2·KC × NR` halves, the same).
const PANEL_BYTES: usize = KC * NR * 4;

/// Panels per group: as many B micro-panels as fill half of one core's L2 (the rest holds the
/// A block and the output tiles), 4 to 16. 16 on a 1 MiB L2 (Zen 4: the fixed value its
/// figures were measured with; not tuned there since), 8 on Zen 2/3's 512 KiB, where 16 (the whole L2) cost 1–8 points of the FMA
/// peak per BERT shape on one thread (AVX2 f32 `gemm_throughput`, three pairs of runs in
/// turns on a Zen 3 VM: 80–85 % of the peak instead of 74–82 %), 4 on a 256 KiB L2. Only
/// the order tiles are computed in depends on it, never a result.
fn nc_panels() -> usize {
    static PANELS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PANELS.get_or_init(|| match l2_bytes() {
        Some(l2) if l2 > 0 => (l2 / 2 / PANEL_BYTES).clamp(4, 16),
        _ => NC_PANELS,
    })
}

/// One core's L2 cache in bytes, from CPUID leaf `0x8000_0006` (AMD and Intel both report it
/// there); `None` where unknown.
fn l2_bytes() -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // SAFETY: CPUID exists on every x86-64 CPU; leaves past the maximum extended leaf are
        // not asked for.
        #[allow(unused_unsafe)]
        let ecx =
            unsafe { (__cpuid(0x8000_0000).eax >= 0x8000_0006).then(|| __cpuid(0x8000_0006).ecx) };
        ecx.map(|ecx| (ecx >> 16) as usize * 1024)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}
/// Most rows a task packs per K block: its A block (`MC_MAX × KC` floats, 336 KiB) stays in
/// L2 next to the B group.
const MC_MAX: usize = 336;
/// Largest `X` (in packed floats, 64 MiB) packed once per call and shared by all tasks;
/// beyond it each task packs its own row block per K block.
const SHARED_A_MAX: usize = 1 << 24;
/// Below this many multiply-adds a call runs on the calling thread: handing work to rayon
/// costs more than it saves.
const SEQUENTIAL_MACS: usize = 1 << 17;

/// The operand precision of a linear layer's GEMM (accumulation in `f32`, or exactly in
/// `i32` for `Int8`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// `f32` weights and activations: the exact path (the default).
    #[default]
    F32,
    /// `bf16` weights and activations (`X` rounded to nearest-even while it is packed),
    /// products summed in `f32` two k at a time: `vdpbf16ps` where the CPU has AVX512_BF16
    /// (half the weight memory, about twice the f32 FMA rate); elsewhere the same steps as
    /// FMAs on operands widened in registers, AVX-512F or AVX2 (about the f32 kernels' speed,
    /// half their weight bytes), or a portable kernel without AVX2. Every path gives the same
    /// bits on normal (non-subnormal) inputs; see the module docs (Bf16).
    Bf16,
    /// `i8` weights, quantised per output channel at load (`s_j = max_k |W[j,k]| / 127`),
    /// and `u8` activations, quantised per row (token) while `X` is packed (asymmetric, the
    /// row's range including 0 mapped onto 0..=255); products summed exactly in `i32` and
    /// rescaled once: `vpdpbusd` where the CPU has AVX512_VNNI, widening `vpmaddwd` on other
    /// AVX2 CPUs, a portable kernel elsewhere, all giving the same integers. A quarter of the
    /// weight memory, about four times the f32 multiply-add rate (with VNNI); optionally a few
    /// outlier input channels kept exact in f32
    /// ([`PackedLinear::from_weight_with_outliers`]). See the module docs (Int8).
    Int8,
    /// `f16` weights and activations, `f32` accumulation: the CUDA backend's tensor-core
    /// path (ember-cuda). The CPU kernels refuse it
    /// ([`KernelError::UnsupportedPrecision`]).
    F16,
}

impl Precision {
    /// Lower-case name (`f32`, `bf16`, `int8`, `f16`), as the CLI's `--dtype` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
            Precision::F16 => "f16",
        }
    }

    /// Parses a name (case-insensitive); `None` if unknown.
    ///
    /// ```
    /// use ember_cpu::Precision;
    ///
    /// assert_eq!(Precision::from_name("BF16"), Some(Precision::Bf16));
    /// assert_eq!(Precision::from_name("fp16"), Some(Precision::F16));
    /// assert_eq!(Precision::from_name(Precision::Int8.name()), Some(Precision::Int8));
    /// assert_eq!(Precision::from_name("f64"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Precision> {
        match name.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(Precision::F32),
            "bf16" | "bfloat16" => Some(Precision::Bf16),
            "int8" | "i8" => Some(Precision::Int8),
            "f16" | "fp16" | "float16" | "half" => Some(Precision::F16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A linear layer's weight `[n, k]` and optional bias `[n]`, repacked once into the GEMM's
/// panel layout (see the module docs) in a [`Precision`]. Costs `n_panels·NR·k` elements
/// (≈ the weight's size in that precision).
///
/// ```
/// use ember_cpu::{gemm::linear, Activation, PackedLinear};
/// // W = [[1, 2], [3, 4], [5, 6]] : n = 3 outputs, k = 2 inputs.
/// let w = PackedLinear::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], Some(&[0.5, 0.0, -0.5]), 3, 2)?;
/// let x = [1.0, 1.0]; // m = 1 row
/// let mut y = [0.0f32; 3];
/// linear(&x, 1, &w, Activation::Identity, None, &mut y)?;
/// assert_eq!(y, [3.5, 7.0, 10.5]);
/// # Ok::<(), ember_cpu::error::KernelError>(())
/// ```
#[derive(Clone)]
pub struct PackedLinear {
    n: usize,
    k: usize,
    layout: PanelLayout,
    /// Backing store (f32-typed, holding elements of `layout`); the panels start at
    /// `offset` floats (64-byte aligned) and span `n_panels · k_pad · NR` elements, `k_pad`
    /// being `k` rounded up to the layout's `KSTEP`.
    storage: Vec<f32>,
    offset: usize,
    /// Bias zero-padded to `n_panels · NR`.
    bias: Option<Vec<f32>>,
    /// The per-output-channel quantisation of an `I8Quads` weight; `None` otherwise.
    quant: Option<quant::WeightQuant>,
    /// The input channels an `I8Quads` weight computes exactly in f32 (zero in its panels);
    /// `None` for none.
    outliers: Option<OutlierColumns>,
    /// The Hadamard block of an `I8Quads` weight rotated along `k` (see
    /// [`PackedLinear::from_weight_int8`]); 1 for none.
    rotation: usize,
}

/// Whether an int8 weight is rotated along `k` (see [`PackedLinear::from_weight_int8`]).
#[derive(Clone, Copy, Debug)]
pub enum Int8Rotation<'a> {
    /// Not rotated.
    Never,
    /// Rotated whenever `k` allows it (a multiple of 32).
    Always,
    /// Rotated if that lowers the expected error of the product on these sample rows of
    /// `X` (`[rows, k]`, e.g. the layer's inputs over a calibration batch): the `u8` and
    /// `i8` steps of both ways, weighed by the operands' norms (a row spread evenly gets a
    /// wider range once rotated; one with a few large values, a much narrower one).
    Calibrated(&'a [f32]),
}

/// How an int8 weight's values are rounded to its grid `s_j·q` (see
/// [`PackedLinear::from_weight_int8`]; `s_j` is the same either way).
#[derive(Clone, Copy, Debug)]
pub enum Int8Rounding<'a> {
    /// Each to its nearest grid point.
    Nearest,
    /// GPTQ (Frantar et al. 2022) on these sample rows of `X` (`[rows, k]`, the layer's
    /// inputs over a calibration set; some thousands of tokens): the channels of a row are
    /// rounded in order, each absorbing the error left by those before it as the inputs'
    /// correlations `XᵀX` say, which minimises the product's error on such inputs rather
    /// than the weights' own. Costs load time only: `t·k²/2` multiply-adds for `XᵀX` (on
    /// the bf16 GEMM), `k³/3` to factor it, `n·k²/2` to round (mostly f32 GEMMs). With no
    /// rows, as `Nearest`.
    Gptq(&'a [f32]),
}

/// The int8 choices [`PackedLinear::pack`] is given (ignored by other precisions).
#[derive(Clone, Copy, Debug)]
struct Int8Packing<'a> {
    outliers: &'a [usize],
    rotation: Int8Rotation<'a>,
    rounding: Int8Rounding<'a>,
}

/// A weight matrix as stored in a checkpoint: `f32`, or `f16` / `bf16` kept at that width.
#[derive(Clone, Copy, Debug)]
pub enum WeightData<'a> {
    /// Single-precision weights.
    F32(&'a [f32]),
    /// Half-precision weights, widened to f32 when packed or in the kernel.
    F16(&'a [f16]),
    /// bfloat16 weights, widened to f32 when packed or in the kernel.
    Bf16(&'a [bf16]),
}

impl WeightData<'_> {
    fn len(&self) -> usize {
        match self {
            WeightData::F32(w) => w.len(),
            WeightData::F16(w) => w.len(),
            WeightData::Bf16(w) => w.len(),
        }
    }
}

/// How a [`PackedLinear`]'s panels hold the weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PanelLayout {
    /// `panel[kk·NR + jj]`, f32 (the [`Precision::F32`] kernels).
    F32,
    /// As `F32` in f16 or bf16: a half-width checkpoint kept at its width, widened exactly
    /// as the [`Precision::F32`] kernels load it.
    F16,
    Bf16,
    /// `panel[(kk/2)·2NR + 2jj + kk%2]`, bf16 (the [`Precision::Bf16`] kernels).
    Bf16Pairs,
    /// `panel[(kk/4)·4NR + 4jj + kk%4]`, i8 quantised per column (the [`Precision::Int8`]
    /// kernels; scales and column sums in [`quant::WeightQuant`]).
    I8Quads,
}

impl PanelLayout {
    fn elem_bytes(self) -> usize {
        match self {
            PanelLayout::F32 => 4,
            PanelLayout::F16 | PanelLayout::Bf16 | PanelLayout::Bf16Pairs => 2,
            PanelLayout::I8Quads => 1,
        }
    }

    /// k values per panel row (see [`Microkernel::KSTEP`]).
    fn kstep(self) -> usize {
        match self {
            PanelLayout::Bf16Pairs => 2,
            PanelLayout::I8Quads => 4,
            _ => 1,
        }
    }
}

impl std::fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedLinear")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("layout", &self.layout)
            .field("bias", &self.bias.is_some())
            .finish()
    }
}

impl PackedLinear {
    /// Packs `weight` (`[n, k]`, `nn.Linear` layout) and `bias` (`[n]`) in `f32`.
    ///
    /// Errors if `weight.len() != n·k` or `bias.len() != n`.
    pub fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
    ) -> Result<PackedLinear, KernelError> {
        Self::from_weight(WeightData::F32(weight), bias, n, k, Precision::F32)
    }

    /// Packs `weight` and `bias` as [`PackedLinear::new`], for the kernels of `precision`
    /// (the weight rounded to nearest-even for `Bf16`; the bias stays `f32`).
    pub fn with_precision(
        weight: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
        precision: Precision,
    ) -> Result<PackedLinear, KernelError> {
        Self::from_weight(WeightData::F32(weight), bias, n, k, precision)
    }

    /// Packs a weight as stored (`[n, k]`) for the kernels of `precision`. For
    /// [`Precision::F32`] an `f16` or `bf16` weight keeps its width in the panels (half the
    /// memory of widening it) and is widened exactly as it is loaded: the results equal
    /// those of the widened weight bit for bit. For [`Precision::Int8`] the (widened) weight
    /// is quantised per output channel; `k` must not exceed [`INT8_MAX_K`] (the `i32`
    /// accumulators could overflow beyond), else `Err(InvalidShape)`.
    pub fn from_weight(
        weight: WeightData<'_>,
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
        precision: Precision,
    ) -> Result<PackedLinear, KernelError> {
        Self::from_weight_with_outliers(weight, bias, n, k, precision, &[])
    }

    /// [`PackedLinear::from_weight`] with, for [`Precision::Int8`], the input channels
    /// `outliers` (distinct, each `< k`, at most [`MAX_OUTLIER_CHANNELS`], in any order)
    /// kept out of the int8 product: their weight columns stay f32, each row's `u8` range
    /// is taken over the other channels, and the kernels add
    /// `Σ_{c ∈ outliers} X[i,c]·W[j,c]` in f32 to the rescaled integer product, before the
    /// bias. Channels whose activations are far larger than the rest (BERT has a few) then
    /// no longer coarsen every activation's step, nor their own column's weights. Other
    /// precisions ignore `outliers` (their products are already floating point). A repeated
    /// or out-of-range channel, or too many, is `Err(InvalidShape)`.
    pub fn from_weight_with_outliers(
        weight: WeightData<'_>,
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
        precision: Precision,
        outliers: &[usize],
    ) -> Result<PackedLinear, KernelError> {
        let int8 = Int8Packing {
            outliers,
            rotation: Int8Rotation::Never,
            rounding: Int8Rounding::Nearest,
        };
        Self::pack(weight, bias, n, k, precision, int8)
    }

    /// An int8 weight ([`Precision::Int8`]) with the input channels `outliers` exact, as
    /// [`PackedLinear::from_weight_with_outliers`], and, as `rotation` says, rotated along `k` by a
    /// block Hadamard transform before it is quantised, each row of `X` then rotated the
    /// same way before its own quantisation (`X·Wᵀ = (X·Q)·(W·Q/b)ᵀ`, `Q` fixed signs then a
    /// block Hadamard transform; see the "Rotated channels" section of the int8 module
    /// docs). Rotation spreads the few large values of
    /// a row over many channels, so both `u8` and `i8` steps shrink: the products are more
    /// accurate for the price of one pass over `X` per call, if the rows do have large
    /// values: a row already spread evenly (a random model's) gets a *wider* range once
    /// rotated, which is why [`Int8Rotation::Calibrated`] decides from sample rows. It needs
    /// `k` to be a multiple of 32 (otherwise the weight is simply not rotated).
    ///
    /// `rounding` then puts the (outlier-free, maybe rotated) weight on its grid: to
    /// nearest, or by GPTQ against calibration rows ([`Int8Rounding::Gptq`], maths in
    /// `gemm/gptq.rs`), which on all-MiniLM-L6-v2 cuts the weights' share of the int8 error
    /// by about two thirds. Either way the kernels and the scales are the same.
    ///
    /// ```
    /// use ember_cpu::gemm::{Int8Rotation, Int8Rounding, WeightData};
    /// use ember_cpu::{linear, Activation, PackedLinear};
    /// let (n, k) = (2, 64);
    /// let w: Vec<f32> = (0..n * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    /// let x: Vec<f32> = (0..k).map(|i| if i == 5 { 40.0 } else { (i % 5) as f32 / 4.0 }).collect();
    /// let (rotation, rounding) = (Int8Rotation::Always, Int8Rounding::Nearest);
    /// let packed =
    ///     PackedLinear::from_weight_int8(WeightData::F32(&w), None, n, k, &[5], rotation, rounding)?;
    /// let mut y = vec![0.0; n];
    /// linear(&x, 1, &packed, Activation::Identity, None, &mut y)?;
    /// for j in 0..n {
    ///     let want: f32 = (0..k).map(|i| x[i] * w[j * k + i]).sum();
    ///     assert!((y[j] - want).abs() < 0.02 * want.abs().max(1.0));
    /// }
    /// # Ok::<(), ember_cpu::KernelError>(())
    /// ```
    pub fn from_weight_int8(
        weight: WeightData<'_>,
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
        outliers: &[usize],
        rotation: Int8Rotation<'_>,
        rounding: Int8Rounding<'_>,
    ) -> Result<PackedLinear, KernelError> {
        let int8 = Int8Packing {
            outliers,
            rotation,
            rounding,
        };
        Self::pack(weight, bias, n, k, Precision::Int8, int8)
    }

    /// The packing behind the constructors (`int8`: for int8 only).
    fn pack(
        weight: WeightData<'_>,
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
        precision: Precision,
        int8: Int8Packing<'_>,
    ) -> Result<PackedLinear, KernelError> {
        const OP: &str = "PackedLinear::new";
        let Int8Packing {
            outliers,
            rotation,
            rounding,
        } = int8;
        let mut channels = outliers.to_vec();
        channels.sort_unstable();
        channels.dedup();
        if channels.len() != outliers.len()
            || channels.last().is_some_and(|&c| c >= k)
            || channels.len() > MAX_OUTLIER_CHANNELS
        {
            return Err(KernelError::InvalidShape {
                op: OP,
                reason: format!(
                    "outlier channels must be distinct, < k = {k} and at most \
                     {MAX_OUTLIER_CHANNELS}: {outliers:?}"
                ),
            });
        }
        check_len(
            OP,
            "weight",
            checked_elems(OP, "weight", n, k)?,
            weight.len(),
        )?;
        if let Some(b) = bias {
            check_len(OP, "bias", n, b.len())?;
        }
        if precision == Precision::Int8 && k > INT8_MAX_K {
            return Err(KernelError::InvalidShape {
                op: OP,
                reason: format!(
                    "int8 weights need k <= {INT8_MAX_K} (i32 accumulators), got k = {k}"
                ),
            });
        }
        let layout = match (precision, weight) {
            (Precision::F16, _) => {
                return Err(KernelError::UnsupportedPrecision { op: OP, precision })
            }
            (Precision::Bf16, _) => PanelLayout::Bf16Pairs,
            (Precision::Int8, _) => PanelLayout::I8Quads,
            (Precision::F32, WeightData::F32(_)) => PanelLayout::F32,
            (Precision::F32, WeightData::F16(_)) => PanelLayout::F16,
            (Precision::F32, WeightData::Bf16(_)) => PanelLayout::Bf16,
        };
        let n_panels = n.div_ceil(NR);
        let k_pad = k.next_multiple_of(layout.kstep());
        let panel_len = checked_elems(OP, "weight", k_pad, NR)?;
        let packed_len = checked_elems(OP, "weight", n_panels, panel_len)?;
        let packed_floats = (packed_len * layout.elem_bytes()).div_ceil(4);
        // 15 spare floats let the panels start on a 64-byte boundary.
        let mut storage = vec![0.0f32; packed_floats + 15];
        let offset = storage.as_ptr().align_offset(64).min(15);
        let floats = &mut storage[offset..offset + packed_floats];
        let rotation_rows = match rotation {
            Int8Rotation::Calibrated(rows) => rows,
            _ => &[],
        };
        let gptq_rows = match rounding {
            Int8Rounding::Gptq(rows) => rows,
            Int8Rounding::Nearest => &[],
        };
        for rows in [rotation_rows, gptq_rows] {
            // (`is_multiple_of(0)` holds only for no rows: a k = 0 weight has none.)
            if !rows.len().is_multiple_of(k) {
                return Err(KernelError::InvalidShape {
                    op: OP,
                    reason: format!(
                        "calibration rows: {} floats is not a whole number of rows of k = {k}",
                        rows.len()
                    ),
                });
            }
        }
        let gptq_rows = if layout == PanelLayout::I8Quads {
            gptq_rows
        } else {
            &[]
        };
        // Int8 with outliers: those columns leave the weight (zeroed) for an f32 side product;
        // with rotation, what is left is rotated along k before it is quantised, if it pays.
        let block = match rotation {
            Int8Rotation::Never => 1,
            _ if layout != PanelLayout::I8Quads => 1,
            _ => quant::rotation_block(k),
        };
        let (outliers, rest, rotation) = if layout == PanelLayout::I8Quads
            && (!channels.is_empty() || block > 1 || !gptq_rows.is_empty())
        {
            let (columns, rest) = OutlierColumns::split(weight, n, k, &channels);
            let columns = (!channels.is_empty()).then_some(columns);
            if block > 1 {
                let mut rotated = rest.clone();
                quant::rotate_weight_rows(&mut rotated, k, block);
                // With no calibration rows (`Always`), rotation pays.
                let pays =
                    quant::rotation_pays(&rest, &rotated, rotation_rows, k, &channels, block);
                if pays {
                    (columns, Some(rotated), block)
                } else {
                    (columns, Some(rest), 1)
                }
            } else {
                (columns, Some(rest), 1)
            }
        } else {
            (None, None, 1)
        };
        // GPTQ moves `rest`'s values onto the grid of its own row scales, against the
        // calibration rows as the panels see them (outliers zeroed, rotated likewise).
        let mut rest = rest;
        let scales = match rest.as_mut() {
            Some(rest) if !gptq_rows.is_empty() => {
                let gram = gptq::input_gram(gptq_rows, k, &channels, rotation)?;
                gptq::round_gptq(rest, k, gram)?
            }
            _ => None,
        };
        let quant = (layout == PanelLayout::I8Quads).then(|| {
            // The int8 panels hold `rest` (outliers zeroed, maybe rotated) if it was made.
            let weight = rest.as_deref().map_or(weight, WeightData::F32);
            let q = quant::WeightQuant::new(weight, n, k, scales.as_deref());
            if panel_len > 0 {
                bytemuck::cast_slice_mut::<f32, i8>(floats)[..packed_len]
                    .par_chunks_mut(panel_len)
                    .enumerate()
                    .for_each(|(p, panel)| q.pack_panel(weight, k, n, p, panel));
            }
            q
        });
        if panel_len > 0 && quant.is_none() {
            fn fill<T: bytemuck::Pod + Send>(
                floats: &mut [f32],
                len: usize,
                panel_len: usize,
                pack: impl Fn(usize, &mut [T]) + Sync,
            ) {
                bytemuck::cast_slice_mut::<f32, T>(floats)[..len]
                    .par_chunks_mut(panel_len)
                    .enumerate()
                    .for_each(|(p, panel)| pack(p, panel));
            }
            let len = packed_len;
            match (layout, weight) {
                (PanelLayout::F32, WeightData::F32(w)) => {
                    fill(floats, len, panel_len, |p, panel| {
                        pack_b_panel(w, k, n, p, panel, |v| v)
                    })
                }
                (PanelLayout::F16, WeightData::F16(w)) => {
                    fill(floats, len, panel_len, |p, panel| {
                        pack_b_panel(w, k, n, p, panel, |v| v)
                    })
                }
                (PanelLayout::Bf16, WeightData::Bf16(w)) => {
                    fill(floats, len, panel_len, |p, panel| {
                        pack_b_panel(w, k, n, p, panel, |v| v)
                    })
                }
                (PanelLayout::Bf16Pairs, WeightData::F32(w)) => {
                    fill(floats, len, panel_len, |p, panel| {
                        pack_b_panel_pairs(w, k, n, p, panel, bf16::from_f32)
                    })
                }
                (PanelLayout::Bf16Pairs, WeightData::F16(w)) => {
                    fill(floats, len, panel_len, |p, panel| {
                        pack_b_panel_pairs(w, k, n, p, panel, |v| bf16::from_f32(v.to_f32()))
                    })
                }
                (PanelLayout::Bf16Pairs, WeightData::Bf16(w)) => {
                    fill(floats, len, panel_len, |p, panel| {
                        pack_b_panel_pairs(w, k, n, p, panel, |v| v)
                    })
                }
                _ => unreachable!("layout chosen from the weight's type above"),
            }
        }
        let bias = bias.map(|b| {
            let mut padded = vec![0.0f32; n_panels * NR];
            padded[..n].copy_from_slice(b);
            padded
        });
        Ok(PackedLinear {
            n,
            k,
            layout,
            storage,
            offset,
            bias,
            quant,
            outliers,
            rotation,
        })
    }

    /// Output features (rows of `W`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of `W`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The precision of the products.
    pub fn precision(&self) -> Precision {
        match self.layout {
            PanelLayout::Bf16Pairs => Precision::Bf16,
            PanelLayout::I8Quads => Precision::Int8,
            _ => Precision::F32,
        }
    }

    /// Bytes per weight element in the panels (4 for f32; 2 for f16, bf16; 1 for int8).
    pub fn weight_elem_bytes(&self) -> usize {
        self.layout.elem_bytes()
    }

    /// Bytes held by the packed weight and bias.
    pub fn bytes(&self) -> usize {
        4 * (self.storage.len() + self.bias.as_ref().map_or(0, Vec::len))
            + self.quant.as_ref().map_or(0, quant::WeightQuant::bytes)
            + self.outliers.as_ref().map_or(0, OutlierColumns::bytes)
    }

    /// The input channels computed exactly in f32 beside the int8 product (ascending; see
    /// [`PackedLinear::from_weight_with_outliers`]); empty for none.
    pub fn outlier_channels(&self) -> &[usize] {
        self.outliers.as_ref().map_or(&[], |o| &o.channels)
    }

    /// The Hadamard block an int8 weight was rotated with along `k` (see
    /// [`PackedLinear::from_weight_int8`]); 1 if it was not rotated.
    pub fn rotation_block(&self) -> usize {
        self.rotation
    }

    /// The bias, if any (`[n]`).
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref().map(|b| &b[..self.n])
    }

    /// Number of `NR`-column panels.
    fn n_panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Panel `p` as elements of type `E` (which must be the layout's element type, and
    /// `kstep` its KSTEP): `k_pad × NR` elements.
    fn panel<E: bytemuck::Pod>(&self, p: usize, kstep: usize) -> &[E] {
        debug_assert_eq!(std::mem::size_of::<E>(), self.layout.elem_bytes());
        debug_assert_eq!(kstep, self.layout.kstep());
        let len = self.k.next_multiple_of(kstep) * NR;
        let floats = (self.n_panels() * len * std::mem::size_of::<E>()).div_ceil(4);
        let all: &[E] = bytemuck::cast_slice(&self.storage[self.offset..self.offset + floats]);
        &all[p * len..(p + 1) * len]
    }

    /// Unpacks back to `[n, k]` in `f32` (for tests and debugging; an `Int8` weight comes
    /// back dequantised, `s_j·w_q[j,k]` rounded to f32, its outlier columns exact, and a
    /// rotated one rotated back, `(s_j·w_q)·H·D` in f32; a `Bf16` weight comes back as its
    /// rounded values).
    pub fn unpack_weight(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.n * self.k];
        for j in 0..self.n {
            let (p, jj) = (j / NR, j % NR);
            for kk in 0..self.k {
                w[j * self.k + kk] = match self.layout {
                    PanelLayout::F32 => self.panel::<f32>(p, 1)[kk * NR + jj],
                    PanelLayout::F16 => self.panel::<f16>(p, 1)[kk * NR + jj].to_f32(),
                    PanelLayout::Bf16 => self.panel::<bf16>(p, 1)[kk * NR + jj].to_f32(),
                    PanelLayout::Bf16Pairs => {
                        self.panel::<bf16>(p, 2)[(kk / 2) * 2 * NR + 2 * jj + kk % 2].to_f32()
                    }
                    PanelLayout::I8Quads => {
                        let exact = self.outliers.as_ref().and_then(|o| {
                            let c = o.channels.iter().position(|&c| c == kk)?;
                            Some(o.weight[c * o.n_pad + j])
                        });
                        let q = self.panel::<i8>(p, 4)[(kk / 4) * 4 * NR + 4 * jj + kk % 4];
                        let scale = self.quant.as_ref().map_or(0.0, |wq| wq.scale[j]);
                        match exact {
                            // A rotated weight's exact columns go in once it is rotated back.
                            Some(v) if self.rotation == 1 => v,
                            _ => scale * f32::from(q),
                        }
                    }
                };
            }
        }
        if self.rotation > 1 && self.k > 0 {
            // (W·D·H/b)·H·D = W.
            for (j, row) in w.chunks_exact_mut(self.k).enumerate() {
                quant::hadamard_channels(row, self.rotation);
                quant::flip_signs(row);
                if let Some(o) = &self.outliers {
                    for (c, &channel) in o.channels.iter().enumerate() {
                        row[channel] = o.weight[c * o.n_pad + j];
                    }
                }
            }
        }
        w
    }
}

/// Writes panel `p` of `weight` (`[n, k]`): `panel[kk·NR + jj] = convert(W[p·NR + jj, kk])`,
/// zero for columns past `n`.
fn pack_b_panel<S: Copy, T: Copy>(
    weight: &[S],
    k: usize,
    n: usize,
    p: usize,
    panel: &mut [T],
    convert: impl Fn(S) -> T,
) {
    for jj in 0..NR {
        let j = p * NR + jj;
        if j >= n {
            break; // storage is zero-initialised: padding stays 0.
        }
        let w_row = &weight[j * k..(j + 1) * k];
        for (kk, &v) in w_row.iter().enumerate() {
            panel[kk * NR + jj] = convert(v);
        }
    }
}

/// Writes panel `p` of `weight` in the pair-interleaved bf16 layout:
/// `panel[(kk/2)·2NR + 2jj + kk%2] = convert(W[p·NR + jj, kk])`, zero past `n` and past `k`.
fn pack_b_panel_pairs<S: Copy>(
    weight: &[S],
    k: usize,
    n: usize,
    p: usize,
    panel: &mut [bf16],
    convert: impl Fn(S) -> bf16,
) {
    for jj in 0..NR {
        let j = p * NR + jj;
        if j >= n {
            break; // storage is zero-initialised: padding stays 0.
        }
        let w_row = &weight[j * k..(j + 1) * k];
        for (kk, &v) in w_row.iter().enumerate() {
            panel[(kk / 2) * 2 * NR + 2 * jj + kk % 2] = convert(v);
        }
    }
}

/// What the blocking loops need from an ISA: its tile height and two tile operations.
pub(crate) trait Microkernel: Copy + Send + Sync {
    /// Element of the packed A micro-panels: `f32`, `bf16` for the [`Precision::Bf16`]
    /// kernels, `u8` for the [`Precision::Int8`] ones.
    type A: bytemuck::Pod + Send + Sync;
    /// Element of the B panels (`f32`, `f16`, `bf16` or `i8`).
    type B: bytemuck::Pod + Send + Sync;
    /// Rows per A micro-panel / tile.
    const MR: usize;
    /// K block (in k steps): an A micro-panel and a B micro-panel are `MR·KC` and `KC·NR`
    /// elements.
    const KC: usize = KC;
    /// k values per row and group in a packed A micro-panel (see [`pack_a_block`]).
    const KG: usize = KG;
    /// k values per B panel row: 1 (`b[kk·NR + jj]`), 2 for the pair-interleaved bf16
    /// layout (`b[(kk/2)·2NR + 2jj + kk%2]`), 4 for the int8 quads. Panels hold `k` rounded
    /// up to it, zero-padded.
    const KSTEP: usize = 1;
    /// Whether the kernel quantises A per row: the driver then computes every row's
    /// [`RowQuant`] over the whole row before packing, hands them to [`Microkernel::pack_a`]
    /// and to the last K block's [`TileEpilogue`], and `C` holds the tile's exact `i32`
    /// partial sums (bit-cast) between K blocks.
    const ROW_QUANT: bool = false;

    /// The quantisation of one row of `X` (`ROW_QUANT` kernels) without the columns `skip`:
    /// [`RowQuant::of_row_skipping`], which an ISA may compile with its own features (the
    /// result cannot differ).
    fn row_quant(self, row: &[f32], skip: &[usize]) -> RowQuant {
        RowQuant::of_row_skipping(row, skip)
    }

    /// The quantisation of one row of `X` for a weight rotated with Hadamard block `block`
    /// (`ROW_QUANT` kernels), the rotated row written to `rotated`:
    /// [`RowQuant::of_row_rotated`], which an ISA may compile with its own features (the
    /// result cannot differ).
    fn row_quant_rotated(
        self,
        row: &[f32],
        skip: &[usize],
        block: usize,
        rotated: &mut [f32],
    ) -> RowQuant {
        RowQuant::of_row_rotated(row, skip, block, rotated)
    }

    /// `C[0..rows, 0..cols] = (accumulate ? C : 0) + A·B` for one tile, where `A` is a packed
    /// micro-panel of height `mr` (`rows ≤ mr ≤ MR`; see [`pack_a_block`] for its layout) (`a[i·KC + kk]`, `i < rows`, `kk < kc ≤ KC`) and `B` a slice of a packed
    /// panel (`b[kk·NR + jj]`). Each element is one sequential FMA chain over `kk`. With `epi`
    /// (last K block), the tile is finished in registers before the store (see
    /// [`TileEpilogue`]).
    ///
    /// # Safety
    /// `rows ≤ MR`, `cols ≤ NR`, `kc ≤ KC`; `a` readable at `a[i·KC + kk]` for `i < rows`,
    /// `kk < kc`; `b` readable for `kc·NR` floats; `c` valid
    /// for reads and writes of `C[i·ldc + j]` for `i < rows`, `j < cols`, and not accessed by
    /// anyone else meanwhile; `epi`'s pointers as documented there.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        self,
        kc: usize,
        a: *const Self::A,
        b: *const Self::B,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        mr: usize,
        accumulate: bool,
        epi: Option<TileEpilogue>,
    );

    /// Packs `X[r0..r1, pc..pc+kc]` into micro-panels of height `mr ≤ MR`; see
    /// [`pack_a_block`] for the layout and the bounds (with this kernel's `KC`, `KG`).
    /// `quant` holds every row's quantisation (indexed by row of `X`) if `ROW_QUANT`, and
    /// is empty otherwise.
    #[allow(clippy::too_many_arguments)]
    fn pack_a(
        self,
        x: &[f32],
        k: usize,
        rows: (usize, usize),
        pc: usize,
        kc: usize,
        mr: usize,
        quant: &[RowQuant],
        dst: &mut [Self::A],
    );

    /// `C = act(C) + R` over a stored tile (see [`crate::activation::epilogue_tile`]).
    ///
    /// # Safety
    /// As [`crate::activation::epilogue_tile`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn epilogue_tile(
        self,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        act: Activation,
        residual: *const f32,
        ldr: usize,
    );

    /// `row = act(row + bias) + residual` (see [`crate::activation::epilogue_row`]).
    fn epilogue_row(
        self,
        row: &mut [f32],
        bias: Option<&[f32]>,
        act: Activation,
        residual: Option<&[f32]>,
    );
}

/// Whether a [`Microkernel::pack_a`] request for kernel `K` lies inside its buffers: rows
/// `r0 ≤ r1` of `X` (`[·, k]`), `1 ≤ mr ≤ K::MR`, `kc ≤ K::KC`, `pc + kc ≤ k`, a
/// quantisation for every row if `K::ROW_QUANT`, and `dst_len` elements enough for the
/// micro-panels (see [`pack_a_block`]). The SIMD packers check it before their unchecked
/// loops (the x86-64 ones: the NEON kernel packs with the portable [`pack_a_block`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn pack_a_request_fits<K: Microkernel>(
    (x, k): (&[f32], usize),
    (r0, r1): (usize, usize),
    (pc, kc): (usize, usize),
    mr: usize,
    quant: &[RowQuant],
    dst_len: usize,
) -> bool {
    if r0 > r1 || !(1..=K::MR).contains(&mr) {
        return false;
    }
    let panels = (r1 - r0).div_ceil(mr);
    let kc_pad = kc.next_multiple_of(K::KG);
    kc <= K::KC
        && pc.checked_add(kc).is_some_and(|end| end <= k)
        && (!K::ROW_QUANT || r1 <= quant.len())
        && r1.checked_mul(k).is_some_and(|len| len <= x.len())
        && (panels == 0 || dst_len >= (panels - 1) * mr * K::KC + mr * kc_pad)
}

/// The part of the epilogue a microkernel applies in registers after the last K block:
/// for the int8 kernels first `acc ← s_i·s_j·(acc − z_i·Σ_k w_q[j,k])` (see [`quant`]) and
/// `acc ← acc + x_c·w_c` for each outlier channel `c` (rounded product, then rounded sum), then
/// `acc ← acc + bias`, then `max(acc, 0)` if `relu`, then `acc ← acc + R`. (GELU, too long to
/// inline into a kernel holding 28 accumulators, runs afterwards over the stored tile.)
/// Element-wise in the same order as [`crate::activation::epilogue_row`], so results do not
/// depend on which path finished a tile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileEpilogue {
    /// Bias for the tile's columns, readable for `cols` floats; null for none.
    pub(crate) bias: *const f32,
    /// Residual tile, `R[i·ld_residual + j]` readable for `i < rows`, `j < cols`; null for none.
    pub(crate) residual: *const f32,
    /// Row stride of `residual`.
    pub(crate) ld_residual: usize,
    /// Apply `max(·, 0)` between bias and residual.
    pub(crate) relu: bool,
    /// Int8 kernels only (null otherwise): the tile's rows' quantisation, readable for
    /// `rows` entries.
    pub(crate) row_quant: *const RowQuant,
    /// Int8 kernels only (null otherwise): the tile's columns' weight scales `s_j` and sums
    /// `Σ_k w_q[j,k]`, readable for `cols` entries.
    pub(crate) col_scale: *const f32,
    pub(crate) col_sum: *const i32,
    /// Int8 kernels only: how many outlier channels the weight keeps exact (the first
    /// `outliers` of each row's [`RowQuant::exact`]); 0 for none.
    pub(crate) outliers: usize,
    /// Int8 kernels with outliers only (null otherwise): their weights for the tile's
    /// columns, `outlier_weight[c·ld_outlier_weight + j]`, readable for `c < outliers`,
    /// `j < cols`.
    pub(crate) outlier_weight: *const f32,
    /// Row stride of `outlier_weight`.
    pub(crate) ld_outlier_weight: usize,
}

thread_local! {
    /// Per-worker buffer for A blocks a task packs itself (huge `X` only).
    static PACKED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's buffer for all of A, packed once per call and read by every task.
    static CALLER_PACKED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's per-row quantisation of X (int8 kernels).
    static CALLER_ROW_QUANT: RefCell<Vec<RowQuant>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's rotated copy of X (int8 kernels, rotated weights).
    static CALLER_ROTATED_X: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a 64-byte-aligned slice of `len` floats from the thread-local buffer `key`,
/// growing it if needed (so only warm-up allocates). If the buffer is already in use on this
/// thread (cannot happen in this crate: tasks never nest), a temporary one is used instead.
fn with_scratch<T: bytemuck::Pod, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    // The buffer is f32-typed storage for any `Pod` element no larger than a float.
    const { assert!(std::mem::size_of::<T>() <= 4 && 4 % std::mem::size_of::<T>() == 0) };
    let per_float = 4 / std::mem::size_of::<T>();
    let floats = len.div_ceil(per_float);
    let aligned = |buf: &mut Vec<f32>| -> *mut T {
        if buf.len() < floats + 15 {
            *buf = vec![0.0; floats + 15];
        }
        let offset = buf.as_ptr().align_offset(64).min(15);
        bytemuck::cast_slice_mut::<f32, T>(&mut buf[offset..offset + floats]).as_mut_ptr()
    };
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let ptr = aligned(&mut buf);
            // SAFETY: `ptr` addresses `floats · per_float ≥ len` elements of `buf`, which
            // stays borrowed (and unmoved) until `f` returns.
            f(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
        }
        Err(_) => {
            let mut temporary = Vec::new();
            let ptr = aligned(&mut temporary);
            // SAFETY: as above, for `temporary`.
            f(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
        }
    })
}

/// `Y = act(X·Wᵀ + b) + R` on the [`active_isa`].
///
/// `x`: `[m, k]`, `out`: `[m, n]`, `residual`: `[m, n]` (added after the activation), with
/// `n = w.n()`, `k = w.k()`. Runs on rayon's current pool. Errors on any length mismatch;
/// `out` is untouched then.
pub fn linear(
    x: &[f32],
    m: usize,
    w: &PackedLinear,
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    linear_with_isa(active_isa(), x, m, w, act, residual, out)
}

/// [`linear`] on an explicit instruction set (`Err(UnsupportedIsa)` if this CPU lacks it).
pub fn linear_with_isa(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedLinear,
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    linear_impl(isa, x, m, w, act, residual, out, SHARED_A_MAX)
}

/// [`linear_with_isa`] with the shared-A threshold as a parameter (tests force both paths).
#[allow(clippy::too_many_arguments)]
fn linear_impl(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedLinear,
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
    shared_a_max: usize,
) -> Result<(), KernelError> {
    const OP: &str = "linear";
    let (n, k) = (w.n, w.k);
    check_len(OP, "x", checked_elems(OP, "x", m, k)?, x.len())?;
    let mn = checked_elems(OP, "out", m, n)?;
    check_len(OP, "out", mn, out.len())?;
    if let Some(r) = residual {
        check_len(OP, "residual", mn, r.len())?;
    }
    let unsupported = KernelError::UnsupportedIsa { op: OP, isa };
    let args = GemmArgs {
        x,
        m,
        w,
        act,
        residual,
        shared_a_max,
    };
    if !isa.is_supported() {
        return Err(unsupported);
    }
    /// Runs the f32 kernel of `isa` over panels of `B`.
    fn f32_kernel<B: panel_elem::PanelElem>(
        isa: Isa,
        args: GemmArgs<'_>,
        out: &mut [f32],
        unsupported: KernelError,
    ) -> Result<(), KernelError> {
        match isa {
            Isa::Scalar => gemm_driver(kernel_scalar::ScalarKernel::<B>::new(), args, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                let kern = kernel_avx2::Avx2Kernel::<B>::detect().ok_or(unsupported)?;
                gemm_driver(kern, args, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                let kern = kernel_avx512::Avx512Kernel::<B>::detect().ok_or(unsupported)?;
                gemm_driver(kern, args, out)
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => return Err(unsupported),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                let kern = kernel_neon::NeonKernel::<B>::detect().ok_or(unsupported)?;
                gemm_driver(kern, args, out)
            }
        }
        Ok(())
    }
    match (w.layout, isa) {
        (PanelLayout::F32, _) => f32_kernel::<f32>(isa, args, out, unsupported)?,
        (PanelLayout::F16, _) => f32_kernel::<f16>(isa, args, out, unsupported)?,
        (PanelLayout::Bf16, _) => f32_kernel::<bf16>(isa, args, out, unsupported)?,
        // bf16 products (the same bits on every path, normal inputs): `vdpbf16ps` on AVX-512
        // CPUs that have AVX512_BF16, else the same steps as widening FMAs (AVX-512F, then
        // AVX2), else the portable kernel.
        #[cfg(target_arch = "x86_64")]
        (PanelLayout::Bf16Pairs, Isa::Avx512)
            if kernel_avx512_bf16::Avx512Bf16Kernel::detect().is_some() =>
        {
            let kern = kernel_avx512_bf16::Avx512Bf16Kernel::detect().ok_or(unsupported)?;
            gemm_driver(kern, args, out)
        }
        #[cfg(target_arch = "x86_64")]
        (PanelLayout::Bf16Pairs, Isa::Avx512)
            if kernel_avx512f_bf16::Avx512fBf16Kernel::detect().is_some() =>
        {
            let kern = kernel_avx512f_bf16::Avx512fBf16Kernel::detect().ok_or(unsupported)?;
            gemm_driver(kern, args, out)
        }
        #[cfg(target_arch = "x86_64")]
        (PanelLayout::Bf16Pairs, Isa::Avx2 | Isa::Avx512)
            if kernel_avx2_bf16::Avx2Bf16Kernel::detect().is_some() =>
        {
            let kern = kernel_avx2_bf16::Avx2Bf16Kernel::detect().ok_or(unsupported)?;
            gemm_driver(kern, args, out)
        }
        (PanelLayout::Bf16Pairs, _) => gemm_driver(kernel_scalar_bf16::ScalarBf16Kernel, args, out),
        // int8 products (the same integers, hence the same results, on every path):
        // `vpdpbusd` on AVX-512 CPUs that have AVX512_VNNI, else widening `vpmaddwd` on any
        // AVX2 CPU, else the portable kernel.
        #[cfg(target_arch = "x86_64")]
        (PanelLayout::I8Quads, Isa::Avx512)
            if kernel_avx512_vnni::Avx512VnniKernel::detect().is_some() =>
        {
            let kern = kernel_avx512_vnni::Avx512VnniKernel::detect().ok_or(unsupported)?;
            gemm_driver(kern, args, out)
        }
        #[cfg(target_arch = "x86_64")]
        (PanelLayout::I8Quads, Isa::Avx2 | Isa::Avx512)
            if kernel_avx2_i8::Avx2I8Kernel::detect().is_some() =>
        {
            let kern = kernel_avx2_i8::Avx2I8Kernel::detect().ok_or(unsupported)?;
            gemm_driver(kern, args, out)
        }
        (PanelLayout::I8Quads, _) => gemm_driver(kernel_scalar_i8::ScalarI8Kernel, args, out),
    }
    Ok(())
}

/// The validated inputs of one call.
#[derive(Clone, Copy)]
struct GemmArgs<'a> {
    x: &'a [f32],
    m: usize,
    w: &'a PackedLinear,
    act: Activation,
    residual: Option<&'a [f32]>,
    shared_a_max: usize,
}

/// `*mut f32` that may cross threads: tasks write disjoint tiles of `out`.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the pointer is only dereferenced by tasks that own disjoint row/column ranges
// (see `gemm_driver`), and `out` outlives the parallel section.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// How the `m × n_panels` output is cut into tasks.
#[derive(Clone, Copy, Debug)]
struct Plan {
    rows_per_task: usize,
    panels_per_task: usize,
    row_tasks: usize,
    panel_tasks: usize,
}

/// Picks task sizes (rows in multiples of `mr`, at most `MC_MAX`). Only affects speed, never
/// results.
///
/// With A packed once per call (`shared_a`), tasks cost nothing to set up: aim at about four
/// per thread for balance, splitting N first (each thread then streams only its share of
/// `W`, and each B micro-panel is reused by all rows of the task). Otherwise every task packs
/// its own A block, so keep row blocks large and split N only as much as threads require.
fn plan(m: usize, n_panels: usize, mr: usize, threads: usize, shared_a: bool) -> Plan {
    let mc_max = (MC_MAX / mr).max(1) * mr;
    let m_panels = m.div_ceil(mr).max(1);
    let n_panels = n_panels.max(1);
    let target = if threads <= 1 {
        1
    } else if shared_a {
        4 * threads
    } else {
        2 * threads
    };
    let min_row_tasks = m.div_ceil(mc_max).max(1);
    let panel_tasks = if shared_a {
        target.div_ceil(min_row_tasks).min(n_panels)
    } else {
        target.div_ceil(min_row_tasks).clamp(1, n_panels)
    };
    let row_tasks = target.div_ceil(panel_tasks).clamp(min_row_tasks, m_panels);
    let rows_per_task = m_panels.div_ceil(row_tasks) * mr;
    let panels_per_task = n_panels.div_ceil(panel_tasks);
    Plan {
        rows_per_task,
        panels_per_task,
        row_tasks: m.div_ceil(rows_per_task).max(1),
        panel_tasks: n_panels.div_ceil(panels_per_task),
    }
}

/// The blocking loops (module docs), generic over the microkernel. Lengths were validated.
fn gemm_driver<K: Microkernel>(kern: K, args: GemmArgs<'_>, out: &mut [f32]) {
    let GemmArgs {
        x,
        m,
        w,
        act,
        residual,
        shared_a_max,
    } = args;
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    let n_panels = w.n_panels();
    let bias = w.bias.as_deref();
    if k == 0 {
        // Empty reduction: Y = act(b) + R.
        out.fill(0.0);
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            let res = residual.map(|r| &r[i * n..(i + 1) * n]);
            kern.epilogue_row(row, bias, act, res);
        }
        return;
    }
    let macs = m.saturating_mul(n).saturating_mul(k);
    let threads = if macs < SEQUENTIAL_MACS {
        1
    } else {
        rayon::current_num_threads()
    };
    let mr = panel_height(m, K::MR);
    let m_pad = m.div_ceil(mr) * mr;
    let k_blocks = k.div_ceil(K::KC);
    let out_ptr = OutPtr(out.as_mut_ptr());
    // Per-row quantisation (int8), over whole rows: never per K block or per task.
    let skip = w.outlier_channels();
    with_row_quant(kern, x, m, k, (skip, w.rotation), threads, |x, quant| {
        // Pack all of A once (in parallel) unless it is huge; tasks then only read it.
        let shared_len = m_pad.saturating_mul(K::KC).saturating_mul(k_blocks);
        if shared_len <= shared_a_max {
            let plan = plan(m, n_panels, mr, threads, true);
            with_scratch(&CALLER_PACKED_A, shared_len, |packed| {
                pack_a_shared(kern, x, m, k, mr, threads, quant, packed);
                let packed: &[K::A] = packed;
                run_tasks(plan, m, n_panels, threads, |(r0, r1), (p0, p1)| {
                    let source = ASource::Shared { packed, m_pad };
                    let task = TaskArgs {
                        w,
                        act,
                        residual,
                        out: out_ptr,
                        mr,
                        quant,
                    };
                    gemm_task(kern, task, (r0, r1), (p0, p1), source);
                });
            });
        } else {
            let plan = plan(m, n_panels, mr, threads, false);
            run_tasks(plan, m, n_panels, threads, |(r0, r1), (p0, p1)| {
                let len = (r1 - r0).div_ceil(mr) * mr * K::KC;
                with_scratch(&PACKED_A, len, |block| {
                    let source = ASource::Own { x, block };
                    let task = TaskArgs {
                        w,
                        act,
                        residual,
                        out: out_ptr,
                        mr,
                        quant,
                    };
                    gemm_task(kern, task, (r0, r1), (p0, p1), source);
                });
            });
        }
    });
}

/// Runs `f` on the rows A is packed from and every row's [`RowQuant`] (`[m]`, in the
/// calling thread's buffer; columns `skip` left out) if `K` quantises A, on `x` and an empty
/// slice otherwise. With a rotated weight (`rotation > 1`), A is `X` rotated (in the calling
/// thread's buffer; see [`RowQuant::of_row_rotated`]).
fn with_row_quant<K: Microkernel>(
    kern: K,
    x: &[f32],
    m: usize,
    k: usize,
    (skip, rotation): (&[usize], usize),
    threads: usize,
    f: impl FnOnce(&[f32], &[RowQuant]),
) {
    if !K::ROW_QUANT {
        return f(x, &[]);
    }
    let fill = |quant: &mut [RowQuant]| {
        let rows = x.chunks_exact(k).zip(quant.iter_mut());
        if threads == 1 {
            rows.for_each(|(row, q)| *q = kern.row_quant(row, skip));
        } else {
            x.par_chunks_exact(k)
                .zip(quant.par_iter_mut())
                .with_min_len(16)
                .for_each(|(row, q)| *q = kern.row_quant(row, skip));
        }
    };
    let fill_rotated = |quant: &mut [RowQuant], rotated: &mut [f32]| {
        let one = |((row, q), out): ((&[f32], &mut RowQuant), &mut [f32])| {
            *q = kern.row_quant_rotated(row, skip, rotation, out);
        };
        if threads == 1 {
            x.chunks_exact(k)
                .zip(quant.iter_mut())
                .zip(rotated.chunks_exact_mut(k))
                .for_each(one);
        } else {
            x.par_chunks_exact(k)
                .zip(quant.par_iter_mut())
                .zip(rotated.par_chunks_exact_mut(k))
                .with_min_len(16)
                .for_each(one);
        }
    };
    let run = |quant: &mut [RowQuant]| {
        if rotation > 1 {
            with_scratch(&CALLER_ROTATED_X, m * k, |rotated: &mut [f32]| {
                fill_rotated(quant, rotated);
                f(rotated, quant);
            });
        } else {
            fill(quant);
            f(x, quant);
        }
    };
    CALLER_ROW_QUANT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < m {
                buf.resize(m, RowQuant::default());
            }
            run(&mut buf[..m]);
        }
        Err(_) => {
            // Cannot happen in this crate (calls never nest on one thread); stay correct.
            let mut temporary = vec![RowQuant::default(); m];
            run(&mut temporary);
        }
    })
}

/// Height of the A micro-panels for `m` rows: the fewest panels of at most `max` rows, evened
/// out (`m = 16` → 2 × 8 rather than 14 + 2; `m = 128` → 13s rather than 9 × 14 + 2). A
/// short panel leaves the FMA units waiting on latency, so evening out pays; results do not
/// change (each element is the same FMA chain in a tile of any height).
fn panel_height(m: usize, max: usize) -> usize {
    let panels = m.div_ceil(max).max(1);
    m.div_ceil(panels).clamp(1, max)
}

/// Runs `task(rows, panels)` for every task of `plan`, on the calling thread if there is
/// only one task or one thread.
fn run_tasks(
    plan: Plan,
    m: usize,
    n_panels: usize,
    threads: usize,
    task: impl Fn((usize, usize), (usize, usize)) + Sync,
) {
    let run = |index: usize| {
        let (rt, pt) = (index / plan.panel_tasks, index % plan.panel_tasks);
        let r0 = rt * plan.rows_per_task;
        let r1 = (r0 + plan.rows_per_task).min(m);
        let p0 = pt * plan.panels_per_task;
        let p1 = (p0 + plan.panels_per_task).min(n_panels);
        if r0 < r1 && p0 < p1 {
            task((r0, r1), (p0, p1));
        }
    };
    let tasks = plan.row_tasks * plan.panel_tasks;
    if tasks == 1 || threads == 1 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// Packs all of `X` (`[m, k]`) for `kern`: K block `b` at `packed[b·m_pad·KC ..]`, laid out
/// as [`pack_a_block`] does for rows `0..m`. Parallel over (K block, row range) jobs.
#[allow(clippy::too_many_arguments)]
fn pack_a_shared<K: Microkernel>(
    kern: K,
    x: &[f32],
    m: usize,
    k: usize,
    mr: usize,
    threads: usize,
    quant: &[RowQuant],
    packed: &mut [K::A],
) {
    let m_pad = m.div_ceil(mr) * mr;
    let k_blocks = k.div_ceil(K::KC);
    // Rows per job: a multiple of MR, about 4 jobs per thread overall.
    let jobs_per_block = (4 * threads).div_ceil(k_blocks).clamp(1, m_pad / mr);
    let rows_per_job = (m_pad / mr).div_ceil(jobs_per_block) * mr;
    let pack_job = |b: usize, j: usize, dst: &mut [K::A]| {
        let pc = b * K::KC;
        let r0 = j * rows_per_job;
        kern.pack_a(
            x,
            k,
            (r0, (r0 + rows_per_job).min(m)),
            pc,
            K::KC.min(k - pc),
            mr,
            quant,
            dst,
        );
    };
    let blocks = packed.chunks_mut(m_pad * K::KC).take(k_blocks).enumerate();
    if threads == 1 {
        for (b, block) in blocks {
            for (j, dst) in block.chunks_mut(rows_per_job * K::KC).enumerate() {
                pack_job(b, j, dst);
            }
        }
    } else {
        packed[..k_blocks * m_pad * K::KC]
            .par_chunks_mut(m_pad * K::KC)
            .enumerate()
            .for_each(|(b, block)| {
                block
                    .par_chunks_mut(rows_per_job * K::KC)
                    .enumerate()
                    .for_each(|(j, dst)| pack_job(b, j, dst));
            });
    }
}

/// Where a task's packed A micro-panels come from.
enum ASource<'a, E> {
    /// Packed once per call by [`pack_a_shared`]; `m_pad` rows per K block.
    Shared { packed: &'a [E], m_pad: usize },
    /// Packed by the task itself, one K block at a time, into `block`.
    Own { x: &'a [f32], block: &'a mut [E] },
}

/// What every task of a call shares.
#[derive(Clone, Copy)]
struct TaskArgs<'a> {
    w: &'a PackedLinear,
    act: Activation,
    residual: Option<&'a [f32]>,
    out: OutPtr,
    /// Height of the A micro-panels.
    mr: usize,
    /// Every row's quantisation (int8 kernels), else empty.
    quant: &'a [RowQuant],
}

/// One task: rows `r0..r1` × panels `p0..p1`, all of K.
fn gemm_task<K: Microkernel>(
    kern: K,
    args: TaskArgs<'_>,
    (r0, r1): (usize, usize),
    (p0, p1): (usize, usize),
    mut source: ASource<'_, K::A>,
) {
    let TaskArgs {
        w,
        act,
        residual,
        out,
        mr,
        quant,
    } = args;
    let (n, k) = (w.n, w.k);
    let mut pc = 0;
    while pc < k {
        let kc = K::KC.min(k - pc);
        let last = pc + kc == k;
        let kc_pad = kc.next_multiple_of(K::KG);
        // This task's micro-panels for this K block, micro-panel q at q·mr·KC.
        let packed_a: &[K::A] = match &mut source {
            ASource::Shared { packed, m_pad } => {
                let start = (pc / K::KC) * *m_pad * K::KC + r0 * K::KC;
                &packed[start..start + (r1 - r0).div_ceil(mr) * mr * K::KC]
            }
            ASource::Own { x, block } => {
                kern.pack_a(x, k, (r0, r1), pc, kc, mr, quant, block);
                block
            }
        };
        // Tile order: groups of `nc_panels()` panels; in a group, each A micro-panel (MR × kc,
        // stays in L1) sweeps the group's B micro-panels (≤ 768 KiB, in L2 after the first
        // sweep). Nested loops, not a flat index: the per-tile bookkeeping must stay far
        // below the tile's few thousand cycles.
        let row_panels = (r1 - r0).div_ceil(mr);
        let in_kernel_act = matches!(act, Activation::Identity | Activation::Relu);
        let group = nc_panels();
        for g0 in (p0..p1).step_by(group) {
            let g1 = (g0 + group).min(p1);
            for q in 0..row_panels {
                let ir = r0 + q * mr;
                let rows = mr.min(r1 - ir);
                let a = &packed_a[q * mr * K::KC..q * mr * K::KC + mr * kc_pad];
                for p in g0..g1 {
                    let c0 = p * NR;
                    let cols = NR.min(n - c0);
                    // The next tile's C (and residual) rows are `n` floats apart, too far
                    // apart for the hardware prefetchers; fetch them one tile ahead.
                    let next = if p + 1 < g1 {
                        Some((ir, rows, c0 + NR))
                    } else if q + 1 < row_panels {
                        Some((ir + mr, mr.min(r1 - ir - mr), g0 * NR))
                    } else if g1 < p1 {
                        Some((r0, mr.min(r1 - r0), g1 * NR))
                    } else {
                        None
                    };
                    if let Some((row, rows, col)) = next {
                        let tile = (row, rows, col, NR.min(n - col));
                        prefetch_tile(out.0, n, tile);
                        if let (true, Some(r)) = (last, residual) {
                            prefetch_tile(r.as_ptr(), n, tile);
                        }
                    }
                    let b = &w.panel::<K::B>(p, K::KSTEP)
                        [pc * NR..(pc + kc.next_multiple_of(K::KSTEP)) * NR];
                    // After the last K block: bias (+ relu + residual) in registers; GELU
                    // runs over the stored tile below.
                    let epi = last.then(|| TileEpilogue {
                        bias: w
                            .bias
                            .as_deref()
                            .map_or(std::ptr::null(), |b| b[c0..].as_ptr()),
                        residual: match (in_kernel_act, residual) {
                            (true, Some(r)) => r[ir * n + c0..].as_ptr(),
                            _ => std::ptr::null(),
                        },
                        ld_residual: n,
                        relu: act == Activation::Relu,
                        row_quant: if quant.is_empty() {
                            std::ptr::null()
                        } else {
                            quant[ir..].as_ptr()
                        },
                        col_scale: w
                            .quant
                            .as_ref()
                            .map_or(std::ptr::null(), |q| q.scale[c0..].as_ptr()),
                        col_sum: w
                            .quant
                            .as_ref()
                            .map_or(std::ptr::null(), |q| q.col_sum[c0..].as_ptr()),
                        outliers: w.outliers.as_ref().map_or(0, |o| o.channels.len()),
                        outlier_weight: w
                            .outliers
                            .as_ref()
                            .map_or(std::ptr::null(), |o| o.weight[c0..].as_ptr()),
                        ld_outlier_weight: w.outliers.as_ref().map_or(0, |o| o.n_pad),
                    });
                    // SAFETY: rows ≤ MR, cols ≤ NR, kc ≤ KC; `a` holds `rows` rows of stride
                    // KC and `b` kc·NR elements (kc rounded up to KSTEP);
                    // the tile C[ir..ir+rows, c0..c0+cols] lies inside `out` ([m, n],
                    // validated) and belongs to this task alone (tasks own disjoint row ×
                    // panel ranges). The bias is padded to whole panels; the residual tile
                    // lies inside `residual` ([m, n]). For the int8 kernels, `quant` has all
                    // m rows and the weight's scales and sums are padded to whole panels.
                    unsafe {
                        kern.tile(
                            kc,
                            a.as_ptr(),
                            b.as_ptr(),
                            out.0.add(ir * n + c0),
                            n,
                            rows,
                            cols,
                            mr,
                            pc > 0,
                            epi,
                        );
                    }
                    if last && !in_kernel_act {
                        let res = residual.map_or(std::ptr::null(), |r| r[ir * n + c0..].as_ptr());
                        // SAFETY: rows ir..ir+rows, columns c0..c0+cols of `out` (and of
                        // `residual`, [m, n]) are in bounds; this task alone owns that tile.
                        unsafe {
                            kern.epilogue_tile(out.0.add(ir * n + c0), n, rows, cols, act, res, n)
                        };
                    }
                }
            }
        }
        pc += kc;
    }
}

/// Prefetches (into L1) the `rows × cols` tile at `(row, col)` of a row-major matrix with `ld`
/// floats per row. A hint only: never faults, never changes results.
#[inline(always)]
fn prefetch_tile(
    base: *const f32,
    ld: usize,
    (row, rows, col, cols): (usize, usize, usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    for i in row..row + rows {
        let first = base.wrapping_add(i * ld + col);
        let last = first.wrapping_add(cols - 1);
        // SAFETY: prefetch is a hint that cannot fault, whatever the address; SSE is part
        // of the x86-64 baseline.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(first.cast());
            _mm_prefetch::<_MM_HINT_T0>(last.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (base, ld, row, rows, col, cols);
}

/// Packs `X[r0..r1, pc..pc+kc]` (`X` row-major, `k` columns) into micro-panels of `mr` rows.
/// Within a micro-panel, k runs in groups of `KG`: element `(i, kk)` sits at
/// `(kk / KG)·mr·KG + i·KG + kk % KG`, and micro-panel `q` starts at `q·mr·KC` (for every
/// K block, even a short last one, so all blocks share one layout). Packing is then a copy
/// of `KG`-float pieces (no transpose), while one k step's `mr` broadcasts still fall in a
/// few cache lines. Rows past
/// `r1` are left as they are: kernels never read them. Needs `kc ≤ KC` and
/// `dst.len() ≥ (⌈(r1−r0)/mr⌉ − 1)·mr·KC + mr·kc_pad` (`kc_pad` = `kc` rounded up to `KG`).
fn pack_a_block(
    x: &[f32],
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    dst: &mut [f32],
) {
    let kc_pad = kc.next_multiple_of(KG);
    let full_groups = kc / KG;
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = &mut dst[q * mr * KC..q * mr * KC + mr * kc_pad];
        let src_row = |i: usize| &x[(ir + i) * k + pc..(ir + i) * k + pc + kc];
        // Full groups: the destination is written sequentially, KG floats per row.
        for (g, group) in panel
            .chunks_exact_mut(mr * KG)
            .take(full_groups)
            .enumerate()
        {
            for (i, piece) in group.chunks_exact_mut(KG).take(rows).enumerate() {
                piece.copy_from_slice(&src_row(i)[g * KG..g * KG + KG]);
            }
        }
        // Tail group (kc not a multiple of KG).
        let tail = kc - full_groups * KG;
        if tail > 0 {
            let group = &mut panel[full_groups * mr * KG..];
            for i in 0..rows {
                group[i * KG..i * KG + tail].copy_from_slice(&src_row(i)[full_groups * KG..]);
            }
        }
    }
}

/// K block of the bf16 kernels: twice [`KC`], so that a B micro-panel is again 32 KiB.
pub(crate) const KC_BF16: usize = 2 * KC;
/// k values per row and group in a packed bf16 A micro-panel: one 64-byte line, as for f32.
pub(crate) const KG_BF16: usize = 2 * KG;

/// [`pack_a_block`] for the bf16 kernels (`KC_BF16`, `KG_BF16`), rounding each value to
/// nearest-even bf16. An odd `kc` gets a zero after its last value, so that the final k pair
/// is complete (its B partner is the panel's zero padding).
pub(crate) fn pack_a_block_bf16(
    x: &[f32],
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    dst: &mut [bf16],
) {
    const G: usize = KG_BF16;
    let kc_pad = kc.next_multiple_of(G);
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = &mut dst[q * mr * KC_BF16..q * mr * KC_BF16 + mr * kc_pad];
        for i in 0..rows {
            let src = &x[(ir + i) * k + pc..(ir + i) * k + pc + kc];
            for (kk, &v) in src.iter().enumerate() {
                panel[(kk / G) * mr * G + i * G + kk % G] = bf16::from_f32(v);
            }
            if kc % 2 == 1 {
                panel[(kc / G) * mr * G + i * G + kc % G] = bf16::ZERO;
            }
        }
    }
}

/// [`pack_a_block`] (`KC`, `KG`, f32 elements) for the bf16 kernels without AVX512_BF16:
/// each value rounded to nearest-even bf16 exactly as [`pack_a_block_bf16`] rounds it, then
/// stored widened back to f32 (exact), so that a kernel broadcasts it straight into an FMA.
/// An odd `kc` gets a zero after its last value, completing the final k pair (its B partner
/// is the panel's zero padding). The plain-loop reference of those kernels' vector packing
/// (test builds only: every kernel that uses this layout packs with SIMD, and all are x86-64).
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn pack_a_block_bf16_widened(
    x: &[f32],
    k: usize,
    (r0, r1): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    dst: &mut [f32],
) {
    let kc_pad = kc.next_multiple_of(KG);
    for (q, ir) in (r0..r1).step_by(mr).enumerate() {
        let rows = mr.min(r1 - ir);
        let panel = &mut dst[q * mr * KC..q * mr * KC + mr * kc_pad];
        for i in 0..rows {
            let src = &x[(ir + i) * k + pc..(ir + i) * k + pc + kc];
            for (kk, &v) in src.iter().enumerate() {
                panel[(kk / KG) * mr * KG + i * KG + kk % KG] = bf16::from_f32(v).to_f32();
            }
            if kc % 2 == 1 {
                panel[(kc / KG) * mr * KG + i * KG + kc % KG] = 0.0;
            }
        }
    }
}

/// Plain-loop reference: `out = act(x·weightᵀ + bias) + residual`, f64 accumulation, on the
/// unpacked `weight` (`[n, k]`).
#[allow(clippy::too_many_arguments)]
pub fn linear_reference(
    x: &[f32],
    m: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    k: usize,
    act: Activation,
    residual: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "linear_reference";
    check_len(OP, "x", checked_elems(OP, "x", m, k)?, x.len())?;
    check_len(
        OP,
        "weight",
        checked_elems(OP, "weight", n, k)?,
        weight.len(),
    )?;
    let mn = checked_elems(OP, "out", m, n)?;
    check_len(OP, "out", mn, out.len())?;
    if let Some(b) = bias {
        check_len(OP, "bias", n, b.len())?;
    }
    if let Some(r) = residual {
        check_len(OP, "residual", mn, r.len())?;
    }
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for kk in 0..k {
                acc += x[i * k + kk] as f64 * weight[j * k + kk] as f64;
            }
            if let Some(b) = bias {
                acc += b[j] as f64;
            }
            let mut y = act.reference(acc);
            if let Some(r) = residual {
                y += r[i * n + j] as f64;
            }
            out[i * n + j] = y as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
