// emulation.h: the CUDA execution model on the CPU, enough of it to run kernels/*.cu unchanged
// under a host C++ compiler (g++/clang++), so that indexing and synchronisation bugs show up
// without a GPU. common.cuh includes this header instead of its inline-PTX section when
// EMBER_CPU_EMULATION is defined; the harness (run_kernels.cpp, *_cases.cpp) includes it for
// emu::launch.
//
// Model (emulation.cpp implements it):
// - A launch runs its clusters one after another on one OS thread (a launch without clusters
//   has clusters of one block: "cluster" below reads "block"). A cluster is 1-D along x: its
//   CTAs are the blocks x0 .. x0 + n − 1 of one grid row (x0 a multiple of n, n = the cluster
//   size, 1..8), and CTA r of it (cluster_ctarank()) has blockIdx.x = x0 + r. The threads of all
//   the cluster's CTAs are fibers of one scheduling unit, each on its own stack: they run
//   concurrently, so that they can wait on each other (cluster_sync, remote mbarrier arrivals,
//   TMA multicast). A fiber runs until it reaches __syncthreads(), cluster_sync(), a warp
//   collective (shuffles, ldmatrix, mma, __syncwarp) or its end, and only then does another run.
//   Which ready fiber runs next is the schedule's choice (ascending or descending fiber order:
//   CTA by CTA, thread by thread; or seeded random), so that a missing barrier shows up as a
//   wrong result under some schedule; clusters run in the schedule's order too.
// - __syncthreads() releases a CTA when every thread of that CTA that has not exited is waiting
//   at it. A barrier reached while some threads have exited (they returned early: undefined
//   behaviour in CUDA), or reached at different source lines, fails the launch; so does a
//   deadlock. cluster_sync() (barrier.cluster.arrive + wait) is the same over every thread of
//   every CTA of the cluster (in a launch without clusters, over the block).
// - A warp collective runs when every lane of the warp waits at one; the lanes must agree on the
//   operation, element size and mask, and the mask must name every lane (partial masks are not
//   emulated). Inputs are read from all lanes, then every lane's output written. Warps never
//   straddle CTAs (a cluster launch needs a multiple of 32 threads per block).
// - __shared__ variables are thread_local statics (one cluster at a time; the executable's TLS
//   block holds exactly them), filled with 0xFF bytes before each cluster. Each CTA has its own
//   dynamic shared memory: a fresh 1024-byte aligned heap arena of exactly the launch's size per
//   CTA, filled with 0xFF bytes, so that AddressSanitizer catches accesses past its end.
//   dynamic_smem_base(), smem_u32 and the other shared-memory functions refer to the calling
//   thread's CTA; tma.h's cluster operations reach a peer CTA's arena at the same offset (mapa),
//   and fail the launch once every thread of that CTA has exited (its shared memory is gone).
//   A read of shared memory that no thread wrote is a NaN (f32: 0xFFFFFFFF, bf16/f16: 0xFFFF).
// - cp.async copies are queued per thread and land when cp_async_wait retires their group (or,
//   under an eager schedule, at once): a read before the wait sees the old contents.
// - A spin-wait on asynchronous state (tma.h's mbarrier try_wait) yields its fiber (emu::yield):
//   it runs again only after every other ready fiber of the cluster has had its turn. When no
//   fiber is ready, the yielded ones all run once more (a round); a round in which none of them
//   got anywhere and no waited-on state changed (emu::note_progress: an arrival, local or from a
//   peer CTA, or a completed transaction, multicast included) is a deadlock, reported with what
//   each thread of each CTA waits for. Under the descending schedule a cluster's rounds are
//   skewed: a round runs only the yielded threads of the highest rank, then (each time a round
//   gets nowhere) of one rank lower too, back to the highest at any progress, so that a higher
//   CTA runs as far ahead of a lower one as the kernel's cross-CTA waits allow, and one missing
//   shows as a peer's stage overwritten under its readers, or as an arrival on an exited CTA.
//   Under the ascending schedule the same with rank 0 leading (the random schedule runs every
//   rank each round).
//
// Limits: no memory model beyond "a write is visible as soon as it is made" (no caches, no
// reordering, no fences); static __shared__ arrays have no redzones (out-of-bounds accesses
// within the static shared memory go unnoticed), and in a cluster launch the CTAs of a cluster
// would share them: a cluster kernel must use dynamic shared memory only (a static __shared__
// variable written in a cluster launch fails it at the next barrier release or the cluster's
// end, and an mbarrier in static shared memory at its first use); clusters are 1-D (along x);
// warps are always 32 lanes of consecutive threadIdx.x (1-D blocks only for warp
// collectives); mma accumulates exactly (see ptx_mma_bf16).
#pragma once

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>

