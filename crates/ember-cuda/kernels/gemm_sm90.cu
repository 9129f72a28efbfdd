// gemm_sm90.cu: the linear layer Y = act(X·Wᵀ + b) + R (as gemm.cu) on Hopper's warpgroup
// tensor cores, `wgmma.mma_async`. Compiled for sm_90a only (wgmma is an arch-specific feature:
// the CUBIN loads on compute capability 9.0, H100/H200); gemm.cu's mma.sync kernels serve
// every other architecture. X [m, k], W [n, k] (both K-contiguous: wgmma's "K-major" A and B,
// no transpose), b [n] f32, R and Y [m, n]; b and R may be null.
//
// gemm_wgmma_<BM>x<BN>_{bf16,f16} (BM × BN = 128 × 256, 128 × 128, 64 × 128): a block computes
// a BM × BN tile of Y with BM/64 warpgroups (128 threads each); warpgroup g owns rows 64g ..
// 64g + 63 and issues m64nBNk16 MMAs, its 64 × BN f32 accumulator spread over its threads
// (BN/2 floats each).
//  - K advances in BK = 64 steps (one 128-byte row of bf16/f16 per tile row) through a ring of
//    STAGES = 4 shared-memory stages, filled by cp.async (16-byte chunks, zero-filled past m, n
//    and k) LOOKAHEAD = 2 tiles ahead, so that one wgmma group can still be reading stage
//    kt − 1 while stage kt + 2 is being filled.
//  - Tiles are stored in the 128-byte-swizzle layout wgmma's descriptors describe: tile row r
//    is 128 bytes at r·128 from a 1024-byte-aligned base, and its 16-byte chunk c (k = 8c ..
//    8c + 7) sits at chunk position c ^ (r % 8), so that the 8 rows a core matrix spans fall in
//    8 distinct bank groups. The hardware applies the same XOR to the address bits [4, 7) with
//    bits [7, 10) of every address it forms, which is why a k16 step is just +32 bytes on the
//    descriptor's start address.
//  - Per k tile kt: cp.async.wait_group (tile kt landed), fence.proxy.async (the copies, made
//    through the generic proxy, become visible to the async proxy wgmma reads through),
//    __syncthreads, the load of tile kt + 2, then wgmma.fence, 4 MMAs (k16 each), commit and
//    wgmma.wait_group 1. Tile kt + 2 reuses the stage of tile kt − 2, whose MMAs every
//    warpgroup retired at its wait_group 1 of iteration kt − 1, before the barrier.
//  - The epilogue stages the accumulators in shared memory as f32 and calls gemm_store_tile
//    (common.cuh): + b, act, + R in f32, coalesced, one rounding to bf16/f16.
//
// gemm_wgmma_tma_128x256_{bf16,f16} and gemm_wgmma_tma_128x128_{bf16,f16}: the same tiles,
// warp-specialised (as CUTLASS's sm90 kernels): 384 threads, warpgroup 0 the producer,
// warpgroups 1 and 2 the consumers (64 rows each). The 128 × 128 tile is for n = 768 (BERT-base's
// attention output and FFN down), where 128 × 256 tiles give 3 columns of blocks.
// gemm_wgmma_tma_128x128_occ2_{bf16,f16}: the 128 × 128 kernel with WS_OCC2_STAGES = 3 stages
// and WS_OCC2_THREADS = 288 threads (the two consumer warpgroups, then one producer warp, so no
// idle warps), so that two blocks fit on a multiprocessor (2 × 97 KiB of shared memory, which
// needs the largest carveout; 2 × 288 threads of at most 112 registers, ptxas gives 90) and
// one's epilogue overlaps the other's MMAs; for FFN up (n = 3072, k = 768), where a 128 × 256
// block spends much of its time outside its 12 k tiles.
//  - The producer's warp 0 streams the tiles with the tensor memory accelerator: for tile kt
//    it waits until stage kt % STAGES is empty (mbarrier `empty`, phase kt / STAGES), then one
//    lane arms `full` with the stage's byte count and issues two cp.async.bulk.tensor.2d loads
//    (X's rows block_m.., W's rows block_n.., k = 64·kt..), which write the same
//    128-byte-swizzled layout as the cp.async kernels (the tensor maps say SWIZZLE_128B; the
//    stages are 1024-aligned), zero-fill past m, n and k, and complete on `full`. Warps 1–3
//    of warpgroup 0 have no work (the occ2 kernel has a producer warp, after the consumers,
//    instead of a warpgroup).
//  - Each consumer thread waits on `full` for tile kt, issues its warpgroup's 4 MMAs, commits,
//    waits for the group before (wait_group 1) and then arrives on that tile's `empty`: 256
//    arrivals free a stage. No __syncthreads in the main loop.
//  - X and W come as CUtensorMaps passed by value (__grid_constant__), encoded by the host for
//    each launch (src/gemm.rs): 2-D, {k, rows}, row stride k·2 bytes, box {64, 128 or 256}.
//  - After the loop every thread meets at __syncthreads (all MMAs retired, all loads landed),
//    the consumers stage their accumulators as f32 and all the block's threads (384; 288 for
//    occ2) run gemm_store_tile.
// Needs k % 8 == 0 (the host checks) and 16-byte-aligned X and W (whole allocations).
#include "common.cuh"

#define WG_BK 64
#define WG_STAGES 4
#define WG_LOOKAHEAD (WG_STAGES - 2)
#define WG_ROW_BYTES (WG_BK * 2)  // one tile row: 128 bytes, the swizzle's width

// ---- wgmma primitives (sm_90a) ------------------------------------------------------------------

#ifndef EMBER_CPU_EMULATION
// Orders this thread's earlier register accesses of the accumulators before the next
// wgmma.mma_async reads and writes them.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
// Closes the group of wgmma.mma_async issued since the last commit.
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed groups are pending.
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes this thread's earlier shared-memory writes (st.shared, cp.async) visible to the async
// proxy that wgmma reads shared memory through.
__device__ __forceinline__ void fence_proxy_async_shared() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// d[N/2] += A · Bᵀ over k16, f32 accumulation, N = 128 or 256: A is 64 × 16 (K-major), B is
// N × 16 (K-major, i.e. W's rows), both in shared memory, given by descriptors
// (wgmma_desc_sw128). Accumulator fragment of thread (warp w of the warpgroup, lane l;
// g = l/4, t = l%4): for n8 block j, d[4j], d[4j+1] = D[16w + g][8j + 2t, +1] and
// d[4j+2], d[4j+3] = D[16w + g + 8][8j + 2t, +1]. Operands: scale-d = 1 (accumulate), no
// negation, no transposition.
// wgmma.mma_async m64n128k16 with f32 accumulators d[64] and TYPE ("bf16" or "f16") operands.
#define EMBER_WGMMA_M64N128K16(TYPE, d, desc_a, desc_b) \
    asm volatile( \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " " \
        "{" \
        "%0, %1, %2, %3, %4, %5, %6, %7, " \
        "%8, %9, %10, %11, %12, %13, %14, %15, " \
        "%16, %17, %18, %19, %20, %21, %22, %23, " \
        "%24, %25, %26, %27, %28, %29, %30, %31, " \
        "%32, %33, %34, %35, %36, %37, %38, %39, " \
        "%40, %41, %42, %43, %44, %45, %46, %47, " \
        "%48, %49, %50, %51, %52, %53, %54, %55, " \
        "%56, %57, %58, %59, %60, %61, %62, %63" \
        "}, %64, %65, 1, 1, 1, 0, 0;\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), \
          "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), \
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), \
          "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), \
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), \
          "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), \
          "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), \
          "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), \
          "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
        : "l"(desc_a), "l"(desc_b))
