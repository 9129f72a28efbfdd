// gemm_sm90.cu under emulation (wgmma.h): Y = act(X·Wᵀ + b) + R on the wgmma kernels, launched
// as src/gemm.rs launches them.
#include "gemm_harness.h"

#include "gemm_sm90.cu"

namespace harness {
namespace {

// GemmKernel::dynamic_smem of a wgmma kernel: the pipeline (it is larger than the epilogue's
// f32 tile) plus the 1024 bytes the kernel may skip to align its tiles.
constexpr std::size_t wgmma_smem(std::size_t bm, std::size_t bn) {
    return WG_STAGES * (bm + bn) * WG_ROW_BYTES + 1024;
}

}  // namespace

// The shapes of gemm_cases.cpp plus k past one and two stage rings (k = 136: 3 k tiles, the
// last partial; k = 328: 6 tiles, every stage reused) and m past two 64-row warpgroups.
void add_gemm_sm90_cases(Cases& cases) {
    const GemmShape shapes[] = {
        {1, 8, 8, false, ACT_IDENTITY, false},
        {7, 13, 24, true, ACT_RELU, false},
        {64, 64, 32, false, ACT_IDENTITY, true},
        {127, 129, 40, true, ACT_GELU, true},
        {130, 200, 72, true, ACT_GELU_TANH, false},
        {65, 136, 136, true, ACT_IDENTITY, true},
        {129, 128, 328, false, ACT_GELU, false},
        {70, 300, 200, true, ACT_GELU, true},  // n past one 256-column tile
    };
    const GemmKernel<bf16> bf16_kernels[] = {
        {"gemm-wgmma128x256", gemm_wgmma_128x256_bf16, 128, 256, 256, wgmma_smem(128, 256)},
        {"gemm-wgmma128x128", gemm_wgmma_128x128_bf16, 128, 128, 256, wgmma_smem(128, 128)},
        {"gemm-wgmma64x128", gemm_wgmma_64x128_bf16, 64, 128, 128, wgmma_smem(64, 128)}};
    const GemmKernel<f16> f16_kernels[] = {
        {"gemm-wgmma128x256", gemm_wgmma_128x256_f16, 128, 256, 256, wgmma_smem(128, 256)},
        {"gemm-wgmma128x128", gemm_wgmma_128x128_f16, 128, 128, 256, wgmma_smem(128, 128)},
        {"gemm-wgmma64x128", gemm_wgmma_64x128_f16, 64, 128, 128, wgmma_smem(64, 128)}};
    for (const auto& kernel : bf16_kernels)
        for (const auto& s : shapes) add_gemm_case(cases, kernel, s);
    for (const auto& kernel : f16_kernels)
        for (const auto& s : shapes) add_gemm_case(cases, kernel, s);
}

}  // namespace harness
