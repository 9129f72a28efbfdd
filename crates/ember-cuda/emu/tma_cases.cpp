// tma_cases.cpp: the emulator's mbarriers and TMA (tma.h) on a pipeline kernel of its own (no
// kernels/ file), shaped as gemm_sm90.cu's warp-specialised one: warp 0's lane 0 is the
// producer, warps 1 and 2 the consumers, kStages stages with a `full` and an `empty` barrier
// each (static __shared__), the tiles 1024-byte aligned in the dynamic shared memory.
//
//   producer, tile t:  wait empty[t % S] (phase t / S − 1), arrive_expect_tx(full, tile bytes),
//                      tma_load_2d(stage, map, c0, c1, full)
//   consumers, tile t: wait full[t % S] (phase t / S), copy the box out of the swizzled stage into
//                      out[t], arrive on empty
//
// The boxes walk the tensor from (row −3, column −box/2), so the first and last ones cross every
// edge (zero fill on negative coordinates and past the dimensions), and the rows have padding
// (NaN) between the tensor's width and its stride, which must never be read. The output is
// compared exactly (bound 0). Then the same kernel with one bug each, as expected failures: the
// launch must fail with the emulator's diagnosis (a deadlock, not a hang).
#include <cstdio>
#include <cstring>

#include "harness.h"

// As gemm_sm90.cu defines it (tma.h uses it, and does not define it).
struct __align__(64) TensorMap {
    unsigned long long opaque[16];
};

#include "tma.h"

namespace {

constexpr int kStages = 3;
constexpr int kConsumerThreads = 64;  // warps 1 and 2
constexpr int kThreads = 32 + kConsumerThreads;

enum Bug : int {
    kNoBug,
    kExpectTooMuch,    // full armed for 16 bytes more than the load brings: the consumers never pass
    kExpectTooLittle,  // 16 bytes fewer: the load's complete_tx takes tx below 0
    kNoRelease,        // the consumers never arrive on empty: the producer waits forever
    kNoInit,           // the barriers are never initialised
    kForeignMap,       // a map the emulation did not encode (zeros)
};

// The stage's element (r, e): where the 128-byte swizzle puts byte r·row + 2e of the tile, as
// the hardware does on shared-memory addresses (bits [4, 7) ^= bits [7, 10)).
template <int BOX_INNER>
__device__ float stage_element(const unsigned char* stage, int r, int e) {
    const unsigned address = smem_u32(stage) + r * BOX_INNER * 2 + 2 * e;
    const unsigned swizzled = address ^ (((address >> 7) & 7) << 4);
    unsigned short bits;
    std::memcpy(&bits, static_cast<const unsigned char*>(emu::shared_window_base()) + swizzled, sizeof bits);
    return to_f32(bf16{bits});
}

template <int BOX_INNER, int BOX_OUTER>
__global__ void tma_pipeline(const __grid_constant__ TensorMap map, float* out, int tiles_inner, int tiles,
                             int bug) {
    constexpr int TILE_ELEMS = BOX_INNER * BOX_OUTER, TILE_BYTES = TILE_ELEMS * 2;
    constexpr int STAGE_BYTES = (TILE_BYTES + 1023) / 1024 * 1024;
    EMBER_DYNAMIC_SMEM(unsigned char, smem);
    unsigned char* stages = smem + (1024 - smem_u32(smem) % 1024) % 1024;
    __shared__ unsigned long long full[kStages], empty[kStages];
    if (threadIdx.x == 0 && bug != kNoInit) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(&full[s], 1);
            mbarrier_init(&empty[s], kConsumerThreads);
        }
        fence_mbarrier_init();
    }
    __syncthreads();

    if (threadIdx.x < 32) {
        if (threadIdx.x != 0) return;  // no __syncthreads follows
        for (int t = 0; t < tiles; ++t) {
            const int s = t % kStages;
            if (t >= kStages)
                while (!mbarrier_try_wait_parity(&empty[s], (t / kStages - 1) & 1)) {}
            const int slack = bug == kExpectTooMuch ? 16 : bug == kExpectTooLittle ? -16 : 0;
            mbarrier_arrive_expect_tx(&full[s], TILE_BYTES + slack);
            const int c0 = (t % tiles_inner) * BOX_INNER - BOX_INNER / 2, c1 = (t / tiles_inner) * BOX_OUTER - 3;
            tma_load_2d(stages + s * STAGE_BYTES, &map, c0, c1, &full[s]);
        }
        return;
    }
    const int c = threadIdx.x - 32;
    for (int t = 0; t < tiles; ++t) {
        const int s = t % kStages;
        while (!mbarrier_try_wait_parity(&full[s], (t / kStages) & 1)) {}
        for (int i = c; i < TILE_ELEMS; i += kConsumerThreads)
            out[static_cast<std::size_t>(t) * TILE_ELEMS + i] =
                stage_element<BOX_INNER>(stages + s * STAGE_BYTES, i / BOX_INNER, i % BOX_INNER);
        if (bug != kNoRelease) mbarrier_arrive(&empty[s]);
    }
}

