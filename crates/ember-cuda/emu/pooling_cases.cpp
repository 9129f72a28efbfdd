// pooling.cu under emulation: every pooling mode into one [n_seq, modes·H] row block (also with a
// prompt's tokens left out), and normalize_rows_f32, launched as src/pooling.rs does.
#include "harness.h"

#include "pooling.cu"

namespace harness {
namespace {

template <typename T>
using PoolEntry = void (*)(const T*, const unsigned*, int, int, unsigned, float*, int, int);

constexpr int kModes[] = {POOL_CLS, POOL_MAX, POOL_MEAN, POOL_MEAN_SQRT_LEN, POOL_WEIGHTED_MEAN, POOL_LAST_TOKEN};
constexpr const char* kModeNames[] = {"cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken"};
constexpr int kModeCount = sizeof kModes / sizeof kModes[0];

// Sums in f64 and NaN-free inputs: the kernel's f32 results are the reference's, rounded once.
constexpr double kPoolBound = 1e-12;

// Every mode, the first `excluded` tokens of each sequence left out (include_prompt false); a
// sequence left with none gives x_1 for cls, 0 for the others, and -inf for max, which is left
// out of such a case (the harness refuses non-finite values).
template <typename T>
void add(Cases& cases, PoolEntry<T> entry, std::vector<unsigned> seq_offsets, int hidden, unsigned excluded) {
    bool some_empty = false;
    for (std::size_t s = 0; s + 1 < seq_offsets.size(); ++s)
        some_empty |= seq_offsets[s + 1] - seq_offsets[s] <= excluded;
    std::vector<int> modes;
    std::string names;
    for (int m = 0; m < kModeCount; ++m) {
        if (some_empty && kModes[m] == POOL_MAX) continue;
        modes.push_back(m);
        names += (names.empty() ? "" : "+") + std::string(kModeNames[m]);
    }
    const std::string name = "pool/" + lens(seq_offsets) + "x" + std::to_string(hidden) + "," + names +
                             (excluded ? ",excluding=" + std::to_string(excluded) : "") + "/" + dtype_name<T>();
    cases.push_back({name, kPoolBound, [entry, seq_offsets, hidden, excluded, modes, seed = cases.size()] {
                         Rng rng{seed};
                         const std::size_t h = hidden, n_seq = seq_offsets.size() - 1, out_dim = modes.size() * h;
                         const auto x = quantize<T>(rng.vec(std::size_t(seq_offsets.back()) * h, 2.0f));
                         Instance instance;
                         instance.want.resize(n_seq * out_dim);
                         for (std::size_t s = 0; s < n_seq; ++s) {
                             const std::size_t start = seq_offsets[s], end = seq_offsets[s + 1];
                             const std::size_t first = std::min(start + excluded, end);
                             const double len = double(end - first);
                             for (std::size_t j = 0; j < h; ++j) {
                                 double values[kModeCount];
                                 if (first == end) {
                                     const double none[kModeCount] = {x[start * h + j], -INFINITY, 0, 0, 0, 0};
                                     std::copy(none, none + kModeCount, values);
                                 } else {
                                     double max = x[first * h + j], sum = 0.0, weighted = 0.0, weights = 0.0;
                                     for (std::size_t t = first; t < end; ++t) {
                                         max = std::max(max, double(x[t * h + j]));
                                         sum += x[t * h + j];
                                         weighted += double(t - start + 1) * x[t * h + j];
                                         weights += double(t - start + 1);
                                     }
                                     const double kept[kModeCount] = {x[first * h + j], max, sum / len,
                                                                      sum / std::sqrt(len), weighted / weights,
                                                                      x[(end - 1) * h + j]};
                                     std::copy(kept, kept + kModeCount, values);
                                 }
                                 for (std::size_t i = 0; i < modes.size(); ++i)
                                     instance.want[s * out_dim + i * h + j] = values[modes[i]];
                             }
                         }
                         instance.run = [=, x = encode<T>(x)](const emu::Schedule& schedule, std::vector<float>& got) {
                             got.assign(n_seq * out_dim, std::nanf(""));
                             const dim3 grid(n_seq, (h + POOL_THREADS - 1) / POOL_THREADS);
                             for (std::size_t i = 0; i < modes.size(); ++i) {
                                 const auto error = emu::launch(schedule, grid, dim3(POOL_THREADS), 0, entry, x.data(),
                                                                seq_offsets.data(), hidden, kModes[modes[i]], excluded,
                                                                got.data(), static_cast<int>(out_dim),
                                                                static_cast<int>(i * h));
                                 if (error.failed) return error;
                             }
                             return emu::LaunchError{};
                         };
                         return instance;
                     }});
}

template <typename T> void add_all(Cases& cases, PoolEntry<T> entry) {
    add(cases, entry, {0, 1, 6, 39, 70}, 52, 0);
    add(cases, entry, {0, 2, 5}, 300, 0);  // H over one 256-thread block
    add(cases, entry, {0, 2, 6, 39, 70}, 52, 1);  // a prompt's first token left out
    add(cases, entry, {0, 1, 6, 39, 70}, 52, 5);  // past whole sequences (1 and 5 tokens)
}

void add_normalize(Cases& cases, int rows, int dim) {
    const std::string name = "normalize/" + std::to_string(rows) + "x" + std::to_string(dim) + "/f32";
    cases.push_back({name, kPoolBound, [rows, dim, seed = cases.size()] {
                         Rng rng{seed};
                         auto x = rng.vec(std::size_t(rows) * dim, 3.0f);
                         // A zero row stays zero (‖x‖ is clamped to 1e-12).
                         std::fill(x.begin(), x.begin() + dim, 0.0f);
                         Instance instance;
                         instance.want.resize(x.size());
                         for (int r = 0; r < rows; ++r) {
                             double norm = 0.0;
                             for (int j = 0; j < dim; ++j) norm += double(x[r * dim + j]) * x[r * dim + j];
                             const double scale = 1.0 / std::max(std::sqrt(norm), 1e-12);
                             for (int j = 0; j < dim; ++j) instance.want[r * dim + j] = x[r * dim + j] * scale;
                         }
                         instance.run = [=](const emu::Schedule& schedule, std::vector<float>& got) {
                             got = x;  // in place
                             return emu::launch(schedule, dim3(rows), dim3(POOL_THREADS), 0, normalize_rows_f32,
                                                got.data(), dim);
                         };
                         return instance;
                     }});
}

}  // namespace

void add_pooling_cases(Cases& cases) {
    add_all<float>(cases, pool_f32);
    add_all<bf16>(cases, pool_bf16);
    add_all<f16>(cases, pool_f16);
    add_normalize(cases, 5, 384);
    add_normalize(cases, 3, 52);
    add_normalize(cases, 2, 1);
}

}  // namespace harness
