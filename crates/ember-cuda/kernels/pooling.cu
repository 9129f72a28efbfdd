// pooling.cu: sentence-transformers pooling and Normalize over the packed layout
// (crates/ember-pooling/src/lib.rs).
//
// pool_<dtype>: hidden is [T, H]; seq_offsets [n_seq + 1] u32; one mode per launch, written to
// out[s · out_stride + out_col ..][0, H) (f32), so several modes concatenate into one row. For a
// sequence x_1 … x_L:
//   0 cls: x_1   1 max: max_i x_i (NaN propagates, as torch)   2 mean: Σ x_i / L
//   3 mean_sqrt_len_tokens: Σ x_i / √L   4 weightedmean: Σ i·x_i / Σ i   5 lasttoken: x_L
// With excluded = p > 0 (include_prompt false) the first p tokens of each sequence are masked
// out, as ember_pooling::pool_excluding: the modes run over x_{p+1} … x_L, weightedmean keeping
// the weights p+1 … L; with no token left, cls gives x_1, max -inf, the others 0.
// Sums in f64, rounded once, as on the CPU. An empty sequence gives NaN (the host refuses them).
// Grid (n_seq, ⌈H / 256⌉), one column per thread: a warp reads 32 consecutive columns of a row.
//
// normalize_rows_f32: data [rows, dim], x ← x / max(‖x‖₂, 1e-12) with the norm in f64; one
// 256-thread block per row.
#include "common.cuh"

#define POOL_THREADS 256

#define POOL_CLS 0
#define POOL_MAX 1
#define POOL_MEAN 2
#define POOL_MEAN_SQRT_LEN 3
#define POOL_WEIGHTED_MEAN 4
#define POOL_LAST_TOKEN 5

template <typename T>
__device__ __forceinline__ void pool(
    const T* __restrict__ hidden, const unsigned* __restrict__ seq_offsets, int h, int mode,
    unsigned excluded, float* __restrict__ out, int out_stride, int out_col) {
    const int s = blockIdx.x, j = blockIdx.y * POOL_THREADS + threadIdx.x;
    if (j >= h) return;
    const unsigned start = seq_offsets[s], end = seq_offsets[s + 1];
    float* y = out + static_cast<size_t>(s) * out_stride + out_col + j;
    if (end <= start) {
        *y = f32_nan();
        return;
    }
    const T* col = hidden + j;
    const unsigned len = end - start;
    const unsigned first = start + (excluded < len ? excluded : len);  // first token pooled
    if (first == end) {  // every token masked: sentence-transformers' all-zero mask
        if (mode == POOL_CLS) *y = to_f32(col[static_cast<size_t>(start) * h]);
        else if (mode == POOL_MAX) *y = f32_neg_inf();
        else *y = 0.0f;
        return;
    }
    const unsigned count = end - first;
    switch (mode) {
    case POOL_CLS:
        *y = to_f32(col[static_cast<size_t>(first) * h]);
        break;
    case POOL_LAST_TOKEN:
        *y = to_f32(col[static_cast<size_t>(end - 1) * h]);
        break;
    case POOL_MAX: {
        float m = to_f32(col[static_cast<size_t>(first) * h]);
        for (unsigned t = first + 1; t < end; ++t) {
            const float x = to_f32(col[static_cast<size_t>(t) * h]);
            if (x > m || x != x) m = x;
        }
        *y = m;
        break;
    }
    default: {
        const bool weighted = mode == POOL_WEIGHTED_MEAN;
        double acc = 0.0;
        for (unsigned t = first; t < end; ++t) {
            const double weight = weighted ? static_cast<double>(t - start + 1) : 1.0;
            acc += weight * static_cast<double>(to_f32(col[static_cast<size_t>(t) * h]));
        }
        double denominator;
        if (mode == POOL_MEAN) denominator = count;
        else if (mode == POOL_MEAN_SQRT_LEN) denominator = sqrt(static_cast<double>(count));
        else {
            // Σ_{i = skipped + 1}^{len} i, the weights of the tokens pooled.
            const double skipped = static_cast<double>(first - start);
            denominator = 0.5 * static_cast<double>(len) * static_cast<double>(len + 1) -
                          0.5 * skipped * (skipped + 1.0);
        }
        *y = static_cast<float>(acc / denominator);
    }
    }
}

#define POOL(T, SUFFIX)                                                                           \
    extern "C" __global__ void __launch_bounds__(POOL_THREADS) pool_##SUFFIX(                     \
        const T* __restrict__ hidden, const unsigned* __restrict__ seq_offsets, int h, int mode,  \
        unsigned excluded, float* __restrict__ out, int out_stride, int out_col) {                \
        pool<T>(hidden, seq_offsets, h, mode, excluded, out, out_stride, out_col);                \
    }

POOL(float, f32)
POOL(bf16, bf16)
POOL(f16, f16)

extern "C" __global__ void __launch_bounds__(POOL_THREADS)
normalize_rows_f32(float* __restrict__ data, int dim) {
    __shared__ double partial[POOL_THREADS / 32];
    float* row = data + static_cast<size_t>(blockIdx.x) * dim;
    double sq = 0.0;
    for (int j = threadIdx.x; j < dim; j += POOL_THREADS) {
        const double x = row[j];
        sq += x * x;
    }
    sq = warp_sum(sq);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sq;
    __syncthreads();
    double total = 0.0;
#pragma unroll
    for (int w = 0; w < POOL_THREADS / 32; ++w) total += partial[w];
    // Not fmax, which drops a NaN: a row with a NaN stays all NaN, as in F.normalize.
    const double norm = sqrt(total);
    const double scale = 1.0 / (norm < 1e-12 ? 1e-12 : norm);
    for (int j = threadIdx.x; j < dim; j += POOL_THREADS)
        row[j] = static_cast<float>(static_cast<double>(row[j]) * scale);
}
