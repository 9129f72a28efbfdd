// emulation.cpp: the fiber scheduler, barriers (__syncthreads, cluster_sync), warp collectives,
// cp.async queues, shared memory (per CTA of a cluster) and conversions behind emulation.h (see
// its header comment for the model and its limits).
#include "emulation.h"

#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMBER_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBER_EMU_ASAN 1
#endif
#endif
#ifdef EMBER_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace emu {

const Schedule kSchedules[3] = {
    {"fwd", Schedule::Order::Ascending, false, 0, 0},
    {"rev", Schedule::Order::Descending, false, 0, 0},
    // Dynamic shared memory 400 bytes past the window's 1024-byte boundary: 16-byte aligned only.
    {"shuffle+eager", Schedule::Order::Random, true, 0x5eed, 400},
};

namespace {

constexpr std::size_t kStackBytes = 64 * 1024;  // per fiber, above a PROT_NONE guard page
constexpr unsigned kMaxThreads = 1024;
constexpr std::size_t kMaxDynamicSmem = 227 * 1024;  // sm_90's per-block opt-in maximum
constexpr unsigned kWarp = 32;
constexpr unsigned kMaxCluster = 8;  // the portable cluster size

// Yielded: back from a spin-wait (yield), runnable once no fiber is Ready. AtBarrier: at
// __syncthreads; AtClusterBarrier: at cluster_sync.
enum class State : unsigned char { Ready, Yielded, AtBarrier, AtClusterBarrier, AtCollective, Exited, Faulted };

struct Copy {
    void* dst;
    const void* src;
    int src_bytes;
};

// ---- fiber contexts ----
//
// context_start makes `context` run `entry` on `stack` at its first switch; context_switch saves
// the running context in `from` and resumes `to`. On x86-64 a switch is a few instructions
// (callee-saved registers, MXCSR and the x87 control word pushed on the stack, then the stack
// pointer swapped): no system call, and nothing AddressSanitizer intercepts, unlike swapcontext
// (sigprocmask) or longjmp (sigaltstack). Elsewhere ucontext does it.
#if defined(__x86_64__)
struct FiberContext {
    void* sp;
};

extern "C" void ember_emu_context_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .type ember_emu_context_switch, @function
ember_emu_context_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ember_emu_context_switch, .-ember_emu_context_switch
)");

// The frame ember_emu_context_switch pops, at the top of the stack: MXCSR and the x87 control
// word (their defaults), six zeroed registers, then `entry` as the return address, placed so
// that `entry` starts with the stack aligned as after a call.
void context_start(FiberContext& context, char* stack, std::size_t bytes, void (*entry)()) {
    auto* top = reinterpret_cast<std::uint64_t*>(stack + bytes);
    std::uint64_t* sp = top - 2 - 7;
    sp[0] = 0x1F80ull | 0x037Full << 32;
    for (int i = 1; i <= 6; ++i) sp[i] = 0;
    sp[7] = reinterpret_cast<std::uint64_t>(entry);
    context.sp = sp;
}

__attribute__((noinline)) void context_switch(FiberContext& from, FiberContext& to) {
    ember_emu_context_switch(&from.sp, to.sp);
}
#else
struct FiberContext {
    ucontext_t context;
};

void context_start(FiberContext& context, char* stack, std::size_t bytes, void (*entry)()) {
    getcontext(&context.context);
    context.context.uc_stack.ss_sp = stack;
    context.context.uc_stack.ss_size = bytes;
    context.context.uc_link = nullptr;
    makecontext(&context.context, entry, 0);
}

void context_switch(FiberContext& from, FiberContext& to) { swapcontext(&from.context, &to.context); }
#endif

struct Fiber {
    FiberContext context;
    char* stack;
    State state;
    uint3 tid;
    unsigned rank;  // its CTA's rank in the cluster
    unsigned warp;  // its warp's index in the cluster (rank · warps a block + warp in its block)
    Site site;  // of the barrier, collective or spin-wait it waits at
    char waiting_for[128];  // a yielded fiber's yield() description
    // The posted collective (warp_collective's arguments).
    CollectiveOp op;
    unsigned mask;
    const void* in;
    const void* in2;
    void* out;
    int param;
    std::size_t size;
    // cp.async: committed groups, oldest first, and the open group.
    std::deque<std::vector<Copy>> committed;
    std::vector<Copy> open;
#ifdef EMBER_EMU_ASAN
    void* fake_stack;
#endif
};

// A block of __shared__ variables (find_static_shared).
struct StaticShared {
    unsigned char* base;
    std::size_t bytes;
};

// One CTA of the running cluster.
struct Cta {
    uint3 block_idx;
    unsigned char* window;  // its shared window: 1024-byte aligned, smem_shift bytes before
    unsigned char* smem;    // its dynamic shared memory (both null without)
    // Its threads at __syncthreads() and exited: settle_barrier scans the CTA only once these
    // add up to the block (a scan per resumed fiber made a barrier phase quadratic in threads).
    unsigned at_barrier;
    unsigned exited;
};

