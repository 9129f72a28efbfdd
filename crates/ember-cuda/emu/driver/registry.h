// registry.h: every extern "C" kernel of kernels/*.cu that the emulated driver (driver.cpp) can
// launch, compiled for the CPU (emulation.h) into libcuda.so, by kernel file.
//
// A kernel declared with __cluster_dims__ has EMBER_CLUSTER_DIMS(kernel, x) after it in its
// file (emulation.h): its entry records the cluster size, launches run in clusters of x blocks,
// and cuLaunchKernel refuses a grid.x that is not a multiple of x.
//
// To add a kernel: add its name to its file's list below. A name that kernels/<file>.cu does not
// define is a compile error; a kernel the file defines but the list lacks makes
// cuModuleLoadData fail, naming it and this file, as soon as a CUBIN holding it is loaded.
// To add a kernel file: add it to EMBER_KERNEL_FILES, give it a list, and add
// kernels_<file>.cpp (two lines, as the others).
#pragma once

#include <cstddef>
#include <cstring>
#include <tuple>
#include <utility>

#include "emulation.h"

// X(file) for each kernels/<file>.cu.
#define EMBER_KERNEL_FILES(X) \
    X(embedding) X(gemm) X(gemm_sm90) X(layernorm) X(attention) X(pooling) X(rotary) X(activation)

#define EMBER_KERNELS_embedding(X) X(embedding_layernorm_f32) X(embedding_layernorm_bf16) X(embedding_layernorm_f16)
#define EMBER_KERNELS_gemm(X)                                                                           \
    X(gemm_mma_128x128_bf16) X(gemm_mma_128x128_f16) X(gemm_mma_64x64_bf16) X(gemm_mma_64x64_f16) \
    X(gemm_f32)
#define EMBER_KERNELS_gemm_sm90(X)                                                \
    X(gemm_wgmma_128x256_bf16) X(gemm_wgmma_128x256_f16) X(gemm_wgmma_128x128_bf16) \
    X(gemm_wgmma_128x128_f16) X(gemm_wgmma_64x128_bf16) X(gemm_wgmma_64x128_f16)     \
    X(gemm_wgmma_tma_128x256_bf16) X(gemm_wgmma_tma_128x256_f16)                    \
    X(gemm_wgmma_tma_128x128_bf16) X(gemm_wgmma_tma_128x128_f16)                    \
    X(gemm_wgmma_tma_128x128_occ2_bf16) X(gemm_wgmma_tma_128x128_occ2_f16)          \
    X(gemm_wgmma_pingpong_128x128_bf16) X(gemm_wgmma_pingpong_128x128_f16)          \
    X(gemm_wgmma_pingpong_mc_128x128_bf16) X(gemm_wgmma_pingpong_mc_128x128_f16)    \
    X(gemm_wgmma_tma_store_128x256_bf16) X(gemm_wgmma_tma_store_128x256_f16)
#define EMBER_KERNELS_layernorm(X) X(layernorm_f32) X(layernorm_bf16) X(layernorm_f16)
#define EMBER_KERNELS_attention(X) X(attention_varlen_f32) X(attention_varlen_bf16) X(attention_varlen_f16)
#define EMBER_KERNELS_pooling(X) X(pool_f32) X(pool_bf16) X(pool_f16) X(normalize_rows_f32)
#define EMBER_KERNELS_rotary(X) X(rotary_f32) X(rotary_bf16) X(rotary_f16)
#define EMBER_KERNELS_activation(X) X(gated_activation_f32) X(gated_activation_bf16) X(gated_activation_f16)

namespace ember_driver {

// A launch's configuration, as cuLaunchKernel received it.
struct LaunchShape {
    dim3 grid, block;
    std::size_t dynamic_smem;
};

constexpr std::size_t kMaxKernelParams = 32;

// One kernel: its name, its parameters' sizes (the C++ signature's, checked against the
// CUBIN's), how to run it from cuLaunchKernel's `kernelParams`, and its cluster size along x
// (__cluster_dims__, EMBER_CLUSTER_DIMS; 1 without).
struct KernelEntry {
    const char* name;
    unsigned param_count;
    std::size_t param_sizes[kMaxKernelParams];
    emu::LaunchError (*launch)(const LaunchShape& shape, void** params);
    unsigned cluster_x;
};

// The kernels of one kernel file.
struct KernelTable {
    const char* file;
    const KernelEntry* entries;
    std::size_t count;
};

// Runs `kernel` over the launch with its parameters copied from `params[i]` (each points at the
// i-th argument, sizeof(P_i) bytes, as cuLaunchKernel specifies), in ascending schedule, in
// clusters of `cluster_x` blocks.
template <typename... P, std::size_t... I>
emu::LaunchError launch_unpacked(void (*kernel)(P...), const LaunchShape& shape, void** params,
                                 std::index_sequence<I...>, unsigned cluster_x) {
    struct Call {
        void (*kernel)(P...);
        std::tuple<P...> args;
    } call{kernel, {}};
    (std::memcpy(static_cast<void*>(&std::get<I>(call.args)), params[I], sizeof(P)), ...);
    return emu::run_grid(emu::kSchedules[0], shape.grid, shape.block, shape.dynamic_smem,
                         [](void* p) {
                             Call& c = *static_cast<Call*>(p);
                             std::apply(c.kernel, c.args);
                         },
                         &call, cluster_x);
}

template <typename... P>
constexpr KernelEntry make_entry(const char* name, void (*)(P...),
                                 emu::LaunchError (*launch)(const LaunchShape&, void**), unsigned cluster_x) {
    static_assert(sizeof...(P) <= kMaxKernelParams, "kernel with more parameters than kMaxKernelParams");
    return KernelEntry{name, sizeof...(P), {sizeof(P)...}, launch, cluster_x};
}

template <typename... P> constexpr std::index_sequence_for<P...> param_indices(void (*)(P...)) { return {}; }

// Each kernel file's table, defined by its kernels_<file>.cpp.
#define EMBER_DECLARE_KERNEL_TABLE(file) extern const KernelTable kernels_##file;
EMBER_KERNEL_FILES(EMBER_DECLARE_KERNEL_TABLE)
#undef EMBER_DECLARE_KERNEL_TABLE

}  // namespace ember_driver

#define EMBER_KERNEL_ENTRY(kernel)                                                                   \
    ::ember_driver::make_entry(                                                                      \
        #kernel, kernel,                                                                             \
        [](const ::ember_driver::LaunchShape& shape, void** params) {                                \
            return ::ember_driver::launch_unpacked(kernel, shape, params, ::ember_driver::param_indices(kernel), \
                                                   ::emu::ClusterOf<kernel>::x);                     \
        },                                                                                           \
        ::emu::ClusterOf<kernel>::x),

// In kernels_<file>.cpp, after including kernels/<file>.cu: defines ember_driver::kernels_<file>.
#define EMBER_DEFINE_KERNEL_TABLE(file)                                                                    \
    namespace ember_driver {                                                                               \
    namespace {                                                                                            \
    const KernelEntry entries_##file[] = {EMBER_KERNELS_##file(EMBER_KERNEL_ENTRY)};                       \
    }                                                                                                      \
    const KernelTable kernels_##file = {#file ".cu", entries_##file, sizeof entries_##file / sizeof(KernelEntry)}; \
    }
