//! The linear layer `Y = act(X·Wᵀ + b) + R` on the GPU (`kernels/gemm.cu`), mirroring
//! [`ember_cpu::gemm::linear`].
//!
//! Shapes: `X` is `[m, k]`, `W` is `[n, k]` (`nn.Linear` layout), `b` is `[n]` (always f32), `R`
//! and `Y` are `[m, n]`; `X`, `W`, `R`, `Y` share the element type.
//!
//! | kernel              | dtypes    | tile (m × n × k) | maths                                  |
//! |---------------------|-----------|------------------|----------------------------------------|
//! | `Mma128x128`        | bf16, f16 | 128 × 128 × 32   | `mma.sync.m16n8k16`, f32 accumulation  |
//! | `Mma64x64`          | bf16, f16 | 64 × 64 × 32     | the same, for batches too small to fill the GPU with 128 × 128 tiles |
//! | `WgmmaTma128x256`   | bf16, f16 | 128 × 256 × 64   | the same, warp-specialised: a producer warp feeds 4 stages with TMA (`cp.async.bulk.tensor`) on mbarriers, two consumer warpgroups |
//! | `WgmmaTma128x128`   | bf16, f16 | 128 × 128 × 64   | the same with `m64n128k16`, for n = 768 (BERT-base's attention output and FFN down), where 128 × 256 tiles leave most multiprocessors idle |
//! | `WgmmaTma128x128Occ2` | bf16, f16 | 128 × 128 × 64 | the same with 3 stages and 288 threads (a producer warp, not a warpgroup), so at most 112 registers a thread: two blocks a multiprocessor, one's epilogue overlapping the other's MMAs |
//! | `WgmmaPingpong128x128` | bf16, f16 | 128 × 128 × 64 | persistent (a block a multiprocessor looping over tiles), a producer warp and two consumer warpgroups that each compute whole tiles and take turns at the tensor cores, so that one's epilogue overlaps the other's MMAs |
//! | `WgmmaPingpongMc128x128` | bf16, f16 | 128 × 128 × 64 | the same in clusters of 2 blocks (rows 2i·128 and (2i + 1)·128 of the same columns) that share the W tile through TMA multicast: 24 KiB read from L2 a stage instead of 32 |
//! | `WgmmaTmaStore128x256` | bf16, f16 | 128 × 256 × 64 | `WgmmaTma128x256`'s main loop, persistent (a block a multiprocessor looping over tiles; the producer loads the next tile's stages during the epilogue), each warp's part of the tile written out in 16 × 64 boxes by TMA stores (`cp.async.bulk.tensor`, shared → global) that overlap the next box and the next tile |
//! | `Wgmma128x256`      | bf16, f16 | 128 × 256 × 64   | Hopper's `wgmma.mma_async.m64n256k16` (`kernels/gemm_sm90.cu`, sm_90 only), f32 accumulation |
//! | `Wgmma128x128`      | bf16, f16 | 128 × 128 × 64   | Hopper's `wgmma.mma_async.m64n128k16` (`kernels/gemm_sm90.cu`, sm_90 only), f32 accumulation |
//! | `Wgmma64x128`       | bf16, f16 | 64 × 128 × 64    | the same, one warpgroup a block        |
//! | `Simt`              | f32       | 64 × 64 × 16     | one `fmaf` chain per output over k in order (ember-cpu's AVX2/AVX-512 order) |
//!
//! The tensor-core kernels need `k % 8 == 0` (16-byte rows for `cp.async`); any `m`, `n`.
//!
//! [`linear`] chooses among the kernels of the device's family ([`CudaDevice::gemm_family`]):
//! `EMBER_CUDA_GEMM` (`mma`, `wgmma`, `wgmma-tma`, `wgmma-tma-occ2`, `wgmma-pingpong`,
//! `wgmma-pingpong-mc`, `wgmma-tma-store`), else
//! [`GemmFamily::default_for`] the device: the TMA kernels on sm_90, the fastest in an H200's
//! GEMM benchmark (benches/results/gpu.md), `mma.sync` elsewhere.

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig};
use ember_cpu::Activation;

use crate::device::{CudaDevice, DeviceTensor, Dtype, Element};
use crate::error::{check_len, checked_product, to_i32, CudaError};
use crate::kernels::KernelFile;
use crate::launch::Launch;
use crate::nvrtc::Arch;

/// Threads per block of the `mma.sync` and SIMT kernels (the `wgmma` ones: 128 a warpgroup).
const THREADS: u32 = 256;
/// `kernels/gemm.cu`'s `GEMM_BK + 8` and `GEMM_STAGES`: shared memory of the mma kernels'
/// pipeline (halves per row, stages).
const MMA_LDS: u32 = 32 + 8;
const MMA_STAGES: u32 = 3;
/// The mma kernels' epilogue tile row stride, floats (`CS = BN + 8`).
const MMA_EPILOGUE_PAD: u32 = 8;
/// `kernels/gemm_sm90.cu`'s `WG_STAGES` and tile row (`WG_BK` halves: 128 bytes), and the
/// 1024 bytes of slack the kernel may skip to align its tiles to the swizzle's 1024 bytes.
const WGMMA_STAGES: u32 = 4;
/// `kernels/gemm_sm90.cu`'s `WS_OCC2_STAGES`: `WgmmaTma128x128Occ2`'s stages.
const WGMMA_OCC2_STAGES: u32 = 3;
/// `kernels/gemm_sm90.cu`'s `WS_PP_STAGES`: the ping-pong kernels' stages.
const WGMMA_PP_STAGES: u32 = 5;
/// `WS_PP_EPI_ROWS` and `WS_PP_EPI_STRIDE`: the rows and row stride (floats) of each of the
/// ping-pong kernels' consumer warps' epilogue buffer.
const WGMMA_PP_EPI_ROWS: u32 = 8;
const WGMMA_PP_EPI_STRIDE: u32 = 128 + 8;
/// `kernels/gemm_sm90.cu`'s `WS_MC_CLUSTER`: `WgmmaPingpongMc128x128`'s blocks per cluster.
const WGMMA_MC_CLUSTER: u32 = 2;
/// `kernels/gemm_sm90.cu`'s `WS_ST_STAGES`, `WS_ST_BOX_ROWS` and `WS_ST_BOX_COLS`:
/// `WgmmaTmaStore128x256`'s stages and each consumer warp's output box (T) and f32 scratch
/// (half the box's rows).
const WGMMA_ST_STAGES: u32 = 4;
const WGMMA_ST_BOX_ROWS: u32 = 16;
const WGMMA_ST_BOX_COLS: u32 = 64;
const WGMMA_ROW_BYTES: u32 = 128;
const WGMMA_ALIGN_SLACK: u32 = 1024;

