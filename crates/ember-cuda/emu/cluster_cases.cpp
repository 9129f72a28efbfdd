// cluster_cases.cpp: the emulator's thread-block clusters (emulation.h: cluster_ctarank,
// cluster_sync; tma.h: mbarrier_arrive_cluster, tma_load_2d_multicast) on a pipeline kernel of
// its own (no kernels/ file), shaped as a 2-CTA cluster GEMM that shares its W tile: clusters of
// 2 CTAs, each with a producer (warp 0's lane 0) and consumers (warps 1 and 2) over kStages
// stages with a `full` and an `empty` mbarrier each, all in dynamic shared memory (a cluster
// kernel may not use static __shared__ here). A stage holds an A box (the CTA's own) and a B box
// (the cluster's, shared): each CTA's producer loads its A box with tma_load_2d and its HALF of
// the B box (rows rank·8 ..) with tma_load_2d_multicast to both CTAs, at offset rank × half
// of the stage's B region.
//
//   init (thread 0):   full[s] count 1, empty[s] count 2 × consumers (both CTAs release)
//   cluster_sync       (the peer's barriers are initialised before any remote operation)
//   producer, tile t:  wait empty[t % S] (phase t / S − 1), arrive_expect_tx(full, A + B bytes:
//                      A and both halves of B), tma_load_2d(A), tma_load_2d_multicast(B half, 0b11)
//   consumers, tile t: wait full[t % S] (phase t / S), copy A and B out of the swizzled stage
//                      into out, arrive on the own empty and (mbarrier_arrive_cluster) the peer's
//   cluster_sync       (no CTA exits while its peer may still arrive on or multicast into it)
//
// The peer's multicast half often completes on a CTA's `full` before its own producer armed it
// (tx transiently negative, which cluster launches allow). The boxes start at (row −3, column
// −32) and run past the far edges (zero fill), the rows have NaN padding past the tensor's
// width; the output is compared exactly. The grid has 2 rows of 1 or 2 clusters, so the blocks'
// y and the cluster order (per schedule) matter; one case releases every stage with
// mbarrier_arrive_cluster (own rank included) and launches with emu::launch (the cluster size
// from EMBER_CLUSTER_DIMS). Then the same kernel with one bug each, and cluster_exit_race, as
// expected failures: the launch must fail with the emulator's diagnosis (not hang). Last,
// cluster_stage_release: a pair of CTAs writing each other's stages, without TMA, for the race
// that the descending schedule's skewed rounds are there to expose (emulation.h), and that the
// other schedules miss: a stage released to its own CTA's `empty` only.
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
constexpr int kCluster = 2;
constexpr int kBoxInner = 64;                               // columns: 128-byte rows
constexpr int kBoxA = 16, kBoxB = 16, kHalfB = kBoxB / 2;  // rows
constexpr int kTileA = kBoxInner * kBoxA, kTileB = kBoxInner * kBoxB;  // elements
constexpr int kBytesA = kTileA * 2, kBytesB = kTileB * 2, kHalfBytesB = kBytesB / 2;
constexpr int kStageBytes = (kBytesA + kBytesB + 1023) / 1024 * 1024;
constexpr std::size_t kSmemBytes = kStages * kStageBytes + 2 * kStages * 8 + 1024;
constexpr int kTileOut = kTileA + kTileB;  // a tile's output: A then B

// The variants: kNoBug and kAllRemote must pass, the others fail as expected.
enum Bug : int {
    kNoBug,
    kAllRemote,      // the consumers release both CTAs' `empty` with mbarrier_arrive_cluster (own rank
                     // included), and the launch is emu::launch (the cluster size from EMBER_CLUSTER_DIMS)
    kNoPeerRelease,  // the consumers release only their own CTA's `empty`: the producers wait forever
    kEarlyReturn,    // warp 0's lanes 1-31 return before the final cluster_sync
    kMaskRank2,      // the multicast mask 0b101 names rank 2 of a cluster of 2
    kNoInitSync,     // no cluster_sync after the barriers' init: a peer uses them uninitialised
    kStaticShared,   // thread 0 writes a static __shared__ variable (shared by the CTAs here)
    kOddGrid,        // (the launch) a grid of 3 × 2 blocks: x is not a multiple of the cluster
    kWrongCluster,   // (the launch) launch_cluster with clusters of 1 for a kernel declared with 2
};

