// attention.cu: multi-head self-attention over a packed, variable-length batch, no padding and
// no mask (crates/ember-cpu/src/attention.rs).
//
// qkv is [T, 3H], the fused QKV projection: columns [0, H) are Q, [H, 2H) K, [2H, 3H) V, and head
// h owns columns h·hd .. (h+1)·hd of each. seq_offsets is [n_seq + 1] u32 (0, …, T,
// non-decreasing): sequence s is rows seq_offsets[s] .. seq_offsets[s+1]. out is [T, H]:
//
//   out[t, h·hd ..] = softmax(q_t · K_sᵀ / √hd) · V_s      for the sequence s holding t.
//
// FlashAttention-style online softmax, on CUDA cores in f32 (inputs widened on load): a block
// owns (sequence, head, ATT_BQ = 16 queries), 4 warps × 4 queries. Keys stream through shared
// memory in tiles of ATT_BK = 32, one key per lane: lane j scores key j against each of its
// warp's queries (K tile rows padded to hd + 1 floats: conflict-free), then per query
//   m' = max(m, max_j s_j),  α = e^{m − m'},  p_j = e^{s_j − m'},  l ← α·l + Σ p_j,
//   o ← α·o + Σ_j p_j·V_j     (lane owns o[d] for d = lane, lane + 32, …)
// and finally out = o / l. Scores are (q·k)·(1/√hd), as on the CPU, plus, when `bias` is not
// null (MPNet's relative position bias, expanded per distance: [heads, 2·span + 1] f32),
// bias[head·(2·span + 1) + span + j − i] for key j and query i (span ≥ the longest sequence − 1,
// the host checks). With window ≥ 0 (ModernBERT's local layers) query i attends only to the keys
// j with |j − i| ≤ window: other scores are −∞, and key tiles wholly outside the block's windows
// are skipped; window < 0 is full attention. hd ≤ 128 (the host checks).
// Grid: (⌈max_len / 16⌉, heads, n_seq); blocks past their sequence's end return at once.
#include "common.cuh"

#define ATT_BQ 16
#define ATT_BK 32
#define ATT_WARPS 4
#define ATT_QPW (ATT_BQ / ATT_WARPS)
#define ATT_MAX_HD 128
#define ATT_DPL (ATT_MAX_HD / 32)  // output dims per lane