/// A GEMM kernel of `kernels/gemm.cu` (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmKernel {
    /// Tensor cores, 128 × 128 tiles.
    Mma128x128,
    /// Tensor cores, 64 × 64 tiles.
    Mma64x64,
    /// Hopper's warpgroup tensor cores fed by TMA, warp-specialised, 128 × 256 tiles (sm_90
    /// only).
    WgmmaTma128x256,
    /// As `WgmmaTma128x256`, 128 × 128 tiles (sm_90 only).
    WgmmaTma128x128,
    /// As `WgmmaTma128x128`, with 3 stages and registers for two blocks a multiprocessor
    /// (sm_90 only).
    WgmmaTma128x128Occ2,
    /// Persistent, TMA-fed, 128 × 128 tiles, two consumer warpgroups taking turns at the tensor
    /// cores, each on tiles of its own (sm_90 only).
    WgmmaPingpong128x128,
    /// As `WgmmaPingpong128x128`, in clusters of 2 blocks sharing the W tile through TMA
    /// multicast (sm_90 only).
    WgmmaPingpongMc128x128,
    /// As `WgmmaTma128x256`, persistent, its output written by TMA stores that overlap the next
    /// tile (sm_90 only; n % 8 == 0, else `WgmmaTma128x256` runs).
    WgmmaTmaStore128x256,
    /// Hopper's warpgroup tensor cores, 128 × 256 tiles (sm_90 only).
    Wgmma128x256,
    /// Hopper's warpgroup tensor cores, 128 × 128 tiles (sm_90 only).
    Wgmma128x128,
    /// Hopper's warpgroup tensor cores, 64 × 128 tiles (sm_90 only).
    Wgmma64x128,
    /// CUDA cores, exact f32.
    Simt,
}

impl GemmKernel {
    /// Every kernel.
    pub const ALL: [GemmKernel; 12] = [
        GemmKernel::Mma128x128,
        GemmKernel::Mma64x64,
        GemmKernel::WgmmaTma128x256,
        GemmKernel::WgmmaTma128x128,
        GemmKernel::WgmmaTma128x128Occ2,
        GemmKernel::WgmmaPingpong128x128,
        GemmKernel::WgmmaPingpongMc128x128,
        GemmKernel::WgmmaTmaStore128x256,
        GemmKernel::Wgmma128x256,
        GemmKernel::Wgmma128x128,
        GemmKernel::Wgmma64x128,
        GemmKernel::Simt,
    ];

