// tma.h: mbarriers and the tensor memory accelerator (cp.async.bulk.tensor) under emulation,
// for kernels/gemm_sm90.cu, which includes this instead of its inline PTX when
// EMBER_CPU_EMULATION is defined, after defining TensorMap (the 128-byte CUtensorMap). Only
// what it uses, with the PTX ISA's semantics:
//
// - An mbarrier is 8 bytes of shared memory (dynamic, or static outside cluster launches;
//   8-byte aligned). Its state is kept in a side table keyed by address, reset for each cluster
//   (each block, without clusters; the CTAs of a cluster have their own arenas, so their
//   barriers' addresses differ): the current phase's parity (starts 0), the arrivals pending
//   (`count` at init and at each phase completion) and the transaction bytes pending (tx,
//   starts 0). mbarrier_init writes a tag into the 8 bytes, and every operation checks it: a
//   barrier never initialised (the 0xFF poison), or overwritten by an ordinary store or a TMA
//   tile, fails the launch.
//   arrive: pending − 1; arrive_expect_tx(b): tx + b, then arrive; a TMA load's completion:
//   tx − (its box's bytes). The phase completes when pending = 0 and tx = 0: the parity flips,
//   pending = count. try_wait_parity(P) is true iff the phase of parity P has completed (the
//   current parity differs from P).
//   Failures: an arrival with none pending; tx below 0 in a launch without clusters (PTX allows
//   a transiently negative tx, when a load completes before its expect_tx; there the kernel's
//   own thread issues both, so it is a bug), or in a cluster launch tx below 0 once every
//   arrival of the phase is made (a peer's multicast may complete on a barrier before its own
//   thread's arrive_expect_tx: that is allowed while arrivals are pending); |tx| above 2^20 − 1;
//   a count outside 1..2^20 − 1; re-initialising a barrier that has been used (arrivals, tx or a
//   completed phase).
// - The local operations (init, arrive, arrive_expect_tx, try_wait, tma_load_2d's barrier and
//   destination) take the calling thread's CTA's shared memory; the cluster ones
//   (mbarrier_arrive_cluster, tma_load_2d_multicast) take an address in it and act at the same
//   offset in the named CTAs' dynamic shared memory (mapa.shared::cluster); naming a CTA whose
//   threads have all exited (its shared memory is gone) fails the launch. Messages name a
//   barrier by its shared-window offset and, in cluster launches, its CTA's rank.
// - mbarrier_try_wait_parity returning false yields the fiber (emu::yield), so the kernel's
//   spin loop lets the other threads (of every CTA of the cluster) run; when every thread is
//   waiting or yielded and a round of yields changes no barrier (arrivals and transactions from
//   peer CTAs count), the launch fails as a deadlock, naming for each group of threads the
//   barrier (its shared-memory offset), the parity waited for and the barrier's state.
// - tma_load_2d copies the box at issue (the copy and its complete_tx are immediate; a kernel
//   that reads a stage without waiting on its `full` barrier reads whatever the schedule let
//   land, and the schedules differ in which thread runs first): element (row c1 + r, column
//   c0 + e) of the tensor to byte r·(box_inner·2) + 2e of the tile, zero when the coordinates
//   are outside the tensor (negative or ≥ its dimensions); then the shared-window address
//   (emu::shared_window_base(), as wgmma.h decodes descriptors) has bits [4, 7) XORed with bits
//   [7, 10) (128-byte swizzle). The tile must be 128-byte aligned in the dynamic shared memory.
//   A map the emulation did not encode (tensor_map.h) fails the launch.
//   tma_load_2d_multicast does the same for each CTA named in its mask, into that CTA's shared
//   window at the destination's offset, with the complete_tx on that CTA's barrier at `bar`'s
//   offset; a mask of 0 or naming a rank beyond the cluster fails the launch.
// Limits: fence_mbarrier_init orders nothing (every write is visible at once); mbarrier.inval,
// arrive counts > 1, expect_tx without an arrival and the returned state token are not emulated;
// an mbarrier in static __shared__ memory fails a cluster launch (the emulation would share it
// among the cluster's CTAs).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "tensor_map.h"
#include "wgmma.h"  // its per-thread fence.proxy.async counts (TMA stores check them)

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