// wgmma.mma_async m64n256k16 with f32 accumulators d[128] and TYPE ("bf16" or "f16") operands.
#define EMBER_WGMMA_M64N256K16(TYPE, d, desc_a, desc_b) \
    asm volatile( \
        "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " " \
        "{" \
        "%0, %1, %2, %3, %4, %5, %6, %7, " \
        "%8, %9, %10, %11, %12, %13, %14, %15, " \
        "%16, %17, %18, %19, %20, %21, %22, %23, " \
        "%24, %25, %26, %27, %28, %29, %30, %31, " \
        "%32, %33, %34, %35, %36, %37, %38, %39, " \
        "%40, %41, %42, %43, %44, %45, %46, %47, " \
        "%48, %49, %50, %51, %52, %53, %54, %55, " \
        "%56, %57, %58, %59, %60, %61, %62, %63, " \
        "%64, %65, %66, %67, %68, %69, %70, %71, " \
        "%72, %73, %74, %75, %76, %77, %78, %79, " \
        "%80, %81, %82, %83, %84, %85, %86, %87, " \
        "%88, %89, %90, %91, %92, %93, %94, %95, " \
        "%96, %97, %98, %99, %100, %101, %102, %103, " \
        "%104, %105, %106, %107, %108, %109, %110, %111, " \
        "%112, %113, %114, %115, %116, %117, %118, %119, " \
        "%120, %121, %122, %123, %124, %125, %126, %127" \
        "}, %128, %129, 1, 1, 1, 0, 0;\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), \
          "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), \
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), \
          "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), \
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), \
          "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), \
          "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), \
          "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), \
          "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), \
          "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), \
          "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), \
          "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), \
          "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), \
          "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), \
          "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), \
          "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), \
          "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127]) \
        : "l"(desc_a), "l"(desc_b))
__device__ __forceinline__ void ptx_wgmma_m64n128k16_bf16(float d[64], unsigned long long desc_a,
                                                        unsigned long long desc_b) {
    EMBER_WGMMA_M64N128K16("bf16", d, desc_a, desc_b);
}
__device__ __forceinline__ void ptx_wgmma_m64n128k16_f16(float d[64], unsigned long long desc_a,
                                                        unsigned long long desc_b) {
    EMBER_WGMMA_M64N128K16("f16", d, desc_a, desc_b);
}
__device__ __forceinline__ void ptx_wgmma_m64n256k16_bf16(float d[128], unsigned long long desc_a,
                                                        unsigned long long desc_b) {
    EMBER_WGMMA_M64N256K16("bf16", d, desc_a, desc_b);
}
__device__ __forceinline__ void ptx_wgmma_m64n256k16_f16(float d[128], unsigned long long desc_a,
                                                        unsigned long long desc_b) {
    EMBER_WGMMA_M64N256K16("f16", d, desc_a, desc_b);
}
#else
#include "wgmma.h"  // crates/ember-cuda/emu/: the same names on the CPU
#endif  // EMBER_CPU_EMULATION

// ---- mbarriers and the tensor memory accelerator (sm_90) --------------------------------------

// A CUtensorMap (cuda.h), as a kernel parameter: 128 opaque bytes, 64-byte aligned.
struct __align__(64) TensorMap {
    unsigned long long opaque[16];
};

#ifndef EMBER_CPU_EMULATION
// mbarrier.init: `count` arrivals complete a phase (the phase parity starts at 0).
__device__ __forceinline__ void mbarrier_init(unsigned long long* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the other threads and to the async proxy (TMA).
__device__ __forceinline__ void fence_mbarrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbarrier_arrive(unsigned long long* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Arrives and expects `bytes` more of asynchronous transactions (TMA) before the phase completes.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}
// Whether the phase of parity `parity` has completed (the barrier's current parity differs).
__device__ __forceinline__ bool mbarrier_try_wait_parity(unsigned long long* bar, unsigned parity) {
    unsigned done;
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
    return done != 0;
}
// The box of `map` at (c0 = k, c1 = row) into `smem_dst`, completing on `bar`'s transactions.
__device__ __forceinline__ void tma_load_2d(void* smem_dst, const TensorMap* map, int c0, int c1,
                                            unsigned long long* bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
            "r"(smem_u32(smem_dst)),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(smem_u32(bar))
        : "memory");
}

// The box of `map` at (c0 = column, c1 = row) from `smem_src` (the 128-byte-swizzled layout
// tma_load_2d writes) to global memory, in this thread's current bulk async-group; the parts of
// the box outside the tensor are not written.
__device__ __forceinline__ void tma_store_2d(const TensorMap* map, int c0, int c1, const void* smem_src) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(
                     reinterpret_cast<unsigned long long>(map)),
                 "r"(c0), "r"(c1), "r"(smem_u32(smem_src))
                 : "memory");
}
// Sets this warpgroup's registers a thread to N (every thread of the warpgroup executes it):
// dec returns registers to the block's pool, inc takes them from it (waiting until it has them).
template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg's count: a multiple of 8 in 24..256");
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg's count: a multiple of 8 in 24..256");
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
// Closes this thread's bulk async-group of the stores issued since the last commit.
__device__ __forceinline__ void bulk_commit_group() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed bulk groups still read shared memory (their
// sources may then be overwritten), or (bulk_wait_group) are still pending at all.
template <int N> __device__ __forceinline__ void bulk_wait_group_read() {
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
template <int N> __device__ __forceinline__ void bulk_wait_group() {
    asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---- thread-block clusters (sm_90) ----

// This block's rank in its cluster.
__device__ __forceinline__ unsigned cluster_ctarank() {
    unsigned rank;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
    return rank;
}
// Every thread of every block of the cluster meets here; shared-memory accesses before it (the
// peers' too) are ordered before those after it.
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// Arrives on the mbarrier at `bar`'s offset in the shared memory of block `rank` of the cluster.
__device__ __forceinline__ void mbarrier_arrive_cluster(unsigned long long* bar, unsigned rank) {
    unsigned remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smem_u32(bar)), "r"(rank));
    // .release.cta (the default), as CUTLASS's ClusterBarrier::arrive: what the arrival must
    // follow is this warp's retired wgmma reads of the stage (wgmma.wait_group), which no
    // cluster-scope release orders anyway, and .release.cluster costs a GPU-wide MEMBAR on every
    // k tile's release.
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
}
// tma_load_2d into `smem_dst`'s offset in every block of the cluster whose bit is set in
// `cta_mask`, each completing on its own mbarrier at `bar`'s offset.
__device__ __forceinline__ void tma_load_2d_multicast(void* smem_dst, const TensorMap* map, int c0, int c1,
                                                      unsigned long long* bar, unsigned short cta_mask) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster "
        "[%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(smem_u32(smem_dst)),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(smem_u32(bar)), "h"(cta_mask)
        : "memory");
}
#else
#include "tma.h"  // crates/ember-cuda/emu/
#endif  // EMBER_CPU_EMULATION