// The stage's element (r, e) of a tile of 128-byte rows at `tile`: where the 128-byte swizzle
// puts byte r·128 + 2e (bits [4, 7) ^= bits [7, 10) of the shared-window address).
__device__ float stage_element(const unsigned char* tile, int r, int e) {
    const unsigned address = smem_u32(tile) + r * kBoxInner * 2 + 2 * e;
    const unsigned swizzled = address ^ (((address >> 7) & 7) << 4);
    unsigned short bits;
    std::memcpy(&bits, static_cast<const unsigned char*>(emu::shared_window_base()) + swizzled, sizeof bits);
    return to_f32(bf16{bits});
}

__global__ void __cluster_dims__(2, 1, 1)
    cluster_pipeline(const __grid_constant__ TensorMap map_a, const __grid_constant__ TensorMap map_b, float* out,
                     int tiles, int bug) {
    EMBER_DYNAMIC_SMEM(unsigned char, smem);
    unsigned char* stages = smem + (1024 - smem_u32(smem) % 1024) % 1024;
    auto* full = reinterpret_cast<unsigned long long*>(stages + kStages * kStageBytes);
    unsigned long long* empty = full + kStages;
    const unsigned rank = cluster_ctarank(), peer = rank ^ 1;
    if (cluster_nctarank() != kCluster || rank != blockIdx.x % kCluster) emu::fault("cluster_ctarank is wrong");
    const unsigned block = blockIdx.y * gridDim.x + blockIdx.x;                   // A: the CTA's own rows
    const unsigned cluster = blockIdx.y * (gridDim.x / kCluster) + blockIdx.x / kCluster;  // B: the cluster's
    __shared__ int scratch;
    if (threadIdx.x == 0) {
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(&full[s], 1);
            mbarrier_init(&empty[s], kCluster * kConsumerThreads);
        }
        fence_mbarrier_init();
        if (bug == kStaticShared) scratch = int(blockIdx.x);
    }
    if (bug != kNoInitSync) cluster_sync();
    if (bug == kStaticShared && threadIdx.x == 0 && scratch != int(blockIdx.x)) emu::fault("the CTAs share `scratch`");

    if (threadIdx.x < 32) {
        if (threadIdx.x == 0) {
            for (int t = 0; t < tiles; ++t) {
                const int s = t % kStages;
                if (t >= kStages)
                    while (!mbarrier_try_wait_parity(&empty[s], (t / kStages - 1) & 1)) {}
                unsigned char* stage = stages + s * kStageBytes;
                mbarrier_arrive_expect_tx(&full[s], kBytesA + kBytesB);
                const int c0 = t * kBoxInner - kBoxInner / 2;
                tma_load_2d(stage, &map_a, c0, int(block) * kBoxA - 3, &full[s]);
                tma_load_2d_multicast(stage + kBytesA + rank * kHalfBytesB, &map_b, c0,
                                      int(cluster) * kBoxB - 3 + int(rank) * kHalfB, &full[s],
                                      bug == kMaskRank2 ? 0b101 : 0b11);
            }
        } else if (bug == kEarlyReturn) {
            return;  // a cluster_sync follows
        }
    } else {
        const int c = threadIdx.x - 32;
        for (int t = 0; t < tiles; ++t) {
            const int s = t % kStages;
            while (!mbarrier_try_wait_parity(&full[s], (t / kStages) & 1)) {}
            const unsigned char* stage = stages + s * kStageBytes;
            float* tile_out = out + (static_cast<std::size_t>(block) * tiles + t) * kTileOut;
            for (int i = c; i < kTileA; i += kConsumerThreads)
                tile_out[i] = stage_element(stage, i / kBoxInner, i % kBoxInner);
            for (int i = c; i < kTileB; i += kConsumerThreads)
                tile_out[kTileA + i] = stage_element(stage + kBytesA, i / kBoxInner, i % kBoxInner);
            if (bug == kAllRemote) {
                for (unsigned r = 0; r < kCluster; ++r) mbarrier_arrive_cluster(&empty[s], r);
            } else {
                mbarrier_arrive(&empty[s]);
                if (bug != kNoPeerRelease) mbarrier_arrive_cluster(&empty[s], peer);
            }
        }
    }
    cluster_sync();
}

