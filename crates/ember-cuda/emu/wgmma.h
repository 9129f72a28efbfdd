// wgmma.h: Hopper's warpgroup MMA (wgmma.*) and fence.proxy.async under emulation, for
// kernels/gemm_sm90.cu (which includes this instead of its inline PTX when EMBER_CPU_EMULATION
// is defined). Only what gemm_sm90.cu uses: both operands in shared memory through descriptors
// in the 128-byte-swizzle K-major layout, f32 accumulators, scale-d = 1, no transposition.
//
// - wgmma.mma_async is asynchronous here too: an MMA is only recorded when issued (with the
//   accumulator array's address) and runs when wgmma.wait_group retires its group, so that a
//   kernel that refills a stage before waiting for the MMAs reading it computes on the new data,
//   and fails, as it could on the GPU.
// - Every thread of a warpgroup must issue the same descriptors in the same order (the
//   instruction is .sync.aligned over the warpgroup): the first thread to issue the n-th MMA
//   records its descriptors, the others must match.
// - Each thread computes its own fragment of D (the layout in gemm_sm90.cu): Σ_k a·b over the
//   16 products in double, added to d and rounded once to f32.
// - A descriptor is decoded as the hardware does for the 128-byte swizzle: element (row r, k)
//   of the operand is at byte  start + (r / 8)·SBO + (r % 8)·128 + 2k  of the shared window,
//   then bits [4, 7) of that address are XORed with bits [7, 10). Addresses are offsets in the
//   calling thread's CTA's shared window (emu::shared_window_base(), as smem_u32 gives them), whose base is
//   1024-byte aligned; the dynamic shared memory may start past it (Schedule::smem_shift).
//   A layout other than 128-byte swizzle, or a base offset that does not match the start
//   address, fails the launch.
// - The state is per thread and per warpgroup of each CTA of the running cluster
//   (emu::thread_slot(), and rank · 8 + threadIdx.x / 128), reset for each cluster.
// Limits: wgmma.fence and fence.proxy.async order nothing here (every write is visible at once;
// tma.h's stores check that the issuing warp's lanes executed fence.proxy.async since its last
// store);
// the register operands are not checked against concurrent use.
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