struct Launch {
    const Schedule* schedule;
    KernelBody body;
    void* args;
    // The cluster's threads: CTA r's are fibers [r·block_threads, (r + 1)·block_threads), each
    // CTA's by linear thread index.
    std::vector<Fiber> fibers;
    unsigned block_threads;
    unsigned cluster_x;
    std::vector<Cta> ctas;  // by rank
    char* stacks;           // one mapping: (guard page + stack) per fiber
    std::size_t stacks_bytes;
    FiberContext scheduler;
    Fiber* current;
    std::size_t smem_bytes;
    std::uint64_t rng;
    StaticShared static_shared;  // this thread's __shared__ variables
    // Deadlock detection for yielded fibers: `progress` counts note_progress() calls and fibers
    // that came back from a run other than yielded; `round_progress` is its value when the last
    // round of yielded fibers began (`in_round`: one has).
    std::uint64_t progress;
    std::uint64_t round_progress;
    bool in_round;
    // The ranks whose yielded fibers a round runs again: every rank, but for a cluster under the
    // descending schedule a window that starts at the highest rank (under the ascending one, at
    // rank 0) and widens by one rank for each round that got nowhere (back to the leading rank
    // alone at any progress), so that one end of the cluster runs as far ahead of the other as
    // the kernel's synchronisation allows (a missing cross-block wait shows).
    unsigned round_lo, round_hi;
    // Every Ready fiber's index is in [ready_lo, ready_hi) (bounds, not exact: widened when a
    // fiber is made ready, narrowed by pick), so that pick scans only that span and still
    // returns what a scan of every fiber would.
    std::size_t ready_lo;
    std::size_t ready_hi;
    // The cluster's threads at cluster_sync() (settle_cluster_barrier scans only when these and
    // the CTAs' exited threads add up to the cluster).
    unsigned at_cluster_barrier;
    // By warp (Fiber::warp): lanes waiting at a collective, lanes exited (settle_warp looks at
    // the lanes only once these add up to the warp).
    std::vector<unsigned> warp_waiting;
    std::vector<unsigned> warp_exited;
    LaunchError error;
#ifdef EMBER_EMU_ASAN
    const void* scheduler_stack;
    std::size_t scheduler_stack_bytes;
    void* scheduler_fake_stack;
#endif
};

Launch* g_launch;
std::uint64_t g_block_serial;  // counts clusters
// emu::register_cluster_dims's records.
std::vector<std::pair<AnyKernel, unsigned>>& cluster_dims() {
    static std::vector<std::pair<AnyKernel, unsigned>> dims;
    return dims;
}
std::vector<ExitCheck>& exit_checks() {
    static std::vector<ExitCheck> checks;
    return checks;
}

// The calling thread's copy of the TLS block of the object that holds the emulator and the
// kernels compiled with it (the executable of tests/emulation.rs, or the emulated driver's
// libcuda.so): exactly the __shared__ variables (emulation.h makes them thread_local, and nothing
// else in that object is, but for this function's anchor). Found at each launch: a shared
// library's block differs per thread, and is only allocated at a thread's first access to it.
StaticShared find_static_shared() {
    [[maybe_unused]] static thread_local volatile unsigned char anchor;
    anchor = 0;  // allocates this thread's block if it was not yet
    struct Search {
        std::uintptr_t code;
        StaticShared found;
    } search{reinterpret_cast<std::uintptr_t>(&find_static_shared), {nullptr, 0}};
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* out) {
            Search& s = *static_cast<Search*>(out);
            bool holds_code = false;
            StaticShared tls{nullptr, 0};
            for (int i = 0; i < info->dlpi_phnum; ++i) {
                const ElfW(Phdr)& segment = info->dlpi_phdr[i];
                const std::uintptr_t start = info->dlpi_addr + segment.p_vaddr;
                if (segment.p_type == PT_LOAD && s.code - start < segment.p_memsz) holds_code = true;
                if (segment.p_type == PT_TLS) tls = {static_cast<unsigned char*>(info->dlpi_tls_data), segment.p_memsz};
            }
            if (holds_code) s.found = tls;
            return holds_code ? 1 : 0;
        },
        &search);
    return search.found;
}