// A CTA that exits while its peer still arrives on its barrier (a kernel without the final
// cluster_sync; the pipeline above finishes its CTAs in step, so it would not show there): rank
// 1 yields once after the cluster_sync, so that under every schedule rank 0 has exited by the
// time rank 1 arrives on its barrier.
__global__ void __cluster_dims__(2, 1, 1) cluster_exit_race() {
    EMBER_DYNAMIC_SMEM(unsigned long long, bar);
    if (threadIdx.x == 0) mbarrier_init(bar, 32);
    cluster_sync();
    if (cluster_ctarank() == 0) return;
    emu::yield({__FILE__, __LINE__}, "a turn");
    mbarrier_arrive_cluster(bar, 0);
}

// A stage ring that both CTAs of a cluster fill, reduced to plain words: as the clustered
// ping-pong GEMM (gemm_sm90.cu) multicasts each block's half of the W tile into both blocks'
// stages, each CTA's producer (warp 0's lane 0) writes its half of tile t's stage into its own
// stage and the peer's (mapa + st.shared::cluster), and the consumers (warps 1 and 2) read the
// whole stage: each checks its 2 words (one of each half) against release_word and copies them
// to out.
//
//   init (thread 0):   full[s] count 2 (both producers), empty[s] count 2 × consumers (both
//                      CTAs read the stage, so both release it)
//   cluster_sync
//   producer, tile t:  wait empty[t % S] (phase t / S − 1), write its half into both CTAs'
//                      stage, arrive on the peer's full, then on its own
//   consumers, tile t: wait full[t % S] (phase t / S), check and copy the stage, arrive on the
//                      own empty and (mbarrier_arrive_cluster) the peer's
//   cluster_sync
//
// `own_release_only` plants the GEMM's bug, with the count to match (empty: the own consumers
// only; left at both CTAs' it deadlocks, as cluster/pipeline-…+no-peer-release shows): a
// producer then refills a stage once its own CTA's consumers are done with it, though it writes
// into the peer's too, where the peer's may still be reading. Under the descending schedule the
// rounds let rank 1 run ahead of rank 0 as far as the waits allow: rank 1's consumers take tile
// t once rank 0's producer has arrived on rank 1's full, and rank 1's producer refills the stage
// (in both CTAs) before rank 0's consumers can read it (they wait for their producer's own
// arrival, made after the peer's): a consumer faults on a word of tile t + S. The ascending and
// random schedules let rank 0 keep up, and miss it. The order of the producer's arrivals matters:
// with its own first, rank 0's consumers get their turn whenever rank 1 waits for rank 0's
// producer, before rank 1 can refill the stage, and none of the three schedules shows the bug.
constexpr int kReleaseStages = 2;
constexpr int kReleaseHalf = kConsumerThreads;  // words: a consumer reads one of each half
constexpr int kReleaseStage = kCluster * kReleaseHalf;
constexpr std::size_t kReleaseSmemBytes = kReleaseStages * (kReleaseStage * 4 + 2 * 8);

// Word i of tile t's stage in cluster `cluster` (of a launch of `tiles` tiles a block): unique
// in the launch, and never the 0xFFFFFFFF poison.
__device__ unsigned release_word(unsigned cluster, int tiles, int t, int i) {
    return (cluster * unsigned(tiles) + unsigned(t)) * kReleaseStage + unsigned(i);
}

