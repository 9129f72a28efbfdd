// embedding.cu: BertEmbeddings on a packed batch, gather + LayerNorm in one pass
// (crates/ember-bert/src/model.rs, `embed`):
//
//   x[t] = LN((word[id_t] + token_type[0]) + position[row(t)])
//
// row(t) is the token's position row: t − start(t) (BERT, pad_id < 0), or, for the RoBERTa family
// (pad_id = config.json's pad_token_id ≥ 0, transformers' create_position_ids_from_input_ids):
// pad_id for a token whose id is pad_id, else pad_id + the number of tokens of its sequence up to
// and including t whose id is not pad_id (pad_id + 1 + t − start(t) in a text without them).
//
// token_ids is [T] u32; seq_offsets is [n_seq + 1] u32 (0, …, T, non-decreasing); the tables are
// [vocab, H], [max_positions, H] (or null: ModernBERT, whose positions are rotary, adds nothing —
// max_positions then only bounds the sequence), [types, H] (only row 0 is read: Ember encodes
// single segments);
// gamma, beta [H] f32; out [T, H]. The sum is in f32 in torch's order, the LayerNorm as in
// layernorm.cu. One warp per token. An id ≥ vocab or a position ≥ max_positions gives a NaN row
// (the host checks ids before upload; this only keeps a bad batch from reading out of bounds).
#include "common.cuh"

#define EMB_WARPS 8

// The sequence holding token t: the last s with seq_offsets[s] ≤ t (skips empty sequences).
__device__ __forceinline__ int sequence_of(const unsigned* seq_offsets, int n_seq, unsigned t) {
    int lo = 0, hi = n_seq;  // invariant: seq_offsets[lo] ≤ t < seq_offsets[hi]
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (seq_offsets[mid] <= t) lo = mid; else hi = mid;
    }
    return lo;
}

template <typename T>
__device__ __forceinline__ void embedding_layernorm(
    const unsigned* __restrict__ token_ids, const unsigned* __restrict__ seq_offsets, int n_seq,
    const T* __restrict__ word, const T* __restrict__ position, const T* __restrict__ token_type,
    const float* __restrict__ gamma, const float* __restrict__ beta, T* __restrict__ out,
    int tokens, int hidden, int vocab, int max_positions, int pad_id, float eps) {
    const int t = blockIdx.x * EMB_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (t >= tokens) return;
    T* yr = out + static_cast<size_t>(t) * hidden;
    const unsigned id = token_ids[t];
    const unsigned start = seq_offsets[sequence_of(seq_offsets, n_seq, t)];
    unsigned pos;
    if (pad_id < 0) {
        pos = t - start;
    } else if (id == static_cast<unsigned>(pad_id)) {
        pos = pad_id;
    } else {
        // The warp counts the sequence's tokens up to t that are not padding (exact in f32:
        // a sequence is far shorter than 2^24).
        float counted = 0.0f;
        for (unsigned u = start + lane; u <= static_cast<unsigned>(t); u += 32)
            counted += token_ids[u] != static_cast<unsigned>(pad_id) ? 1.0f : 0.0f;
        pos = pad_id + static_cast<unsigned>(warp_sum(counted));
    }
    if (id >= static_cast<unsigned>(vocab) || pos >= static_cast<unsigned>(max_positions)) {
        for (int j = lane; j < hidden; j += 32) yr[j] = from_f32<T>(f32_nan());
        return;
    }
    const T* w = word + static_cast<size_t>(id) * hidden;
    const T* p = position != nullptr ? position + static_cast<size_t>(pos) * hidden : nullptr;
    // Adding 0 for a missing table is exact.
    const auto at = [p](int j) { return p != nullptr ? to_f32(p[j]) : 0.0f; };

    float sum = 0.0f;
    for (int j = lane; j < hidden; j += 32)
        sum += (to_f32(w[j]) + to_f32(token_type[j])) + at(j);
    const float mean = warp_sum(sum) / hidden;
    float sq = 0.0f;
    for (int j = lane; j < hidden; j += 32) {
        const float d = (to_f32(w[j]) + to_f32(token_type[j])) + at(j) - mean;
        sq = fmaf(d, d, sq);
    }
    const float rstd = 1.0f / sqrtf(warp_sum(sq) / hidden + eps);
    for (int j = lane; j < hidden; j += 32) {
        const float v = (to_f32(w[j]) + to_f32(token_type[j])) + at(j);
        yr[j] = from_f32<T>(fmaf((v - mean) * rstd, gamma[j], beta[j]));
    }
}

#define EMBEDDING(T, SUFFIX)                                                                      \
    extern "C" __global__ void __launch_bounds__(EMB_WARPS * 32) embedding_layernorm_##SUFFIX(    \
        const unsigned* __restrict__ token_ids, const unsigned* __restrict__ seq_offsets,         \
        int n_seq, const T* __restrict__ word, const T* __restrict__ position,                    \
        const T* __restrict__ token_type, const float* __restrict__ gamma,                        \
        const float* __restrict__ beta, T* __restrict__ out, int tokens, int hidden, int vocab,   \
        int max_positions, int pad_id, float eps) {                                               \
        embedding_layernorm<T>(token_ids, seq_offsets, n_seq, word, position, token_type, gamma,  \
                               beta, out, tokens, hidden, vocab, max_positions, pad_id, eps);     \
    }

EMBEDDING(float, f32)
EMBEDDING(bf16, bf16)
EMBEDDING(f16, f16)
