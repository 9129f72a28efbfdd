// gemm_sm90.cu under emulation (wgmma.h): Y = act(X·Wᵀ + b) + R on the wgmma kernels, launched
// as src/gemm.rs launches them.
#include "gemm_harness.h"
#include "tensor_map.h"

#include <algorithm>

#include "gemm_sm90.cu"

namespace harness {
namespace {

// GemmKernel::dynamic_smem of a wgmma kernel: the pipeline (it is larger than the epilogue's
// f32 tile) plus the 1024 bytes the kernel may skip to align its tiles.
constexpr std::size_t wgmma_smem(std::size_t bm, std::size_t bn) {
    return WG_STAGES * (bm + bn) * WG_ROW_BYTES + 1024;
}

// GemmKernel::dynamic_smem of a TMA kernel: the stages, a full and an empty mbarrier per
// stage, and the alignment slack (the stages outweigh the epilogue's f32 tile).
constexpr std::size_t tma_smem(std::size_t bm, std::size_t bn, std::size_t stages) {
    return stages * (bm + bn) * WG_ROW_BYTES + stages * 2 * 8 + 1024;
}

// X's and W's tensor maps as src/gemm.rs's TensorMap::tile_rows encodes them (dims {k, rows},
// boxes {64, x_rows or w_rows}, 128-byte swizzle): null, or why the encoding failed.
// The tensor-map element type of T.
template <typename T> constexpr unsigned tensor_map_type() {
    return std::is_same<T, bf16>::value ? emu::kTensorMapBfloat16 : emu::kTensorMapFloat16;
}

template <typename T>
const char* encode_operands(TensorMap& x_map, TensorMap& w_map, const std::vector<T>& x, const std::vector<T>& w,
                            GemmShape s, unsigned x_rows, unsigned w_rows) {
    const std::size_t row = std::size_t(s.k) * 2;
    const char* why = emu::encode_tensor_map_2d(&x_map, x.data(), s.k, s.m, row, 64, x_rows, tensor_map_type<T>());
    return why ? why : emu::encode_tensor_map_2d(&w_map, w.data(), s.k, s.n, row, 64, w_rows, tensor_map_type<T>());
}

// A failed launch saying why a tensor map could not be encoded.
inline emu::LaunchError encode_failure(const char* why) {
    emu::LaunchError error;
    error.failed = true;
    snprintf(error.message, sizeof error.message, "encode_tensor_map_2d: %s", why);
    return error;
}

template <typename T>
using TmaEntry = void (*)(TensorMap, TensorMap, const float*, const T*, T*, int, int, int, int);

// A TMA kernel's case: gemm_harness.h's reference and inputs, X and W passed as tensor maps
// encoded as src/gemm.rs's TensorMap::tile_rows encodes them (dims {k, rows}, boxes {64, BM or
// BN}, 128-byte swizzle); `threads` and `smem` as the kernel was instantiated with. A persistent
// kernel (`persistent_blocks` > 0) gets a 1-D grid of that many blocks (at most one per tile, or
// per group of `cluster` row blocks, whole clusters), each looping over its tiles; the others one
// block per tile. In clusters, each block loads BN / cluster rows of the W tile (src/gemm.rs).
template <typename T>
void add_tma_case(Cases& cases, const char* name, TmaEntry<T> entry, int bm, int bn, unsigned threads,
                  std::size_t smem, GemmShape s, unsigned persistent_blocks = 0, unsigned cluster = 1) {
    const GemmKernel<T> reference_only{name, nullptr, unsigned(bm), unsigned(bn), threads, smem};
    add_gemm_case_with<T>(cases, reference_only, s,
                       [entry, bm, bn, s, persistent_blocks, cluster](const emu::Schedule& schedule,
                                                                      const GemmKernel<T>& kernel,
                                          const std::vector<T>& x, const std::vector<T>& w, const float* b,
                                          const T* r, T* y) {
                           TensorMap x_map, w_map;
                           if (const char* why = encode_operands(x_map, w_map, x, w, s, bm, bn / cluster))
                               return encode_failure(why);
                           const unsigned tiles_n = (s.n + bn - 1) / bn, tiles_m = (s.m + bm - 1) / bm;
                           const unsigned groups = tiles_n * ((tiles_m + cluster - 1) / cluster);
                           const dim3 grid = persistent_blocks == 0
                                                 ? dim3(tiles_n, tiles_m)
                                                 : dim3(std::min(persistent_blocks / cluster, groups) * cluster);
                           return emu::launch_cluster(schedule, cluster, grid, dim3(kernel.threads), kernel.dynamic_smem,
                                                      entry, x_map, w_map, b, r, y, s.m, s.n, s.k, s.act);
                       });
}

template <typename T>
using TmaStoreEntry = void (*)(TensorMap, TensorMap, TensorMap, const float*, const T*, int, int, int, int);

// The TMA-stored kernel's case: as add_tma_case's persistent ones (`blocks` blocks, at most one
// per tile), with Y too as a tensor map (dims {n, m}, boxes {64, WS_ST_BOX_ROWS}, 128-byte
// swizzle: src/gemm.rs's, which needs n % 8 == 0; for other n src/gemm.rs runs the 128 × 256 TMA
// kernel, so the caller leaves those shapes out).
template <typename T>
void add_tma_store_case(Cases& cases, const char* name, TmaStoreEntry<T> entry, std::size_t smem, GemmShape s,
                        unsigned blocks) {
    const GemmKernel<T> reference_only{name, nullptr, 128, 256, WS_ST_THREADS, smem};
    add_gemm_case_with<T>(cases, reference_only, s,
                          [entry, s, blocks](const emu::Schedule& schedule, const GemmKernel<T>& kernel,
                                             const std::vector<T>& x, const std::vector<T>& w, const float* b,
                                             const T* r, T* y) {
                              TensorMap x_map, w_map, y_map;
                              const char* why = encode_operands(x_map, w_map, x, w, s, 128, 256);
                              if (!why)
                                  why = emu::encode_tensor_map_2d(&y_map, y, s.n, s.m, std::size_t(s.n) * 2,
                                                                  WS_ST_BOX_COLS, WS_ST_BOX_ROWS, tensor_map_type<T>());
                              if (why) return encode_failure(why);
                              const unsigned tiles = ((s.n + 255) / 256) * ((s.m + 127) / 128);
                              return emu::launch_cluster(schedule, 1, dim3(std::min(blocks, tiles)), dim3(kernel.threads),
                                                         kernel.dynamic_smem, entry, x_map, w_map, y_map, b, r, s.m,
                                                         s.n, s.k, s.act);
                          });
}

}  // namespace

// GemmKernel::dynamic_smem of the TMA-stored kernel: the stages, each consumer warp's f32
// scratch (half its box's rows) and box, full and empty per stage, and the alignment slack.
constexpr std::size_t tma_store_smem() {
    return WS_ST_STAGES * (128 + 256) * WG_ROW_BYTES + 8 * (WS_ST_BOX_ROWS / 2 * WS_ST_BOX_COLS * 4 +
                                                            WS_ST_BOX_ROWS * WS_ST_BOX_COLS * 2) +
           2 * WS_ST_STAGES * 8 + 1024;
}

// GemmKernel::dynamic_smem of the ping-pong kernel: the stages, the 8 consumer warps' epilogue
// buffers, full and empty per stage, turn per consumer, and the alignment slack.
constexpr std::size_t pingpong_smem() {
    return WS_PP_STAGES * (128 + 128) * WG_ROW_BYTES + 8 * WS_PP_EPI_ROWS * WS_PP_EPI_STRIDE * 4 +
           (2 * WS_PP_STAGES + 2) * 8 + 1024;
}

// kTensorCoreShapes plus k past one and two stage rings (k = 136: 3 k tiles, the last partial;
// k = 328: 6 tiles, every stage reused), m past two 64-row warpgroups and n past one 256-column
// tile; for the persistent kernels also 9 tiles of 2 k tiles each, so that the stage ring wraps
// in the middle of a tile, on one block or cluster (both consumers alternate over every tile)
// and on two (3 × 3 tiles: with clusters of 2 the last pair has a row block past m).
void add_gemm_sm90_cases(Cases& cases) {
    std::vector<GemmShape> shapes(std::begin(kTensorCoreShapes), std::end(kTensorCoreShapes));
    shapes.insert(shapes.end(), {
        {65, 136, 136, true, ACT_IDENTITY, true},
        {129, 128, 328, false, ACT_GELU, false},
        {70, 300, 200, true, ACT_GELU, true},
    });
    std::vector<GemmShape> persistent_shapes = shapes;
    persistent_shapes.push_back({260, 384, 72, true, ACT_GELU, true});
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
    for (const auto& s : shapes) {
        const std::size_t smem256 = tma_smem(128, 256, WS_STAGES), smem128 = tma_smem(128, 128, WS_STAGES);
        const std::size_t occ2 = tma_smem(128, 128, WS_OCC2_STAGES);
        add_tma_case<bf16>(cases, "gemm-wgmmatma128x256", gemm_wgmma_tma_128x256_bf16, 128, 256, 384, smem256, s);
        add_tma_case<f16>(cases, "gemm-wgmmatma128x256", gemm_wgmma_tma_128x256_f16, 128, 256, 384, smem256, s);
        add_tma_case<bf16>(cases, "gemm-wgmmatma128x128", gemm_wgmma_tma_128x128_bf16, 128, 128, 384, smem128, s);
        add_tma_case<f16>(cases, "gemm-wgmmatma128x128", gemm_wgmma_tma_128x128_f16, 128, 128, 384, smem128, s);
        add_tma_case<bf16>(cases, "gemm-wgmmatma128x128occ2", gemm_wgmma_tma_128x128_occ2_bf16, 128, 128,
                           WS_OCC2_THREADS, occ2, s);
        add_tma_case<f16>(cases, "gemm-wgmmatma128x128occ2", gemm_wgmma_tma_128x128_occ2_f16, 128, 128,
                          WS_OCC2_THREADS, occ2, s);
    }
    for (const auto& s : persistent_shapes) {
        // Several blocks (clusters) only where there are tiles for more than one: the one-block
        // runs already take every tile through both consumers.
        const bool several = (s.m + 127) / 128 * ((s.n + 127) / 128) >= 3;
        for (unsigned blocks : {1u, 2u}) {
            if (blocks == 2 && !several) continue;
            const char* name = blocks == 1 ? "gemm-wgmmapingpong128x128-1block" : "gemm-wgmmapingpong128x128-2blocks";
            add_tma_case<bf16>(cases, name, gemm_wgmma_pingpong_128x128_bf16, 128, 128, WS_PP_THREADS,
                               pingpong_smem(), s, blocks);
            add_tma_case<f16>(cases, name, gemm_wgmma_pingpong_128x128_f16, 128, 128, WS_PP_THREADS,
                              pingpong_smem(), s, blocks);
        }
        // The TMA-stored kernel (n % 8 == 0 only: see add_tma_store_case) on one block and on
        // two; on 260 × 384 × 72 one block takes 6 tiles of 2 k tiles through its 4 stages.
        if (s.n % 8 == 0) {
            for (unsigned blocks : {1u, 2u}) {
                const char* name = blocks == 1 ? "gemm-wgmmatmastore128x256-1block" : "gemm-wgmmatmastore128x256-2blocks";
                add_tma_store_case<bf16>(cases, name, gemm_wgmma_tma_store_128x256_bf16, tma_store_smem(), s, blocks);
                add_tma_store_case<f16>(cases, name, gemm_wgmma_tma_store_128x256_f16, tma_store_smem(), s, blocks);
            }
        }
        // Clusters of 2: one cluster (both of its consumers alternating over every tile pair) and
        // two.
        for (unsigned blocks : {2u, 4u}) {
            if (blocks == 4 && !several) continue;
            const char* name =
                blocks == 2 ? "gemm-wgmmapingpongmc128x128-1cluster" : "gemm-wgmmapingpongmc128x128-2clusters";
            add_tma_case<bf16>(cases, name, gemm_wgmma_pingpong_mc_128x128_bf16, 128, 128, WS_PP_THREADS,
                               pingpong_smem(), s, blocks, WS_MC_CLUSTER);
            add_tma_case<f16>(cases, name, gemm_wgmma_pingpong_mc_128x128_f16, 128, 128, WS_PP_THREADS,
                              pingpong_smem(), s, blocks, WS_MC_CLUSTER);
        }
    }
}

}  // namespace harness
