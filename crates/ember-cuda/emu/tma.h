// tma.h: mbarriers and the tensor memory accelerator (cp.async.bulk.tensor) under emulation,
// for kernels/gemm_sm90.cu, which includes this instead of its inline PTX when
// EMBER_CPU_EMULATION is defined, after defining TensorMap (the 128-byte CUtensorMap). Only
// what it uses, with the PTX ISA's semantics:
//
// - An mbarrier is 8 bytes of shared memory (dynamic or static, 8-byte aligned). Its state is
//   kept in a side table keyed by address, reset for each block: the current phase's parity
//   (starts 0), the arrivals pending (`count` at init and at each phase completion) and the
//   transaction bytes pending (tx, starts 0). mbarrier_init writes a tag into the 8 bytes, and
//   every operation checks it: a barrier never initialised (the 0xFF poison), or overwritten by
//   an ordinary store or a TMA tile, fails the launch.
//   arrive: pending − 1; arrive_expect_tx(b): tx + b, then arrive; a TMA load's completion:
//   tx − (its box's bytes). The phase completes when pending = 0 and tx = 0: the parity flips,
//   pending = count. try_wait_parity(P) is true iff the phase of parity P has completed (the
//   current parity differs from P).
//   Failures: an arrival with none pending, tx below 0 (PTX allows a transiently negative tx,
//   when a load completes before its expect_tx; this emulation does not), tx above 2^20 − 1, a
//   count outside 1..2^20 − 1, re-initialising a barrier that has been used (arrivals, tx or a
//   completed phase).
// - mbarrier_try_wait_parity returning false yields the fiber (emu::yield), so the kernel's
//   spin loop lets the other threads run; when every thread is waiting or yielded and a round of
//   yields changes no barrier, the launch fails as a deadlock, naming for each group of threads
//   the barrier (its shared-memory offset), the parity waited for and the barrier's state.
// - tma_load_2d copies the box at issue (the copy and its complete_tx are immediate; a kernel
//   that reads a stage without waiting on its `full` barrier reads whatever the schedule let
//   land, and the schedules differ in which thread runs first): element (row c1 + r, column
//   c0 + e) of the tensor to byte r·(box_inner·2) + 2e of the tile, zero when the coordinates
//   are outside the tensor (negative or ≥ its dimensions); then the shared-window address
//   (emu::shared_window_base(), as wgmma.h decodes descriptors) has bits [4, 7) XORed with bits
//   [7, 10) (128-byte swizzle). The tile must be 128-byte aligned in the dynamic shared memory.
//   A map the emulation did not encode (tensor_map.h) fails the launch.
// Limits: one CTA (no clusters, no multicast); fence_mbarrier_init orders nothing (every write is
// visible at once); mbarrier.inval, arrive counts > 1 and the returned state token are not
// emulated.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "tensor_map.h"

namespace emu::tma {

constexpr unsigned kMaxCount = (1u << 20) - 1;
constexpr std::int64_t kMaxTx = (1 << 20) - 1;

struct Barrier {
    const void* address;
    unsigned count;
    unsigned pending;
    std::int64_t tx;
    unsigned parity;
    bool used;  // an arrival or transaction since init
};

// The current block's barriers, by address (a kernel has a handful: a linear search).
struct Barriers {
    std::vector<Barrier> list;
    std::uint64_t block = 0;  // emu::block_serial() of that block
};

inline Barriers& barriers() {
    static Barriers b;
    if (b.block != ::emu::block_serial()) {
        b.list.clear();
        b.block = ::emu::block_serial();
    }
    return b;
}

// What init writes into the barrier's 8 bytes, and every operation expects there.
inline std::uint64_t tag(const void* bar) {
    return 0x6D6261727269EE00ull ^ static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(bar));
}

// Where the barrier at `bar` is, for messages: its shared-window offset (dynamic shared
// memory) or its address (static __shared__).
inline void describe(char* text, std::size_t size, const void* bar) {
    if (::emu::shared_space(bar, 8) == ::emu::SharedSpace::Dynamic)
        snprintf(text, size, "the mbarrier at shared offset %ld",
                 static_cast<long>(static_cast<const unsigned char*>(bar) -
                                   static_cast<const unsigned char*>(::emu::shared_window_base())));
    else snprintf(text, size, "the mbarrier at %p (static __shared__)", bar);
}