// ---- CUDA C++ keywords ---------------------------------------------------------------------

#define __global__
#define __device__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// A kernel's compile-time cluster shape: nothing here; EMBER_CLUSTER_DIMS (below), written after
// the kernel, tells the emulator.
#define __cluster_dims__(...)
#define __align__(n) __attribute__((aligned(n)))
// A by-value kernel parameter the kernel may take the address of (a CUtensorMap): here every
// parameter is an ordinary argument on the thread's stack.
#define __grid_constant__
// One cluster runs at a time, so a function-local static is the block's copy (shared by the CTAs
// of a cluster: see the limits); thread_local puts every __shared__ variable in the executable's
// TLS block, which the emulator poisons per cluster.
#define __shared__ static thread_local

// A kernel's dynamic shared memory: the calling thread's CTA's arena (emu::dynamic_smem_base()).
#define EMBER_DYNAMIC_SMEM(T, name) T* const name = static_cast<T*>(::emu::dynamic_smem_base())

// ---- built-in types and variables ------------------------------------------------------------

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __align__(8) float2 {
    float x, y;
};
__forceinline__ float2 make_float2(float x, float y) { return float2{x, y}; }

// Set by the scheduler before it resumes a fiber.
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

__forceinline__ int min(int a, int b) { return a < b ? a : b; }
__forceinline__ int max(int a, int b) { return a > b ? a : b; }
__forceinline__ float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
__forceinline__ float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
// A product rounded on its own, never fused into an FMA (this build does not contract either).
__forceinline__ float __fmul_rn(float a, float b) { return a * b; }
// The fast intrinsics, computed exactly here (a GPU's are within 2 ulp: ex2.approx, rcp.approx).
__forceinline__ float __expf(float x) { return expf(x); }
__forceinline__ float __fdividef(float a, float b) { return a / b; }

