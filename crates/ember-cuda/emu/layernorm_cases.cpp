// layernorm.cu under emulation: x ← LN(x + r), in place, launched as src/layernorm.rs does.
#include "harness.h"

#include "layernorm.cu"

namespace harness {
namespace {

template <typename T> using LayerNormEntry = void (*)(const T*, const T*, const float*, const float*, T*, int, int, float);

template <typename T>
void add(Cases& cases, LayerNormEntry<T> entry, int rows, int hidden, bool residual, float eps) {
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%d%s,eps=%g", rows, hidden, residual ? "+r" : "", eps);
    cases.push_back({std::string("layernorm/") + shape + "/" + dtype_name<T>(), bound<T>(),
                     [entry, rows, hidden, residual, eps, seed = cases.size()] {
                         Rng rng{seed};
                         const std::size_t len = std::size_t(rows) * hidden;
                         // Rows offset by their index: |μ| ≫ σ stresses the variance.
                         std::vector<float> x(len);
                         for (std::size_t i = 0; i < len; ++i) x[i] = rng.uniform() * 3.0f + float(i / hidden);
                         x = quantize<T>(x);
                         const auto r = residual ? quantize<T>(rng.vec(len, 1.0f)) : std::vector<float>();
                         std::vector<float> gamma(hidden);
                         for (float& g : gamma) g = 1.0f + 0.5f * rng.uniform();
                         const auto beta = rng.vec(hidden, 1.0f);
                         std::vector<double> v(len);
                         for (std::size_t i = 0; i < len; ++i) v[i] = double(x[i]) + (residual ? r[i] : 0.0f);
                         Instance instance;
                         instance.want = layernorm_reference(v, rows, hidden, gamma, beta, eps);
                         instance.run = [=, x = encode<T>(x), r = encode<T>(r)](const emu::Schedule& schedule,
                                                                                std::vector<float>& got) {
                             // In place, as the launcher: x is both the input and the output.
                             auto y = x;
                             const auto error = emu::launch(schedule, dim3((rows + LN_WARPS - 1) / LN_WARPS),
                                                            dim3(32 * LN_WARPS), 0, entry, y.data(),
                                                            residual ? r.data() : nullptr, gamma.data(), beta.data(),
                                                            y.data(), rows, hidden, eps);
                             got = decode(y);
                             return error;
                         };
                         return instance;
                     }});
}

template <typename T> void add_all(Cases& cases, LayerNormEntry<T> entry) {
    add(cases, entry, 1, 1, false, 1e-12f);
    add(cases, entry, 3, 7, true, 1e-5f);
    add(cases, entry, 9, 768, true, 1e-12f);  // a partial second block
    add(cases, entry, 2, 1000, false, 1e-5f);
    add(cases, entry, 17, 52, true, 1e-12f);
}

}  // namespace

void add_layernorm_cases(Cases& cases) {
    add_all<float>(cases, layernorm_f32);
    add_all<bf16>(cases, layernorm_bf16);
    add_all<f16>(cases, layernorm_f16);
}

}  // namespace harness