// A K-major operand tile in the 128-byte-swizzle layout, as a wgmma shared-memory descriptor:
// bits 0–13 start address / 16, 16–29 leading-dimension byte offset / 16 (unused by swizzled
// K-major layouts whose k extent fits the 128-byte row: 1 by convention), 32–45 stride byte
// offset / 16 (1024: the next group of 8 rows), 62–63 layout = 1 (128-byte swizzle). The base
// offset (bits 49–51) is 0: every tile starts 1024-byte aligned.
__device__ __forceinline__ unsigned long long wgmma_desc_sw128(unsigned smem_address) {
    return static_cast<unsigned long long>((smem_address & 0x3FFFF) >> 4) |
           (1ull << 16) | (static_cast<unsigned long long>(1024 >> 4) << 32) | (1ull << 62);
}

template <typename T, int N> struct Wgmma;
template <> struct Wgmma<bf16, 128> {
    static __device__ __forceinline__ void mma(float* d, unsigned long long a, unsigned long long b) {
        ptx_wgmma_m64n128k16_bf16(d, a, b);
    }
};
template <> struct Wgmma<f16, 128> {
    static __device__ __forceinline__ void mma(float* d, unsigned long long a, unsigned long long b) {
        ptx_wgmma_m64n128k16_f16(d, a, b);
    }
};
template <> struct Wgmma<bf16, 256> {
    static __device__ __forceinline__ void mma(float* d, unsigned long long a, unsigned long long b) {
        ptx_wgmma_m64n256k16_bf16(d, a, b);
    }
};
template <> struct Wgmma<f16, 256> {
    static __device__ __forceinline__ void mma(float* d, unsigned long long a, unsigned long long b) {
        ptx_wgmma_m64n256k16_f16(d, a, b);
    }
};

// Keeps the compiler from moving accesses of the accumulators across the asynchronous MMAs
// (they are read and written behind its back between wgmma.mma_async and wgmma.wait_group).
template <int COUNT> __device__ __forceinline__ void wgmma_fence_operands(float* d) {
#ifdef EMBER_CPU_EMULATION
    (void)d;  // the emulated MMAs are calls the host compiler sees through
#else
#pragma unroll
    for (int i = 0; i < COUNT; ++i) asm volatile("" : "+f"(d[i])::"memory");
#endif
}

// One operand tile (rows × 64 of X or W, starting at row `row0` and column k0) into `tile`
// (1024-byte aligned), swizzled; rows past `rows_total` and columns past k are zero-filled.
template <typename T, int ROWS, int THREADS>
__device__ __forceinline__ void wgmma_load_tile(unsigned char* tile, const T* __restrict__ src,
                                                int rows_total, int k, int row0, int k0) {
    constexpr int CHUNKS = WG_ROW_BYTES / 16;  // 8 per row
    static_assert((ROWS * CHUNKS) % THREADS == 0, "every thread copies the same number of chunks");
#pragma unroll
    for (int i = 0; i < ROWS * CHUNKS / THREADS; ++i) {
        const int c = threadIdx.x + i * THREADS;
        const int row = c / CHUNKS, chunk = c % CHUNKS;
        const int g_row = row0 + row, g_k = k0 + chunk * 8;
        const bool valid = g_row < rows_total && g_k < k;
        const T* from = valid ? src + static_cast<size_t>(g_row) * k + g_k : src;
        cp_async_16(tile + row * WG_ROW_BYTES + ((chunk ^ (row % 8)) * 16), from, valid ? 16 : 0);
    }
}

template <typename T, int BM, int BN>
__device__ __forceinline__ void gemm_wgmma(
    const T* __restrict__ X, const T* __restrict__ W, const float* __restrict__ bias,
    const T* __restrict__ R, T* __restrict__ Y, int m, int n, int k, int act) {
    constexpr int THREADS = BM * 2;  // BM / 64 warpgroups of 128 threads
    constexpr int A_BYTES = BM * WG_ROW_BYTES, B_BYTES = BN * WG_ROW_BYTES;
    constexpr int ACC = BN / 2;  // accumulators per thread
    constexpr int STAGE = A_BYTES + B_BYTES;
    static_assert(A_BYTES % 1024 == 0 && B_BYTES % 1024 == 0, "tiles stay 1024-byte aligned");

    // The dynamic shared memory, rounded up to 1024 bytes (the host adds the slack).
    EMBER_DYNAMIC_SMEM(unsigned char, wgmma_smem_raw);
    unsigned char* smem = wgmma_smem_raw + ((1024 - (smem_u32(wgmma_smem_raw) % 1024)) % 1024);
    const unsigned smem_base = smem_u32(smem);

    const int warpgroup = threadIdx.x / 128;
    const int block_m = blockIdx.y * BM, block_n = blockIdx.x * BN;

    float acc[ACC];
#pragma unroll
    for (int i = 0; i < ACC; ++i) acc[i] = 0.0f;

    const int k_tiles = (k + WG_BK - 1) / WG_BK;
    auto load = [&](int tile) {
        unsigned char* stage = smem + (tile % WG_STAGES) * STAGE;
        wgmma_load_tile<T, BM, THREADS>(stage, X, m, k, block_m, tile * WG_BK);
        wgmma_load_tile<T, BN, THREADS>(stage + A_BYTES, W, n, k, block_n, tile * WG_BK);
    };
#pragma unroll
    for (int s = 0; s < WG_LOOKAHEAD; ++s) {
        if (s < k_tiles) load(s);
        cp_async_commit();
    }

    for (int kt = 0; kt < k_tiles; ++kt) {
        // Tile kt has landed (at most LOOKAHEAD − 1 younger groups in flight) and is visible
        // to the async proxy; after the barrier every warpgroup has also retired the MMAs of
        // tile kt − 2 (its wait_group 1 in iteration kt − 1), whose stage the next load reuses.
        cp_async_wait<WG_LOOKAHEAD - 1>();
        fence_proxy_async_shared();
        __syncthreads();
        if (kt + WG_LOOKAHEAD < k_tiles) load(kt + WG_LOOKAHEAD);
        cp_async_commit();

        const unsigned a = smem_base + (kt % WG_STAGES) * STAGE + warpgroup * 64 * WG_ROW_BYTES;
        const unsigned b = smem_base + (kt % WG_STAGES) * STAGE + A_BYTES;
        wgmma_fence_operands<ACC>(acc);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < WG_BK / 16; ++kk)  // k16 step: 32 bytes along the swizzled row
            Wgmma<T, BN>::mma(acc, wgmma_desc_sw128(a + kk * 32), wgmma_desc_sw128(b + kk * 32));
        wgmma_commit();
        wgmma_wait<1>();
        wgmma_fence_operands<ACC>(acc);
    }
    wgmma_wait<0>();
    wgmma_fence_operands<ACC>(acc);
    cp_async_wait<0>();

    // Epilogue through shared memory (every stage is free once all threads pass the barrier).
    constexpr int CS = BN + 8;
    float* Cs = reinterpret_cast<float*>(smem);
    const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int row = warpgroup * 64 + warp * 16 + g + half * 8;
            const int col = j * 8 + 2 * t;
            *reinterpret_cast<float2*>(Cs + row * CS + col) =
                make_float2(acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1]);
        }
    __syncthreads();
    gemm_store_tile<T, BM, BN, THREADS>(Cs, CS, bias, R, Y, m, n, block_m, block_n, act, threadIdx.x);
}