// The current cluster's barriers (every CTA's), by address (a kernel has a handful: a linear
// search).
struct Barriers {
    std::vector<Barrier> list;
    std::uint64_t block = 0;  // emu::block_serial() of that cluster
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
// memory; in a cluster launch, with its CTA's rank) or its address (static __shared__).
inline void describe(char* text, std::size_t size, const void* bar) {
    const int owner = ::emu::dynamic_smem_owner(bar, 8);
    if (owner < 0) {
        snprintf(text, size, "the mbarrier at %p (static __shared__)", bar);
        return;
    }
    const long offset = static_cast<long>(static_cast<const unsigned char*>(bar) -
                                          static_cast<const unsigned char*>(::emu::shared_window_base_of(owner)));
    if (::emu::cluster_size() == 1) snprintf(text, size, "the mbarrier at shared offset %ld", offset);
    else snprintf(text, size, "the mbarrier at shared offset %ld of CTA rank %d", offset, owner);
}

[[noreturn]] inline void fail(const char* what, const void* bar, const char* why) {
    char where[96], message[400];
    describe(where, sizeof where, bar);
    snprintf(message, sizeof message, "%s on %s: %s", what, where, why);
    ::emu::fault(message);
}

// `remote`: a cluster operation, which may name any CTA's dynamic shared memory; a local one
// needs the calling thread's CTA's.
inline void check_address(const char* what, const void* bar, bool remote = false) {
    if (reinterpret_cast<std::uintptr_t>(bar) % 8 != 0) fail(what, bar, "not 8-byte aligned");
    const ::emu::SharedSpace space = ::emu::shared_space(bar, 8);
    if (space == ::emu::SharedSpace::Static && ::emu::cluster_size() > 1)
        fail(what, bar,
             "an mbarrier in static __shared__ memory in a cluster launch: the emulation would share it among the "
             "cluster's CTAs (use dynamic shared memory)");
    if (space != ::emu::SharedSpace::None) return;
    if (::emu::dynamic_smem_owner(bar, 8) < 0) fail(what, bar, "not in shared memory");
    if (!remote)
        fail(what, bar, "in another CTA's shared memory (a local operation takes an address in the calling thread's CTA)");
}

// The barrier at `bar`, initialised and intact, or the launch fails.
inline Barrier& find(const char* what, const void* bar, bool remote = false) {
    check_address(what, bar, remote);
    for (Barrier& b : barriers().list) {
        if (b.address != bar) continue;
        std::uint64_t bits;
        std::memcpy(&bits, bar, sizeof bits);
        if (bits != tag(bar)) fail(what, bar, "its 8 bytes were overwritten since mbarrier_init (a store or a TMA tile)");
        return b;
    }
    fail(what, bar, "never initialised (mbarrier_init)");
}

// mapa.shared::cluster: `p` (in the calling thread's CTA's dynamic shared memory; its static
// shared memory too in a launch without clusters) at the same offset in CTA `rank`.
inline void* map_to_rank(const char* what, void* p, unsigned rank) {
    char message[200];
    if (rank >= ::emu::cluster_size()) {
        snprintf(message, sizeof message, "%s to CTA rank %u: the cluster has %u CTAs", what, rank, ::emu::cluster_size());
        ::emu::fault(message);
    }
    if (::emu::cta_exited(rank)) {
        snprintf(message, sizeof message,
                 "%s to CTA rank %u, which has exited (its shared memory is gone: a cluster_sync before the end keeps "
                 "every CTA until its peers are done with it)",
                 what, rank);
        ::emu::fault(message);
    }
    if (::emu::cluster_size() == 1 && ::emu::shared_space(p, 1) == ::emu::SharedSpace::Static) return p;
    void* mapped = ::emu::map_shared_rank(p, rank);
    if (!mapped) {
        snprintf(message, sizeof message, "%s of %p: not an address in the calling thread's CTA's dynamic shared memory",
                 what, p);
        ::emu::fault(message);
    }
    return mapped;
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

inline void arrive(const char* what, unsigned long long* bar, std::int64_t expect_tx, bool remote = false) {
    Barrier& b = find(what, bar, remote);
    if (b.pending == 0) fail(what, bar, "an arrival beyond the count (every expected arrival of the phase was made)");
    b.tx += expect_tx;
    if (b.tx > kMaxTx) fail(what, bar, "the pending transaction bytes exceed 2^20 - 1");
    --b.pending;
    // A peer's multicast may have taken tx below 0 before this phase's arrive_expect_tx (a
    // cluster launch); once every arrival is made it must not stay there.
    if (b.pending == 0 && b.tx < 0)
        fail(what, bar, "the transaction count is negative with every arrival made (loads completed more bytes "
                        "than arrive_expect_tx announced for the phase)");
    settle(b);
}

// A load's completion of `bytes` on the barrier at `bar` (in a peer CTA for a multicast). In a
// cluster launch tx may go negative while arrivals are pending (a peer's multicast before this
// CTA's arrive_expect_tx).
inline void complete_tx(const char* what, unsigned long long* bar, std::int64_t bytes, bool remote = false) {
    Barrier& b = find(what, bar, remote);
    b.tx -= bytes;
    if (b.tx < 0 && (::emu::cluster_size() == 1 || b.pending == 0)) {
        char why[200];
        snprintf(why, sizeof why,
                 "the transaction count went negative (%lld bytes: the load completed %lld bytes more than "
                 "arrive_expect_tx announced for the phase)",
                 static_cast<long long>(b.tx), static_cast<long long>(-b.tx));
        fail(what, bar, why);
    }
    if (b.tx < -kMaxTx) fail(what, bar, "the transaction count went below -(2^20 - 1)");
    settle(b);
}

// Copies the box of `m` at (c0, c1) into the shared window `window` at offset `start` (the tile
// 128-byte aligned in CTA `rank`'s dynamic shared memory, checked by the caller), swizzled.
inline void copy_box(const char* what, const TensorMapData& m, int c0, int c1, unsigned char* window,
                     std::size_t start, unsigned rank) {
    const std::size_t row_bytes = std::size_t(m.box_inner) * m.element_bytes;
    const std::size_t tile_bytes = row_bytes * m.box_outer;
    const std::size_t chunk_elements = 16 / m.element_bytes;
    for (std::uint32_t r = 0; r < m.box_outer; ++r) {
        const long long row = static_cast<long long>(c1) + r;
        const bool row_in = row >= 0 && static_cast<unsigned long long>(row) < m.outer_dim;
        for (std::size_t chunk = 0; chunk < row_bytes / 16; ++chunk) {
            // 16 bytes stay together under the swizzle (it moves bits 4 and up).
            const std::size_t address = start + r * row_bytes + chunk * 16;
            unsigned char* to = window + (address ^ (((address >> 7) & 7) << 4));
            // A tile that does not end on a 128-byte boundary may have chunks swizzled past its end.
            if (tile_bytes % 128 != 0 && ::emu::dynamic_smem_owner(to, 16) != static_cast<int>(rank)) {
                char message[160];
                snprintf(message, sizeof message,
                         "%s: a swizzled 16-byte chunk of the tile lands past the dynamic shared memory", what);
                ::emu::fault(message);
            }
            for (std::size_t e = 0; e < chunk_elements; ++e) {
                const long long col = static_cast<long long>(c0) + static_cast<long long>(chunk * chunk_elements + e);
                const bool in = row_in && col >= 0 && static_cast<unsigned long long>(col) < m.inner_dim;
                unsigned char* out = to + e * m.element_bytes;
                if (in) std::memcpy(out, m.base + row * m.row_stride + col * m.element_bytes, m.element_bytes);
                else std::memset(out, 0, m.element_bytes);
            }
        }
    }
}

// The map, decoded, and the tile's bytes, checking `smem_dst` (a 128-byte aligned tile in the
// calling thread's CTA's dynamic shared memory).
inline std::size_t check_load(const char* what, void* smem_dst, const TensorMap* map, TensorMapData& m) {
    static_assert(sizeof(TensorMap) == ::emu::kTensorMapBytes, "TensorMap is a CUtensorMap's 128 bytes");
    char message[240];
    if (!::emu::decode_tensor_map(map, m)) {
        snprintf(message, sizeof message,
                 "%s: the tensor map was not encoded by the emulation (cuTensorMapEncodeTiled of the emulated driver, "
                 "or emu::encode_tensor_map_2d), or was overwritten since",
                 what);
        ::emu::fault(message);
    }
    const std::size_t tile_bytes = std::size_t(m.box_inner) * m.element_bytes * m.box_outer;
    if (reinterpret_cast<std::uintptr_t>(smem_dst) % 128 != 0 ||
        ::emu::shared_space(smem_dst, tile_bytes) != ::emu::SharedSpace::Dynamic) {
        snprintf(message, sizeof message,
                 "%s: the destination %p (+%zu bytes) is not 128-byte aligned in the dynamic shared memory", what,
                 smem_dst, tile_bytes);
        ::emu::fault(message);
    }
    return tile_bytes;
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
    using namespace ::emu::tma;
    ::emu::TensorMapData m;
    const std::size_t tile_bytes = check_load("tma_load_2d", smem_dst, map, m);
    find("tma_load_2d", bar);  // before the copy: a tile over the barrier shows as such
    auto* window = static_cast<unsigned char*>(::emu::shared_window_base());
    copy_box("tma_load_2d", m, c0, c1, window, static_cast<std::size_t>(static_cast<unsigned char*>(smem_dst) - window),
             ::emu::cluster_rank());
    complete_tx("tma_load_2d's complete_tx", bar, static_cast<std::int64_t>(tile_bytes));
}

// mapa.shared::cluster + mbarrier.arrive.release.cluster.shared::cluster.b64 _, [remote bar]:
// one arrival (no tx) on the barrier at `bar`'s offset in CTA `rank` of the cluster (the own
// rank: a local arrival). The arriving thread then yields, as after mbarrier_arrive.
__forceinline__ void mbarrier_arrive_cluster(unsigned long long* bar, unsigned rank,
                                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    using namespace ::emu::tma;
    const char* what = "mbarrier_arrive_cluster";
    auto* remote = static_cast<unsigned long long*>(map_to_rank(what, bar, rank));
    arrive(what, remote, 0, true);
    ::emu::yield({file, line}, "a turn after mbarrier_arrive_cluster");
}

// cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster
// [dst], [map, {c0, c1}], [bar], cta_mask: the box into `smem_dst`'s offset of every CTA whose
// bit is set in `cta_mask`, each completing its transactions on its barrier at `bar`'s offset.
__forceinline__ void tma_load_2d_multicast(void* smem_dst, const TensorMap* map, int c0, int c1,
                                           unsigned long long* bar, unsigned short cta_mask) {
    using namespace ::emu::tma;
    const char* what = "tma_load_2d_multicast";
    ::emu::TensorMapData m;
    const std::size_t tile_bytes = check_load(what, smem_dst, map, m);
    const unsigned size = ::emu::cluster_size();
    char message[200];
    if (cta_mask == 0) ::emu::fault("tma_load_2d_multicast: the CTA mask is 0 (no destination)");
    for (unsigned r = 0; r < 16; ++r)
        if ((cta_mask >> r & 1) && r >= size) {
            snprintf(message, sizeof message,
                     "tma_load_2d_multicast: the CTA mask 0x%04x names CTA rank %u, but the cluster has %u CTAs",
                     static_cast<unsigned>(cta_mask), r, size);
            ::emu::fault(message);
        }
    // Every destination's barrier before any copy: a tile over a barrier shows as such.
    unsigned long long* bars[16] = {};
    for (unsigned r = 0; r < size; ++r)
        if (cta_mask >> r & 1) {
            bars[r] = static_cast<unsigned long long*>(map_to_rank(what, bar, r));
            find(what, bars[r], true);
        }
    const auto* own_window = static_cast<const unsigned char*>(::emu::shared_window_base());
    const std::size_t start = static_cast<std::size_t>(static_cast<const unsigned char*>(smem_dst) - own_window);
    for (unsigned r = 0; r < size; ++r)
        if (cta_mask >> r & 1) {
            copy_box(what, m, c0, c1, static_cast<unsigned char*>(::emu::shared_window_base_of(r)), start, r);
            complete_tx("tma_load_2d_multicast's complete_tx", bars[r], static_cast<std::int64_t>(tile_bytes), true);
        }
}

// ---- TMA stores (cp.async.bulk.tensor, shared → global, bulk async-groups) ----
//
// tma_store_2d records the store in the calling thread's open bulk group; bulk_commit_group
// closes that group; bulk_wait_group_read<N> and bulk_wait_group<N> carry out, oldest first,
// every committed group but the newest N: only then is the box read from shared memory (with the
// 128-byte swizzle, as tma_load_2d writes it) and written to the tensor, skipping elements
// outside it. So a kernel that rewrites a box before waiting for its store to have read it
// stores the new contents, and one that never waits stores nothing: both show as wrong output.
// The launch fails when a thread exits with stores not waited for (emu::add_exit_check). The shared-memory writes a store reads must be ordered before it by
// fence.proxy.async: every lane of the issuing thread's warp must have executed one
// (fence_proxy_async_shared, counted by wgmma.h) since the warp's previous store, or the store
// fails the launch.

namespace emu::tma {

struct BulkStore {
    TensorMapData map;
    int c0, c1;
    std::size_t start;  // the box's offset in its CTA's shared window
};

struct BulkGroups {
    std::uint64_t block = 0;  // emu::block_serial() of the groups' block
    std::vector<std::vector<BulkStore>> committed;  // oldest first
    std::vector<BulkStore> open;
    unsigned lane_fences[32] = {};  // the warp's lanes' fence.proxy.async counts at its last store
};

inline BulkGroups& bulk_groups() {
    static std::vector<BulkGroups> table(::emu::kMaxClusterThreads);
    BulkGroups& groups = table[::emu::thread_slot()];
    if (groups.block != ::emu::block_serial()) {
        // A new block on this slot (an earlier one's pending stores failed its launch at exit).
        groups = BulkGroups{};
        groups.block = ::emu::block_serial();
    }
    return groups;
}

inline const char* bulk_exit_check() {
    const BulkGroups& groups = bulk_groups();
    return groups.committed.empty() && groups.open.empty()
               ? nullptr
               : "a TMA store (cp.async.bulk.tensor) issued but never waited for (cp.async.bulk.wait_group)";
}
inline const bool bulk_exit_check_registered = (::emu::add_exit_check(bulk_exit_check), true);

// Writes the box `s` from the calling thread's CTA's shared window to its tensor.
inline void store_box(const BulkStore& s) {
    const TensorMapData& m = s.map;
    const auto* window = static_cast<const unsigned char*>(::emu::shared_window_base());
    const std::size_t row_bytes = std::size_t(m.box_inner) * m.element_bytes;
    const std::size_t chunk_elements = 16 / m.element_bytes;
    auto* base = const_cast<unsigned char*>(m.base);
    for (std::uint32_t r = 0; r < m.box_outer; ++r) {
        const long long row = static_cast<long long>(s.c1) + r;
        if (row < 0 || static_cast<unsigned long long>(row) >= m.outer_dim) continue;
        for (std::size_t chunk = 0; chunk < row_bytes / 16; ++chunk) {
            const std::size_t address = s.start + r * row_bytes + chunk * 16;
            const unsigned char* from = window + (address ^ (((address >> 7) & 7) << 4));
            for (std::size_t e = 0; e < chunk_elements; ++e) {
                const long long col = static_cast<long long>(s.c0) + static_cast<long long>(chunk * chunk_elements + e);
                if (col < 0 || static_cast<unsigned long long>(col) >= m.inner_dim) continue;
                std::memcpy(base + row * m.row_stride + col * m.element_bytes, from + e * m.element_bytes,
                            m.element_bytes);
            }
        }
    }
}

inline void bulk_wait(int keep) {
    BulkGroups& groups = bulk_groups();
    while (groups.committed.size() > static_cast<std::size_t>(keep)) {
        for (const BulkStore& s : groups.committed.front()) store_box(s);
        groups.committed.erase(groups.committed.begin());
    }
}

}  // namespace emu::tma

// cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [map, {c0, c1}], [src]
__forceinline__ void tma_store_2d(const TensorMap* map, int c0, int c1, const void* smem_src) {
    using namespace ::emu::tma;
    const char* what = "tma_store_2d";
    BulkStore s;
    // The source is checked as a load's destination is (a 128-byte aligned box in the dynamic
    // shared memory of the calling thread's CTA).
    const std::size_t box_bytes = check_load(what, const_cast<void*>(smem_src), map, s.map);
    (void)box_bytes;
    s.c0 = c0;
    s.c1 = c1;
    s.start = static_cast<std::size_t>(static_cast<const unsigned char*>(smem_src) -
                                       static_cast<const unsigned char*>(::emu::shared_window_base()));
    BulkGroups& groups = bulk_groups();
    // Every lane of the warp fenced (fence.proxy.async) since the warp's last store.
    const unsigned warp0 = ::emu::thread_slot() & ~31u;
    for (unsigned lane = 0; lane < 32; ++lane) {
        const unsigned fences = ::emu::wgmma::thread_at(warp0 + lane).proxy_fences;
        if (fences == groups.lane_fences[lane]) {
            char message[200];
            snprintf(message, sizeof message,
                     "%s: lane %u of the issuing warp executed no fence.proxy.async since the warp's last store "
                     "(its shared-memory writes are not ordered before the TMA's read)",
                     what, lane);
            ::emu::fault(message);
        }
        groups.lane_fences[lane] = fences;
    }
    groups.open.push_back(s);
}

// setmaxnreg: registers are not emulated; the count is checked as ptxas checks it.
template <int N> __forceinline__ void setmaxnreg_dec() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg's count: a multiple of 8 in 24..256");
}
template <int N> __forceinline__ void setmaxnreg_inc() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg's count: a multiple of 8 in 24..256");
}

// cp.async.bulk.commit_group
__forceinline__ void bulk_commit_group() {
    ::emu::tma::BulkGroups& groups = ::emu::tma::bulk_groups();
    groups.committed.push_back(std::move(groups.open));
    groups.open.clear();
}

// cp.async.bulk.wait_group.read N and cp.async.bulk.wait_group N (the same here: a store is
// read and written at once).
template <int N> __forceinline__ void bulk_wait_group_read() { ::emu::tma::bulk_wait(N); }
template <int N> __forceinline__ void bulk_wait_group() { ::emu::tma::bulk_wait(N); }