    /// The kernel's `extern "C"` name for `dtype`, or `None` if it does not handle `dtype`.
    pub fn entry_point(self, dtype: Dtype) -> Option<&'static str> {
        match (self, dtype) {
            (GemmKernel::Mma128x128, Dtype::Bf16) => Some("gemm_mma_128x128_bf16"),
            (GemmKernel::Mma128x128, Dtype::F16) => Some("gemm_mma_128x128_f16"),
            (GemmKernel::Mma64x64, Dtype::Bf16) => Some("gemm_mma_64x64_bf16"),
            (GemmKernel::Mma64x64, Dtype::F16) => Some("gemm_mma_64x64_f16"),
            (GemmKernel::WgmmaTma128x256, Dtype::Bf16) => Some("gemm_wgmma_tma_128x256_bf16"),
            (GemmKernel::WgmmaTma128x256, Dtype::F16) => Some("gemm_wgmma_tma_128x256_f16"),
            (GemmKernel::WgmmaTma128x128, Dtype::Bf16) => Some("gemm_wgmma_tma_128x128_bf16"),
            (GemmKernel::WgmmaTma128x128, Dtype::F16) => Some("gemm_wgmma_tma_128x128_f16"),
            (GemmKernel::WgmmaTma128x128Occ2, Dtype::Bf16) => {
                Some("gemm_wgmma_tma_128x128_occ2_bf16")
            }
            (GemmKernel::WgmmaTma128x128Occ2, Dtype::F16) => {
                Some("gemm_wgmma_tma_128x128_occ2_f16")
            }
            (GemmKernel::WgmmaPingpong128x128, Dtype::Bf16) => {
                Some("gemm_wgmma_pingpong_128x128_bf16")
            }
            (GemmKernel::WgmmaPingpong128x128, Dtype::F16) => {
                Some("gemm_wgmma_pingpong_128x128_f16")
            }
            (GemmKernel::WgmmaPingpongMc128x128, Dtype::Bf16) => {
                Some("gemm_wgmma_pingpong_mc_128x128_bf16")
            }
            (GemmKernel::WgmmaPingpongMc128x128, Dtype::F16) => {
                Some("gemm_wgmma_pingpong_mc_128x128_f16")
            }
            (GemmKernel::WgmmaTmaStore128x256, Dtype::Bf16) => {
                Some("gemm_wgmma_tma_store_128x256_bf16")
            }
            (GemmKernel::WgmmaTmaStore128x256, Dtype::F16) => {
                Some("gemm_wgmma_tma_store_128x256_f16")
            }
            (GemmKernel::Wgmma128x256, Dtype::Bf16) => Some("gemm_wgmma_128x256_bf16"),
            (GemmKernel::Wgmma128x256, Dtype::F16) => Some("gemm_wgmma_128x256_f16"),
            (GemmKernel::Wgmma128x128, Dtype::Bf16) => Some("gemm_wgmma_128x128_bf16"),
            (GemmKernel::Wgmma128x128, Dtype::F16) => Some("gemm_wgmma_128x128_f16"),
            (GemmKernel::Wgmma64x128, Dtype::Bf16) => Some("gemm_wgmma_64x128_bf16"),
            (GemmKernel::Wgmma64x128, Dtype::F16) => Some("gemm_wgmma_64x128_f16"),
            (GemmKernel::Simt, Dtype::F32) => Some("gemm_f32"),
            _ => None,
        }
    }

    /// The kernel file that holds it.
    pub fn file(self) -> KernelFile {
        match self {
            GemmKernel::WgmmaTma128x256
            | GemmKernel::WgmmaTma128x128
            | GemmKernel::WgmmaTma128x128Occ2
            | GemmKernel::WgmmaPingpong128x128
            | GemmKernel::WgmmaPingpongMc128x128
            | GemmKernel::WgmmaTmaStore128x256
            | GemmKernel::Wgmma128x256
            | GemmKernel::Wgmma128x128
            | GemmKernel::Wgmma64x128 => KernelFile::GemmSm90,
            _ => KernelFile::Gemm,
        }
    }

    /// Whether it runs on `arch` (the `wgmma` kernels: sm_90 only).
    pub fn runs_on(self, arch: Arch) -> bool {
        self.file().compiles_for(arch)
    }

    /// Whether it takes X and W as tensor maps (the warp-specialised TMA kernels).
    fn uses_tma(self) -> bool {
        matches!(
            self,
            GemmKernel::WgmmaTma128x256
                | GemmKernel::WgmmaTma128x128
                | GemmKernel::WgmmaTma128x128Occ2
                | GemmKernel::WgmmaPingpong128x128
                | GemmKernel::WgmmaPingpongMc128x128
                | GemmKernel::WgmmaTmaStore128x256
        )
    }

    /// Whether its blocks loop over the tiles (a grid of at most one block per
    /// multiprocessor, one dimension) rather than computing one tile each.
    fn persistent(self) -> bool {
        matches!(
            self,
            GemmKernel::WgmmaPingpong128x128
                | GemmKernel::WgmmaPingpongMc128x128
                | GemmKernel::WgmmaTmaStore128x256
        )
    }

    /// Blocks per thread-block cluster (the kernel's `__cluster_dims__`; 1: no clusters).
    fn cluster(self) -> u32 {
        match self {
            GemmKernel::WgmmaPingpongMc128x128 => WGMMA_MC_CLUSTER,
            _ => 1,
        }
    }

    /// Output tile `(rows, cols)` of one block.
    fn tile(self) -> (u32, u32) {
        match self {
            GemmKernel::WgmmaTma128x256
            | GemmKernel::WgmmaTmaStore128x256
            | GemmKernel::Wgmma128x256 => (128, 256),
            GemmKernel::Mma128x128
            | GemmKernel::WgmmaTma128x128
            | GemmKernel::WgmmaTma128x128Occ2
            | GemmKernel::WgmmaPingpong128x128
            | GemmKernel::WgmmaPingpongMc128x128
            | GemmKernel::Wgmma128x128 => (128, 128),
            GemmKernel::Wgmma64x128 => (64, 128),
            GemmKernel::Mma64x64 | GemmKernel::Simt => (64, 64),
        }
    }

    /// Threads per block: 256, or one warpgroup (128) per 64 rows for `wgmma`, plus the
    /// producer warpgroup for the TMA kernels (a producer warp for `WgmmaTma128x128Occ2`); the
    /// ping-pong kernels: two consumer warpgroups (a whole tile each) and a producer warp.
    fn threads(self) -> u32 {
        match self {
            GemmKernel::WgmmaTma128x256 | GemmKernel::WgmmaTma128x128 => {
                (self.tile().0 / 64 + 1) * 128
            }
            // The consumer warpgroups, then one producer warp.
            GemmKernel::WgmmaTma128x128Occ2 => self.tile().0 / 64 * 128 + 32,
            GemmKernel::WgmmaPingpong128x128 | GemmKernel::WgmmaPingpongMc128x128 => 2 * 128 + 32,
            // Two consumer warpgroups and a producer warpgroup (setmaxnreg needs whole ones).
            GemmKernel::WgmmaTmaStore128x256 => 3 * 128,
            GemmKernel::Wgmma128x256 | GemmKernel::Wgmma128x128 | GemmKernel::Wgmma64x128 => {
                self.tile().0 * 2
            }
            _ => THREADS,
        }
    }

    /// Dynamic shared memory per block, bytes: the larger of the pipeline (bf16/f16) and the
    /// epilogue's f32 tile, which reuses it; for the ping-pong kernels, whose epilogue runs
    /// beside the pipeline, their sum.
    fn dynamic_smem(self) -> u32 {
        let (bm, bn) = self.tile();
        let epilogue = bm * (bn + MMA_EPILOGUE_PAD) * 4;
        match self {
            GemmKernel::Simt => 0,
            GemmKernel::Mma128x128 | GemmKernel::Mma64x64 => {
                let pipeline = MMA_STAGES * (bm + bn) * MMA_LDS * 2;
                pipeline.max(epilogue)
            }
            GemmKernel::Wgmma128x256 | GemmKernel::Wgmma128x128 | GemmKernel::Wgmma64x128 => {
                let pipeline = WGMMA_STAGES * (bm + bn) * WGMMA_ROW_BYTES;
                pipeline.max(epilogue) + WGMMA_ALIGN_SLACK
            }
            GemmKernel::WgmmaTma128x256
            | GemmKernel::WgmmaTma128x128
            | GemmKernel::WgmmaTma128x128Occ2 => {
                // The stages, then a `full` and an `empty` mbarrier (8 bytes) per stage.
                let stages = if self == GemmKernel::WgmmaTma128x128Occ2 {
                    WGMMA_OCC2_STAGES
                } else {
                    WGMMA_STAGES
                };
                let pipeline = stages * (bm + bn) * WGMMA_ROW_BYTES + stages * 2 * 8;
                pipeline.max(epilogue) + WGMMA_ALIGN_SLACK
            }
            GemmKernel::WgmmaPingpong128x128 | GemmKernel::WgmmaPingpongMc128x128 => {
                // The stages, each consumer warp's epilogue buffer, then the mbarriers: full
                // and empty per stage, turn per consumer.
                let stages = WGMMA_PP_STAGES * (bm + bn) * WGMMA_ROW_BYTES;
                let buffers = 8 * WGMMA_PP_EPI_ROWS * WGMMA_PP_EPI_STRIDE * 4;
                let barriers = (2 * WGMMA_PP_STAGES + 2) * 8;
                stages + buffers + barriers + WGMMA_ALIGN_SLACK
            }
            GemmKernel::WgmmaTmaStore128x256 => {
                // The stages, each consumer warp's f32 scratch (half its box's rows) and box of
                // bf16/f16, then full and empty per stage.
                let stages = WGMMA_ST_STAGES * (bm + bn) * WGMMA_ROW_BYTES;
                let box_elements = WGMMA_ST_BOX_ROWS * WGMMA_ST_BOX_COLS;
                let warps = 8 * (box_elements / 2 * 4 + box_elements * 2);
                let barriers = 2 * WGMMA_ST_STAGES * 8;
                stages + warps + barriers + WGMMA_ALIGN_SLACK
            }
        }
    }

    /// What [`linear`] runs: `Simt` for f32; for bf16/f16, the largest tile of `family` whose
    /// blocks still busy 3/4 of the multiprocessors (`Mma`: 128 × 128, else 64 × 64;
    /// `Wgmma`: 128 × 256, 128 × 128, else 64 × 128; `WgmmaTma`: the TMA kernels' 128 × 256
    /// and 128 × 128 (the latter also when its blocks busy half the multiprocessors), else
    /// `Wgmma`'s 64 × 128, and `WgmmaTma128x128Occ2` for an FFN up (n ≥ 3072) with an
    /// exponential activation (`act`: GELU, GELU-tanh, SiLU) where two of its blocks share every
    /// multiprocessor; `WgmmaTmaOcc2`: `WgmmaTma128x128Occ2` where its tiles fill the
    /// multiprocessors, else as `WgmmaTma`; `WgmmaPingpong` and `WgmmaPingpongMc`:
    /// `WgmmaPingpong128x128` or `WgmmaPingpongMc128x128` where their tiles give both consumers
    /// of every multiprocessor one, else as `WgmmaTma`; `WgmmaTmaStore`: as `WgmmaTma`, with
    /// `WgmmaTmaStore128x256` for `WgmmaTma128x256`).
    pub fn choose(
        dtype: Dtype,
        m: usize,
        n: usize,
        multiprocessors: u32,
        family: GemmFamily,
        act: Activation,
    ) -> GemmKernel {
        if dtype == Dtype::F32 {
            return GemmKernel::Simt;
        }
        if family == GemmFamily::WgmmaTmaStore {
            return match GemmKernel::choose(dtype, m, n, multiprocessors, GemmFamily::WgmmaTma, act)
            {
                GemmKernel::WgmmaTma128x256 => GemmKernel::WgmmaTmaStore128x256,
                kernel => kernel,
            };
        }
        let blocks = |(bm, bn): (u32, u32)| m.div_ceil(bm as usize) * n.div_ceil(bn as usize);
        // WgmmaTmaOcc2: two blocks a multiprocessor, worth it where there are blocks for both;
        // WgmmaPingpong: two consumer warpgroups a multiprocessor, each on whole tiles, worth it
        // where there are tiles for both (a guess, not yet measured). Elsewhere they choose as
        // WgmmaTma.
        let sms = multiprocessors as usize;
        match family {
            GemmFamily::WgmmaTmaOcc2 if blocks((128, 128)) >= sms => {
                return GemmKernel::WgmmaTma128x128Occ2
            }
            // The default family on BERT-base's FFN up (n = 4·768; larger models' too) where two
            // blocks can share every multiprocessor, with an activation that costs the epilogue
            // ~20 instructions an element: there one block's epilogue overlapping the other's
            // MMAs pays. On an H200 with gated timing (benches/results/gpu.md, run 6)
            // WgmmaTma128x128Occ2 beat WgmmaTma128x256 with + b + GELU by 4.5–15 % (T = 2400 and
            // 4800, bf16 and f16), and lost by 4.4–5.9 % on the plain product; ReLU's epilogue
            // is as cheap as the plain one's (unmeasured). Not below n = 3072: the
            // wgmma-tma-occ2 family, which also takes it for MiniLM's FFN up (n = 1536: 144
            // blocks at its batch, about one a multiprocessor), was 13 % slower end to end
            // (run 4); nor for fewer than two blocks a multiprocessor (unmeasured).
            GemmFamily::WgmmaTma
                if n >= 3072
                    && blocks((128, 128)) >= 2 * sms
                    && matches!(
                        act,
                        Activation::Gelu | Activation::GeluTanh | Activation::Silu
                    ) =>
            {
                return GemmKernel::WgmmaTma128x128Occ2
            }
            GemmFamily::WgmmaPingpong if blocks((128, 128)) >= 2 * sms => {
                return GemmKernel::WgmmaPingpong128x128
            }
            GemmFamily::WgmmaPingpongMc if blocks((128, 128)) >= 2 * sms => {
                return GemmKernel::WgmmaPingpongMc128x128
            }
            _ => {}
        }
        // 3/4, not all: on an H200 (132 SMs, benches/results/gpu.md, run 4), where the rule
        // changes the choice (n = 768: 114 blocks of 128 × 128 at T = 2400, of 128 × 256 at
        // T = 4800), the larger tile was faster in 15 of 16 cases, by 2–28 %, and 1 % slower
        // in one (mma.sync, f16, 768 × 768); 57 blocks (43 %) of 128 × 256 were slower.
        let fills = |tile| 4 * blocks(tile) >= 3 * sms;
        let (candidates, smallest): (&[GemmKernel], GemmKernel) = match family {
            GemmFamily::Mma => (&[GemmKernel::Mma128x128], GemmKernel::Mma64x64),
            GemmFamily::Wgmma => (
                &[GemmKernel::Wgmma128x256, GemmKernel::Wgmma128x128],
                GemmKernel::Wgmma64x128,
            ),
            GemmFamily::WgmmaTma
            | GemmFamily::WgmmaTmaOcc2
            | GemmFamily::WgmmaPingpong
            | GemmFamily::WgmmaPingpongMc
            | GemmFamily::WgmmaTmaStore => (
                &[GemmKernel::WgmmaTma128x256, GemmKernel::WgmmaTma128x128],
                GemmKernel::Wgmma64x128,
            ),
        };
        let chosen = candidates
            .iter()
            .copied()
            .find(|kernel| fills(kernel.tile()));
        // The TMA 128 × 128 kernel was written for n = 768 at T ≈ 2400 (114 tiles on 132
        // SMs, the fastest kernel of all there on an H200: attention output, FFN down): it
        // also takes a grid that busies at least half the SMs in one wave, rather than twice
        // as many half tiles (a guess: no shape of the GPU table falls between).
        let half_fills = |tile| 2 * blocks(tile) >= sms;
        chosen
            .or_else(|| {
                (!matches!(family, GemmFamily::Mma | GemmFamily::Wgmma)
                    && half_fills(GemmKernel::WgmmaTma128x128.tile()))
                .then_some(GemmKernel::WgmmaTma128x128)
            })
            .unwrap_or(smallest)
    }
}