#define GEMM_WGMMA(BM, BN, T, SUFFIX)                                                             \
    extern "C" __global__ void __launch_bounds__(BM * 2)                                         \
        gemm_wgmma_##BM##x##BN##_##SUFFIX(const T* __restrict__ X, const T* __restrict__ W,       \
                                          const float* __restrict__ bias, const T* __restrict__ R, \
                                          T* __restrict__ Y, int m, int n, int k, int act) {     \
        gemm_wgmma<T, BM, BN>(X, W, bias, R, Y, m, n, k, act);                                    \
    }

GEMM_WGMMA(128, 256, bf16, bf16)
GEMM_WGMMA(128, 256, f16, f16)
GEMM_WGMMA(128, 128, bf16, bf16)
GEMM_WGMMA(128, 128, f16, f16)
GEMM_WGMMA(64, 128, bf16, bf16)
GEMM_WGMMA(64, 128, f16, f16)

// ---- warp-specialised, TMA-fed ------------------------------------------------------------------

#define WS_STAGES 4

// A consumer warpgroup's main loop of the TMA kernels over the ring's k tiles it0 .. it0 +
// k_tiles − 1 (tile it in stage it % STAGES, phase it / STAGES): zeroes `acc`, then for each k
// tile waits on `full`, issues the warpgroup's 4 MMAs (rows 64·consumer.. of the A tile, all BN
// rows of the B tile), commits, and once the MMAs of the k tile before have retired
// (wgmma.wait_group 1) releases its stage on `empty`. Returns with every MMA retired; the last
// stage is released too if `release_last` (a persistent kernel's producer refills it).
template <typename T, int BN, int STAGES, int STAGE, int A_BYTES>
__device__ __forceinline__ void wgmma_tma_consume(float* acc, unsigned smem_base, unsigned long long* full,
                                                  unsigned long long* empty, int it0, int k_tiles, int consumer,
                                                  bool release_last) {
    constexpr int ACC = BN / 2;
#pragma unroll
    for (int i = 0; i < ACC; ++i) acc[i] = 0.0f;
    for (int kt = 0; kt < k_tiles; ++kt) {
        const int it = it0 + kt, s = it % STAGES;
        while (!mbarrier_try_wait_parity(&full[s], (it / STAGES) & 1)) {
        }
        const unsigned a = smem_base + s * STAGE + consumer * 64 * WG_ROW_BYTES;
        const unsigned b = smem_base + s * STAGE + A_BYTES;
        wgmma_fence_operands<ACC>(acc);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < WG_BK / 16; ++kk)
            Wgmma<T, BN>::mma(acc, wgmma_desc_sw128(a + kk * 32), wgmma_desc_sw128(b + kk * 32));
        wgmma_commit();
        wgmma_wait<1>();
        wgmma_fence_operands<ACC>(acc);
        // The previous k tile's MMAs have retired: its stage may be refilled.
        if (kt > 0) mbarrier_arrive(&empty[(it - 1) % STAGES]);
    }
    wgmma_wait<0>();
    wgmma_fence_operands<ACC>(acc);
    if (release_last && k_tiles > 0) mbarrier_arrive(&empty[(it0 + k_tiles - 1) % STAGES]);
}

// THREADS = (BM / 64 + 1) · 128: warpgroup 0 is the producer (its warp 0 works), warpgroups
// 1.. the consumers. THREADS = BM / 64 · 128 + 32: warpgroups 0.. are the consumers and the one
// warp after them the producer, so that fewer idle warps hold registers (the occ2 kernel).
template <typename T, int BM, int BN, int STAGES, int THREADS>
__device__ __forceinline__ void gemm_wgmma_tma(
    const TensorMap* x_map, const TensorMap* w_map, const float* __restrict__ bias,
    const T* __restrict__ R, T* __restrict__ Y, int m, int n, int k, int act) {
    constexpr int CONSUMERS = BM / 64;  // warpgroups
    constexpr bool PRODUCER_LAST = THREADS == CONSUMERS * 128 + 32;
    static_assert(PRODUCER_LAST || THREADS == (CONSUMERS + 1) * 128, "a producer warpgroup or warp");
    constexpr int A_BYTES = BM * WG_ROW_BYTES, B_BYTES = BN * WG_ROW_BYTES;
    constexpr int STAGE = A_BYTES + B_BYTES;
    constexpr int ACC = BN / 2;
    static_assert(A_BYTES % 1024 == 0 && B_BYTES % 1024 == 0, "stages stay 1024-byte aligned");

    // Stages, then the barriers; the host adds 1024 bytes of slack for the alignment.
    EMBER_DYNAMIC_SMEM(unsigned char, wgmma_tma_smem_raw);
    unsigned char* smem =
        wgmma_tma_smem_raw + ((1024 - (smem_u32(wgmma_tma_smem_raw) % 1024)) % 1024);
    const unsigned smem_base = smem_u32(smem);
    unsigned long long* full = reinterpret_cast<unsigned long long*>(smem + STAGES * STAGE);
    unsigned long long* empty = full + STAGES;

    // The producer's working warp, and the consumer warpgroup this thread is in (if any).
    const bool producer = PRODUCER_LAST ? threadIdx.x >= CONSUMERS * 128 : threadIdx.x < 128;
    const bool producer_warp = PRODUCER_LAST ? producer : threadIdx.x < 32;
    const int consumer = PRODUCER_LAST ? threadIdx.x / 128 : threadIdx.x / 128 - 1;
    const int block_m = blockIdx.y * BM, block_n = blockIdx.x * BN;
    const int k_tiles = (k + WG_BK - 1) / WG_BK;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(&full[s], 1);
            mbarrier_init(&empty[s], CONSUMERS * 128);
        }
        fence_mbarrier_init();
    }
    __syncthreads();

    float acc[ACC];
    if (producer) {
        // One warp; its lanes wait together (uniform control flow), lane 0 issues.
        if (producer_warp) {
            for (int kt = 0; kt < k_tiles; ++kt) {
                const int s = kt % STAGES;
                const unsigned round = kt / STAGES;
                // Round 0 passes at once (parity 1 "completed" before the first phase).
                while (!mbarrier_try_wait_parity(&empty[s], (round & 1) ^ 1)) {
                }
                if (threadIdx.x % 32 == 0) {
                    mbarrier_arrive_expect_tx(&full[s], STAGE);
                    tma_load_2d(smem + s * STAGE, x_map, kt * WG_BK, block_m, &full[s]);
                    tma_load_2d(smem + s * STAGE + A_BYTES, w_map, kt * WG_BK, block_n, &full[s]);
                }
            }
        }
    } else {
        wgmma_tma_consume<T, BN, STAGES, STAGE, A_BYTES>(acc, smem_base, full, empty, 0, k_tiles, consumer, false);
    }
    // Every MMA retired and every load landed (the consumers waited for all of them): the
    // stages are free for the epilogue.
    __syncthreads();
    constexpr int CS = BN + 8;
    float* Cs = reinterpret_cast<float*>(smem);
    if (!producer) {
        const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
        const int g = lane / 4, t = lane % 4;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = consumer * 64 + warp * 16 + g + half * 8;
                const int col = j * 8 + 2 * t;
                *reinterpret_cast<float2*>(Cs + row * CS + col) =
                    make_float2(acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1]);
            }
    }
    __syncthreads();
    gemm_store_tile<T, BM, BN, THREADS>(Cs, CS, bias, R, Y, m, n, block_m, block_n, act, threadIdx.x);
}