namespace emu {

// Where a barrier or collective was called from: for diagnostics and agreement checks.
struct Site {
    const char* file;
    int line;
};

// The collectives a warp can meet at.
enum class CollectiveOp : unsigned char { ShflIdx, ShflXor, Ldmatrix, MmaBf16, MmaF16, SyncWarp };

// Blocks the calling fiber at __syncthreads() until its CTA is released.
void syncthreads(Site site);
// Blocks the calling fiber at cluster_sync() until the cluster is released.
void cluster_sync(Site site);
// Posts this lane's part of a warp collective and blocks until the warp has run it. `in` and
// `out` point into the lane's own stack (they stay valid while it is blocked); `param` is the
// shuffle's source lane or xor mask; `size` the element size.
void warp_collective(CollectiveOp op, unsigned mask, const void* in, const void* in2, void* out,
                     int param, std::size_t size, Site site);

// The calling thread's CTA's dynamic shared memory (null when the launch asked for none).
void* dynamic_smem_base();
// The start of the calling thread's CTA's shared window: the 1024-byte boundary smem_u32's
// offsets count from (Schedule::smem_shift bytes before dynamic_smem_base()).
void* shared_window_base();
// A number unique to the running cluster (a block, in a launch without clusters; unique across
// launches): for per-thread state kept outside the emulator, such as wgmma.h's and tma.h's, to
// tell a new cluster from the last one.
std::uint64_t block_serial();
// The calling thread's CTA's rank in its cluster (0 .. cluster_size() − 1), and the cluster's
// size (1 in a launch without clusters).
unsigned cluster_rank();
unsigned cluster_size();
// The calling thread's index among the threads of its cluster: rank · (threads per block) + its
// linear index in its block. For per-thread state kept outside the emulator (wgmma.h).
unsigned thread_slot();
// The most threads a cluster can have (8 CTAs of 1024).
constexpr unsigned kMaxClusterThreads = 8 * 1024;
// CTA `rank`'s dynamic shared memory and shared window (rank < cluster_size()).
void* dynamic_smem_base_of(unsigned rank);
void* shared_window_base_of(unsigned rank);
// The rank of the CTA of the running cluster whose dynamic shared memory holds the `bytes`
// bytes at `p`, or −1.
int dynamic_smem_owner(const void* p, std::size_t bytes);
// Whether every thread of CTA `rank` of the running cluster has exited (its shared memory is
// gone, on a GPU: a peer must not reach it any more).
bool cta_exited(unsigned rank);
// mapa: the address at `p`'s offset in CTA `rank`'s dynamic shared memory. Null unless `p` is
// in the calling thread's CTA's dynamic shared memory and rank < cluster_size().
void* map_shared_rank(const void* p, unsigned rank);
// A check run as each thread exits: returns what is wrong (the launch fails with it) or null.
// For asynchronous operations emulated outside emulation.cpp (wgmma.h) that a thread must wait
// for before it exits, as cp.async's.
using ExitCheck = const char* (*)();
void add_exit_check(ExitCheck check);
// Fails the launch (from kernel code) with `message`; does not return.
[[noreturn]] void fault(const char* message);

// Where `bytes` bytes at `p` lie: in the calling thread's CTA's dynamic shared memory, in the
// static __shared__ variables, or neither (a peer CTA's dynamic shared memory is neither: see
// dynamic_smem_owner).
enum class SharedSpace : unsigned char { None, Dynamic, Static };
SharedSpace shared_space(const void* p, std::size_t bytes);

// Yields the calling fiber from a spin-wait (see the model above); `waiting_for` (copied, up to
// 127 characters) says on what, for the deadlock report, and `site` where.
void yield(Site site, const char* waiting_for);
// Records a change of the state that yielded fibers wait on (an mbarrier arrival, a completed
// transaction): a round of yields with one is not a deadlock.
void note_progress();

// cp.async for the calling thread (see cp_async_16 below).
void cp_async_enqueue(void* smem, const void* gmem, int src_bytes, Site site);
void cp_async_commit_group();
void cp_async_wait_group(int pending);

}  // namespace emu

__forceinline__ void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::emu::syncthreads({file, line});
}

// ---- thread-block clusters (sm_90) ------------------------------------------------------------

// %cluster_ctarank, %cluster_nctarank.
__forceinline__ unsigned cluster_ctarank() { return ::emu::cluster_rank(); }
__forceinline__ unsigned cluster_nctarank() { return ::emu::cluster_size(); }
// barrier.cluster.arrive + barrier.cluster.wait: every thread of every CTA of the cluster must
// arrive (an exited thread, or different source lines, fail the launch, as for __syncthreads).
// Orders the shared-memory accesses before it, cluster-wide, before those after it.
__forceinline__ void cluster_sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::emu::cluster_sync({file, line});
}

namespace emu {
// A kernel's cluster size along x, as its __cluster_dims__ declares it: EMBER_CLUSTER_DIMS
// specialises this (1: the kernel has no __cluster_dims__).
template <auto Kernel> struct ClusterOf {
    static constexpr unsigned x = 1;
};
using AnyKernel = void (*)();
// Records `kernel`'s cluster size for emu::launch (EMBER_CLUSTER_DIMS calls it at static
// initialisation); cluster_dims_of returns it, 0 for a kernel never recorded.
bool register_cluster_dims(AnyKernel kernel, unsigned x);
unsigned cluster_dims_of(AnyKernel kernel);
}  // namespace emu