template <typename T>
__device__ __forceinline__ void attention_varlen(
    const T* __restrict__ qkv, const unsigned* __restrict__ seq_offsets, T* __restrict__ out,
    int heads, int head_dim, float scale, const float* __restrict__ bias, int span, int window) {
    __shared__ float q_s[ATT_BQ][ATT_MAX_HD];
    __shared__ float k_s[ATT_BK][ATT_MAX_HD + 1];
    __shared__ float v_s[ATT_BK][ATT_MAX_HD];

    const int seq = blockIdx.z, head = blockIdx.y;
    const int s0 = seq_offsets[seq], len = static_cast<int>(seq_offsets[seq + 1]) - s0;
    const int q0 = blockIdx.x * ATT_BQ;
    if (q0 >= len) return;  // uniform over the block: no barrier is skipped by some threads only
    const int hd = head_dim, h = heads * head_dim;
    const size_t ld = 3 * static_cast<size_t>(h);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    for (int e = threadIdx.x; e < ATT_BQ * hd; e += blockDim.x) {
        const int r = e / hd, d = e % hd;
        q_s[r][d] = q0 + r < len ? to_f32(qkv[(s0 + q0 + r) * ld + head * hd + d]) : 0.0f;
    }

    float m_run[ATT_QPW], l_run[ATT_QPW], o[ATT_QPW][ATT_DPL];
#pragma unroll
    for (int q = 0; q < ATT_QPW; ++q) {
        m_run[q] = -f32_infinity();
        l_run[q] = 0.0f;
#pragma unroll
        for (int c = 0; c < ATT_DPL; ++c) o[q][c] = 0.0f;
    }

    // The keys any query of the block attends to: [k_lo, k_hi), from a whole tile.
    int k_lo = 0, k_hi = len;
    if (window >= 0) {
        k_lo = max(q0 - window, 0) / ATT_BK * ATT_BK;
        k_hi = min(q0 + ATT_BQ - 1 + window + 1, len);
    }
    for (int k0 = k_lo; k0 < k_hi; k0 += ATT_BK) {
        __syncthreads();  // the previous tile is consumed (and, the first time, q_s is written)
        for (int e = threadIdx.x; e < ATT_BK * hd; e += blockDim.x) {
            const int j = e / hd, d = e % hd;
            const bool valid = k0 + j < len;
            const T* row = qkv + (s0 + k0 + j) * ld + head * hd + d;
            k_s[j][d] = valid ? to_f32(row[h]) : 0.0f;
            v_s[j][d] = valid ? to_f32(row[2 * h]) : 0.0f;
        }
        __syncthreads();

        const bool key_valid = k0 + lane < len;
#pragma unroll
        for (int q = 0; q < ATT_QPW; ++q) {
            const float* qv = q_s[warp * ATT_QPW + q];
            float s = 0.0f;
            for (int d = 0; d < hd; ++d) s = fmaf(qv[d], k_s[lane][d], s);
            const int query = q0 + warp * ATT_QPW + q;
            const int key = k0 + lane;
            const bool attends = key_valid && (window < 0 || abs(key - query) <= window);
            s = attends ? s * scale : -f32_infinity();
            // Queries past the sequence's end are computed, never stored: no bias for them
            // (their distances may lie outside the table).
            if (bias != nullptr && attends && query < len)
                s += bias[static_cast<size_t>(head) * (2 * span + 1) + span + key - query];
            // Without a window the tile holds at least one valid key (k0 < len), so m_new is
            // finite unless the inputs are not; m_run = −∞ on the first tile gives α = 0. With
            // one, a query may have no key in this tile (nor before it): m_new = −∞, and
            // α = 1, p = 0 leave its (empty) sums as they are.
            const float m_new = fmaxf(m_run[q], warp_max(s));
            const float alpha = m_new == -f32_infinity() ? 1.0f : expf(m_run[q] - m_new);
            const float p = attends ? expf(s - m_new) : 0.0f;
            l_run[q] = fmaf(l_run[q], alpha, warp_sum(p));
            m_run[q] = m_new;
#pragma unroll
            for (int c = 0; c < ATT_DPL; ++c) o[q][c] *= alpha;
#pragma unroll 8
            for (int j = 0; j < ATT_BK; ++j) {
                const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
                for (int c = 0; c < ATT_DPL; ++c) {
                    const int d = lane + 32 * c;
                    if (d < hd) o[q][c] = fmaf(pj, v_s[j][d], o[q][c]);
                }
            }
        }
    }

#pragma unroll
    for (int q = 0; q < ATT_QPW; ++q) {
        const int t = q0 + warp * ATT_QPW + q;
        if (t >= len) continue;
        const float inv_l = 1.0f / l_run[q];
#pragma unroll
        for (int c = 0; c < ATT_DPL; ++c) {
            const int d = lane + 32 * c;
            if (d < hd) out[static_cast<size_t>(s0 + t) * h + head * hd + d] = from_f32<T>(o[q][c] * inv_l);
        }
    }
}

#define ATTENTION(T, SUFFIX)                                                                      \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_varlen_##SUFFIX(       \
        const T* __restrict__ qkv, const unsigned* __restrict__ seq_offsets, T* __restrict__ out, \
        int heads, int head_dim, float scale, const float* __restrict__ bias, int span,           \
        int window) {                                                                             \
        attention_varlen<T>(qkv, seq_offsets, out, heads, head_dim, scale, bias, span, window);   \
    }

ATTENTION(float, f32)
ATTENTION(bf16, bf16)
ATTENTION(f16, f16)