/// Which tensor-core kernels [`linear`] chooses among (`EMBER_CUDA_GEMM`, read by
/// [`CudaDevice::open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmFamily {
    /// `mma.sync` (`kernels/gemm.cu`): any sm_80+ GPU; the default before sm_90.
    Mma,
    /// Hopper's `wgmma` fed by `cp.async` (`kernels/gemm_sm90.cu`), sm_90 only.
    Wgmma,
    /// As `Wgmma`, but the warp-specialised TMA kernel for the large tiles, and
    /// `WgmmaTma128x128Occ2` on FFN-up shapes (n ≥ 3072) with two 128 × 128 blocks for every
    /// multiprocessor, sm_90 only; the default on sm_90 (the fastest family in an H200's GEMM
    /// benchmark, benches/results/gpu.md).
    WgmmaTma,
    /// As `WgmmaTma`, with `WgmmaTma128x128Occ2` for the tiles that fill the GPU, sm_90 only.
    WgmmaTmaOcc2,
    /// As `WgmmaTma`, with `WgmmaPingpong128x128` where there are two tiles for every
    /// multiprocessor, sm_90 only.
    WgmmaPingpong,
    /// As `WgmmaPingpong`, with `WgmmaPingpongMc128x128`, sm_90 only.
    WgmmaPingpongMc,
    /// As `WgmmaTma`, with `WgmmaTmaStore128x256` wherever that takes `WgmmaTma128x256`, sm_90
    /// only.
    WgmmaTmaStore,
}

