// emulation.h: the CUDA execution model on the CPU, enough of it to run kernels/*.cu unchanged
// under a host C++ compiler (g++/clang++), so that indexing and synchronisation bugs show up
// without a GPU. common.cuh includes this header instead of its inline-PTX section when
// EMBER_CPU_EMULATION is defined; the harness (run_kernels.cpp, *_cases.cpp) includes it for
// emu::launch.
//
// Model (emulation.cpp implements it):
// - A launch runs its blocks one after another on one OS thread. The threads of a block are
//   fibers, each on its own stack; a fiber runs until it reaches __syncthreads(), a warp
//   collective (shuffles, ldmatrix, mma, __syncwarp) or its end, and only then does another run.
//   Which ready fiber runs next is the schedule's choice (ascending or descending thread order, or
//   seeded random), so that a missing barrier shows up as a wrong result under some schedule.
// - __syncthreads() releases the block when every thread that has not exited is waiting at it.
//   A barrier reached while some threads have exited (they returned early: undefined behaviour
//   in CUDA), or reached at different source lines, fails the launch; so does a deadlock.
// - A warp collective runs when every lane of the warp waits at one; the lanes must agree on the
//   operation, element size and mask, and the mask must name every lane (partial masks are not
//   emulated). Inputs are read from all lanes, then every lane's output written.
// - __shared__ variables are thread_local statics (one block at a time; the executable's TLS
//   block holds exactly them), filled with 0xFF bytes before each block, as is the dynamic
//   shared memory: a fresh 1024-byte aligned heap arena of exactly the launch's size per block,
//   so that AddressSanitizer catches accesses past its end. A read of shared memory that no
//   thread wrote is a NaN (f32: 0xFFFFFFFF, bf16/f16: 0xFFFF).
// - cp.async copies are queued per thread and land when cp_async_wait retires their group (or,
//   under an eager schedule, at once): a read before the wait sees the old contents.
// - A spin-wait on asynchronous state (tma.h's mbarrier try_wait) yields its fiber (emu::yield):
//   it runs again only after every other ready fiber has had its turn. When no fiber is ready,
//   the yielded ones all run once more (a round); a round in which none of them got anywhere and
//   no waited-on state changed (emu::note_progress) is a deadlock, reported with what each
//   thread waits for.
//
// Limits: no memory model beyond "a write is visible as soon as it is made" (no caches, no
// reordering, no fences); static __shared__ arrays have no redzones (out-of-bounds accesses
// within the static shared memory go unnoticed); warps are always 32 lanes of consecutive
// threadIdx.x (1-D blocks only for warp collectives); mma accumulates exactly (see ptx_mma_bf16).
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
#define __align__(n) __attribute__((aligned(n)))
// A by-value kernel parameter the kernel may take the address of (a CUtensorMap): here every
// parameter is an ordinary argument on the thread's stack.
#define __grid_constant__
// One block runs at a time, so a function-local static is the block's copy; thread_local puts
// every __shared__ variable in the executable's TLS block, which the emulator poisons per block.
#define __shared__ static thread_local

// A kernel's dynamic shared memory: the current block's arena (emu::dynamic_smem_base()).
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

namespace emu {

// Where a barrier or collective was called from: for diagnostics and agreement checks.
struct Site {
    const char* file;
    int line;
};

// The collectives a warp can meet at.
enum class CollectiveOp : unsigned char { ShflIdx, ShflXor, Ldmatrix, MmaBf16, MmaF16, SyncWarp };

// Blocks the calling fiber at __syncthreads() until the block is released.
void syncthreads(Site site);
// Posts this lane's part of a warp collective and blocks until the warp has run it. `in` and
// `out` point into the lane's own stack (they stay valid while it is blocked); `param` is the
// shuffle's source lane or xor mask; `size` the element size.
void warp_collective(CollectiveOp op, unsigned mask, const void* in, const void* in2, void* out,
                     int param, std::size_t size, Site site);

// The current block's dynamic shared memory (null when the launch asked for none).
void* dynamic_smem_base();
// The start of the current block's shared window: the 1024-byte boundary smem_u32's offsets
// count from (Schedule::smem_shift bytes before dynamic_smem_base()).
void* shared_window_base();
// A number unique to the running block (across launches): for per-thread state kept outside
// the emulator, such as wgmma.h's, to tell a new block from the last one.
std::uint64_t block_serial();
// A check run as each thread exits: returns what is wrong (the launch fails with it) or null.
// For asynchronous operations emulated outside emulation.cpp (wgmma.h) that a thread must wait
// for before it exits, as cp.async's.
using ExitCheck = const char* (*)();
void add_exit_check(ExitCheck check);
// Fails the launch (from kernel code) with `message`; does not return.
[[noreturn]] void fault(const char* message);

// Where `bytes` bytes at `p` lie: in the block's dynamic shared memory, in its static __shared__
// variables, or neither.
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
float f16_to_f32(unsigned short h);
unsigned short f32_to_bf16(float x);
unsigned short f32_to_f16(float x);
// The byte offset of `p` from the current block's dynamic shared memory; fails the launch when
// `p` is not in it.
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

// The order in which a block's ready fibers run between barriers and collectives, and when
// cp.async copies land.
struct Schedule {
    enum class Order : unsigned char {
        Ascending,   // the lowest-numbered ready thread runs next; blocks in ascending order
        Descending,  // the highest; blocks in descending order
        Random,      // a uniformly random ready thread (seeded); blocks in a random order
    };
    const char* name;
    Order order;
    bool eager_cp_async;  // copies land at issue rather than at the wait that retires them
    std::uint64_t seed;
    // Where the dynamic shared memory starts in the block's shared window: this many bytes past
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
    char message[512] = {};
};

using KernelBody = void (*)(void* args);

// Runs `body(args)` as every thread of every block of `grid` × `block`, with `dynamic_smem`
// bytes of dynamic shared memory per block.
LaunchError run_grid(const Schedule& schedule, dim3 grid, dim3 block, std::size_t dynamic_smem,
                     KernelBody body, void* args);

// kernel<<<grid, block, dynamic_smem>>>(args...) under `schedule`. The arguments are converted
// to the kernel's parameter types first, as a CUDA launch does.
template <typename... Params, typename... Args>
LaunchError launch(const Schedule& schedule, dim3 grid, dim3 block, std::size_t dynamic_smem,
                   void (*kernel)(Params...), Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args), "kernel argument count");
    struct Call {
        void (*kernel)(Params...);
        std::tuple<Params...> params;
    } call{kernel, std::tuple<Params...>(std::forward<Args>(args)...)};
    return run_grid(schedule, grid, block, dynamic_smem,
                    [](void* p) {
                        Call& c = *static_cast<Call*>(p);
                        std::apply(c.kernel, c.params);
                    },
                    &call);
}

}  // namespace emu