struct Shape {
    int rows, cols, stride;  // the tensor: rows × cols bf16, rows `stride` elements apart
};

const char* bug_name(int bug) {
    switch (bug) {
    case kExpectTooMuch:
        return "+expect-tx-too-much";
    case kExpectTooLittle:
        return "+expect-tx-too-little";
    case kNoRelease:
        return "+no-release";
    case kNoInit:
        return "+no-init";
    case kForeignMap:
        return "+foreign-map";
    default:
        return "";
    }
}

template <int BOX_INNER, int BOX_OUTER>
void add_pipeline_case(harness::Cases& cases, Shape shape, int bug, const char* expect_failure) {
    using namespace harness;
    const std::string name = "tma/pipeline-" + std::to_string(shape.rows) + "x" + std::to_string(shape.cols) +
                             "s" + std::to_string(shape.stride) + "-box" + std::to_string(BOX_OUTER) + "x" +
                             std::to_string(BOX_INNER) + bug_name(bug) + "/bf16";
    cases.push_back({name, 0.0, [shape, bug, seed = cases.size()] {
                         Rng rng{seed};
                         // The boxes from (−3, −BOX_INNER / 2) past the far edges.
                         const int tiles_inner = (shape.cols + BOX_INNER / 2 + BOX_INNER - 1) / BOX_INNER;
                         const int tiles_outer = (shape.rows + 3 + BOX_OUTER - 1) / BOX_OUTER;
                         const int tiles = tiles_inner * tiles_outer;
                         std::vector<float> tensor(std::size_t(shape.rows) * shape.stride, std::nanf(""));
                         for (int r = 0; r < shape.rows; ++r)
                             for (int e = 0; e < shape.cols; ++e)
                                 tensor[std::size_t(r) * shape.stride + e] = rng.uniform();
                         tensor = quantize<bf16>(tensor);  // NaN stays NaN
                         Instance instance;
                         const std::size_t tile_elems = std::size_t(BOX_INNER) * BOX_OUTER;
                         instance.want.resize(tile_elems * tiles);
                         for (int t = 0; t < tiles; ++t)
                             for (int r = 0; r < BOX_OUTER; ++r)
                                 for (int e = 0; e < BOX_INNER; ++e) {
                                     const int row = (t / tiles_inner) * BOX_OUTER - 3 + r;
                                     const int col = (t % tiles_inner) * BOX_INNER - BOX_INNER / 2 + e;
                                     const bool in = row >= 0 && row < shape.rows && col >= 0 && col < shape.cols;
                                     instance.want[t * tile_elems + r * BOX_INNER + e] =
                                         in ? tensor[std::size_t(row) * shape.stride + col] : 0.0;
                                 }
                         instance.run = [shape, bug, tiles_inner, tiles, tile_elems,
                                         data = encode<bf16>(tensor)](const emu::Schedule& schedule,
                                                                      std::vector<float>& got) {
                             emu::LaunchError error;
                             TensorMap map;
                             // std::vector's storage is 16-byte aligned, as TMA needs.
                             const char* why = emu::encode_tensor_map_2d(&map, data.data(), shape.cols, shape.rows,
                                                                         std::size_t(shape.stride) * 2, BOX_INNER,
                                                                         BOX_OUTER);
                             if (why) {
                                 error.failed = true;
                                 snprintf(error.message, sizeof error.message, "encode_tensor_map_2d: %s", why);
                                 return error;
                             }
                             if (bug == kForeignMap) std::memset(&map, 0, sizeof map);
                             std::vector<float> out(tile_elems * tiles, std::nanf(""));
                             constexpr std::size_t stage_bytes = (BOX_INNER * BOX_OUTER * 2 + 1023) / 1024 * 1024;
                             error = emu::launch(schedule, dim3(1), dim3(kThreads), kStages * stage_bytes + 1024,
                                                 tma_pipeline<BOX_INNER, BOX_OUTER>, map, out.data(), tiles_inner,
                                                 tiles, bug);
                             got = out;
                             return error;
                         };
                         return instance;
                     },
                     expect_failure});
}

}  // namespace

namespace harness {

void add_tma_cases(Cases& cases) {
    // 3 × 3 boxes of 16 rows × 64 (128-byte rows, the swizzle's width): each stage used 3 times.
    add_pipeline_case<64, 16>(cases, {37, 100, 112}, kNoBug, nullptr);
    // 64-byte rows, 8-row boxes: 5 × 5 boxes.
    add_pipeline_case<32, 8>(cases, {33, 120, 120}, kNoBug, nullptr);
    const Shape small{20, 64, 64};
    add_pipeline_case<64, 16>(cases, small, kExpectTooMuch, "deadlock");
    add_pipeline_case<64, 16>(cases, small, kNoRelease, "deadlock");
    add_pipeline_case<64, 16>(cases, small, kExpectTooLittle, "went negative");
    add_pipeline_case<64, 16>(cases, small, kNoInit, "never initialised");
    add_pipeline_case<64, 16>(cases, small, kForeignMap, "not encoded by the emulation");
}

}  // namespace harness
