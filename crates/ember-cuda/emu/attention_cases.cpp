// attention.cu under emulation: out[t, h·hd ..] = softmax(q_t · K_sᵀ / √hd + b_h) · V_s per
// sequence s and head h, launched as src/attention.rs does; b_h is nothing, or a relative position
// bias (MPNet's) of span `span`: b_h[t, j] = bias[h·(2·span + 1) + span + j − t]; with a window
// w ≥ 0 (ModernBERT's local layers) only the keys j with |j − t| ≤ w count.
#include "harness.h"

#include "attention.cu"

namespace harness {
namespace {

template <typename T>
using AttentionEntry = void (*)(const T*, const unsigned*, T*, int, int, float, const float*, int, int);

// span < 0: no bias; window < 0: full attention.
template <typename T>
void add(Cases& cases, AttentionEntry<T> entry, std::vector<unsigned> seq_offsets, int heads, int head_dim,
         int span = -1, int window = -1) {
    const std::string name = "attention/" + lens(seq_offsets) + "x" + std::to_string(heads) + "x" +
                             std::to_string(head_dim) + (span >= 0 ? "+bias" + std::to_string(span) : "") +
                             (window >= 0 ? "+window" + std::to_string(window) : "") + "/" + dtype_name<T>();
    cases.push_back({name, bound<T>(), [entry, seq_offsets, heads, head_dim, span, window, seed = cases.size()] {
                         Rng rng{seed};
                         const std::size_t tokens = seq_offsets.back(), hd = head_dim, h = std::size_t(heads) * hd;
                         // ×2 makes the softmax peaked enough for the online rescaling to matter.
                         const auto qkv = quantize<T>(rng.vec(tokens * 3 * h, 2.0f));
                         const std::vector<float> bias =
                             span >= 0 ? rng.vec(std::size_t(heads) * (2 * span + 1), 3.0f) : std::vector<float>();
                         Instance instance;
                         instance.want.resize(tokens * h);
                         for (std::size_t s = 0; s + 1 < seq_offsets.size(); ++s) {
                             const std::size_t start = seq_offsets[s], end = seq_offsets[s + 1];
                             for (std::size_t head = 0; head < std::size_t(heads); ++head)
                                 for (std::size_t t = start; t < end; ++t) {
                                     std::vector<double> p(end - start);
                                     double max_score = -INFINITY, sum = 0.0;
                                     const auto outside = [&](std::size_t j) {
                                         return window >= 0 && (j + window < t || j > t + window);
                                     };
                                     for (std::size_t j = start; j < end; ++j) {
                                         if (outside(j)) {
                                             p[j - start] = -INFINITY;
                                             continue;
                                         }
                                         double dot = 0.0;
                                         for (std::size_t d = 0; d < hd; ++d)
                                             dot += double(qkv[t * 3 * h + head * hd + d]) *
                                                    qkv[j * 3 * h + h + head * hd + d];
                                         p[j - start] = dot / std::sqrt(double(hd));
                                         if (span >= 0)
                                             p[j - start] += bias[head * (2 * span + 1) + span + j - t];
                                         max_score = std::max(max_score, p[j - start]);
                                     }
                                     for (double& x : p) sum += x = std::exp(x - max_score);
                                     for (std::size_t d = 0; d < hd; ++d) {
                                         double o = 0.0;
                                         for (std::size_t j = start; j < end; ++j)
                                             o += p[j - start] * qkv[j * 3 * h + 2 * h + head * hd + d];
                                         instance.want[t * h + head * hd + d] = o / sum;
                                     }
                                 }
                         }
                         instance.run = [=, qkv = encode<T>(qkv)](const emu::Schedule& schedule,
                                                                   std::vector<float>& got) {
                             auto out = poisoned<T>(tokens * h);
                             unsigned max_len = 0;
                             for (std::size_t s = 0; s + 1 < seq_offsets.size(); ++s)
                                 max_len = std::max(max_len, seq_offsets[s + 1] - seq_offsets[s]);
                             const dim3 grid((max_len + ATT_BQ - 1) / ATT_BQ, heads, seq_offsets.size() - 1);
                             const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
                             const auto error = emu::launch(
                                 schedule, grid, dim3(32 * ATT_WARPS), 0, entry, qkv.data(), seq_offsets.data(),
                                 out.data(), heads, head_dim, scale, span >= 0 ? bias.data() : nullptr,
                                 span >= 0 ? span : 0, window);
                             got = decode(out);
                             return error;
                         };
                         return instance;
                     }});
}

template <typename T> void add_all(Cases& cases, AttentionEntry<T> entry) {
    add(cases, entry, {0, 1}, 1, 1);               // T = 1
    add(cases, entry, {0, 5, 22}, 2, 13);          // odd head_dim, a sequence over one query tile
    add(cases, entry, {0, 3, 3, 7}, 2, 8);         // an empty sequence
    add(cases, entry, {0, 33, 34, 50}, 2, 32);     // keys straddling tiles of 32
    add(cases, entry, {0, 20}, 1, 64);
    add(cases, entry, {0, 17}, 1, 128);            // the largest head_dim
    // MPNet's relative bias: the span just wide enough (a query block past the end of a
    // sequence of 33 must not read outside it), and wider.
    add(cases, entry, {0, 33, 34, 50}, 2, 32, 32);
    add(cases, entry, {0, 5, 22}, 2, 13, 40);
    // ModernBERT's sliding windows: only the query itself; narrower than a key tile, so that
    // whole tiles are skipped and a query's first tiles hold none of its keys; wider than every
    // sequence; with the bias.
    add(cases, entry, {0, 5, 22}, 2, 13, -1, 0);
    add(cases, entry, {0, 100, 101, 140}, 2, 16, -1, 8);
    add(cases, entry, {0, 33, 34, 50}, 2, 32, -1, 64);
    add(cases, entry, {0, 70}, 1, 32, 69, 20);
}

}  // namespace

void add_attention_cases(Cases& cases) {
    add_all<float>(cases, attention_varlen_f32);
    add_all<bf16>(cases, attention_varlen_bf16);
    add_all<f16>(cases, attention_varlen_f16);
}

}  // namespace harness