impl GemmFamily {
    /// The family an `EMBER_CUDA_GEMM` value names: `mma`, `wgmma`, `wgmma-tma`,
    /// `wgmma-tma-occ2`, `wgmma-pingpong`, `wgmma-pingpong-mc` or `wgmma-tma-store`.
    pub fn parse(value: &str) -> Option<GemmFamily> {
        match value {
            "mma" => Some(GemmFamily::Mma),
            "wgmma" => Some(GemmFamily::Wgmma),
            "wgmma-tma" => Some(GemmFamily::WgmmaTma),
            "wgmma-tma-occ2" => Some(GemmFamily::WgmmaTmaOcc2),
            "wgmma-pingpong" => Some(GemmFamily::WgmmaPingpong),
            "wgmma-pingpong-mc" => Some(GemmFamily::WgmmaPingpongMc),
            "wgmma-tma-store" => Some(GemmFamily::WgmmaTmaStore),
            _ => None,
        }
    }

    /// What [`linear`] uses when `EMBER_CUDA_GEMM` is unset: `WgmmaTma` where it runs (sm_90:
    /// in an H200's GEMM benchmark its kernels beat `mma.sync` on every BERT-base shape, by
    /// 1.2–2.2×, benches/results/gpu.md; end to end on MiniLM the two were within noise of each
    /// other), else `Mma`.
    pub fn default_for(arch: Arch) -> GemmFamily {
        if GemmFamily::WgmmaTma.runs_on(arch) {
            GemmFamily::WgmmaTma
        } else {
            GemmFamily::Mma
        }
    }

    /// Whether its kernels run on `arch`: the wgmma families' file must compile for it.
    pub fn runs_on(self, arch: Arch) -> bool {
        self == GemmFamily::Mma || KernelFile::GemmSm90.compiles_for(arch)
    }
}

/// A linear layer's weight `[n, k]` (in `E`) and optional bias `[n]` (f32) on the device,
/// uploaded once.
#[derive(Debug)]
pub struct DeviceLinear<E: Element> {
    weight: DeviceTensor<E>,
    bias: Option<DeviceTensor<f32>>,
    n: usize,
    k: usize,
}