[[noreturn]] inline void fail(const char* what, const void* bar, const char* why) {
    char where[64], message[256];
    describe(where, sizeof where, bar);
    snprintf(message, sizeof message, "%s on %s: %s", what, where, why);
    ::emu::fault(message);
}

inline void check_address(const char* what, const void* bar) {
    if (reinterpret_cast<std::uintptr_t>(bar) % 8 != 0) fail(what, bar, "not 8-byte aligned");
    if (::emu::shared_space(bar, 8) == ::emu::SharedSpace::None) fail(what, bar, "not in shared memory");
}

// The barrier at `bar`, initialised and intact, or the launch fails.
inline Barrier& find(const char* what, const void* bar) {
    check_address(what, bar);
    for (Barrier& b : barriers().list) {
        if (b.address != bar) continue;
        std::uint64_t bits;
        std::memcpy(&bits, bar, sizeof bits);
        if (bits != tag(bar)) fail(what, bar, "its 8 bytes were overwritten since mbarrier_init (a store or a TMA tile)");
        return b;
    }
    fail(what, bar, "never initialised (mbarrier_init)");
}

// One arrival's worth of state change, then the phase completion if due.
inline void settle(Barrier& b) {
    b.used = true;
    if (b.pending == 0 && b.tx == 0) {
        b.parity ^= 1;
        b.pending = b.count;
    }
    ::emu::note_progress();
}

inline void arrive(const char* what, unsigned long long* bar, std::int64_t expect_tx) {
    Barrier& b = find(what, bar);
    if (b.pending == 0) fail(what, bar, "an arrival beyond the count (every expected arrival of the phase was made)");
    b.tx += expect_tx;
    if (b.tx > kMaxTx) fail(what, bar, "the pending transaction bytes exceed 2^20 - 1");
    --b.pending;
    settle(b);
}

inline void complete_tx(unsigned long long* bar, std::int64_t bytes) {
    const char* what = "tma_load_2d's complete_tx";
    Barrier& b = find(what, bar);
    b.tx -= bytes;
    if (b.tx < 0) {
        char why[160];
        snprintf(why, sizeof why,
                 "the transaction count went negative (%lld bytes: the load completed %lld bytes more than "
                 "arrive_expect_tx announced for the phase)",
                 static_cast<long long>(b.tx), static_cast<long long>(-b.tx));
        fail(what, bar, why);
    }
    settle(b);
}

}  // namespace emu::tma

// mbarrier.init.shared::cta.b64 [bar], count
__forceinline__ void mbarrier_init(unsigned long long* bar, unsigned count) {
    using namespace ::emu::tma;
    check_address("mbarrier_init", bar);
    if (count == 0 || count > kMaxCount) fail("mbarrier_init", bar, "the count is outside 1..2^20 - 1");
    Barrier* found = nullptr;
    for (Barrier& b : barriers().list)
        if (b.address == bar) found = &b;
    if (found && found->used) fail("mbarrier_init", bar, "re-initialised after use (arrivals, transactions or a phase)");
    if (!found) found = &barriers().list.emplace_back();
    *found = Barrier{bar, count, count, 0, 0, false};
    const std::uint64_t bits = tag(bar);
    std::memcpy(bar, &bits, sizeof bits);
}

// fence.mbarrier_init.release.cluster: nothing to order here.
__forceinline__ void fence_mbarrier_init() {}

// mbarrier.arrive.shared::cta.b64 _, [bar]
// The arriving thread then yields, so that a thread waiting on the barrier (a producer about to
// refill the stage an arrival releases) may run before the arriving one goes on: a release made
// before the data's last use (e.g. before wgmma.wait_group retired the MMAs reading a stage)
// then shows as wrong data.
__forceinline__ void mbarrier_arrive(unsigned long long* bar, const char* file = __builtin_FILE(),
                                     int line = __builtin_LINE()) {
    ::emu::tma::arrive("mbarrier_arrive", bar, 0);
    ::emu::yield({file, line}, "a turn after mbarrier_arrive");
}

