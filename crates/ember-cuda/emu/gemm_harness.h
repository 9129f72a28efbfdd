// gemm_harness.h: the GEMM cases of gemm_cases.cpp (gemm.cu) and gemm_sm90_cases.cpp
// (gemm_sm90.cu): Y = act(X·Wᵀ + b) + R against a double-precision reference, launched as
// src/gemm.rs launches the kernel (grid ⌈n/BN⌉ × ⌈m/BM⌉, the kernel's threads and dynamic
// shared memory).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "harness.h"

namespace harness {

template <typename T>
using GemmEntry = void (*)(const T*, const T*, const float*, const T*, T*, int, int, int, int);

// One kernel of src/gemm.rs's GemmKernel: its case-name prefix, entry point, tile, threads per
// block and dynamic shared memory (GemmKernel::threads, GemmKernel::dynamic_smem).
template <typename T> struct GemmKernel {
    const char* name;
    GemmEntry<T> entry;
    unsigned bm, bn, threads;
    std::size_t dynamic_smem;
};

struct GemmShape {
    int m, n, k;
    bool bias;
    int act;
    bool residual;
};

// The tensor-core kernels' edge shapes (m, n not multiples of the tile, k = 8 below one k step,
// k not a multiple of it) and every epilogue, kept small: each mma and ldmatrix is a switch of
// 32 fibers.
constexpr GemmShape kTensorCoreShapes[] = {
    {1, 8, 8, false, ACT_IDENTITY, false},
    {7, 13, 24, true, ACT_RELU, false},
    {64, 64, 32, false, ACT_IDENTITY, true},
    {127, 129, 40, true, ACT_GELU, true},
    {130, 200, 72, true, ACT_GELU_TANH, false},
};

// Launches `kernel` on encoded X, W (and b, R, Y) for `s` under a schedule.
template <typename T>
using GemmLauncher = std::function<emu::LaunchError(const emu::Schedule&, const GemmKernel<T>&, const std::vector<T>& x,
                                                    const std::vector<T>& w, const float* b, const T* r, T* y)>;

// A case of `kernel` on `s`: inputs, the double-precision reference, and `launch` to run it.
template <typename T>
void add_gemm_case_with(Cases& cases, GemmKernel<T> kernel, GemmShape s, GemmLauncher<T> launch) {
    const std::string name = std::string(kernel.name) + "/" + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
                             std::to_string(s.k) + (s.bias ? "+b" : "") + act_suffix(s.act) +
                             (s.residual ? "+r" : "") + "/" + dtype_name<T>();
    cases.push_back({name, bound<T>(), [kernel, s, launch, seed = cases.size()] {
                         Rng rng{seed};
                         const std::size_t m = s.m, n = s.n, k = s.k;
                         // Weights scaled by 1/√k, as in a trained layer: outputs stay O(1).
                         const auto x = quantize<T>(rng.vec(m * k, 1.0f));
                         const auto w = quantize<T>(rng.vec(n * k, 1.0f / std::sqrt(static_cast<float>(k))));
                         const auto b = s.bias ? rng.vec(n, 0.5f) : std::vector<float>();
                         const auto r = s.residual ? quantize<T>(rng.vec(m * n, 1.0f)) : std::vector<float>();
                         Instance instance;
                         instance.want.resize(m * n);
                         for (std::size_t i = 0; i < m; ++i)
                             for (std::size_t j = 0; j < n; ++j) {
                                 double acc = 0.0;
                                 for (std::size_t p = 0; p < k; ++p) acc += double(x[i * k + p]) * w[j * k + p];
                                 if (s.bias) acc += b[j];
                                 acc = activate_reference(s.act, acc);
                                 if (s.residual) acc += r[i * n + j];
                                 instance.want[i * n + j] = acc;
                             }
                         instance.run = [kernel, s, launch, x = encode<T>(x), w = encode<T>(w), b,
                                         r = encode<T>(r)](const emu::Schedule& schedule, std::vector<float>& got) {
                             auto y = poisoned<T>(std::size_t(s.m) * s.n);
                             const auto error = launch(schedule, kernel, x, w, s.bias ? b.data() : nullptr,
                                                       s.residual ? r.data() : nullptr, y.data());
                             got = decode(y);
                             return error;
                         };
                         return instance;
                     }});
}

// A case of a kernel with the pointer signature (GemmEntry), launched on a grid of ⌈n/BN⌉ × ⌈m/BM⌉.
template <typename T> void add_gemm_case(Cases& cases, GemmKernel<T> kernel, GemmShape s) {
    add_gemm_case_with<T>(cases, kernel, s,
                          [s](const emu::Schedule& schedule, const GemmKernel<T>& kernel, const std::vector<T>& x,
                              const std::vector<T>& w, const float* b, const T* r, T* y) {
                              const dim3 grid((s.n + kernel.bn - 1) / kernel.bn, (s.m + kernel.bm - 1) / kernel.bm);
                              return emu::launch(schedule, grid, dim3(kernel.threads), kernel.dynamic_smem,
                                                 kernel.entry, x.data(), w.data(), b, r, y, s.m, s.n, s.k, s.act);
                          });
}

}  // namespace harness