// MIN_BLOCKS = 2: two blocks on each multiprocessor (3 stages; 288 threads, so at most 112
// registers a thread), so that one block's epilogue overlaps the other's MMAs. src/gemm.rs's
// WGMMA_OCC2_STAGES is WS_OCC2_STAGES (a unit test reads this file to check).
#define WS_OCC2_STAGES 3
#define WS_OCC2_THREADS 288
#define GEMM_WGMMA_TMA(BM, BN, STAGES, THREADS, MIN_BLOCKS, T, NAME)                              \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) NAME(                       \
        const __grid_constant__ TensorMap x_map, const __grid_constant__ TensorMap w_map,         \
        const float* __restrict__ bias, const T* __restrict__ R, T* __restrict__ Y, int m, int n, \
        int k, int act) {                                                                         \
        gemm_wgmma_tma<T, BM, BN, STAGES, THREADS>(&x_map, &w_map, bias, R, Y, m, n, k, act);     \
    }

GEMM_WGMMA_TMA(128, 256, WS_STAGES, 384, 1, bf16, gemm_wgmma_tma_128x256_bf16)
GEMM_WGMMA_TMA(128, 256, WS_STAGES, 384, 1, f16, gemm_wgmma_tma_128x256_f16)
GEMM_WGMMA_TMA(128, 128, WS_STAGES, 384, 1, bf16, gemm_wgmma_tma_128x128_bf16)
GEMM_WGMMA_TMA(128, 128, WS_STAGES, 384, 1, f16, gemm_wgmma_tma_128x128_f16)
GEMM_WGMMA_TMA(128, 128, WS_OCC2_STAGES, WS_OCC2_THREADS, 2, bf16, gemm_wgmma_tma_128x128_occ2_bf16)
GEMM_WGMMA_TMA(128, 128, WS_OCC2_STAGES, WS_OCC2_THREADS, 2, f16, gemm_wgmma_tma_128x128_occ2_f16)

// ---- persistent ping-pong ----------------------------------------------------------------------

// gemm_wgmma_pingpong_128x128_{bf16,f16}: persistent and warp-specialised as CUTLASS's sm90
// "ping-pong" kernels, for FFN up (n = 3072, k = 768), where a tile's 12 k tiles take about as
// long as its epilogue. WS_PP_THREADS = 288 threads: consumer warpgroups 0 and 1, then the
// producer warp; one block per multiprocessor (WS_PP_STAGES stages of 32 KiB and 34 KiB of
// epilogue buffers), a grid of at most one block per multiprocessor.
//  - Block b takes the tiles b, b + G, b + 2G, … (G = gridDim.x, n fastest); its i-th tile goes
//    to consumer i % 2, which computes all of it (128 × 128: two m64n128k16 MMAs a k16 step,
//    128 accumulators a thread). The producer loads the block's tiles' k tiles in that order
//    through one ring of stages (`full`/`empty` as in gemm_wgmma_tma), running on across tiles.
//    A stage is consumed by one warpgroup, whose 4 warps each release it once (lane 0, after
//    the warp's wgmma.wait_group and a __syncwarp): `empty` counts 4 arrivals per block that
//    reads the stage.
//  - The two consumers take turns at the tensor cores: consumer c waits on `turn[c]` before its
//    main loop and arrives on `turn[1 − c]` once it has issued its last MMA, so that their main
//    loops run one after the other, in the producer's order, and each one's epilogue overlaps
//    the other's main loop. Consumer 0's first wait passes at once (parity 1, as the empty
//    stages' first round); consumer c's j-th main loop waits for the other's (j − 1 + c)-th.
//  - The epilogue is per warp, synchronised by __syncwarp alone: warp w of a consumer holds
//    rows 16w .. 16w + 15 of each 64-row half of the tile; it stages 8 of them at a time as f32
//    in its own buffer [WS_PP_EPI_ROWS][WS_PP_EPI_STRIDE] and stores them with
//    gemm_store_rows_warp (common.cuh: + b, act, + R, coalesced; each lane's bias values loaded
//    once, the activation's switch outside the loop), in 4 steps. The steps are unrolled, so
//    that each step's accumulators die as it stages them (under the 168 registers ptxas keeps to
//    for 288 threads; a rolled loop keeps all 128 live through every store and spills, though it
//    would hold one copy of the store instead of 4); gemm_store_rows_warp's row loop is not
//    unrolled, so that the 4 × 5 copies (steps × activations) stay ~110 KB of code, not ~190.
// gemm_wgmma_pingpong_mc_128x128_{bf16,f16}: the same in clusters of CLUSTER = 2 blocks
// (__cluster_dims__), which share the W tile through TMA multicast, so that each block reads 24
// KiB a stage from L2 instead of 32. Cluster q (blocks 2q and 2q + 1) takes the tile pairs q,
// q + G/2, … (n fastest over pairs of 128-row blocks); block r of the cluster computes rows
// (2·pair_m + r)·128 of the pair's columns. Its producer loads its X box into its own stage and
// rows 64r .. 64r + 63 of the W box into rows 64r.. of the stage's W tile of both blocks
// (multicast), each completing on that block's `full`, which its own producer armed for the
// whole stage (a peer's bytes may land before that arming: the transaction count may go
// negative for a while, which PTX allows). So a stage is refilled only once both blocks'
// consumers have released it: each warp arrives on its own block's `empty` and on the peer's
// (8 arrivals). Barrier init and the end are cluster-wide barriers, so that no block touches a
// peer's shared memory before the peer has initialised it or after it exited.
// Shared memory: the stages, the 8 warps' epilogue buffers, then full[STAGES], empty[STAGES],
// turn[2] (src/gemm.rs's dynamic_smem adds it up, with 1024 bytes of alignment slack).
// src/gemm.rs mirrors these four (a unit test reads this file). The buffers' row stride is in
// floats; its pad spreads a warp's 8 rows over the banks.
#define WS_PP_STAGES 5
#define WS_PP_THREADS 288
#define WS_PP_EPI_ROWS 8
#define WS_PP_EPI_STRIDE (128 + 8)