// mbarrier.arrive.expect_tx.shared::cta.b64 _, [bar], bytes
__forceinline__ void mbarrier_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
    ::emu::tma::arrive("mbarrier_arrive_expect_tx", bar, bytes);
}

// mbarrier.try_wait.parity.shared::cta.b64 p, [bar], parity: false yields the calling thread.
__forceinline__ bool mbarrier_try_wait_parity(unsigned long long* bar, unsigned parity,
                                              const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    using namespace ::emu::tma;
    const Barrier& b = find("mbarrier_try_wait_parity", bar);
    if (b.parity != (parity & 1)) return true;
    char where[64], waiting_for[128];
    describe(where, sizeof where, bar);
    snprintf(waiting_for, sizeof waiting_for, "wait on %s for parity %u (%u of %u arrivals, %lld tx bytes pending)",
             where, parity & 1, b.pending, b.count, static_cast<long long>(b.tx));
    ::emu::yield({file, line}, waiting_for);
    return false;
}

// cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [map, {c0, c1}], [bar]
__forceinline__ void tma_load_2d(void* smem_dst, const TensorMap* map, int c0, int c1, unsigned long long* bar) {
    static_assert(sizeof(TensorMap) == ::emu::kTensorMapBytes, "TensorMap is a CUtensorMap's 128 bytes");
    ::emu::TensorMapData m;
    if (!::emu::decode_tensor_map(map, m))
        ::emu::fault("tma_load_2d: the tensor map was not encoded by the emulation (cuTensorMapEncodeTiled of the "
                     "emulated driver, or emu::encode_tensor_map_2d), or was overwritten since");
    const std::size_t row_bytes = std::size_t(m.box_inner) * m.element_bytes;
    const std::size_t tile_bytes = row_bytes * m.box_outer;
    auto* dst = static_cast<unsigned char*>(smem_dst);
    if (reinterpret_cast<std::uintptr_t>(dst) % 128 != 0 ||
        ::emu::shared_space(dst, tile_bytes) != ::emu::SharedSpace::Dynamic) {
        char message[200];
        snprintf(message, sizeof message,
                 "tma_load_2d: the destination %p (+%zu bytes) is not 128-byte aligned in the dynamic shared memory",
                 smem_dst, tile_bytes);
        ::emu::fault(message);
    }
    ::emu::tma::find("tma_load_2d", bar);  // before the copy: a tile over the barrier shows as such
    auto* window = static_cast<unsigned char*>(::emu::shared_window_base());
    const std::size_t start = static_cast<std::size_t>(dst - window);
    const std::size_t chunk_elements = 16 / m.element_bytes;
    for (std::uint32_t r = 0; r < m.box_outer; ++r) {
        const long long row = static_cast<long long>(c1) + r;
        const bool row_in = row >= 0 && static_cast<unsigned long long>(row) < m.outer_dim;
        for (std::size_t chunk = 0; chunk < row_bytes / 16; ++chunk) {
            // 16 bytes stay together under the swizzle (it moves bits 4 and up).
            const std::size_t address = start + r * row_bytes + chunk * 16;
            unsigned char* to = window + (address ^ (((address >> 7) & 7) << 4));
            // A tile that does not end on a 128-byte boundary may have chunks swizzled past its end.
            if (tile_bytes % 128 != 0 && ::emu::shared_space(to, 16) != ::emu::SharedSpace::Dynamic)
                ::emu::fault("tma_load_2d: a swizzled 16-byte chunk of the tile lands past the dynamic shared memory");
            for (std::size_t e = 0; e < chunk_elements; ++e) {
                const long long col = static_cast<long long>(c0) + static_cast<long long>(chunk * chunk_elements + e);
                const bool in = row_in && col >= 0 && static_cast<unsigned long long>(col) < m.inner_dim;
                unsigned char* out = to + e * m.element_bytes;
                if (in) std::memcpy(out, m.base + row * m.row_stride + col * m.element_bytes, m.element_bytes);
                else std::memset(out, 0, m.element_bytes);
            }
        }
    }
    ::emu::tma::complete_tx(bar, static_cast<std::int64_t>(tile_bytes));
}