__global__ void __cluster_dims__(2, 1, 1) cluster_stage_release(float* out, int tiles, int own_release_only) {
    EMBER_DYNAMIC_SMEM(unsigned, stages);
    auto* full = reinterpret_cast<unsigned long long*>(stages + kReleaseStages * kReleaseStage);
    unsigned long long* empty = full + kReleaseStages;
    const unsigned rank = cluster_ctarank(), peer = rank ^ 1, cluster = blockIdx.x / kCluster;
    if (threadIdx.x == 0) {
        for (int s = 0; s < kReleaseStages; ++s) {
            mbarrier_init(&full[s], kCluster);
            mbarrier_init(&empty[s], (own_release_only ? 1 : kCluster) * kConsumerThreads);
        }
        fence_mbarrier_init();
    }
    cluster_sync();

    if (threadIdx.x == 0) {
        for (int t = 0; t < tiles; ++t) {
            const int s = t % kReleaseStages;
            if (t >= kReleaseStages)
                while (!mbarrier_try_wait_parity(&empty[s], (t / kReleaseStages - 1) & 1)) {}
            unsigned* half = stages + s * kReleaseStage + rank * kReleaseHalf;
            for (unsigned r = 0; r < kCluster; ++r) {
                // tma.h's mapa, which fails the launch if CTA r has exited.
                auto* to = static_cast<unsigned*>(emu::tma::map_to_rank("st.shared::cluster", half, r));
                for (int i = 0; i < kReleaseHalf; ++i)
                    to[i] = release_word(cluster, tiles, t, int(rank) * kReleaseHalf + i);
            }
            mbarrier_arrive_cluster(&full[s], peer);
            mbarrier_arrive(&full[s]);
        }
    } else if (threadIdx.x >= 32) {
        const int c = threadIdx.x - 32;
        for (int t = 0; t < tiles; ++t) {
            const int s = t % kReleaseStages;
            while (!mbarrier_try_wait_parity(&full[s], (t / kReleaseStages) & 1)) {}
            const unsigned* stage = stages + s * kReleaseStage;
            for (int i = c; i < kReleaseStage; i += kConsumerThreads) {
                const unsigned word = stage[i], want = release_word(cluster, tiles, t, i);
                if (word != want) {
                    // The same word of a later tile of this cluster: the stage was refilled.
                    const unsigned first = release_word(cluster, tiles, 0, i);
                    const bool refilled = word > want && word <= release_word(cluster, tiles, tiles - 1, i) &&
                                          (word - first) % kReleaseStage == 0;
                    char message[200];
                    if (refilled)
                        snprintf(message, sizeof message,
                                 "tile %d's stage holds tile %d's word %d: it was refilled under its readers", t,
                                 int((word - first) / kReleaseStage), i);
                    else
                        snprintf(message, sizeof message, "tile %d's stage holds 0x%08x at word %d, not 0x%08x", t,
                                 word, i, want);
                    emu::fault(message);
                }
                out[(std::size_t(blockIdx.x) * tiles + t) * kReleaseStage + i] = float(word);
            }
            mbarrier_arrive(&empty[s]);
            if (!own_release_only) mbarrier_arrive_cluster(&empty[s], peer);
        }
    }
    cluster_sync();
}

}  // namespace

// At global namespace scope (it specialises emu::ClusterOf).
EMBER_CLUSTER_DIMS(cluster_pipeline, 2)
EMBER_CLUSTER_DIMS(cluster_exit_race, 2)
EMBER_CLUSTER_DIMS(cluster_stage_release, 2)