namespace emu::wgmma {

enum class Type : unsigned char { Bf16, F16 };

struct Mma {
    float* d;
    int n;  // the instruction's N: d has n / 2 floats
    Type type;
    std::uint64_t desc_a, desc_b;
};

// One thread's MMAs: the open group and the committed ones, oldest first.
struct Thread {
    std::vector<Mma> open;
    std::vector<std::vector<Mma>> committed;
    unsigned issued = 0;  // MMAs issued in the current cluster, to match the warpgroup's record
    unsigned proxy_fences = 0;  // fence.proxy.async executed in the current cluster (tma.h's stores check them)
    std::uint64_t block = 0;  // emu::block_serial() of that cluster
};

// The descriptors the first thread of a warpgroup issued, in order, in the current cluster.
struct Warpgroup {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> issued;
    std::uint64_t block = 0;
};

// The calling thread's state, reset when a new cluster starts. A thread that exits with MMAs
// not waited for fails the launch (exit_check).
inline Thread& thread_at(unsigned slot) {
    static Thread threads[::emu::kMaxClusterThreads];
    Thread& t = threads[slot];
    if (t.block != ::emu::block_serial()) {
        t = Thread{};
        t.block = ::emu::block_serial();
    }
    return t;
}
inline Thread& thread() { return thread_at(::emu::thread_slot()); }

inline const char* exit_check() {
    const Thread& t = thread();
    return t.open.empty() && t.committed.empty() ? nullptr : "wgmma.mma_async issued but never waited for";
}
inline const bool exit_check_registered = (::emu::add_exit_check(exit_check), true);

inline Warpgroup& warpgroup() {
    static Warpgroup groups[::emu::kMaxClusterThreads / 128];
    Warpgroup& g = groups[::emu::cluster_rank() * (1024 / 128) + threadIdx.x / 128];
    if (g.block != ::emu::block_serial()) {
        g = Warpgroup{};
        g.block = ::emu::block_serial();
    }
    return g;
}

// An operand descriptor decoded once per MMA: the start and stride-byte offset, checked to be
// the 128-byte swizzle layout with the base offset its start address implies.
struct Operand {
    const unsigned char* window;  // the calling thread's CTA's shared window
    unsigned start, sbo;
    Type type;
};

inline Operand operand(std::uint64_t desc, Type type) {
    const unsigned start = static_cast<unsigned>(desc & 0x3FFF) << 4;
    const unsigned sbo = static_cast<unsigned>((desc >> 32) & 0x3FFF) << 4;
    const unsigned base_offset = static_cast<unsigned>((desc >> 49) & 7);
    const unsigned layout = static_cast<unsigned>(desc >> 62);
    if (layout != 1) ::emu::fault("wgmma: only the 128-byte swizzle layout (descriptor bits 62-63 = 1) is emulated");
    if (base_offset != ((start >> 7) & 7))
        ::emu::fault("wgmma: the descriptor's base offset does not match its start address (bits 7-9)");
    return {static_cast<const unsigned char*>(::emu::shared_window_base()), start, sbo, type};
}

// The 16-bit element (row, k) of the operand.
inline double element(const Operand& op, int row, int k) {
    const unsigned address = op.start + (row / 8) * op.sbo + (row % 8) * 128 + 2 * k;
    const unsigned swizzled = address ^ (((address >> 7) & 7) << 4);
    unsigned short bits;
    std::memcpy(&bits, op.window + swizzled, sizeof bits);
    return op.type == Type::Bf16 ? to_f32(bf16{bits}) : to_f32(f16{bits});
}

// Runs one MMA for the calling thread: its fragment of D += A (64 × 16) · B (n × 16)ᵀ. Each
// element of A's two rows and of each B column it needs is read once (the products and their
// order, k = 0 … 15 in double, are those of the instruction's definition).
inline void run(const Mma& mma) {
    const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const Operand a_op = operand(mma.desc_a, mma.type), b_op = operand(mma.desc_b, mma.type);
    double a[2][16];
    for (int half = 0; half < 2; ++half)
        for (int k = 0; k < 16; ++k) a[half][k] = element(a_op, warp * 16 + g + half * 8, k);
    for (int j = 0; j < mma.n / 8; ++j)
        for (int e = 0; e < 2; ++e) {
            double b[16];
            for (int k = 0; k < 16; ++k) b[k] = element(b_op, j * 8 + 2 * t + e, k);
            for (int half = 0; half < 2; ++half) {
                double sum = 0.0;
                for (int k = 0; k < 16; ++k) sum += a[half][k] * b[k];
                float& d = mma.d[4 * j + 2 * half + e];
                d = static_cast<float>(double(d) + sum);
            }
        }
}

inline void issue(float* d, int n, Type type, std::uint64_t desc_a, std::uint64_t desc_b) {
    Thread& t = thread();
    Warpgroup& g = warpgroup();
    if (t.issued == g.issued.size()) {
        g.issued.emplace_back(desc_a, desc_b);
    } else if (g.issued[t.issued] != std::make_pair(desc_a, desc_b)) {
        ::emu::fault("wgmma: threads of one warpgroup issued different descriptors (the instruction is .aligned)");
    }
    ++t.issued;
    t.open.push_back({d, n, type, desc_a, desc_b});
}

}  // namespace emu::wgmma

__forceinline__ void wgmma_fence() {}
// Orders nothing here; counted, so that a TMA store can check its warp fenced (tma.h).
__forceinline__ void fence_proxy_async_shared() { ++::emu::wgmma::thread().proxy_fences; }
__forceinline__ void wgmma_commit() {
    auto& t = ::emu::wgmma::thread();
    t.committed.push_back(std::move(t.open));
    t.open.clear();
}
template <int N> __forceinline__ void wgmma_wait() {
    auto& t = ::emu::wgmma::thread();
    while (t.committed.size() > static_cast<std::size_t>(N)) {
        for (const auto& mma : t.committed.front()) ::emu::wgmma::run(mma);
        t.committed.erase(t.committed.begin());
    }
}
__forceinline__ void ptx_wgmma_m64n128k16_bf16(float d[64], unsigned long long desc_a, unsigned long long desc_b) {
    ::emu::wgmma::issue(d, 128, ::emu::wgmma::Type::Bf16, desc_a, desc_b);
}
__forceinline__ void ptx_wgmma_m64n128k16_f16(float d[64], unsigned long long desc_a, unsigned long long desc_b) {
    ::emu::wgmma::issue(d, 128, ::emu::wgmma::Type::F16, desc_a, desc_b);
}
__forceinline__ void ptx_wgmma_m64n256k16_bf16(float d[128], unsigned long long desc_a, unsigned long long desc_b) {
    ::emu::wgmma::issue(d, 256, ::emu::wgmma::Type::Bf16, desc_a, desc_b);
}
__forceinline__ void ptx_wgmma_m64n256k16_f16(float d[128], unsigned long long desc_a, unsigned long long desc_b) {
    ::emu::wgmma::issue(d, 256, ::emu::wgmma::Type::F16, desc_a, desc_b);
}