#define EMBER_EMU_CAT2(a, b) a##b
#define EMBER_EMU_CAT(a, b) EMBER_EMU_CAT2(a, b)
// EMBER_CLUSTER_DIMS(kernel, x), at global namespace scope after the kernel's definition: the
// kernel runs in clusters of x CTAs along x (its __cluster_dims__(x, 1, 1)). The emulated
// driver's registry (driver/registry.h) and emu::launch launch it so; a launch whose grid.x is
// not a multiple of x is refused. (Under CUDA the macro is empty: __cluster_dims__ says it.)
#define EMBER_CLUSTER_DIMS(kernel, cluster_x)                                                        \
    template <> struct emu::ClusterOf<kernel> {                                                     \
        static_assert((cluster_x) >= 1 && (cluster_x) <= 8, "a portable cluster has 1 to 8 CTAs"); \
        static constexpr unsigned x = (cluster_x);                                                  \
    };                                                                                              \
    [[maybe_unused]] static const bool EMBER_EMU_CAT(ember_emu_cluster_dims_, __COUNTER__) =        \
        ::emu::register_cluster_dims(reinterpret_cast<::emu::AnyKernel>(kernel), (cluster_x));

// __syncwarp(): a barrier for the warp's lanes (all 32: partial masks are not emulated), which
// orders their shared-memory accesses before it before those after it.
__forceinline__ void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                                int line = __builtin_LINE()) {
    ::emu::warp_collective(::emu::CollectiveOp::SyncWarp, mask, nullptr, nullptr, nullptr, 0, 0, {file, line});
}

// __shfl_sync: lane l gets `v` of lane `src_lane % 32`. __shfl_xor_sync: of lane l ^ lane_mask.
// (The optional `width` argument is not emulated: every lane shuffles within the whole warp.)
template <typename T>
__forceinline__ T __shfl_sync(unsigned mask, T v, int src_lane, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
    T out;
    ::emu::warp_collective(::emu::CollectiveOp::ShflIdx, mask, &v, nullptr, &out, src_lane, sizeof(T),
                           {file, line});
    return out;
}
template <typename T>
__forceinline__ T __shfl_xor_sync(unsigned mask, T v, int lane_mask, const char* file = __builtin_FILE(),
                                  int line = __builtin_LINE()) {
    T out;
    ::emu::warp_collective(::emu::CollectiveOp::ShflXor, mask, &v, nullptr, &out, lane_mask, sizeof(T),
                           {file, line});
    return out;
}

// ---- the PTX primitives of common.cuh ----------------------------------------------------------

