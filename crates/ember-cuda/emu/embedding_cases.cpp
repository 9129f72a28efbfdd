// embedding.cu under emulation: x[t] = LN((word[id_t] + token_type[0]) + position[row(t)]),
// launched as src/embedding.rs does: row(t) = t − start(t) (BERT, pad_id −1) or RoBERTa's rows
// after the padding row (pad_id ≥ 0; ids equal to pad_id inside sequences too).
#include "harness.h"

#include "embedding.cu"

namespace harness {
namespace {

template <typename T>
using EmbeddingEntry = void (*)(const unsigned*, const unsigned*, int, const T*, const T*, const T*, const float*,
                                const float*, T*, int, int, int, int, int, float);

// The tables' rows and the LayerNorm's ε (BERT's), the same for every case.
constexpr int vocab = 100, max_positions = 64;
constexpr float eps = 1e-12f;

template <typename T>
void add(Cases& cases, EmbeddingEntry<T> entry, std::vector<unsigned> seq_offsets, int hidden, int pad_id = -1) {
    const std::string name = "embedding/" + lens(seq_offsets) + "x" + std::to_string(hidden) + ",vocab=" +
                             std::to_string(vocab) + ",pos=" + std::to_string(max_positions) +
                             (pad_id >= 0 ? ",pad=" + std::to_string(pad_id) : "") + "/" + dtype_name<T>();
    cases.push_back({name, bound<T>(), [entry, seq_offsets, hidden, pad_id, seed = cases.size()] {
                         Rng rng{seed};
                         const std::size_t h = hidden, tokens = seq_offsets.back();
                         const auto word = quantize<T>(rng.vec(vocab * h, 1.0f));
                         const auto position = quantize<T>(rng.vec(max_positions * h, 1.0f));
                         const auto token_type = quantize<T>(rng.vec(2 * h, 1.0f));
                         std::vector<float> gamma(h);
                         for (float& g : gamma) g = 1.0f + 0.5f * rng.uniform();
                         const auto beta = rng.vec(h, 1.0f);
                         std::vector<unsigned> ids(tokens);
                         for (unsigned& id : ids) {
                             id = static_cast<unsigned>(rng.next_u64() % vocab);
                             if (pad_id >= 0 && rng.next_u64() % 4 == 0) id = pad_id;  // padding inside a text
                         }
                         std::vector<double> v(tokens * h);
                         for (std::size_t s = 0; s + 1 < seq_offsets.size(); ++s) {
                             unsigned counted = 0;  // tokens of the sequence so far that are not padding
                             for (unsigned t = seq_offsets[s]; t < seq_offsets[s + 1]; ++t) {
                                 unsigned row = t - seq_offsets[s];
                                 if (pad_id >= 0) row = ids[t] == unsigned(pad_id) ? pad_id : pad_id + ++counted;
                                 for (std::size_t j = 0; j < h; ++j)
                                     v[t * h + j] = double(word[ids[t] * h + j]) + token_type[j] + position[row * h + j];
                             }
                         }
                         Instance instance;
                         instance.want = layernorm_reference(v, tokens, h, gamma, beta, eps);
                         instance.run = [=, word = encode<T>(word), position = encode<T>(position),
                                         token_type = encode<T>(token_type)](const emu::Schedule& schedule,
                                                                             std::vector<float>& got) {
                             auto out = poisoned<T>(tokens * h);
                             const int n_seq = static_cast<int>(seq_offsets.size()) - 1;
                             const auto error = emu::launch(
                                 schedule, dim3((tokens + EMB_WARPS - 1) / EMB_WARPS), dim3(32 * EMB_WARPS), 0, entry,
                                 ids.data(), seq_offsets.data(), n_seq, word.data(), position.data(),
                                 token_type.data(), gamma.data(), beta.data(), out.data(), static_cast<int>(tokens),
                                 hidden, vocab, max_positions, pad_id, eps);
                             got = decode(out);
                             return error;
                         };
                         return instance;
                     }});
}

template <typename T> void add_all(Cases& cases, EmbeddingEntry<T> entry) {
    add(cases, entry, {0, 1}, 1);
    add(cases, entry, {0, 3, 3, 10, 11, 31, 45}, 52);  // an empty sequence; T not a multiple of 8
    add(cases, entry, {0, 64, 70}, 384);               // a sequence of max_positions tokens
    // RoBERTa's rows (pad_token_id 1): sequences past one warp's 32 tokens, one of the
    // max_positions − 2 tokens the table holds, and an empty one.
    add(cases, entry, {0, 5, 5, 45, 107}, 52, 1);
    add(cases, entry, {0, 1}, 8, 1);
}

}  // namespace

void add_embedding_cases(Cases& cases) {
    add_all<float>(cases, embedding_layernorm_f32);
    add_all<bf16>(cases, embedding_layernorm_bf16);
    add_all<f16>(cases, embedding_layernorm_f16);
}

}  // namespace harness