impl<E: Element> DeviceLinear<E> {
    /// Uploads `weight` (`[n, k]`, `nn.Linear` layout, rounded to `E`) and `bias` (`[n]`).
    pub fn upload(
        device: &CudaDevice,
        weight: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
    ) -> Result<Self, CudaError> {
        const OP: &str = "DeviceLinear::upload";
        check_len(
            OP,
            "weight",
            checked_product(OP, "weight", &[n, k])?,
            weight.len(),
        )?;
        if let Some(b) = bias {
            check_len(OP, "bias", n, b.len())?;
        }
        Ok(DeviceLinear {
            weight: device.upload(weight)?,
            bias: bias.map(|b| device.upload(b)).transpose()?,
            n,
            k,
        })
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// `out = act(x·Wᵀ + b) + residual` with the kernel [`GemmKernel::choose`] picks.
///
/// `x`: `[m, k]`, `out` and `residual`: `[m, n]`. Queued on the device's stream; errors on any
/// shape mismatch before launching.
pub fn linear<E: Element>(
    device: &CudaDevice,
    x: &DeviceTensor<E>,
    m: usize,
    w: &DeviceLinear<E>,
    act: Activation,
    residual: Option<&DeviceTensor<E>>,
    out: &mut DeviceTensor<E>,
) -> Result<(), CudaError> {
    let kernel = GemmKernel::choose(
        E::DTYPE,
        m,
        w.n,
        device.multiprocessors(),
        device.gemm_family(),
        act,
    );
    linear_with_kernel(device, kernel, x, m, w, act, residual, out)
}

/// [`linear`] on an explicit kernel (`Err(InvalidShape)` if it does not handle `E`).
#[allow(clippy::too_many_arguments)]
pub fn linear_with_kernel<E: Element>(
    device: &CudaDevice,
    kernel: GemmKernel,
    x: &DeviceTensor<E>,
    m: usize,
    w: &DeviceLinear<E>,
    act: Activation,
    residual: Option<&DeviceTensor<E>>,
    out: &mut DeviceTensor<E>,
) -> Result<(), CudaError> {
    const OP: &str = "linear";
    let (n, k) = (w.n, w.k);
    let Some(entry_point) = kernel.entry_point(E::DTYPE) else {
        return Err(CudaError::InvalidShape {
            op: OP,
            reason: format!("kernel {kernel:?} does not handle {}", E::DTYPE),
        });
    };
    check_len(OP, "x", checked_product(OP, "x", &[m, k])?, x.len())?;
    let mn = checked_product(OP, "out", &[m, n])?;
    check_len(OP, "out", mn, out.len())?;
    if let Some(r) = residual {
        check_len(OP, "residual", mn, r.len())?;
    }
    if !kernel.runs_on(device.arch()) {
        return Err(CudaError::InvalidShape {
            op: OP,
            reason: format!("kernel {kernel:?} does not run on {}", device.arch()),
        });
    }
    if kernel != GemmKernel::Simt && !k.is_multiple_of(8) {
        return Err(CudaError::InvalidShape {
            op: OP,
            reason: format!("k = {k}: the tensor-core kernels need k % 8 == 0"),
        });
    }
    let (m_i, n_i, k_i) = (
        to_i32(OP, "m", m)?,
        to_i32(OP, "n", n)?,
        to_i32(OP, "k", k)?,
    );
    if mn == 0 {
        return Ok(());
    }
    // A product over no k (out = act(b) + R): a tensor map cannot describe an empty k, so the
    // TMA-fed kernels hand it to the cp.async one of their architecture, which runs no k tile.
    let (kernel, entry_point) = match GemmKernel::Wgmma64x128.entry_point(E::DTYPE) {
        Some(cp_async) if k == 0 && kernel.uses_tma() => (GemmKernel::Wgmma64x128, cp_async),
        _ => (kernel, entry_point),
    };
    // Y's tensor map needs a 16-byte row stride: for any other n the TMA-stored kernel's
    // one-tile twin, whose main loop and epilogue arithmetic are the same, runs instead.
    let (kernel, entry_point) = match GemmKernel::WgmmaTma128x256.entry_point(E::DTYPE) {
        Some(twin) if kernel == GemmKernel::WgmmaTmaStore128x256 && !n.is_multiple_of(8) => {
            (GemmKernel::WgmmaTma128x256, twin)
        }
        _ => (kernel, entry_point),
    };
    let smem = kernel.dynamic_smem();
    let function = device.function(kernel.file(), entry_point, smem)?;
    let (bm, bn) = kernel.tile();
    let (row_blocks, col_blocks) = (m.div_ceil(bm as usize), n.div_ceil(bn as usize));
    let (grid_x, grid_y) = if kernel.persistent() {
        // Groups of `cluster` row blocks (one tile each without clusters), indexed by i32 in the
        // kernel; at most one block per multiprocessor, whole clusters.
        let cluster = kernel.cluster() as usize;
        let groups = row_blocks
            .div_ceil(cluster)
            .checked_mul(col_blocks)
            .filter(|&groups| i32::try_from(groups).is_ok())
            .ok_or_else(|| CudaError::InvalidShape {
                op: OP,
                reason: format!("{m} × {n} has more than 2^31 − 1 tiles"),
            })?;
        let mut clusters = groups.min((device.multiprocessors() as usize / cluster).max(1));
        if cluster > 1 {
            // All at once, or the surplus would run as a second wave of whole shares.
            let resident = device.max_active_clusters(
                &function,
                entry_point,
                kernel.cluster(),
                kernel.threads(),
                smem,
            )?;
            clusters = clusters.min(resident as usize);
        }
        ((clusters * cluster) as u32, 1)
    } else {
        let grid_y = u32::try_from(row_blocks)
            .ok()
            .filter(|&y| y <= 65_535)
            .ok_or_else(|| CudaError::InvalidShape {
                op: OP,
                reason: format!("m = {m} needs more than 65,535 row blocks"),
            })?;
        (col_blocks as u32, grid_y) // n fits i32, so col_blocks fits u32
    };
    let config = LaunchConfig {
        grid_dim: (grid_x, grid_y, 1),
        block_dim: (kernel.threads(), 1, 1),
        shared_mem_bytes: smem,
    };
    let null: u64 = 0;
    let act_i = crate::activation_code(act);
    let stream = device.stream();
    // The TMA kernel takes X and W as tensor maps (by value) instead of pointers; the guards keep
    // cudarc's stream-ordering records for the two buffers until the launch is queued.
    let maps = if kernel.uses_tma() {
        let (x_ptr, x_read) = x.slice().device_ptr(stream);
        let (w_ptr, w_read) = w.weight.slice().device_ptr(stream);
        Some((
            TensorMap::tile_rows::<E>(x_ptr, m, k, bm)?,
            // A cluster's blocks each load their share of the W tile's rows.
            TensorMap::tile_rows::<E>(w_ptr, n, k, bn / kernel.cluster())?,
            (x_read, w_read),
        ))
    } else {
        None
    };
    // The TMA-stored kernel takes Y as a tensor map too (third), and no Y pointer.
    let out_slice = out.slice_mut();
    let (y_map, y_slice) = if kernel == GemmKernel::WgmmaTmaStore128x256 {
        let (y_ptr, y_write) = out_slice.device_ptr_mut(stream);
        let map = TensorMap::tile_rows::<E>(y_ptr, m, n, WGMMA_ST_BOX_ROWS)?;
        (Some((map, y_write)), None)
    } else {
        (None, Some(out_slice))
    };
    let mut launch = Launch::new(stream, &function);
    match &maps {
        Some((x_map, w_map, _)) => launch.value(x_map).value(w_map),
        None => launch.input(x.slice()).input(w.weight.slice()),
    };
    if let Some((map, _)) = &y_map {
        launch.value(map);
    }
    match &w.bias {
        Some(b) => launch.input(b.slice()),
        None => launch.value(&null),
    };
    match residual {
        Some(r) => launch.input(r.slice()),
        None => launch.value(&null),
    };
    if let Some(y) = y_slice {
        launch.output(y);
    }
    launch.value(&m_i).value(&n_i).value(&k_i).value(&act_i);
    // SAFETY: the arguments match gemm.cu's (and gemm_sm90.cu's) signature (X, W, bias, R, Y: device pointers of
    // the kernel's element type, null for an absent bias/residual; m, n, k, act: int; the TMA
    // kernels take X and W as tensor maps, and the TMA-stored one Y as a third map after them
    // and no Y pointer), and every buffer was checked above to hold the elements the kernel
    // touches for (m, n, k); the maps describe exactly those buffers' [m, k], [n, k], [m, n].
    unsafe { launch.launch("launch gemm", config) }?;
    Ok(())
}

/// A `CUtensorMap` as a kernel argument (`kernels/gemm_sm90.cu`'s `TensorMap`, passed by value
/// as a `__grid_constant__` parameter): 128 bytes, 64-byte aligned.
#[repr(transparent)]
struct TensorMap(cudarc::driver::sys::CUtensorMap);

// SAFETY: a plain 128-byte C struct (`#[repr(C, align(64))]` in cudarc's bindings), valid as
// the kernel's by-value parameter of the same layout.
unsafe impl cudarc::driver::DeviceRepr for TensorMap {}

impl TensorMap {
    /// The 2-D map gemm_sm90.cu's TMA kernel loads a row-major `[rows, k]` operand of `E` at
    /// `base` with: dims {k, rows}, boxes of {64, `box_rows`} elements (one 128-byte row of
    /// bf16/f16 per tile row), 128-byte swizzle (the layout the wgmma descriptors read), zeros
    /// past the edges. Needs `k % 8 == 0` (16-byte row stride), which `linear` checks first.
    /// The TMA-stored kernel writes Y `[m, n]` through the same kind of map (k = n: its boxes
    /// are 16 rows of 64 columns; `linear` runs it only for n % 8 == 0).
    fn tile_rows<E: Element>(
        base: cudarc::driver::sys::CUdeviceptr,
        rows: usize,
        k: usize,
        box_rows: u32,
    ) -> Result<TensorMap, CudaError> {
        use cudarc::driver::sys;
        let data_type = match E::DTYPE {
            Dtype::Bf16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            Dtype::F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            Dtype::F32 => {
                return Err(CudaError::InvalidShape {
                    op: "linear",
                    reason: "the TMA kernel takes bf16 or f16".to_owned(),
                })
            }
        };
        let dims = [k as u64, rows as u64];
        let strides = [(k * std::mem::size_of::<E::Bits>()) as u64];
        let boxes = [WGMMA_ROW_BYTES / 2, box_rows];
        let element_strides = [1u32, 1];
        let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
        // SAFETY: `map` is a writable CUtensorMap; the arrays hold `rank` = 2 entries (one
        // stride: the outer dimension's); `base` is a live allocation of at least rows·k
        // elements (linear checked the lengths), 256-byte aligned.
        let status = unsafe {
            sys::cuTensorMapEncodeTiled(
                map.as_mut_ptr(),
                data_type,
                2,
                base as *mut std::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                element_strides.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        status
            .result()
            .map_err(CudaError::driver("cuTensorMapEncodeTiled"))?;
        // SAFETY: cuTensorMapEncodeTiled succeeded, so it wrote the whole map.
        Ok(TensorMap(unsafe { map.assume_init() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_matches_gemm_cu() {
        // gemm.cu: 128×128 needs 69,632 bytes (epilogue tile), 64×64 30,720 (pipeline).
        assert_eq!(GemmKernel::Mma128x128.dynamic_smem(), 69_632);
        assert_eq!(GemmKernel::Mma64x64.dynamic_smem(), 30_720);
        assert_eq!(GemmKernel::Simt.dynamic_smem(), 0);
        // gemm_sm90.cu: 4 stages of (BM + 128) rows × 128 bytes, + 1024 bytes of alignment.
        assert_eq!(GemmKernel::Wgmma128x256.dynamic_smem(), 196_608 + 1024);
        assert_eq!(
            GemmKernel::WgmmaTma128x256.dynamic_smem(),
            196_608 + 64 + 1024
        );
        assert_eq!(GemmKernel::WgmmaTma128x256.threads(), 384);
        assert_eq!(
            GemmKernel::WgmmaTma128x128.dynamic_smem(),
            131_072 + 64 + 1024
        );
        assert_eq!(GemmKernel::WgmmaTma128x128.threads(), 384);
        // 3 stages (larger than the epilogue's 128 × 136 f32 tile): two blocks fit in the
        // 228 KiB of an SM (with the 1 KiB the driver keeps per block).
        assert_eq!(
            GemmKernel::WgmmaTma128x128Occ2.dynamic_smem(),
            98_304 + 48 + 1024
        );
        assert!(2 * (GemmKernel::WgmmaTma128x128Occ2.dynamic_smem() + 1024) <= 228 * 1024);
        assert_eq!(GemmKernel::WgmmaTma128x128Occ2.threads(), 288);
        // 5 stages of 32 KiB, eight 8 × 136 f32 epilogue buffers, 12 mbarriers: one block an
        // SM.
        assert_eq!(
            GemmKernel::WgmmaPingpong128x128.dynamic_smem(),
            163_840 + 34_816 + 96 + 1024
        );
        assert_eq!(GemmKernel::WgmmaPingpong128x128.threads(), 288);
        assert_eq!(
            GemmKernel::WgmmaPingpongMc128x128.dynamic_smem(),
            GemmKernel::WgmmaPingpong128x128.dynamic_smem()
        );
        assert_eq!(GemmKernel::WgmmaPingpongMc128x128.threads(), 288);
        assert_eq!(GemmKernel::WgmmaPingpongMc128x128.cluster(), 2);
        // 4 stages of 48 KiB, eight warps' 2 KiB f32 scratch and 2 KiB box, 8 mbarriers: within
        // the 227 KiB a block may have.
        assert_eq!(
            GemmKernel::WgmmaTmaStore128x256.dynamic_smem(),
            196_608 + 32_768 + 64 + 1024
        );
        assert!(GemmKernel::WgmmaTmaStore128x256.dynamic_smem() <= 227 * 1024);
        assert_eq!(GemmKernel::WgmmaTmaStore128x256.threads(), 384);
        assert!(GemmKernel::WgmmaTmaStore128x256.persistent());
        // The constants mirror gemm_sm90.cu's.
        let source = KernelFile::GemmSm90.source();
        for (name, value) in [
            ("WS_STAGES", WGMMA_STAGES),
            ("WS_OCC2_STAGES", WGMMA_OCC2_STAGES),
            ("WS_OCC2_THREADS", GemmKernel::WgmmaTma128x128Occ2.threads()),
            ("WS_PP_STAGES", WGMMA_PP_STAGES),
            ("WS_PP_EPI_ROWS", WGMMA_PP_EPI_ROWS),
            ("WS_PP_THREADS", GemmKernel::WgmmaPingpong128x128.threads()),
            ("WS_MC_CLUSTER", WGMMA_MC_CLUSTER),
            ("WS_ST_STAGES", WGMMA_ST_STAGES),
            ("WS_ST_THREADS", GemmKernel::WgmmaTmaStore128x256.threads()),
            ("WS_ST_BOX_ROWS", WGMMA_ST_BOX_ROWS),
            ("WS_ST_BOX_COLS", WGMMA_ST_BOX_COLS),
        ] {
            assert!(
                source.contains(&format!("#define {name} {value}\n")),
                "gemm_sm90.cu should #define {name} {value}"
            );
        }
        assert!(source.contains(&format!(
            "#define WS_PP_EPI_STRIDE (128 + {})\n",
            WGMMA_PP_EPI_STRIDE - 128
        )));
        assert_eq!(GemmKernel::Wgmma128x128.dynamic_smem(), 131_072 + 1024);
        assert_eq!(GemmKernel::Wgmma64x128.dynamic_smem(), 98_304 + 1024);
        assert_eq!(GemmKernel::Wgmma128x128.threads(), 256);
        assert_eq!(GemmKernel::Wgmma64x128.threads(), 128);
        // H100's limit per block is 227 KiB.
        assert!(GemmKernel::ALL
            .iter()
            .all(|k| k.dynamic_smem() <= 227 * 1024));
    }

    #[test]
    fn choose_fills_the_gpu_with_the_largest_tile_that_can() {
        // H100 / H200: 132 multiprocessors, 3/4 of them 99. BERT-base at T = 2400: 19 × 3 = 57
        // tiles of 128 × 256 for n = 768 (too few), 19 × 6 = 114 of 128 × 128 (enough); 19 × 12
        // = 228 of 128 × 256 for n = 3072; at T = 4800, 38 × 3 = 114 of 128 × 256 for n = 768.
        // For n = 1024: 19 × 4 = 76 tiles of 128 × 256 (too few), 19 × 8 = 152 of 128 × 128.
        // WgmmaTmaOcc2: its kernel where 128 × 128 tiles fill the GPU, else as WgmmaTma;
        // WgmmaPingpong: its kernel where they fill it twice (264 tiles: 456 for n = 3072),
        // else as WgmmaTma.
        for (n, family, expected) in [
            (1024, GemmFamily::Wgmma, GemmKernel::Wgmma128x128),
            (1024, GemmFamily::WgmmaTma, GemmKernel::WgmmaTma128x128),
            (
                3072,
                GemmFamily::WgmmaTmaOcc2,
                GemmKernel::WgmmaTma128x128Occ2,
            ),
            (768, GemmFamily::WgmmaTmaOcc2, GemmKernel::WgmmaTma128x128),
            (
                3072,
                GemmFamily::WgmmaPingpong,
                GemmKernel::WgmmaPingpong128x128,
            ),
            (768, GemmFamily::WgmmaPingpong, GemmKernel::WgmmaTma128x128),
            (
                3072,
                GemmFamily::WgmmaPingpongMc,
                GemmKernel::WgmmaPingpongMc128x128,
            ),
            (
                768,
                GemmFamily::WgmmaPingpongMc,
                GemmKernel::WgmmaTma128x128,
            ),
            (1024, GemmFamily::WgmmaPingpong, GemmKernel::WgmmaTma128x128),
        ] {
            assert_eq!(
                GemmKernel::choose(Dtype::Bf16, 2400, n, 132, family, Activation::Identity),
                expected
            );
        }
        for (family, big, at_768, small) in [
            (
                GemmFamily::Mma,
                GemmKernel::Mma128x128,
                GemmKernel::Mma128x128,
                GemmKernel::Mma64x64,
            ),
            (
                GemmFamily::Wgmma,
                GemmKernel::Wgmma128x256,
                GemmKernel::Wgmma128x128,
                GemmKernel::Wgmma64x128,
            ),
            (
                GemmFamily::WgmmaTma,
                GemmKernel::WgmmaTma128x256,
                GemmKernel::WgmmaTma128x128,
                GemmKernel::Wgmma64x128,
            ),
        ] {
            assert_eq!(
                GemmKernel::choose(Dtype::Bf16, 2400, 768, 132, family, Activation::Identity),
                at_768
            );
            for (m, n) in [(2400, 3072), (4800, 768)] {
                // The default family takes Occ2 on FFN up (below).
                if family != GemmFamily::WgmmaTma || n != 3072 {
                    assert_eq!(
                        GemmKernel::choose(Dtype::Bf16, m, n, 132, family, Activation::Identity),
                        big
                    );
                }
            }
            assert_eq!(
                GemmKernel::choose(Dtype::F16, 1, 768, 132, family, Activation::Identity),
                small
            );
            assert_eq!(
                GemmKernel::choose(Dtype::F32, 4800, 3072, 132, family, Activation::Gelu),
                GemmKernel::Simt
            );
            for kernel in [big, small] {
                assert!(family.runs_on(Arch::SM90) && kernel.runs_on(Arch::SM90));
                assert_eq!(family.runs_on(Arch::SM80), kernel.runs_on(Arch::SM80));
            }
        }
        assert_eq!(GemmFamily::parse("wgmma-tma"), Some(GemmFamily::WgmmaTma));
        assert_eq!(
            GemmFamily::parse("wgmma-tma-occ2"),
            Some(GemmFamily::WgmmaTmaOcc2)
        );
        assert_eq!(
            GemmFamily::parse("wgmma-pingpong"),
            Some(GemmFamily::WgmmaPingpong)
        );
        assert_eq!(
            GemmFamily::parse("wgmma-pingpong-mc"),
            Some(GemmFamily::WgmmaPingpongMc)
        );
        // At T = 4800, n = 768: 228 tiles of 128 × 128, under two per SM.
        assert_eq!(
            GemmKernel::choose(
                Dtype::F16,
                4800,
                768,
                132,
                GemmFamily::WgmmaPingpong,
                Activation::Identity
            ),
            GemmKernel::WgmmaTma128x256
        );
        assert_eq!(GemmFamily::default_for(Arch::SM90), GemmFamily::WgmmaTma);
        // The default family on FFN up with its activation: Occ2 from two 128 × 128 blocks a
        // multiprocessor (264 at 132: T ≥ 1408 for n = 3072), the 128 × 256 kernel below that
        // and for n < 3072; the plain product, + b alone and ReLU always the 128 × 256 kernel.
        for (m, n, expected) in [
            (2400, 3072, GemmKernel::WgmmaTma128x128Occ2),
            (4800, 3072, GemmKernel::WgmmaTma128x128Occ2),
            (1408, 3072, GemmKernel::WgmmaTma128x128Occ2),
            (1280, 3072, GemmKernel::WgmmaTma128x256),
            (2400, 4096, GemmKernel::WgmmaTma128x128Occ2),
            (2400, 1536, GemmKernel::WgmmaTma128x256),
            (4800, 2304, GemmKernel::WgmmaTma128x256),
        ] {
            for act in [Activation::Gelu, Activation::GeluTanh, Activation::Silu] {
                assert_eq!(
                    GemmKernel::choose(Dtype::F16, m, n, 132, GemmFamily::WgmmaTma, act),
                    expected,
                    "{m} x {n} {act:?}"
                );
            }
            for act in [Activation::Identity, Activation::Relu] {
                assert_eq!(
                    GemmKernel::choose(Dtype::F16, m, n, 132, GemmFamily::WgmmaTma, act),
                    GemmKernel::WgmmaTma128x256,
                    "{m} x {n} {act:?}"
                );
            }
        }
        // WgmmaTmaStore: as WgmmaTma, with the TMA-stored kernel for the 128 × 256 tiles.
        assert_eq!(
            GemmFamily::parse("wgmma-tma-store"),
            Some(GemmFamily::WgmmaTmaStore)
        );
        for (m, n, act) in [
            (2400, 3072, Activation::Identity),
            (4800, 768, Activation::Identity),
            (2400, 3072, Activation::Gelu),
            (2400, 768, Activation::Identity),
            (1, 768, Activation::Identity),
        ] {
            let tma = GemmKernel::choose(Dtype::F16, m, n, 132, GemmFamily::WgmmaTma, act);
            let store = GemmKernel::choose(Dtype::F16, m, n, 132, GemmFamily::WgmmaTmaStore, act);
            let expected = if tma == GemmKernel::WgmmaTma128x256 {
                GemmKernel::WgmmaTmaStore128x256
            } else {
                tma
            };
            assert_eq!(store, expected, "{m} x {n} {act:?}");
        }
        assert_eq!(
            GemmKernel::choose(
                Dtype::F16,
                2400,
                3072,
                132,
                GemmFamily::WgmmaTmaStore,
                Activation::Identity
            ),
            GemmKernel::WgmmaTmaStore128x256
        );
        assert_eq!(GemmFamily::default_for(Arch::SM80), GemmFamily::Mma);
        assert_eq!(GemmFamily::parse("WGMMA"), None);
        for kernel in GemmKernel::ALL {
            for dtype in Dtype::ALL {
                let handles = kernel.entry_point(dtype).is_some();
                assert_eq!(
                    handles,
                    (kernel == GemmKernel::Simt) == (dtype == Dtype::F32)
                );
            }
            let wgmma = matches!(
                kernel,
                GemmKernel::WgmmaTma128x256
                    | GemmKernel::WgmmaTma128x128
                    | GemmKernel::WgmmaTma128x128Occ2
                    | GemmKernel::WgmmaPingpong128x128
                    | GemmKernel::WgmmaPingpongMc128x128
                    | GemmKernel::WgmmaTmaStore128x256
                    | GemmKernel::Wgmma128x256
                    | GemmKernel::Wgmma128x128
                    | GemmKernel::Wgmma64x128
            );
            assert_eq!(kernel.runs_on(Arch::SM80), !wgmma);
            assert!(kernel.runs_on(Arch::SM90));
        }
    }
}
