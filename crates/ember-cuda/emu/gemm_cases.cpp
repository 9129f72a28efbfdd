// gemm.cu under emulation: Y = act(X·Wᵀ + b) + R, launched as src/gemm.rs launches it.
#include <algorithm>

#include "gemm_harness.h"

#include "gemm.cu"

namespace harness {
namespace {

// GemmKernel::dynamic_smem of an mma kernel: the larger of the cp.async pipeline and the
// epilogue's f32 tile.
constexpr std::size_t mma_smem(std::size_t bm, std::size_t bn) {
    return std::max<std::size_t>(GEMM_STAGES * (bm + bn) * GEMM_LDS * 2, bm * (bn + 8) * 4);
}

}  // namespace

// kTensorCoreShapes for the mma kernels; the SIMT kernel's own shapes below.
void add_gemm_cases(Cases& cases) {
    const GemmKernel<bf16> bf16_kernels[] = {
        {"gemm-mma128x128", gemm_mma_128x128_bf16, 128, 128, GEMM_THREADS, mma_smem(128, 128)},
        {"gemm-mma64x64", gemm_mma_64x64_bf16, 64, 64, GEMM_THREADS, mma_smem(64, 64)}};
    const GemmKernel<f16> f16_kernels[] = {
        {"gemm-mma128x128", gemm_mma_128x128_f16, 128, 128, GEMM_THREADS, mma_smem(128, 128)},
        {"gemm-mma64x64", gemm_mma_64x64_f16, 64, 64, GEMM_THREADS, mma_smem(64, 64)}};
    for (const auto& kernel : bf16_kernels)
        for (const auto& s : kTensorCoreShapes) add_gemm_case(cases, kernel, s);
    for (const auto& kernel : f16_kernels)
        for (const auto& s : kTensorCoreShapes) add_gemm_case(cases, kernel, s);

    const GemmKernel<float> simt{"gemm-simt", gemm_f32, 64, 64, GEMM_THREADS, 0};
    for (const GemmShape& s : {GemmShape{1, 1, 1, false, ACT_IDENTITY, false},
                               GemmShape{3, 5, 7, true, ACT_RELU, true},
                               GemmShape{65, 63, 17, true, ACT_GELU_TANH, false},
                               GemmShape{64, 96, 52, true, ACT_GELU, false},
                               GemmShape{130, 70, 40, true, ACT_IDENTITY, true}})
        add_gemm_case(cases, simt, s);
}

}  // namespace harness
