// rotary.cu: rotary position embeddings on the packed [T, 3H] QKV buffer, in place, as ModernBERT
// applies them (crates/ember-cpu/src/rotary.rs):
//
//   x[i] ← x1·cos(p·ωᵢ) − x2·sin(p·ωᵢ),   x[i + hd/2] ← x2·cos(p·ωᵢ) + x1·sin(p·ωᵢ)
//
// for x1 = x[i], x2 = x[i + hd/2] of each head's query and key (V is left alone), p the token's
// position in its sequence. cos_table and sin_table are the host's [max_len, hd/2] f32 tables
// (torch's values, see rotary.rs); the products are f32, each rounded, then summed, as torch
// computes q·cos + rotate_half(q)·sin; bf16/f16 values are widened on load and rounded once on
// store. Grid: (max_len, n_seq); blocks past their sequence's end return at once; the block's
// threads stride over the 2·heads·hd/2 pairs of its token.
#include "common.cuh"

#define ROT_THREADS 128

template <typename T>
__device__ __forceinline__ void rotary(T* __restrict__ qkv, const unsigned* __restrict__ seq_offsets,
                                       const float* __restrict__ cos_table,
                                       const float* __restrict__ sin_table, int heads,
                                       int head_dim) {
    const int seq = blockIdx.y, p = blockIdx.x;
    const int s0 = seq_offsets[seq], len = static_cast<int>(seq_offsets[seq + 1]) - s0;
    if (p >= len) return;
    const int half = head_dim / 2, h = heads * head_dim;
    T* row = qkv + static_cast<size_t>(s0 + p) * 3 * h;
    const float* c = cos_table + static_cast<size_t>(p) * half;
    const float* s = sin_table + static_cast<size_t>(p) * half;
    for (int e = threadIdx.x; e < 2 * heads * half; e += blockDim.x) {
        const int head = e / half, i = e % half;  // heads 0..heads−1: Q, heads..2·heads−1: K
        T* x = row + head * head_dim;
        const float x1 = to_f32(x[i]), x2 = to_f32(x[i + half]);
        // Written out so that no FMA fuses a product into the sum (torch rounds each).
        const float a = __fmul_rn(x1, c[i]), b = __fmul_rn(x2, s[i]);
        const float d = __fmul_rn(x2, c[i]), f = __fmul_rn(x1, s[i]);
        x[i] = from_f32<T>(a - b);
        x[i + half] = from_f32<T>(d + f);
    }
}

#define ROTARY(T, SUFFIX)                                                                       \
    extern "C" __global__ void __launch_bounds__(ROT_THREADS) rotary_##SUFFIX(                  \
        T* __restrict__ qkv, const unsigned* __restrict__ seq_offsets,                          \
        const float* __restrict__ cos_table, const float* __restrict__ sin_table, int heads,    \
        int head_dim) {                                                                         \
        rotary<T>(qkv, seq_offsets, cos_table, sin_table, heads, head_dim);                     \
    }

ROTARY(float, f32)
ROTARY(bf16, bf16)
ROTARY(f16, f16)