namespace {

struct Shape {
    int rows, cols, stride;  // a tensor: rows × cols bf16, rows `stride` elements apart
};

const char* bug_name(int bug) {
    switch (bug) {
    case kNoPeerRelease:
        return "+no-peer-release";
    case kEarlyReturn:
        return "+early-return";
    case kAllRemote:
        return "+all-remote";
    case kMaskRank2:
        return "+mask-rank-2";
    case kNoInitSync:
        return "+no-init-sync";

    case kStaticShared:
        return "+static-shared";
    case kWrongCluster:
        return "+wrong-cluster";
    case kOddGrid:
        return "+grid-x-not-multiple";
    default:
        return "";
    }
}

// A random bf16 tensor with NaN padding between its width and its stride.
std::vector<float> make_tensor(harness::Rng& rng, Shape shape) {
    std::vector<float> tensor(std::size_t(shape.rows) * shape.stride, std::nanf(""));
    for (int r = 0; r < shape.rows; ++r)
        for (int e = 0; e < shape.cols; ++e) tensor[std::size_t(r) * shape.stride + e] = rng.uniform();
    return harness::quantize<bf16>(tensor);  // NaN stays NaN
}

// Element (row, col) of `tensor`, 0 outside it (TMA's zero fill).
double at(const std::vector<float>& tensor, Shape shape, long row, long col) {
    const bool in = row >= 0 && row < shape.rows && col >= 0 && col < shape.cols;
    return in ? tensor[std::size_t(row) * shape.stride + col] : 0.0;
}

// `grid_x` blocks along x (a multiple of the cluster but for the bug case) × 2 rows; `tiles`
// k-tiles of 64 columns from column −32.
void add_cluster_case(harness::Cases& cases, unsigned grid_x, int tiles, int bug, const char* expect_failure) {
    using namespace harness;
    const unsigned grid_y = 2;
    const int cols = tiles * kBoxInner - kBoxInner / 2 - 5;  // the last box crosses the far edge
    // A: 16 rows per block from row −3 (the last block's box crosses the far edge); B: 16 per cluster.
    const int stride = (cols + 7) / 8 * 8;  // TMA: a multiple of 16 bytes
    const Shape a{int(grid_x * grid_y) * kBoxA - 7, cols, stride + 16};
    const Shape b{int(grid_x / kCluster * grid_y) * kBoxB - 6, cols, stride + 8};
    const std::string name = "cluster/pipeline-" + std::to_string(grid_x) + "x" + std::to_string(grid_y) + "-k" +
                             std::to_string(cols) + bug_name(bug) + "/bf16";
    cases.push_back({name, 0.0, [=, seed = cases.size()] {
                         Rng rng{seed};
                         const std::vector<float> ta = make_tensor(rng, a), tb = make_tensor(rng, b);
                         const unsigned blocks = grid_x * grid_y, clusters_x = grid_x / kCluster;
                         Instance instance;
                         instance.want.resize(std::size_t(blocks) * tiles * kTileOut);
                         for (unsigned y = 0; y < grid_y; ++y)
                             for (unsigned x = 0; x < grid_x; ++x) {
                                 const unsigned block = y * grid_x + x;
                                 const unsigned cluster = y * clusters_x + x / kCluster;
                                 for (int t = 0; t < tiles; ++t) {
                                     double* want = &instance.want[(std::size_t(block) * tiles + t) * kTileOut];
                                     const long c0 = long(t) * kBoxInner - kBoxInner / 2;
                                     for (int r = 0; r < kBoxA; ++r)
                                         for (int e = 0; e < kBoxInner; ++e)
                                             want[r * kBoxInner + e] = at(ta, a, long(block) * kBoxA - 3 + r, c0 + e);
                                     for (int r = 0; r < kBoxB; ++r)
                                         for (int e = 0; e < kBoxInner; ++e)
                                             want[kTileA + r * kBoxInner + e] =
                                                 at(tb, b, long(cluster) * kBoxB - 3 + r, c0 + e);
                                 }
                             }
                         instance.run = [=, da = encode<bf16>(ta), db = encode<bf16>(tb),
                                         size = instance.want.size()](const emu::Schedule& schedule,
                                                                      std::vector<float>& got) {
                             emu::LaunchError error;
                             TensorMap map_a, map_b;
                             // std::vector's storage is 16-byte aligned, as TMA needs.
                             const char* why = emu::encode_tensor_map_2d(&map_a, da.data(), a.cols, a.rows,
                                                                         std::size_t(a.stride) * 2, kBoxInner, kBoxA);
                             if (!why)
                                 why = emu::encode_tensor_map_2d(&map_b, db.data(), b.cols, b.rows,
                                                                 std::size_t(b.stride) * 2, kBoxInner, kHalfB);
                             if (why) {
                                 error.failed = true;
                                 snprintf(error.message, sizeof error.message, "encode_tensor_map_2d: %s", why);
                                 return error;
                             }
                             std::vector<float> out(size, std::nanf(""));
                             // emu::launch picks the cluster size up from EMBER_CLUSTER_DIMS;
                             // launch_cluster says it (and checks it against the declaration).
                             if (bug == kAllRemote)
                                 error = emu::launch(schedule, dim3(grid_x, grid_y), dim3(kThreads), kSmemBytes,
                                                     cluster_pipeline, map_a, map_b, out.data(), tiles, bug);
                             else
                                 error = emu::launch_cluster(schedule, bug == kWrongCluster ? 1 : kCluster,
                                                             dim3(grid_x, grid_y), dim3(kThreads), kSmemBytes,
                                                             cluster_pipeline, map_a, map_b, out.data(), tiles, bug);
                             got = out;
                             return error;
                         };
                         return instance;
                     },
                     expect_failure});
}

// Whether `schedule` runs a cluster's higher ranks ahead (run_cluster: the descending order
// does), the skew that must expose the planted races below; the ascending order's (rank 0
// ahead) may or may not.
bool skews_clusters(const emu::Schedule& schedule) { return schedule.order == emu::Schedule::Order::Descending; }

// An expected failure that only the skewing schedule must show: the harness (run_kernels.cpp)
// wants every schedule's launch to fail with `expect_failure`, but a race that the skew is there
// to expose may go unseen under the others. Under those, a launch that succeeded is reported as
// such, in a message that names `expect_failure` (so the harness takes it); a launch that failed
// is passed on, so that it must still fail with `expect_failure`.
std::function<emu::LaunchError(const emu::Schedule&, std::vector<float>&)> failing_when_skewed(
    const char* expect_failure, std::function<emu::LaunchError(const emu::Schedule&, std::vector<float>&)> run) {
    return [=](const emu::Schedule& schedule, std::vector<float>& got) {
        emu::LaunchError error = run(schedule, got);
        if (!error.failed && !skews_clusters(schedule)) {
            error.failed = true;
            snprintf(error.message, sizeof error.message,
                     "the launch succeeded, as it may under %s (only the descending schedule's skew must show \"%s\")",
                     schedule.name, expect_failure);
        }
        return error;
    };
}

// cluster_stage_release on `grid` blocks (clusters of 2), `tiles` tiles a block: with
// `own_release_only`, an expected failure under the skewing schedule only (see the kernel).
void add_stage_release_case(harness::Cases& cases, unsigned grid, int tiles, bool own_release_only) {
    using namespace harness;
    const char* expect_failure = own_release_only ? "refilled under its readers" : nullptr;
    const std::string name = "cluster/stage-release-" + std::to_string(grid) + "-t" + std::to_string(tiles) +
                             (own_release_only ? "+own-release-only" : "") + "/-";
    cases.push_back({name, 0.0, [=] {
                         Instance instance;
                         instance.want.resize(std::size_t(grid) * tiles * kReleaseStage);
                         for (unsigned block = 0; block < grid; ++block)
                             for (int t = 0; t < tiles; ++t)
                                 for (int i = 0; i < kReleaseStage; ++i)
                                     instance.want[(std::size_t(block) * tiles + t) * kReleaseStage + i] =
                                         release_word(block / kCluster, tiles, t, i);
                         instance.run = [=, size = instance.want.size()](const emu::Schedule& schedule,
                                                                           std::vector<float>& got) {
                             std::vector<float> out(size, std::nanf(""));
                             const emu::LaunchError error =
                                 emu::launch(schedule, dim3(grid), dim3(kThreads), kReleaseSmemBytes,
                                             cluster_stage_release, out.data(), tiles, int(own_release_only));
                             got = out;
                             return error;
                         };
                         if (own_release_only) instance.run = failing_when_skewed(expect_failure, instance.run);
                         return instance;
                     },
                     expect_failure});
}

}  // namespace

