// layernorm.cu: (residual add +) layer normalisation over the last dimension
// (crates/ember-cpu/src/layernorm.rs). x, residual and out are [rows, hidden]; gamma, beta [hidden]
// f32; residual may be null; out may be x (or residual): in place.
//
//   v = x + r,   y = (v − μ) / √(σ² + ε) · γ + β,   μ = Σv / hidden,   σ² = Σ(v − μ)² / hidden
//
// (biased variance, as torch.nn.LayerNorm). One warp per row, 8 rows per 256-thread block;
// statistics two-pass in f32, the mean summed relative to the row's first element (the row is
// read again from L1/L2 rather than held, so any hidden size works); the last pass is one fmaf
// per element, (v − μ)·rstd·γ + β, as on the CPU. In place is safe: a lane writes only after
// the warp-wide reductions that consumed every read.
#include "common.cuh"

#define LN_WARPS 8

template <typename T>
__device__ __forceinline__ void layernorm_rows(
    const T* x, const T* residual, const float* __restrict__ gamma, const float* __restrict__ beta,
    T* out, int rows, int hidden, float eps) {
    const int row = blockIdx.x * LN_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T* xr = x + static_cast<size_t>(row) * hidden;
    const T* rr = residual ? residual + static_cast<size_t>(row) * hidden : nullptr;
    T* yr = out + static_cast<size_t>(row) * hidden;

    // Σ(v − v₀) rather than Σv: with |μ| ≫ σ (rows offset far from 0) the f32 sum would lose
    // the digits that distinguish the elements; relative to v₀ it keeps them.
    const float shift = to_f32(xr[0]) + (rr ? to_f32(rr[0]) : 0.0f);
    float sum = 0.0f;
    for (int j = lane; j < hidden; j += 32)
        sum += (to_f32(xr[j]) + (rr ? to_f32(rr[j]) : 0.0f)) - shift;
    const float mean = shift + warp_sum(sum) / hidden;
    float sq = 0.0f;
    for (int j = lane; j < hidden; j += 32) {
        const float d = to_f32(xr[j]) + (rr ? to_f32(rr[j]) : 0.0f) - mean;
        sq = fmaf(d, d, sq);
    }
    const float rstd = 1.0f / sqrtf(warp_sum(sq) / hidden + eps);
    for (int j = lane; j < hidden; j += 32) {
        const float v = to_f32(xr[j]) + (rr ? to_f32(rr[j]) : 0.0f);
        yr[j] = from_f32<T>(fmaf((v - mean) * rstd, gamma[j], beta[j]));
    }
}

#define LAYERNORM(T, SUFFIX)                                                                      \
    extern "C" __global__ void __launch_bounds__(LN_WARPS * 32)                                    \
        layernorm_##SUFFIX(const T* x, const T* residual, const float* __restrict__ gamma,        \
                           const float* __restrict__ beta, T* out, int rows, int hidden,          \
                           float eps) {                                                           \
        layernorm_rows<T>(x, residual, gamma, beta, out, rows, hidden, eps);                      \
    }

LAYERNORM(float, f32)
LAYERNORM(bf16, bf16)
LAYERNORM(f16, f16)