std::uint64_t splitmix(std::uint64_t& state) {
    state += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

const char* op_name(CollectiveOp op) {
    switch (op) {
    case CollectiveOp::ShflIdx:
        return "__shfl_sync";
    case CollectiveOp::ShflXor:
        return "__shfl_xor_sync";
    case CollectiveOp::Ldmatrix:
        return "ldmatrix_x4";
    case CollectiveOp::MmaBf16:
        return "ptx_mma_bf16";
    case CollectiveOp::MmaF16:
        return "ptx_mma_f16";
    case CollectiveOp::SyncWarp:
        return "__syncwarp";
    }
    return "?";
}

const char* base_name(const char* path) {
    const char* slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

void vfail(Launch& launch, int used, const char* format, va_list args) {
    vsnprintf(launch.error.message + used, sizeof launch.error.message - used, format, args);
}

// Records the launch's first failure, prefixed with the block (blockIdx: the CTA of the fiber
// that ran last, or the one set for the diagnosis) and, in a cluster launch, its rank.
__attribute__((format(printf, 2, 3))) void fail(Launch& launch, const char* format, ...) {
    if (launch.error.failed) return;
    launch.error.failed = true;
    int used = launch.cluster_x == 1
                   ? snprintf(launch.error.message, sizeof launch.error.message, "block (%u,%u,%u): ", blockIdx.x,
                              blockIdx.y, blockIdx.z)
                   : snprintf(launch.error.message, sizeof launch.error.message, "block (%u,%u,%u), rank %u of its "
                              "cluster: ", blockIdx.x, blockIdx.y, blockIdx.z, blockIdx.x % launch.cluster_x);
    va_list args;
    va_start(args, format);
    vfail(launch, used, format, args);
    va_end(args);
}

// A failure of the whole cluster (a deadlock, cluster_sync): prefixed with its blocks (with
// the block, as fail(), in a launch without clusters).
__attribute__((format(printf, 2, 3))) void fail_cluster(Launch& launch, const char* format, ...) {
    if (launch.error.failed) return;
    launch.error.failed = true;
    const uint3 first = launch.ctas[0].block_idx;
    int used = launch.cluster_x == 1
                   ? snprintf(launch.error.message, sizeof launch.error.message, "block (%u,%u,%u): ", first.x,
                              first.y, first.z)
                   : snprintf(launch.error.message, sizeof launch.error.message, "cluster of blocks (%u-%u,%u,%u): ",
                              first.x, first.x + launch.cluster_x - 1, first.y, first.z);
    va_list args;
    va_start(args, format);
    vfail(launch, used, format, args);
    va_end(args);
}

unsigned linear_index(const Fiber& f) { return static_cast<unsigned>(&f - g_launch->fibers.data()); }
// The fiber's CTA (its rank) and its linear index in its block.
unsigned rank_of(const Fiber& f) { return f.rank; }
unsigned local_index(const Fiber& f) { return linear_index(f) % g_launch->block_threads; }

bool in_range(const void* p, std::size_t bytes, const unsigned char* base, std::size_t size) {
    const auto* q = static_cast<const unsigned char*>(p);
    return base && q >= base && bytes <= size && q <= base + (size - bytes);
}

// In CTA `rank`'s dynamic shared memory or the static __shared__ variables.
bool in_shared(unsigned rank, const void* p, std::size_t bytes) {
    const StaticShared& s = g_launch->static_shared;
    return in_range(p, bytes, g_launch->ctas[rank].smem, g_launch->smem_bytes) || in_range(p, bytes, s.base, s.bytes);
}

// ---- fiber switching (with AddressSanitizer told which stack is live) ----

// `exiting`: the fiber will never run again (it faulted), so ASan may drop its fake stack.
void switch_to_scheduler(Fiber& f, bool exiting) {
    Launch& launch = *g_launch;
#ifdef EMBER_EMU_ASAN
    __sanitizer_start_switch_fiber(exiting ? nullptr : &f.fake_stack, launch.scheduler_stack,
                                   launch.scheduler_stack_bytes);
#else
    (void)exiting;
#endif
    context_switch(f.context, launch.scheduler);
#ifdef EMBER_EMU_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

void resume(Launch& launch, Fiber& f) {
    threadIdx = f.tid;
    blockIdx = launch.ctas[rank_of(f)].block_idx;
    launch.current = &f;
#ifdef EMBER_EMU_ASAN
    __sanitizer_start_switch_fiber(&launch.scheduler_fake_stack, f.stack, kStackBytes);
#endif
    context_switch(launch.scheduler, f.context);
#ifdef EMBER_EMU_ASAN
    __sanitizer_finish_switch_fiber(launch.scheduler_fake_stack, nullptr, nullptr);
#endif
}

std::size_t pending_copies(const Fiber& f) {
    std::size_t n = f.open.size();
    for (const auto& group : f.committed) n += group.size();
    return n;
}

// A fiber's life: the kernel body once per cluster of the launch; resumed after its exit, it
// runs as the same thread of the next cluster (so a fiber is started once per launch).
[[noreturn]] void fiber_main() {
    Launch& launch = *g_launch;
#ifdef EMBER_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &launch.scheduler_stack, &launch.scheduler_stack_bytes);
#endif
    for (;;) {
        launch.body(launch.args);
        Fiber& f = *launch.current;
        const char* wrong = nullptr;
        for (ExitCheck check : exit_checks())
            if (!wrong) wrong = check();
        if (const std::size_t n = pending_copies(f)) {
            fail(launch, "thread (%u,%u,%u) exited with %zu cp.async copies never waited for", f.tid.x, f.tid.y,
                 f.tid.z, n);
            f.state = State::Faulted;
        } else if (wrong) {
            fail(launch, "thread (%u,%u,%u) exited: %s", f.tid.x, f.tid.y, f.tid.z, wrong);
            f.state = State::Faulted;
        } else {
            f.state = State::Exited;
            ++launch.ctas[rank_of(f)].exited;
            ++launch.warp_exited[f.warp];
        }
        switch_to_scheduler(f, f.state == State::Faulted);
    }
}

// ---- the scheduler ----

// Makes fibers [first, last) ready, widening pick's span to hold them.
void make_ready(Launch& launch, std::size_t first, std::size_t last) {
    for (std::size_t i = first; i < last; ++i) launch.fibers[i].state = State::Ready;
    if (first < last) {
        launch.ready_lo = std::min(launch.ready_lo, first);
        launch.ready_hi = std::max(launch.ready_hi, last);
    }
}

// The next fiber to run in the schedule's order: the first ready one, the last, or a random one
// (searched in [ready_lo, ready_hi) only, where every ready fiber is); null when none is ready.
Fiber* pick(Launch& launch) {
    Fiber* const fibers = launch.fibers.data();
    std::size_t lo = launch.ready_lo, hi = std::min(launch.ready_hi, launch.fibers.size());
    Fiber* found = nullptr;
    switch (launch.schedule->order) {
    case Schedule::Order::Ascending:
        while (lo < hi && fibers[lo].state != State::Ready) ++lo;
        if (lo < hi) found = &fibers[lo];
        break;
    case Schedule::Order::Descending:
        while (lo < hi && fibers[hi - 1].state != State::Ready) --hi;
        if (lo < hi) found = &fibers[hi - 1];
        break;
    case Schedule::Order::Random: {
        while (lo < hi && fibers[lo].state != State::Ready) ++lo;
        while (lo < hi && fibers[hi - 1].state != State::Ready) --hi;
        std::size_t ready = 0;
        for (std::size_t i = lo; i < hi; ++i) ready += fibers[i].state == State::Ready;
        if (ready == 0) break;
        std::size_t k = splitmix(launch.rng) % ready;
        for (std::size_t i = lo; i < hi && !found; ++i)
            if (fibers[i].state == State::Ready && k-- == 0) found = &fibers[i];
        break;
    }
    }
    // No ready fiber outside [lo, hi): the span narrows (to nothing when none is ready).
    if (found) {
        launch.ready_lo = lo;
        launch.ready_hi = hi;
    } else {
        launch.ready_lo = launch.fibers.size();
        launch.ready_hi = 0;
    }
    return found;
}

float bf16_to_f32(unsigned short h) { return __uint_as_float(static_cast<unsigned>(h) << 16); }

// The warp's lanes (of CTA `rank`), all waiting at `op`: runs it.
void run_collective(Launch& launch, unsigned rank, Fiber* lanes, unsigned n) {
    const CollectiveOp op = lanes[0].op;
    switch (op) {
    case CollectiveOp::SyncWarp:
        return;  // every lane has arrived: that is all
    case CollectiveOp::ShflIdx:
    case CollectiveOp::ShflXor: {
        const std::size_t size = lanes[0].size;
        if (size > 8) {
            fail(launch, "%s of a %zu-byte value: not emulated", op_name(op), size);
            return;
        }
        unsigned char values[kWarp][8];
        for (unsigned l = 0; l < n; ++l) std::memcpy(values[l], lanes[l].in, size);
        for (unsigned l = 0; l < n; ++l) {
            const unsigned src = op == CollectiveOp::ShflIdx ? static_cast<unsigned>(lanes[l].param) % kWarp
                                                             : l ^ static_cast<unsigned>(lanes[l].param);
            std::memcpy(lanes[l].out, values[src < n ? src : l], size);
        }
        return;
    }
    case CollectiveOp::Ldmatrix: {
        for (unsigned l = 0; l < n; ++l) {
            const auto address = reinterpret_cast<std::uintptr_t>(lanes[l].in);
            if (address % 16 != 0 || !in_shared(rank, lanes[l].in, 16)) {
                fail(launch, "ldmatrix_x4 at %s:%d: lane %u's row address %p is not 16 bytes of shared memory, "
                             "16-byte aligned",
                     base_name(lanes[l].site.file), lanes[l].site.line, l, lanes[l].in);
                return;
            }
        }
        unsigned rows[kWarp][4];
        for (unsigned l = 0; l < n; ++l) std::memcpy(rows[l], lanes[l].in, 16);
        for (unsigned l = 0; l < n; ++l) {
            unsigned* r = static_cast<unsigned*>(lanes[l].out);
            for (unsigned i = 0; i < 4; ++i) r[i] = rows[8 * i + l / 4][l % 4];
        }
        return;
    }
    case CollectiveOp::MmaBf16:
    case CollectiveOp::MmaF16: {
        float (*decode)(unsigned short) = op == CollectiveOp::MmaBf16 ? bf16_to_f32 : f16_to_f32;
        double a[16][16], b[16][8], c[16][8];  // A [m][k], B [k][n], C [m][n]
        auto halves = [&](unsigned word, double& lo, double& hi) {
            lo = decode(static_cast<unsigned short>(word & 0xFFFF));
            hi = decode(static_cast<unsigned short>(word >> 16));
        };
        for (unsigned l = 0; l < n; ++l) {
            const unsigned g = l / 4, t = l % 4;
            const unsigned* fa = static_cast<const unsigned*>(lanes[l].in);
            const unsigned* fb = static_cast<const unsigned*>(lanes[l].in2);
            const float* fd = static_cast<const float*>(lanes[l].out);
            halves(fa[0], a[g][2 * t], a[g][2 * t + 1]);
            halves(fa[1], a[g + 8][2 * t], a[g + 8][2 * t + 1]);
            halves(fa[2], a[g][2 * t + 8], a[g][2 * t + 9]);
            halves(fa[3], a[g + 8][2 * t + 8], a[g + 8][2 * t + 9]);
            halves(fb[0], b[2 * t][g], b[2 * t + 1][g]);
            halves(fb[1], b[2 * t + 8][g], b[2 * t + 9][g]);
            c[g][2 * t] = fd[0];
            c[g][2 * t + 1] = fd[1];
            c[g + 8][2 * t] = fd[2];
            c[g + 8][2 * t + 1] = fd[3];
        }
        auto dot = [&](unsigned i, unsigned j) {
            double s = c[i][j];
            for (unsigned k = 0; k < 16; ++k) s += a[i][k] * b[k][j];
            return static_cast<float>(s);
        };
        for (unsigned l = 0; l < n; ++l) {
            const unsigned g = l / 4, t = l % 4;
            float* d = static_cast<float*>(lanes[l].out);
            d[0] = dot(g, 2 * t);
            d[1] = dot(g, 2 * t + 1);
            d[2] = dot(g + 8, 2 * t);
            d[3] = dot(g + 8, 2 * t + 1);
        }
        return;
    }
    }
}

// Runs the collective of the warp of `member` if every lane that has not exited waits at it.
void settle_warp(Launch& launch, const Fiber& member) {
    const unsigned rank = rank_of(member), block_first = rank * launch.block_threads;
    const unsigned w = local_index(member) / kWarp;  // the warp in its block
    const unsigned first = block_first + w * kWarp;
    const unsigned n = std::min<unsigned>(kWarp, block_first + launch.block_threads - first);
    const unsigned arrived = launch.warp_waiting[member.warp];
    if (arrived == 0 || arrived + launch.warp_exited[member.warp] != n) return;
    Fiber* lanes = &launch.fibers[first];
    blockIdx = launch.ctas[rank].block_idx;  // for the messages
    unsigned waiting = 0, exited_mask = 0;
    for (unsigned l = 0; l < n; ++l) {
        if (lanes[l].state == State::AtCollective) ++waiting;
        else if (lanes[l].state == State::Exited) exited_mask |= 1u << l;
        else return;
    }
    if (waiting == 0) return;
    launch.warp_waiting[member.warp] = 0;
    const Fiber& lead = *std::find_if(lanes, lanes + n, [](const Fiber& f) { return f.state == State::AtCollective; });
    const unsigned all = n == kWarp ? 0xFFFFFFFFu : (1u << n) - 1;
    if (exited_mask != 0) {
        fail(launch, "warp %u: %s at %s:%d waits for lanes (mask 0x%08x) that exited",
             w, op_name(lead.op), base_name(lead.site.file), lead.site.line, exited_mask);
        return;
    }
    for (unsigned l = 0; l < n; ++l) {
        const Fiber& f = lanes[l];
        if (f.op != lead.op || f.size != lead.size || f.mask != lead.mask) {
            fail(launch, "warp %u: lane %u is at %s (%s:%d, %zu bytes, mask 0x%08x) but lane %u at %s (%s:%d, "
                         "%zu bytes, mask 0x%08x)",
                 w, l, op_name(f.op), base_name(f.site.file), f.site.line, f.size, f.mask,
                 linear_index(lead) - first, op_name(lead.op), base_name(lead.site.file), lead.site.line,
                 lead.size, lead.mask);
            return;
        }
    }
    if (lead.mask != all) {
        fail(launch, "warp %u: %s at %s:%d with mask 0x%08x: only full-warp masks (0x%08x) are emulated", w,
             op_name(lead.op), base_name(lead.site.file), lead.site.line, lead.mask, all);
        return;
    }
    if (lead.op == CollectiveOp::Ldmatrix || lead.op == CollectiveOp::MmaBf16 || lead.op == CollectiveOp::MmaF16) {
        if (n != kWarp) {
            fail(launch, "warp %u: %s needs 32 lanes, the warp has %u", w, op_name(lead.op), n);
            return;
        }
    }
    run_collective(launch, rank, lanes, n);
    make_ready(launch, first, first + n);
}

// In a cluster launch, the static __shared__ variables must keep the poison (the CTAs of a
// cluster would share them): checked at every barrier release and at the cluster's end, so that
// a write fails the launch before another CTA can read it across a barrier. False when it fails.
bool static_shared_untouched(Launch& launch) {
    const StaticShared& s = launch.static_shared;
    if (launch.cluster_x == 1) return true;
    for (std::size_t i = 0; i < s.bytes; ++i) {
        if (s.base[i] != 0xFF) {
            fail_cluster(launch, "a static __shared__ variable was written in a cluster launch: the emulation would "
                                 "share it among the cluster's CTAs (a cluster kernel must use dynamic shared memory "
                                 "only)");
            return false;
        }
    }
    return true;
}

// Releases CTA `rank`'s __syncthreads() if every thread of it that has not exited waits at it.
void settle_barrier(Launch& launch, unsigned rank) {
    Cta& cta = launch.ctas[rank];
    if (cta.at_barrier == 0 || cta.at_barrier + cta.exited != launch.block_threads) return;
    Fiber* const begin = launch.fibers.data() + std::size_t(rank) * launch.block_threads;
    Fiber* const end = begin + launch.block_threads;
    unsigned waiting = 0, exited = 0;
    const Fiber* lead = nullptr;
    for (const Fiber* f = begin; f != end; ++f) {
        if (f->state == State::AtBarrier) {
            ++waiting;
            if (!lead) lead = f;
        } else if (f->state == State::Exited) {
            ++exited;
        } else {
            return;
        }
    }
    if (waiting == 0) return;
    blockIdx = launch.ctas[rank].block_idx;  // for the messages
    if (exited != 0) {
        const Fiber* first_exited = begin;
        while (first_exited->state != State::Exited) ++first_exited;
        fail(launch,
             "__syncthreads() at %s:%d is reached by %u threads, but %u (thread %u first) returned before it "
             "(undefined behaviour in CUDA)",
             base_name(lead->site.file), lead->site.line, waiting, exited, local_index(*first_exited));
        return;
    }
    for (const Fiber* f = begin; f != end; ++f) {
        if (f->site.line != lead->site.line || strcmp(f->site.file, lead->site.file) != 0) {
            fail(launch, "threads %u and %u wait at different barriers: %s:%d and %s:%d", local_index(*lead),
                 local_index(*f), base_name(lead->site.file), lead->site.line, base_name(f->site.file),
                 f->site.line);
            return;
        }
    }
    if (!static_shared_untouched(launch)) return;
    cta.at_barrier = 0;
    make_ready(launch, std::size_t(rank) * launch.block_threads, std::size_t(rank + 1) * launch.block_threads);
}

// Releases cluster_sync() if every thread of every CTA of the cluster waits at it (none exited).
void settle_cluster_barrier(Launch& launch) {
    unsigned arrived = launch.at_cluster_barrier;
    for (const Cta& cta : launch.ctas) arrived += cta.exited;
    if (launch.at_cluster_barrier == 0 || arrived != launch.fibers.size()) return;
    unsigned waiting = 0, exited = 0;
    const Fiber* lead = nullptr;
    for (const Fiber& f : launch.fibers) {
        if (f.state == State::AtClusterBarrier) {
            ++waiting;
            if (!lead) lead = &f;
        } else if (f.state == State::Exited) {
            ++exited;
        } else {
            return;
        }
    }
    if (waiting == 0) return;
    if (exited != 0) {
        const Fiber* first_exited = launch.fibers.data();
        while (first_exited->state != State::Exited) ++first_exited;
        const uint3 b = launch.ctas[rank_of(*first_exited)].block_idx;
        fail_cluster(launch,
                     "cluster_sync() at %s:%d is reached by %u threads, but %u (thread %u of block (%u,%u,%u) first) "
                     "returned before it (undefined behaviour in CUDA)",
                     base_name(lead->site.file), lead->site.line, waiting, exited, local_index(*first_exited), b.x,
                     b.y, b.z);
        return;
    }
    for (const Fiber& f : launch.fibers) {
        if (f.site.line != lead->site.line || strcmp(f.site.file, lead->site.file) != 0) {
            const uint3 a = launch.ctas[rank_of(*lead)].block_idx, b = launch.ctas[rank_of(f)].block_idx;
            fail_cluster(launch,
                         "thread %u of block (%u,%u,%u) and thread %u of block (%u,%u,%u) wait at different "
                         "cluster_sync() calls: %s:%d and %s:%d",
                         local_index(*lead), a.x, a.y, a.z, local_index(f), b.x, b.y, b.z, base_name(lead->site.file),
                         lead->site.line, base_name(f.site.file), f.site.line);
            return;
        }
    }
    if (!static_shared_untouched(launch)) return;
    launch.at_cluster_barrier = 0;
    make_ready(launch, 0, launch.fibers.size());
}

// Every thread is blocked and nothing can release them: say where they wait (in a cluster
// launch, CTA by CTA, as "rank r: threads i-j ...").
void report_deadlock(Launch& launch) {
    char text[sizeof launch.error.message - 64] = {};
    std::size_t used = 0;
    const std::vector<Fiber>& fibers = launch.fibers;
    for (std::size_t i = 0; i < fibers.size();) {
        std::size_t j = i;
        auto same = [&](const Fiber& a, const Fiber& b) {
            if (rank_of(a) != rank_of(b) || a.state != b.state) return false;
            if (a.state == State::Exited) return true;
            if (a.site.line != b.site.line || a.site.file != b.site.file) return false;
            if (a.state == State::Yielded) return strcmp(a.waiting_for, b.waiting_for) == 0;
            return a.state == State::AtBarrier || a.state == State::AtClusterBarrier || a.op == b.op;
        };
        while (j + 1 < fibers.size() && same(fibers[j + 1], fibers[i])) ++j;
        const Fiber& f = fibers[i];
        const char* what = f.state == State::Exited             ? "exited"
                           : f.state == State::AtBarrier        ? "__syncthreads"
                           : f.state == State::AtClusterBarrier ? "cluster_sync"
                           : f.state == State::Yielded          ? f.waiting_for
                                                                : op_name(f.op);
        const char* separator = i ? "; " : "";
        if (used < sizeof text && launch.cluster_x > 1 && (i == 0 || rank_of(fibers[i - 1]) != rank_of(f)))
            used += snprintf(text + used, sizeof text - used, "%srank %u: ", separator, rank_of(f)), separator = "";
        if (used < sizeof text)
            used += snprintf(text + used, sizeof text - used, "%sthreads %u-%u %s", separator, local_index(f),
                             local_index(fibers[j]), what);
        if (f.state != State::Exited && used < sizeof text)
            used += snprintf(text + used, sizeof text - used, " (%s:%d)", base_name(f.site.file), f.site.line);
        i = j + 1;
    }
    fail_cluster(launch, "deadlock: %s", text);
}

// Runs the cluster whose first block is `first`.
void run_cluster(Launch& launch, dim3 block, uint3 first) {
    ++g_block_serial;
    const StaticShared& s = launch.static_shared;
    if (s.bytes) std::memset(s.base, 0xFF, s.bytes);
    const std::size_t shift = launch.schedule->smem_shift;
    bool allocated = true;
    for (unsigned r = 0; r < launch.cluster_x; ++r) {
        Cta& cta = launch.ctas[r];
        cta.block_idx = {first.x + r, first.y, first.z};
        cta.at_barrier = cta.exited = 0;
        void* arena = nullptr;
        if (launch.smem_bytes && posix_memalign(&arena, 1024, shift + launch.smem_bytes) != 0) {
            blockIdx = cta.block_idx;
            fail(launch, "cannot allocate %zu bytes of dynamic shared memory", launch.smem_bytes);
            allocated = false;
        }
        if (arena) std::memset(arena, 0xFF, shift + launch.smem_bytes);
        cta.window = static_cast<unsigned char*>(arena);
        cta.smem = arena ? cta.window + shift : nullptr;
    }

    launch.at_cluster_barrier = 0;
    std::fill(launch.warp_waiting.begin(), launch.warp_waiting.end(), 0u);
    std::fill(launch.warp_exited.begin(), launch.warp_exited.end(), 0u);
    make_ready(launch, 0, launch.fibers.size());
    for (unsigned i = 0; i < launch.fibers.size(); ++i) {
        Fiber& f = launch.fibers[i];
        const unsigned t = i % launch.block_threads;
        f.tid = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        f.committed.clear();
        f.open.clear();
    }
    launch.progress = launch.round_progress = 0;
    launch.in_round = false;
    // Skewed rounds: under the descending schedule the highest rank leads, under the ascending
    // one rank 0 (the random schedule runs every rank each round).
    const unsigned last_rank = launch.cluster_x - 1;
    const bool high_leads = last_rank > 0 && launch.schedule->order == Schedule::Order::Descending;
    const bool low_leads = last_rank > 0 && launch.schedule->order == Schedule::Order::Ascending;
    const auto lead = [&] {
        launch.round_lo = high_leads ? last_rank : 0;
        launch.round_hi = low_leads ? 0 : last_rank;
    };
    lead();

    while (allocated && !launch.error.failed) {
        Fiber* f = pick(launch);
        if (!f) {
            // Nothing is ready: the yielded fibers (of ranks in [round_lo, round_hi]) run again, as
            // a round, unless the last round got nowhere with every rank in it.
            bool yielded = false;
            for (const Fiber& g : launch.fibers) yielded |= g.state == State::Yielded;
            const bool stalled = launch.in_round && launch.progress == launch.round_progress;
            const bool every_rank = launch.round_lo == 0 && launch.round_hi == last_rank;
            if (yielded && !(stalled && every_rank)) {
                if (!stalled) {
                    lead();
                } else {
                    if (launch.round_lo > 0) --launch.round_lo;
                    if (launch.round_hi < last_rank) ++launch.round_hi;
                }
                for (Fiber& g : launch.fibers)
                    if (g.state == State::Yielded && rank_of(g) >= launch.round_lo && rank_of(g) <= launch.round_hi)
                        make_ready(launch, linear_index(g), linear_index(g) + 1);
                launch.in_round = true;
                launch.round_progress = launch.progress;
                continue;
            }
            const bool done = std::all_of(launch.fibers.begin(), launch.fibers.end(),
                                          [](const Fiber& g) { return g.state == State::Exited; });
            if (!done) report_deadlock(launch);
            break;
        }
        resume(launch, *f);
        if (f->state != State::Yielded) ++launch.progress;
        if (f->state == State::AtCollective || f->state == State::Exited) settle_warp(launch, *f);
        if (!launch.error.failed) settle_barrier(launch, rank_of(*f));
        if (!launch.error.failed) settle_cluster_barrier(launch);
    }
    if (!launch.error.failed) static_shared_untouched(launch);
    for (Cta& cta : launch.ctas) {
        free(cta.window);
        cta.smem = cta.window = nullptr;
    }
}

void perform(const Copy& c) {
    std::memcpy(c.dst, c.src, static_cast<std::size_t>(c.src_bytes));
    std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, 16 - static_cast<std::size_t>(c.src_bytes));
}

Fiber& current_fiber(const char* what) {
    if (!g_launch || !g_launch->current) {
        fprintf(stderr, "emu: %s called outside a kernel launch\n", what);
        abort();
    }
    return *g_launch->current;
}

}  // namespace

// ---- kernel-side entry points ----

void syncthreads(Site site) {
    Fiber& f = current_fiber("__syncthreads");
    f.state = State::AtBarrier;
    ++g_launch->ctas[rank_of(f)].at_barrier;
    f.site = site;
    switch_to_scheduler(f, false);
}

void cluster_sync(Site site) {
    Fiber& f = current_fiber("cluster_sync");
    f.state = State::AtClusterBarrier;
    ++g_launch->at_cluster_barrier;
    f.site = site;
    switch_to_scheduler(f, false);
}

void warp_collective(CollectiveOp op, unsigned mask, const void* in, const void* in2, void* out, int param,
                     std::size_t size, Site site) {
    Fiber& f = current_fiber(op_name(op));
    f.state = State::AtCollective;
    ++g_launch->warp_waiting[f.warp];
    f.op = op;
    f.mask = mask;
    f.in = in;
    f.in2 = in2;
    f.out = out;
    f.param = param;
    f.size = size;
    f.site = site;
    switch_to_scheduler(f, false);
}

void* dynamic_smem_base() {
    const Fiber& f = current_fiber("dynamic_smem_base");
    return g_launch->ctas[rank_of(f)].smem;
}

void* shared_window_base() {
    const Fiber& f = current_fiber("shared_window_base");
    return g_launch->ctas[rank_of(f)].window;
}

std::uint64_t block_serial() { return g_block_serial; }

unsigned cluster_rank() { return rank_of(current_fiber("cluster_ctarank")); }

unsigned cluster_size() {
    current_fiber("cluster_nctarank");
    return g_launch->cluster_x;
}

unsigned thread_slot() { return linear_index(current_fiber("thread_slot")); }

void* dynamic_smem_base_of(unsigned rank) {
    current_fiber("dynamic_smem_base_of");
    return rank < g_launch->cluster_x ? g_launch->ctas[rank].smem : nullptr;
}

void* shared_window_base_of(unsigned rank) {
    current_fiber("shared_window_base_of");
    return rank < g_launch->cluster_x ? g_launch->ctas[rank].window : nullptr;
}

int dynamic_smem_owner(const void* p, std::size_t bytes) {
    current_fiber("dynamic_smem_owner");
    for (unsigned r = 0; r < g_launch->cluster_x; ++r)
        if (in_range(p, bytes, g_launch->ctas[r].smem, g_launch->smem_bytes)) return static_cast<int>(r);
    return -1;
}

bool cta_exited(unsigned rank) {
    current_fiber("cta_exited");
    const Launch& launch = *g_launch;
    return rank < launch.cluster_x && launch.ctas[rank].exited == launch.block_threads;
}

void* map_shared_rank(const void* p, unsigned rank) {
    const Launch& launch = *g_launch;
    const Cta& own = launch.ctas[rank_of(current_fiber("mapa"))];
    if (rank >= launch.cluster_x || !in_range(p, 0, own.smem, launch.smem_bytes)) return nullptr;
    return launch.ctas[rank].smem + (static_cast<const unsigned char*>(p) - own.smem);
}

SharedSpace shared_space(const void* p, std::size_t bytes) {
    const Fiber& f = current_fiber("shared_space");
    const StaticShared& s = g_launch->static_shared;
    if (in_range(p, bytes, g_launch->ctas[rank_of(f)].smem, g_launch->smem_bytes)) return SharedSpace::Dynamic;
    if (in_range(p, bytes, s.base, s.bytes)) return SharedSpace::Static;
    return SharedSpace::None;
}

void yield(Site site, const char* waiting_for) {
    Fiber& f = current_fiber("yield");
    f.state = State::Yielded;
    f.site = site;
    snprintf(f.waiting_for, sizeof f.waiting_for, "%s", waiting_for);
    switch_to_scheduler(f, false);
}

void note_progress() {
    current_fiber("note_progress");
    ++g_launch->progress;
}

void add_exit_check(ExitCheck check) { exit_checks().push_back(check); }

void fault(const char* message) {
    Fiber& f = current_fiber("fault");
    fail(*g_launch, "thread (%u,%u,%u): %s", f.tid.x, f.tid.y, f.tid.z, message);
    f.state = State::Faulted;
    switch_to_scheduler(f, true);
    __builtin_unreachable();
}

unsigned smem_offset(const void* p) {
    const Cta& cta = g_launch->ctas[rank_of(current_fiber("smem_u32"))];
    if (!in_range(p, 0, cta.smem, g_launch->smem_bytes))
        fault("smem_u32 of an address outside the dynamic shared memory");
    return static_cast<unsigned>(static_cast<const unsigned char*>(p) - cta.window);
}

void cp_async_enqueue(void* smem, const void* gmem, int src_bytes, Site site) {
    Fiber& f = current_fiber("cp_async_16");
    char message[256];
    if (src_bytes < 0 || src_bytes > 16) {
        snprintf(message, sizeof message, "cp_async_16 at %s:%d with src_bytes = %d", base_name(site.file), site.line,
                 src_bytes);
        fault(message);
    }
    if (reinterpret_cast<std::uintptr_t>(smem) % 16 != 0 || !in_shared(rank_of(f), smem, 16)) {
        snprintf(message, sizeof message, "cp_async_16 at %s:%d: destination %p is not 16 bytes of shared memory, "
                                          "16-byte aligned", base_name(site.file), site.line, smem);
        fault(message);
    }
    if (reinterpret_cast<std::uintptr_t>(gmem) % 16 != 0) {
        snprintf(message, sizeof message, "cp_async_16 at %s:%d: source %p is not 16-byte aligned",
                 base_name(site.file), site.line, gmem);
        fault(message);
    }
    const Copy copy{smem, gmem, src_bytes};
    if (g_launch->schedule->eager_cp_async) perform(copy);
    else f.open.push_back(copy);
}

void cp_async_commit_group() {
    Fiber& f = current_fiber("cp_async_commit");
    f.committed.push_back(std::move(f.open));
    f.open.clear();
}

void cp_async_wait_group(int pending) {
    Fiber& f = current_fiber("cp_async_wait");
    while (f.committed.size() > static_cast<std::size_t>(pending)) {
        for (const Copy& c : f.committed.front()) perform(c);
        f.committed.pop_front();
    }
}

// ---- conversions ----

unsigned short f32_to_bf16(float x) {
    unsigned u;
    std::memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
    return static_cast<unsigned short>((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

unsigned short f32_to_f16(float x) {
    unsigned u;
    std::memcpy(&u, &x, sizeof u);
    const unsigned short sign = static_cast<unsigned short>((u >> 16) & 0x8000);
    const unsigned a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return 0x7FFF;
    if (a >= 0x477FF000u) return sign | 0x7C00;  // ≥ 65520 rounds to infinity
    if (a < 0x38800000u) {                        // below 2⁻¹⁴: subnormal, units of 2⁻²⁴
        // |x|·2²⁴ is exact; nearbyint rounds half to even in the default rounding mode.
        return sign | static_cast<unsigned short>(std::nearbyint(std::fabs(x) * 16777216.0f));
    }
    const unsigned rebased = a - (112u << 23);  // exponent bias 127 → 15
    return sign | static_cast<unsigned short>((rebased + 0xFFFu + ((rebased >> 13) & 1)) >> 13);
}

// ---- launching ----

bool register_cluster_dims(AnyKernel kernel, unsigned x) {
    cluster_dims().emplace_back(kernel, x);
    return true;
}

unsigned cluster_dims_of(AnyKernel kernel) {
    for (const auto& [k, x] : cluster_dims())
        if (k == kernel) return x;
    return 0;
}

LaunchError cluster_dims_mismatch(unsigned asked, unsigned declared) {
    LaunchError error;
    error.failed = true;
    snprintf(error.message, sizeof error.message,
             "invalid launch: clusters of %u blocks for a kernel whose __cluster_dims__ (EMBER_CLUSTER_DIMS) is %u",
             asked, declared);
    return error;
}

LaunchError run_grid(const Schedule& schedule, dim3 grid, dim3 block, std::size_t dynamic_smem, KernelBody body,
                     void* args, unsigned cluster_x) {
    LaunchError error;
    const unsigned long long threads = 1ull * block.x * block.y * block.z;
    const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
    if (threads == 0 || threads > kMaxThreads || block.z > 64 || grid.y > 65535 || grid.z > 65535 ||
        dynamic_smem > kMaxDynamicSmem || blocks == 0) {
        error.failed = true;
        snprintf(error.message, sizeof error.message,
                 "invalid launch: grid (%u,%u,%u), block (%u,%u,%u), %zu bytes of dynamic shared memory "
                 "(at most %u threads, grid y, z ≤ 65535, %zu bytes)",
                 grid.x, grid.y, grid.z, block.x, block.y, block.z, dynamic_smem, kMaxThreads, kMaxDynamicSmem);
        return error;
    }
    if (cluster_x == 0 || cluster_x > kMaxCluster || grid.x % cluster_x != 0 ||
        (cluster_x > 1 && threads % kWarp != 0)) {
        error.failed = true;
        snprintf(error.message, sizeof error.message,
                 "invalid launch: grid (%u,%u,%u), block (%u,%u,%u) in clusters of %u blocks: %s", grid.x, grid.y,
                 grid.z, block.x, block.y, block.z, cluster_x,
                 cluster_x == 0 || cluster_x > kMaxCluster ? "a cluster has 1 to 8 blocks"
                 : grid.x % cluster_x != 0
                     ? "grid x is not a multiple of the cluster size"
                     : "a cluster launch needs a multiple of 32 threads per block (warps must not straddle CTAs in "
                       "this emulation)");
        return error;
    }

    Launch launch{};
    launch.schedule = &schedule;
    launch.body = body;
    launch.args = args;
    launch.smem_bytes = dynamic_smem;
    launch.rng = schedule.seed;
    launch.static_shared = find_static_shared();
    launch.block_threads = static_cast<unsigned>(threads);
    launch.cluster_x = cluster_x;
    launch.ctas.resize(cluster_x);
    const std::size_t fibers = threads * cluster_x;
    launch.fibers.resize(fibers);
    const unsigned warps_per_block = static_cast<unsigned>((threads + kWarp - 1) / kWarp);
    launch.warp_waiting.assign(std::size_t(warps_per_block) * cluster_x, 0);
    launch.warp_exited.assign(std::size_t(warps_per_block) * cluster_x, 0);
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    launch.stacks_bytes = fibers * (page + kStackBytes);
    void* stacks = mmap(nullptr, launch.stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stacks == MAP_FAILED) {
        error.failed = true;
        snprintf(error.message, sizeof error.message, "cannot map %zu bytes of fiber stacks", launch.stacks_bytes);
        return error;
    }
    launch.stacks = static_cast<char*>(stacks);
    for (std::size_t i = 0; i < fibers; ++i) {
        char* guard = launch.stacks + i * (page + kStackBytes);
        mprotect(guard, page, PROT_NONE);  // a fiber that overflows its stack faults here
        Fiber& f = launch.fibers[i];
        f.stack = guard + page;
        f.rank = static_cast<unsigned>(i / threads);
        f.warp = f.rank * warps_per_block + static_cast<unsigned>(i % threads) / kWarp;
#ifdef EMBER_EMU_ASAN
        ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);  // the shadow of an earlier launch's frames
#endif
        context_start(f.context, f.stack, kStackBytes, fiber_main);
    }

    // Clusters in the schedule's order.
    const unsigned clusters_x = grid.x / cluster_x;
    const unsigned long long clusters = blocks / cluster_x;
    std::vector<unsigned long long> order(clusters);
    for (unsigned long long c = 0; c < clusters; ++c) order[c] = c;
    if (schedule.order == Schedule::Order::Descending) {
        std::reverse(order.begin(), order.end());
    } else if (schedule.order == Schedule::Order::Random) {
        for (unsigned long long c = clusters; c > 1; --c) std::swap(order[c - 1], order[splitmix(launch.rng) % c]);
    }

    g_launch = &launch;
    blockDim = block;
    gridDim = grid;
    for (unsigned long long c : order) {
        const uint3 first = {static_cast<unsigned>(c % clusters_x) * cluster_x,
                             static_cast<unsigned>(c / clusters_x % grid.y),
                             static_cast<unsigned>(c / (1ull * clusters_x * grid.y))};
        blockIdx = first;
        run_cluster(launch, block, first);
        if (launch.error.failed) break;
    }
    g_launch = nullptr;
    munmap(stacks, launch.stacks_bytes);
    return launch.error;
}

}  // namespace emu