template <typename T, int CLUSTER>
__device__ __forceinline__ void gemm_wgmma_pingpong(
    const TensorMap* x_map, const TensorMap* w_map, const float* __restrict__ bias,
    const T* __restrict__ R, T* __restrict__ Y, int m, int n, int k, int act) {
    constexpr int BM = 128, BN = 128, STAGES = WS_PP_STAGES;
    constexpr int A_BYTES = BM * WG_ROW_BYTES, B_BYTES = BN * WG_ROW_BYTES;
    constexpr int STAGE = A_BYTES + B_BYTES;
    constexpr int B_ROWS = BN / CLUSTER;  // the rows of the W tile each block of a cluster loads
    constexpr int HALF_ACC = BN / 2;      // one m64n128 accumulator: 64 floats a thread
    constexpr int EPI_FLOATS = WS_PP_EPI_ROWS * WS_PP_EPI_STRIDE;  // one warp's buffer
    static_assert(CLUSTER == 1 || CLUSTER == 2, "a block or a pair");
    static_assert(WS_PP_THREADS == 2 * 128 + 32, "two consumer warpgroups, one producer warp");
    static_assert(WS_PP_EPI_ROWS == 8, "a step is one of a warp's 8-row fragment halves");
    static_assert((STAGES * STAGE) % 1024 == 0 && (B_ROWS * WG_ROW_BYTES) % 1024 == 0, "aligned parts");

    EMBER_DYNAMIC_SMEM(unsigned char, wgmma_pp_smem_raw);
    unsigned char* smem = wgmma_pp_smem_raw + ((1024 - (smem_u32(wgmma_pp_smem_raw) % 1024)) % 1024);
    const unsigned smem_base = smem_u32(smem);
    float* epilogue_buffers = reinterpret_cast<float*>(smem + STAGES * STAGE);
    unsigned long long* full = reinterpret_cast<unsigned long long*>(epilogue_buffers + 8 * EPI_FLOATS);
    unsigned long long* empty = full + STAGES;
    unsigned long long* turn = empty + STAGES;

    // Tiles in groups of CLUSTER row blocks (n fastest); this block's row block in a group.
    const int tiles_n = (n + BN - 1) / BN;
    const int groups = tiles_n * ((m + BM * CLUSTER - 1) / (BM * CLUSTER));
    const int rank = CLUSTER == 1 ? 0 : static_cast<int>(cluster_ctarank());
    const int first_group = blockIdx.x / CLUSTER, group_step = gridDim.x / CLUSTER;
    const int k_tiles = (k + WG_BK - 1) / WG_BK;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(&full[s], 1);
            mbarrier_init(&empty[s], 4 * CLUSTER);
        }
        for (int c = 0; c < 2; ++c) mbarrier_init(&turn[c], 128);
        fence_mbarrier_init();
    }
    if (CLUSTER == 1) __syncthreads();
    else cluster_sync();

    if (threadIdx.x >= 256) {
        // The producer warp; its lanes wait together (uniform control flow), lane 0 issues.
        int it = 0;  // k tiles loaded, over all the block's tiles
        for (int group = first_group; group < groups; group += group_step) {
            const int block_m = ((group / tiles_n) * CLUSTER + rank) * BM, block_n = (group % tiles_n) * BN;
            for (int kt = 0; kt < k_tiles; ++kt, ++it) {
                const int s = it % STAGES;
                // Round 0 passes at once (parity 1 "completed" before the first phase).
                while (!mbarrier_try_wait_parity(&empty[s], ((it / STAGES) & 1) ^ 1)) {
                }
                if (threadIdx.x % 32 == 0) {
                    unsigned char* stage = smem + s * STAGE;
                    mbarrier_arrive_expect_tx(&full[s], STAGE);
                    tma_load_2d(stage, x_map, kt * WG_BK, block_m, &full[s]);
                    if (CLUSTER == 1)
                        tma_load_2d(stage + A_BYTES, w_map, kt * WG_BK, block_n, &full[s]);
                    else
                        tma_load_2d_multicast(stage + A_BYTES + rank * B_ROWS * WG_ROW_BYTES, w_map, kt * WG_BK,
                                              block_n + rank * B_ROWS, &full[s], (1u << CLUSTER) - 1);
                }
            }
        }
    } else {
        const int c = threadIdx.x / 128;
        const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
        const int g = lane / 4, t = lane % 4;
        float* Cs = epilogue_buffers + (threadIdx.x / 32) * EPI_FLOATS;
        // A stage's MMAs have retired for this warp (all its lanes passed wgmma.wait_group):
        // lane 0 releases the stage on every block of the cluster that reads it.
        auto release = [&](int s) {
            __syncwarp();
            if (lane == 0) {
                if (CLUSTER == 1) {
                    mbarrier_arrive(&empty[s]);
                } else {
                    for (int peer = 0; peer < CLUSTER; ++peer) mbarrier_arrive_cluster(&empty[s], peer);
                }
            }
        };
        float acc[2 * HALF_ACC];  // rows 0–63 of the tile, then rows 64–127
        int j = 0;                // this consumer's tiles so far
        for (int group = first_group + c * group_step; group < groups; group += 2 * group_step, ++j) {
            const int block_m = ((group / tiles_n) * CLUSTER + rank) * BM, block_n = (group % tiles_n) * BN;
            const int it0 = (2 * j + c) * k_tiles;  // the block's k tiles before this tile's
            // Consumer 0's j-th main loop after consumer 1's (j − 1)-th; consumer 1's j-th after
            // consumer 0's j-th.
            const unsigned parity = c == 0 ? (j & 1) ^ 1 : j & 1;
            while (!mbarrier_try_wait_parity(&turn[c], parity)) {
            }
#pragma unroll
            for (int i = 0; i < 2 * HALF_ACC; ++i) acc[i] = 0.0f;
            for (int kt = 0; kt < k_tiles; ++kt) {
                const int it = it0 + kt, s = it % STAGES;
                while (!mbarrier_try_wait_parity(&full[s], (it / STAGES) & 1)) {
                }
                const unsigned a = smem_base + s * STAGE;
                const unsigned b = a + A_BYTES;
                wgmma_fence_operands<2 * HALF_ACC>(acc);
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < WG_BK / 16; ++kk) {
                    const unsigned long long desc_b = wgmma_desc_sw128(b + kk * 32);
                    Wgmma<T, BN>::mma(acc, wgmma_desc_sw128(a + kk * 32), desc_b);
                    Wgmma<T, BN>::mma(acc + HALF_ACC, wgmma_desc_sw128(a + 64 * WG_ROW_BYTES + kk * 32),
                                      desc_b);
                }
                wgmma_commit();
                wgmma_wait<1>();
                wgmma_fence_operands<2 * HALF_ACC>(acc);
                // The previous k tile's MMAs have retired: its stage may be refilled.
                if (kt > 0) release((it - 1) % STAGES);
            }
            // Every MMA of this tile is issued: the other consumer's main loop may start.
            mbarrier_arrive(&turn[c ^ 1]);
            wgmma_wait<0>();
            wgmma_fence_operands<2 * HALF_ACC>(acc);
            if (k_tiles > 0) release((it0 + k_tiles - 1) % STAGES);

            // Step 2h + half: rows 64h + 16·warp + 8·half + g of the tile, this thread's
            // acc[64h + 4jn + 2half + {0, 1}] at columns 8jn + 2t + {0, 1}.
#pragma unroll
            for (int step = 0; step < 4; ++step) {
#pragma unroll
                for (int jn = 0; jn < BN / 8; ++jn) {
                    const float* d = acc + (step / 2) * HALF_ACC + 4 * jn + 2 * (step % 2);
                    *reinterpret_cast<float2*>(Cs + g * WS_PP_EPI_STRIDE + jn * 8 + 2 * t) = make_float2(d[0], d[1]);
                }
                __syncwarp();
                const int row0 = block_m + 64 * (step / 2) + 16 * warp + 8 * (step % 2);
                gemm_store_rows_warp<T, WS_PP_EPI_ROWS, BN>(Cs, WS_PP_EPI_STRIDE, bias, R, Y, m, n, row0, block_n,
                                                            act, lane);
                __syncwarp();  // before the next step overwrites Cs
            }
        }
    }
    // No block of a cluster exits while a peer may still arrive on its barriers or multicast into
    // its stages.
    if (CLUSTER > 1) cluster_sync();
}

