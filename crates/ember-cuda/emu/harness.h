// harness.h: the emulated backend-ops harness (after tests/backend_ops.rs): each case is a
// kernel launch configured as its Rust launcher does it, on fresh random inputs rounded to the
// case's dtype, against a plain double-precision reference. A case is named op/shape/dtype and
// runs under every emu::kSchedules entry with its output poisoned (NaN) first; its error is
// NMSE = Σ(got − want)² / Σ want², bounded per op and dtype; a NaN or infinity never passes.
//
// One <op>_cases.cpp per kernels/<op>.cu: it includes the kernel file (its own translation unit,
// as NVRTC compiles one file at a time) and defines add_<op>_cases. A new kernel file gets a new
// *_cases.cpp (tests/emulation.rs compiles every emu/*.cpp), its add_<op>_cases declared below
// and called in run_kernels.cpp's main.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "common.cuh"

namespace harness {

// splitmix64, as tests/backend_ops.rs.
struct Rng {
    std::uint64_t state;

    std::uint64_t next_u64() {
        state += 0x9E3779B97F4A7C15ull;
        std::uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Uniform in [-1, 1).
    float uniform() { return static_cast<float>(next_u64() >> 40) / static_cast<float>(1u << 24) * 2.0f - 1.0f; }
    // `len` values uniform in [-scale, scale).
    std::vector<float> vec(std::size_t len, float scale) {
        std::vector<float> v(len);
        for (float& x : v) x = uniform() * scale;
        return v;
    }
};

template <typename T> constexpr const char* dtype_name();
template <> constexpr const char* dtype_name<float>() { return "f32"; }
template <> constexpr const char* dtype_name<bf16>() { return "bf16"; }
template <> constexpr const char* dtype_name<f16>() { return "f16"; }

// NMSE bounds of tests/backend_ops.rs (Case::bound): one rounding of the output for bf16/f16,
// accumulation order and libm for f32.
template <typename T> constexpr double bound();
template <> constexpr double bound<float>() { return 1e-10; }
template <> constexpr double bound<bf16>() { return 2e-5; }
template <> constexpr double bound<f16>() { return 1e-6; }

// `x` in the storage type T (round to nearest even), and back.
template <typename T> std::vector<T> encode(const std::vector<float>& x) {
    std::vector<T> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = from_f32<T>(x[i]);
    return out;
}
template <typename T> std::vector<float> decode(const std::vector<T>& x) {
    std::vector<float> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = to_f32(x[i]);
    return out;
}
// `x` rounded to T: what the kernel reads.
template <typename T> std::vector<float> quantize(const std::vector<float>& x) { return decode(encode<T>(x)); }
// A buffer of `len` NaNs in T: an output the kernel must overwrite.
template <typename T> std::vector<T> poisoned(std::size_t len) {
    return std::vector<T>(len, from_f32<T>(std::nanf("")));
}

// act(x) in double: common.cuh's activations by their definitions.
inline double activate_reference(int act, double x) {
    switch (act) {
    case ACT_GELU:
        return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case ACT_GELU_TANH:
        return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case ACT_RELU:
        return x < 0.0 ? 0.0 : x;
    default:
        return x;
    }
}
inline const char* act_suffix(int act) {
    switch (act) {
    case ACT_GELU:
        return "+gelu";
    case ACT_GELU_TANH:
        return "+gelu_tanh";
    case ACT_RELU:
        return "+relu";
    default:
        return "";
    }
}

// y = (v − μ) / √(σ² + ε) · γ + β over each row of `v` [rows, hidden], biased variance.
inline std::vector<double> layernorm_reference(const std::vector<double>& v, std::size_t rows, std::size_t hidden,
                                               const std::vector<float>& gamma, const std::vector<float>& beta,
                                               double eps) {
    std::vector<double> y(v.size());
    for (std::size_t r = 0; r < rows; ++r) {
        const double* row = &v[r * hidden];
        double mean = 0.0, var = 0.0;
        for (std::size_t j = 0; j < hidden; ++j) mean += row[j];
        mean /= static_cast<double>(hidden);
        for (std::size_t j = 0; j < hidden; ++j) var += (row[j] - mean) * (row[j] - mean);
        const double rstd = 1.0 / std::sqrt(var / static_cast<double>(hidden) + eps);
        for (std::size_t j = 0; j < hidden; ++j) y[r * hidden + j] = (row[j] - mean) * rstd * gamma[j] + beta[j];
    }
    return y;
}

// "L[3,0,4]": the sequence lengths of `seq_offsets`.
std::string lens(const std::vector<unsigned>& seq_offsets);

// A case, ready to run: its reference, and a launcher that runs the kernel under a schedule into
// `got` (the output, decoded to f32, poisoned before the launch).
struct Instance {
    std::vector<double> want;
    std::function<emu::LaunchError(const emu::Schedule&, std::vector<float>& got)> run;
};

struct Case {
    std::string name;  // op/shape/dtype
    double bound;      // NMSE
    std::function<Instance()> make;
    // An expected failure: the launch must fail with a message containing this (the emulator's
    // own checks, tested by tma_cases.cpp and cluster_cases.cpp); null for an ordinary case.
    const char* expect_failure = nullptr;
};

using Cases = std::vector<Case>;

// One per kernels/*.cu.
void add_embedding_cases(Cases& cases);
void add_gemm_cases(Cases& cases);
void add_gemm_sm90_cases(Cases& cases);
void add_layernorm_cases(Cases& cases);
void add_attention_cases(Cases& cases);
void add_pooling_cases(Cases& cases);
// Not kernel files: the emulator's mbarriers and TMA (tma.h), and its thread-block clusters
// (cluster_sync, remote arrivals, TMA multicast), on kernels of their own.
void add_tma_cases(Cases& cases);
void add_cluster_cases(Cases& cases);

}  // namespace harness