namespace emu {
inline float f16_to_f32(unsigned short h) {  // exact; inline: every emulated MMA decodes with it
    const unsigned sign = static_cast<unsigned>(h & 0x8000) << 16;
    const unsigned exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    if (exponent == 0) {  // zero or subnormal: mantissa · 2⁻²⁴, exact in f32
        const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;  // exact
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return __uint_as_float(sign | 0x7F800000u | mantissa << 13);  // inf, NaN
    return __uint_as_float(sign | (exponent + 112) << 23 | mantissa << 13);
}

unsigned short f32_to_bf16(float x);
unsigned short f32_to_f16(float x);
// The byte offset of `p` from the calling thread's CTA's shared window; fails the launch when
// `p` is not in its dynamic shared memory.
unsigned smem_offset(const void* p);
}  // namespace emu

// cvt.f32.f16: exact.
__forceinline__ float ptx_cvt_f32_f16(unsigned short h) { return ::emu::f16_to_f32(h); }
// cvt.rn.bf16.f32 / cvt.rn.f16.f32: round to nearest even, NaN → the canonical NaN 0x7FFF.
__forceinline__ unsigned short ptx_cvt_bf16_f32(float x) { return ::emu::f32_to_bf16(x); }
__forceinline__ unsigned short ptx_cvt_f16_f32(float x) { return ::emu::f32_to_f16(x); }
// cvt.rn.{bf16,f16}x2.f32: `lo` in the low 16 bits.
__forceinline__ unsigned ptx_cvt_bf16x2(float lo, float hi) {
    return static_cast<unsigned>(::emu::f32_to_bf16(lo)) | static_cast<unsigned>(::emu::f32_to_bf16(hi)) << 16;
}
__forceinline__ unsigned ptx_cvt_f16x2(float lo, float hi) {
    return static_cast<unsigned>(::emu::f32_to_f16(lo)) | static_cast<unsigned>(::emu::f32_to_f16(hi)) << 16;
}
// ex2.approx.ftz.f32 / rcp.approx.ftz.f32: computed exactly here (a GPU's are within 2 and 1
// ulp), with the flushes of .ftz: a subnormal input is ±0 and a subnormal result becomes ±0.
__forceinline__ float emu_flush_subnormal(float x) {
    return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.0f, x) : x;
}
__forceinline__ float ptx_ex2_approx_ftz(float x) { return emu_flush_subnormal(exp2f(emu_flush_subnormal(x))); }
__forceinline__ float ptx_rcp_approx_ftz(float x) { return emu_flush_subnormal(1.0f / emu_flush_subnormal(x)); }

// cvta.to.shared: here the offset from the shared window's base (shared_window_base(): what a
// shared-memory descriptor or ldmatrix address encodes when the kernel has no static shared
// memory).
__forceinline__ unsigned smem_u32(const void* p) { return ::emu::smem_offset(p); }