#define GEMM_WGMMA_PINGPONG(T, NAME)                                                              \
    extern "C" __global__ void __launch_bounds__(WS_PP_THREADS, 1) NAME(                          \
        const __grid_constant__ TensorMap x_map, const __grid_constant__ TensorMap w_map,         \
        const float* __restrict__ bias, const T* __restrict__ R, T* __restrict__ Y, int m, int n, \
        int k, int act) {                                                                         \
        gemm_wgmma_pingpong<T, 1>(&x_map, &w_map, bias, R, Y, m, n, k, act);                      \
    }
#define WS_MC_CLUSTER 2
#define GEMM_WGMMA_PINGPONG_MC(T, NAME)                                                           \
    extern "C" __global__ void __launch_bounds__(WS_PP_THREADS, 1)                               \
        __cluster_dims__(WS_MC_CLUSTER, 1, 1) NAME(                                               \
            const __grid_constant__ TensorMap x_map, const __grid_constant__ TensorMap w_map,     \
            const float* __restrict__ bias, const T* __restrict__ R, T* __restrict__ Y, int m,    \
            int n, int k, int act) {                                                              \
        gemm_wgmma_pingpong<T, WS_MC_CLUSTER>(&x_map, &w_map, bias, R, Y, m, n, k, act);          \
    }                                                                                             \
    EMBER_CLUSTER_DIMS(NAME, WS_MC_CLUSTER)

GEMM_WGMMA_PINGPONG(bf16, gemm_wgmma_pingpong_128x128_bf16)
GEMM_WGMMA_PINGPONG(f16, gemm_wgmma_pingpong_128x128_f16)
GEMM_WGMMA_PINGPONG_MC(bf16, gemm_wgmma_pingpong_mc_128x128_bf16)
GEMM_WGMMA_PINGPONG_MC(f16, gemm_wgmma_pingpong_mc_128x128_f16)

// ---- persistent, stored through the tensor memory accelerator ----------------------------------

// gemm_wgmma_tma_store_128x256_{bf16,f16}: WgmmaTma128x256's tile and main loop (two consumer
// warpgroups of 64 × 256, WS_ST_STAGES = 4 stages of 48 KiB), made persistent so that a tile's
// epilogue overlaps the next tile's loads and its own stores, for products with few k tiles
// (FFN up: 12), where the one-tile kernel spends a quarter of its time filling its stages and
// writing its tile (session 16's H200 run: 27.0 µs for 2 waves of 12 k tiles, against 9.5 µs a
// wave at the main loop's rate on FFN down). WS_ST_THREADS = 384: the two consumer warpgroups,
// then the producer warpgroup (its first warp works), which hands registers to the consumers
// with setmaxnreg (40 a thread for it, 232 for them; built first with 288 threads, a producer
// warp and no setmaxnreg, ptxas gave it 168 registers and 16 bytes of spills, nvrtc_compile's
// table); one block per multiprocessor, a grid of at most one block per multiprocessor.
//  - Block b takes the tiles b, b + G, … (G = gridDim.x, n fastest). The producer loads their
//    k tiles through one ring of stages, running on across tiles (as the ping-pong kernel's), so
//    the next tile's first stages fill while the consumers store this one.
//  - The epilogue is per warp, synchronised by __syncwarp alone (warp w of consumer c holds rows
//    64c + 16w .. + 15 of the tile), 64 columns at a time (4 boxes a tile): the warp stages 8 of
//    its rows as f32 in its scratch [8][64] (column pairs XOR-swizzled by row, so that both the
//    fragment's writes and the row reads are free of bank conflicts), computes act(acc + b) + R
//    row by row (gemm_store_rows_act's arithmetic, one lane a column pair, the activation's
//    switch outside the rolled row loop) into its 16 × 64 box of T (128-byte swizzled, as the Y
//    tensor map says), twice, and lane 0 hands the box to the TMA (tma_store_2d, which clips
//    rows past m and columns past n); the consumer goes on to the next box and, after the 4th,
//    the next tile's MMAs while the TMA reads the box and writes it out. Before the warp
//    rewrites its box, lane 0 waits until the last store has read it (bulk_wait_group_read<0>),
//    and at the end until every store has completed. Needs n % 8 == 0 (a 16-byte row stride for
//    Y's tensor map): src/gemm.rs runs WgmmaTma128x256 for any other n.
// Shared memory: the stages, the 8 warps' scratches (2 KiB) and boxes (2 KiB), then
// full[STAGES], empty[STAGES] (src/gemm.rs mirrors these defines; a unit test reads this file).
#define WS_ST_STAGES 4
#define WS_ST_THREADS 384
#define WS_ST_PRODUCER_REGS 40
#define WS_ST_CONSUMER_REGS 232
#define WS_ST_BOX_ROWS 16
#define WS_ST_BOX_COLS 64

// Rows r = 0 .. ROWS − 1 of a warp's scratch Cs [ROWS][64] (pairs XOR-swizzled by r % 4; staged
// by the warp, which synchronises first) into rows box_row0 + r of its box: act(Cs + b) + R,
// rounded once to T; lane l owns the columns col0 + 2l, + 1, whose bias values it holds (b0, b1:
// −0 without one). R is read at Y's row row0 + r (< m) and those columns (< n; n is even).
template <typename T, int ACT, int ROWS>
__device__ __forceinline__ void tma_box_rows_act(const float* Cs, float b0, float b1, const T* __restrict__ R,
                                                 int m, int n, int row0, int col0, unsigned char* box,
                                                 int box_row0, int lane) {
    const int col = col0 + 2 * lane;
    const bool in_n = col < n;
#pragma unroll 1
    for (int r = 0; r < ROWS; ++r) {
        const float2 c = *reinterpret_cast<const float2*>(Cs + r * WS_ST_BOX_COLS + ((2 * lane) ^ ((r & 3) << 3)));
        float v0 = activate(ACT, c.x + b0), v1 = activate(ACT, c.y + b1);
        const int g_row = row0 + r;
        if (R != nullptr && in_n && g_row < m) {
            const size_t at = static_cast<size_t>(g_row) * n + col;
            v0 += to_f32(R[at]);
            v1 += to_f32(R[at + 1]);
        }
        const int br = box_row0 + r;
        *reinterpret_cast<unsigned*>(box + br * WG_ROW_BYTES + (((lane / 4) ^ (br % 8)) * 16) + 4 * (lane % 4)) =
            pack2<T>(v0, v1);
    }
}

template <typename T, int ROWS>
__device__ __forceinline__ void tma_box_rows(const float* Cs, float b0, float b1, const T* __restrict__ R, int m,
                                             int n, int row0, int col0, unsigned char* box, int box_row0, int act,
                                             int lane) {
    EMBER_SWITCH_ACTIVATION(act,
                            (tma_box_rows_act<T, EMBER_ACT, ROWS>(Cs, b0, b1, R, m, n, row0, col0, box, box_row0, lane)))
}