namespace harness {

void add_cluster_cases(Cases& cases) {
    // 5 k-tiles over 3 stages: the ring wraps, each stage refilled once the peer released it too.
    add_cluster_case(cases, 4, 5, kNoBug, nullptr);
    add_cluster_case(cases, 2, 7, kAllRemote, nullptr);
    add_cluster_case(cases, 4, 5, kNoPeerRelease, "deadlock");
    add_cluster_case(cases, 2, 2, kEarlyReturn, "returned before it");
    add_cluster_case(cases, 2, 2, kMaskRank2, "names CTA rank 2");
    add_cluster_case(cases, 2, 2, kNoInitSync, "never initialised");
    add_cluster_case(cases, 2, 2, kStaticShared, "static __shared__ variable was written in a cluster launch");
    add_cluster_case(cases, 2, 2, kWrongCluster, "whose __cluster_dims__ (EMBER_CLUSTER_DIMS) is 2");
    add_cluster_case(cases, 3, 2, kOddGrid, "grid x is not a multiple of the cluster size");
    cases.push_back({"cluster/exit-race+no-final-sync/-", 0.0,
                     [] {
                         Instance instance;
                         instance.run = [](const emu::Schedule& schedule, std::vector<float>&) {
                             return emu::launch(schedule, dim3(2), dim3(32), 8, cluster_exit_race);
                         };
                         return instance;
                     },
                     "which has exited"});
    // 7 tiles over 2 stages: each stage refilled 3 times.
    add_stage_release_case(cases, 4, 7, false);
    add_stage_release_case(cases, 4, 7, true);
}

}  // namespace harness