// cp.async.cg.shared.global 16 bytes: `smem` and `gmem` 16-byte aligned, the first `src_bytes`
// (0 ≤ src_bytes ≤ 16) read from `gmem`, the rest zero-filled. The copy is queued in the thread's
// open group; cp_async_commit closes the group, cp_async_wait<N> (cp.async.wait_group N) lands
// every committed group but the N most recent. A thread that exits with copies never waited for
// fails the launch.
__forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes,
                                 const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::emu::cp_async_enqueue(smem, gmem, src_bytes, {file, line});
}
__forceinline__ void cp_async_commit() { ::emu::cp_async_commit_group(); }
template <int N> __forceinline__ void cp_async_wait() { ::emu::cp_async_wait_group(N); }

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8i..8i+7 give the (16-byte aligned, shared)
// row addresses of matrix i; lane l receives row l/4, columns 2(l%4), 2(l%4)+1 of matrix i in
// r[i], the lower column in the low half.
__forceinline__ void ldmatrix_x4(unsigned r[4], const void* smem_row, const char* file = __builtin_FILE(),
                                 int line = __builtin_LINE()) {
    // `in` is the row address itself.
    ::emu::warp_collective(::emu::CollectiveOp::Ldmatrix, 0xffffffffu, smem_row, nullptr, r, 0,
                           sizeof(unsigned[4]), {file, line});
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32, D = A·B + D, fragments as in
// common.cuh. Each output is Σ_k a·b + d accumulated in double (exact for 16 products of 16-bit
// floats) and rounded once to f32: the exactly rounded result, which the tensor cores approximate
// (they may truncate the partial sums); the reference bounds allow for the difference.
__forceinline__ void ptx_mma_bf16(float d[4], const unsigned a[4], const unsigned b[2],
                                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::emu::warp_collective(::emu::CollectiveOp::MmaBf16, 0xffffffffu, a, b, d, 0, sizeof(float[4]),
                           {file, line});
}
__forceinline__ void ptx_mma_f16(float d[4], const unsigned a[4], const unsigned b[2],
                                 const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::emu::warp_collective(::emu::CollectiveOp::MmaF16, 0xffffffffu, a, b, d, 0, sizeof(float[4]),
                           {file, line});
}

// ---- launching -----------------------------------------------------------------------------

namespace emu {

// The order in which a cluster's ready fibers run between barriers and collectives, and when
// cp.async copies land.
struct Schedule {
    enum class Order : unsigned char {
        Ascending,   // the lowest-numbered ready fiber runs next; clusters in ascending order
        Descending,  // the highest; clusters in descending order, and within a cluster the
                     // yielded threads of higher ranks run again first (run_cluster)
        Random,      // a uniformly random ready fiber (seeded); clusters in a random order
    };
    const char* name;
    Order order;
    bool eager_cp_async;  // copies land at issue rather than at the wait that retires them
    std::uint64_t seed;
    // Where the dynamic shared memory starts in each CTA's shared window: this many bytes past
    // a 1024-byte boundary (smem_u32 counts from the boundary). A kernel that needs its tiles
    // 1024-byte aligned (gemm_sm90.cu) must align them itself, as on a GPU, where the start
    // is not promised.
    std::size_t smem_shift;
};

// The schedules every case runs under.
extern const Schedule kSchedules[3];

// What a launch found wrong: empty when it ran to completion.
struct LaunchError {
    bool failed = false;
    char message[1024] = {};
};

using KernelBody = void (*)(void* args);

// Runs `body(args)` as every thread of every block of `grid` × `block`, with `dynamic_smem`
// bytes of dynamic shared memory per block, in clusters of `cluster_x` blocks along x. Fails
// (without running anything) when grid.x is not a multiple of cluster_x, cluster_x is 0 or
// above 8, or cluster_x > 1 with a thread count per block that is not a multiple of 32.
LaunchError run_grid(const Schedule& schedule, dim3 grid, dim3 block, std::size_t dynamic_smem,
                     KernelBody body, void* args, unsigned cluster_x = 1);

// The failure of a launch in clusters of `asked` blocks of a kernel declared with `declared`.
LaunchError cluster_dims_mismatch(unsigned asked, unsigned declared);

// kernel<<<grid, block, dynamic_smem>>>(args...) under `schedule`, in clusters of `cluster_x`
// blocks (cudaLaunchKernelEx with a cluster dimension). The arguments are converted to the
// kernel's parameter types first, as a CUDA launch does. A kernel whose EMBER_CLUSTER_DIMS
// declares another cluster size fails the launch, as the driver refuses it.
template <typename... Params, typename... Args>
LaunchError launch_cluster(const Schedule& schedule, unsigned cluster_x, dim3 grid, dim3 block,
                           std::size_t dynamic_smem, void (*kernel)(Params...), Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args), "kernel argument count");
    const unsigned declared = cluster_dims_of(reinterpret_cast<AnyKernel>(kernel));
    if (declared != 0 && declared != cluster_x) return cluster_dims_mismatch(cluster_x, declared);
    struct Call {
        void (*kernel)(Params...);
        std::tuple<Params...> params;
    } call{kernel, std::tuple<Params...>(std::forward<Args>(args)...)};
    return run_grid(schedule, grid, block, dynamic_smem,
                    [](void* p) {
                        Call& c = *static_cast<Call*>(p);
                        std::apply(c.kernel, c.params);
                    },
                    &call, cluster_x);
}

// kernel<<<grid, block, dynamic_smem>>>(args...) under `schedule`: in clusters of the kernel's
// EMBER_CLUSTER_DIMS if it has one (as a CUDA launch of a __cluster_dims__ kernel), else of 1.
template <typename... Params, typename... Args>
LaunchError launch(const Schedule& schedule, dim3 grid, dim3 block, std::size_t dynamic_smem,
                   void (*kernel)(Params...), Args&&... args) {
    const unsigned declared = cluster_dims_of(reinterpret_cast<AnyKernel>(kernel));
    return launch_cluster(schedule, declared ? declared : 1, grid, block, dynamic_smem, kernel,
                          std::forward<Args>(args)...);
}

}  // namespace emu