template <typename T>
__device__ __forceinline__ void gemm_wgmma_tma_store(const TensorMap* x_map, const TensorMap* w_map,
                                                     const TensorMap* y_map, const float* __restrict__ bias,
                                                     const T* __restrict__ R, int m, int n, int k, int act) {
    constexpr int BM = 128, BN = 256, STAGES = WS_ST_STAGES;
    constexpr int A_BYTES = BM * WG_ROW_BYTES, B_BYTES = BN * WG_ROW_BYTES;
    constexpr int STAGE = A_BYTES + B_BYTES;
    constexpr int ACC = BN / 2;  // one m64n256 accumulator: 128 floats a thread
    constexpr int BOX_BYTES = WS_ST_BOX_ROWS * WS_ST_BOX_COLS * 2;
    constexpr int SCRATCH_FLOATS = (WS_ST_BOX_ROWS / 2) * WS_ST_BOX_COLS;
    constexpr int WARP_BYTES = SCRATCH_FLOATS * 4 + BOX_BYTES;
    static_assert(WS_ST_THREADS == 3 * 128, "two consumer warpgroups, one producer warpgroup");
    static_assert(WS_ST_PRODUCER_REGS * 128 + WS_ST_CONSUMER_REGS * 256 <= 65536, "the register file");
    static_assert(WS_ST_BOX_COLS * 2 == WG_ROW_BYTES && WS_ST_BOX_ROWS == 16, "a box is a warp's 16 rows, 128 bytes each");
    static_assert((STAGES * STAGE) % 1024 == 0 && WARP_BYTES % 1024 == 0 && (SCRATCH_FLOATS * 4) % 1024 == 0,
                  "boxes 1024-byte aligned (the swizzle)");

    EMBER_DYNAMIC_SMEM(unsigned char, wgmma_st_smem_raw);
    unsigned char* smem = wgmma_st_smem_raw + ((1024 - (smem_u32(wgmma_st_smem_raw) % 1024)) % 1024);
    const unsigned smem_base = smem_u32(smem);
    unsigned char* warp_areas = smem + STAGES * STAGE;
    unsigned long long* full = reinterpret_cast<unsigned long long*>(warp_areas + 8 * WARP_BYTES);
    unsigned long long* empty = full + STAGES;

    const int tiles_n = (n + BN - 1) / BN;
    const int tiles = tiles_n * ((m + BM - 1) / BM);
    const int k_tiles = (k + WG_BK - 1) / WG_BK;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(&full[s], 1);
            mbarrier_init(&empty[s], 2 * 128);
        }
        fence_mbarrier_init();
    }
    __syncthreads();

    if (threadIdx.x >= 256) {
        setmaxnreg_dec<WS_ST_PRODUCER_REGS>();
        if (threadIdx.x >= 256 + 32) return;  // warps 1–3 of the producer warpgroup: no work
        // The producer warp; its lanes wait together (uniform control flow), lane 0 issues.
        // (gemm_wgmma_tma's loop, running on across tiles; kept apart from it so that the
        // measured one-tile kernels' code stays as it is.)
        int it = 0;  // k tiles loaded, over all the block's tiles
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            const int block_m = (tile / tiles_n) * BM, block_n = (tile % tiles_n) * BN;
            for (int kt = 0; kt < k_tiles; ++kt, ++it) {
                const int s = it % STAGES;
                // Round 0 passes at once (parity 1 "completed" before the first phase).
                while (!mbarrier_try_wait_parity(&empty[s], ((it / STAGES) & 1) ^ 1)) {
                }
                if (threadIdx.x % 32 == 0) {
                    mbarrier_arrive_expect_tx(&full[s], STAGE);
                    tma_load_2d(smem + s * STAGE, x_map, kt * WG_BK, block_m, &full[s]);
                    tma_load_2d(smem + s * STAGE + A_BYTES, w_map, kt * WG_BK, block_n, &full[s]);
                }
            }
        }
        return;
    }
    setmaxnreg_inc<WS_ST_CONSUMER_REGS>();
    const int consumer = threadIdx.x / 128;
    const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    float* Cs = reinterpret_cast<float*>(warp_areas + (threadIdx.x / 32) * WARP_BYTES);
    unsigned char* box = warp_areas + (threadIdx.x / 32) * WARP_BYTES + SCRATCH_FLOATS * 4;
    float acc[ACC];
    int it = 0;  // k tiles consumed, over all the block's tiles
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int block_m = (tile / tiles_n) * BM, block_n = (tile % tiles_n) * BN;
        wgmma_tma_consume<T, BN, STAGES, STAGE, A_BYTES>(acc, smem_base, full, empty, it, k_tiles, consumer, true);
        it += k_tiles;

        // Box q (columns 64q ..) of the warp's rows: halves 0 and 1 are the fragment's rows g and
        // g + 8, this thread's acc[4j + 2half + {0, 1}] at columns 8j + 2t + {0, 1}, j = 8q + jj.
        const int row0 = block_m + 64 * consumer + 16 * warp;
#pragma unroll
        for (int q = 0; q < BN / WS_ST_BOX_COLS; ++q) {
            const int col0 = block_n + WS_ST_BOX_COLS * q;
            float b0 = -0.0f, b1 = -0.0f;
            if (bias != nullptr && col0 + 2 * lane < n) {
                const float2 bb = *reinterpret_cast<const float2*>(bias + col0 + 2 * lane);
                b0 = bb.x;
                b1 = bb.y;
            }
#pragma unroll
            for (int half = 0; half < 2; ++half) {
#pragma unroll
                for (int jj = 0; jj < WS_ST_BOX_COLS / 8; ++jj) {
                    const float* d = acc + 4 * (8 * q + jj) + 2 * half;
                    *reinterpret_cast<float2*>(Cs + g * WS_ST_BOX_COLS + ((8 * jj + 2 * t) ^ ((g & 3) << 3))) =
                        make_float2(d[0], d[1]);
                }
                if (half == 0 && lane == 0) bulk_wait_group_read<0>();  // the last box's store has read it
                __syncwarp();
                tma_box_rows<T, WS_ST_BOX_ROWS / 2>(Cs, b0, b1, R, m, n, row0 + 8 * half, col0, box, 8 * half, act,
                                                    lane);
                __syncwarp();  // before the scratch (half 0) or the box (the store) is read again
            }
            fence_proxy_async_shared();  // the box's st.shared, before the TMA reads it
            __syncwarp();
            if (lane == 0) {
                tma_store_2d(y_map, col0, row0, box);
                bulk_commit_group();
            }
        }
    }
    if (lane == 0) bulk_wait_group<0>();  // the boxes stay in shared memory until written
}

#define GEMM_WGMMA_TMA_STORE(T, NAME)                                                               \
    extern "C" __global__ void __launch_bounds__(WS_ST_THREADS, 1) NAME(                            \
        const __grid_constant__ TensorMap x_map, const __grid_constant__ TensorMap w_map,           \
        const __grid_constant__ TensorMap y_map, const float* __restrict__ bias,                    \
        const T* __restrict__ R, int m, int n, int k, int act) {                                    \
        gemm_wgmma_tma_store<T>(&x_map, &w_map, &y_map, bias, R, m, n, k, act);                     \
    }

GEMM_WGMMA_TMA_STORE(bf16, gemm_wgmma_tma_store_128x256_bf16)
GEMM_WGMMA_TMA_STORE(f16, gemm_wgmma_tma_store_128x256_f16)
