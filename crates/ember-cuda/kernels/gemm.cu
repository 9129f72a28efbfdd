// gemm.cu: the linear layer Y = act(X·Wᵀ + b) + R, BERT's every projection
// (crates/ember-cpu/src/gemm.rs). X is [m, k], W is [n, k] (nn.Linear layout: both K-contiguous,
// which is the "row.col" operand order of mma), b is [n] f32, R and Y are [m, n]. b and R may be
// null. All row-major.
//
// 1. gemm_mma_<BM>x<BN>_{bf16,f16}: tensor cores. bf16/f16 operands, f32 accumulation with
//    mma.sync.m16n8k16; per block a BM×BN tile of Y, 256 threads = 8 warps as 2 (m) × 4 (n), each
//    warp (BM/2)×(BN/4) = (BM/32)×(BN/32) m16n8 tiles. K advances in BK = 32 steps through a
//    STAGES = 3 ring of shared-memory tiles filled by cp.async (16-byte chunks, zero-filled past
//    m, n and k), rows padded to BK + 8 halves (80 bytes) so ldmatrix's 8 row reads hit 8
//    distinct 16-byte bank groups. Fragments come from ldmatrix.x4. The epilogue stages the
//    f32 tile in shared memory, then applies + b, act, + R in f32 with coalesced accesses and
//    rounds once to bf16/f16.
//    Needs k % 8 == 0 (the host checks) and 16-byte-aligned X and W (every DeviceTensor is a
//    whole cudarc allocation, 256-byte aligned, and there are no sub-views).
// 2. gemm_f32: exact f32 on CUDA cores. 64×64 tile per 256-thread block, each thread 4×4
//    outputs, BK = 16; every output is one fmaf chain over k = 0, 1, … from 0, then + b, act,
//    + R: the same operations in the same order as ember-cpu's AVX2/AVX-512 kernels. Any shape.
#include "common.cuh"

#define GEMM_THREADS 256
#define GEMM_BK 32
#define GEMM_STAGES 3
#define GEMM_LDS (GEMM_BK + 8)  // shared row stride, halves

// Dynamic shared memory of the mma kernel: the larger of the pipeline, STAGES × (BM + BN) rows
// × LDS halves, and the epilogue's f32 tile, BM × (BN + 8) floats. 128×128: 69,632 bytes
// (above the 48 KiB default: the host raises the limit once); 64×64: 30,720.

template <typename T, int BM, int BN>
__device__ __forceinline__ void gemm_mma_load_tile(
    unsigned short* As, unsigned short* Bs, const T* __restrict__ X, const T* __restrict__ W,
    int m, int n, int k, int block_m, int block_n, int k0) {
    constexpr int CHUNKS = GEMM_BK / 8;  // 16-byte chunks per row
    static_assert((BM * CHUNKS) % GEMM_THREADS == 0 && (BN * CHUNKS) % GEMM_THREADS == 0,
                  "every thread copies the same number of chunks");
#pragma unroll
    for (int i = 0; i < BM * CHUNKS / GEMM_THREADS; ++i) {
        const int c = threadIdx.x + i * GEMM_THREADS;
        const int row = c / CHUNKS, kk = (c % CHUNKS) * 8;
        const int g_row = block_m + row, g_k = k0 + kk;
        const bool valid = g_row < m && g_k < k;
        const T* src = valid ? X + static_cast<size_t>(g_row) * k + g_k : X;
        cp_async_16(As + row * GEMM_LDS + kk, src, valid ? 16 : 0);
    }
#pragma unroll
    for (int i = 0; i < BN * CHUNKS / GEMM_THREADS; ++i) {
        const int c = threadIdx.x + i * GEMM_THREADS;
        const int row = c / CHUNKS, kk = (c % CHUNKS) * 8;
        const int g_row = block_n + row, g_k = k0 + kk;
        const bool valid = g_row < n && g_k < k;
        const T* src = valid ? W + static_cast<size_t>(g_row) * k + g_k : W;
        cp_async_16(Bs + row * GEMM_LDS + kk, src, valid ? 16 : 0);
    }
}

template <typename T, int BM, int BN>
__device__ __forceinline__ void gemm_mma(
    const T* __restrict__ X, const T* __restrict__ W, const float* __restrict__ bias,
    const T* __restrict__ R, T* __restrict__ Y, int m, int n, int k, int act) {
    constexpr int WM = BM / 2, WN = BN / 4;  // warp tile
    constexpr int MI = WM / 16, NI = WN / 8;  // m16 and n8 tiles per warp
    static_assert(NI % 2 == 0, "B fragments are loaded two n8 tiles at a time");
    constexpr int STAGE = (BM + BN) * GEMM_LDS;  // halves per stage

    EMBER_DYNAMIC_SMEM(unsigned short, gemm_smem);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int warp_m = warp / 4, warp_n = warp % 4;
    const int block_m = blockIdx.y * BM, block_n = blockIdx.x * BN;

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

    const int k_tiles = (k + GEMM_BK - 1) / GEMM_BK;
#pragma unroll
    for (int s = 0; s < GEMM_STAGES - 1; ++s) {
        if (s < k_tiles) {
            unsigned short* As = gemm_smem + s * STAGE;
            gemm_mma_load_tile<T, BM, BN>(As, As + BM * GEMM_LDS, X, W, m, n, k, block_m, block_n, s * GEMM_BK);
        }
        cp_async_commit();
    }

    for (int kt = 0; kt < k_tiles; ++kt) {
        // Tile kt has landed (at most STAGES − 2 younger groups in flight) and every warp is
        // done with the stage the next load overwrites (it was computed on in iteration kt − 1).
        cp_async_wait<GEMM_STAGES - 2>();
        __syncthreads();
        const int next = kt + GEMM_STAGES - 1;
        if (next < k_tiles) {
            unsigned short* As = gemm_smem + (next % GEMM_STAGES) * STAGE;
            gemm_mma_load_tile<T, BM, BN>(As, As + BM * GEMM_LDS, X, W, m, n, k, block_m, block_n, next * GEMM_BK);
        }
        cp_async_commit();

        const unsigned short* As = gemm_smem + (kt % GEMM_STAGES) * STAGE;
        const unsigned short* Bs = As + BM * GEMM_LDS;
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk += 16) {
            unsigned a[MI][4], b[NI][2];
#pragma unroll
            for (int i = 0; i < MI; ++i) {
                // Matrices: rows 0–7 / 8–15 × k 0–7 / 8–15 → a[0], a[1], a[2], a[3].
                const int row = warp_m * WM + i * 16 + (lane % 16);
                ldmatrix_x4(a[i], As + row * GEMM_LDS + kk + (lane / 16) * 8);
            }
#pragma unroll
            for (int j = 0; j < NI; j += 2) {
                // Matrices: (n 0–7, k 0–7), (n 0–7, k 8–15), (n 8–15, k 0–7), (n 8–15, k 8–15)
                // → b[j][0], b[j][1], b[j+1][0], b[j+1][1].
                const int row = warp_n * WN + j * 8 + (lane % 8) + (lane / 16) * 8;
                unsigned r[4];
                ldmatrix_x4(r, Bs + row * GEMM_LDS + kk + ((lane / 8) % 2) * 8);
                b[j][0] = r[0];
                b[j][1] = r[1];
                b[j + 1][0] = r[2];
                b[j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) mma_m16n8k16<T>(acc[i][j], a[i], b[j]);
        }
    }
    cp_async_wait<0>();

    // Epilogue through shared memory (the pipeline's stages are free now): the accumulators go
    // to an f32 tile Cs [BM][BN + 8] (float2 stores: two wavefronts per warp, the minimum), then
    // gemm_store_tile (common.cuh) applies + b, act, + R and writes Y.
    // Accumulator (i, j, r) is row g (+8 for r ≥ 2), columns 2t, 2t+1 of its m16n8 tile.
    constexpr int CS = BN + 8;
    float* Cs = reinterpret_cast<float*>(gemm_smem);
    const int g = lane / 4, t = lane % 4;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = warp_m * WM + i * 16 + g + half * 8;
                const int col = warp_n * WN + j * 8 + 2 * t;
                *reinterpret_cast<float2*>(Cs + row * CS + col) =
                    make_float2(acc[i][j][2 * half], acc[i][j][2 * half + 1]);
            }
    __syncthreads();

    gemm_store_tile<T, BM, BN, GEMM_THREADS>(Cs, CS, bias, R, Y, m, n, block_m, block_n, act, threadIdx.x);
}

#define GEMM_MMA(BM, BN, T, SUFFIX)                                                               \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                    \
        gemm_mma_##BM##x##BN##_##SUFFIX(const T* __restrict__ X, const T* __restrict__ W,         \
                                        const float* __restrict__ bias, const T* __restrict__ R,  \
                                        T* __restrict__ Y, int m, int n, int k, int act) {       \
        gemm_mma<T, BM, BN>(X, W, bias, R, Y, m, n, k, act);                                      \
    }

GEMM_MMA(128, 128, bf16, bf16)
GEMM_MMA(128, 128, f16, f16)
GEMM_MMA(64, 64, bf16, bf16)
GEMM_MMA(64, 64, f16, f16)

// ---- exact f32 ------------------------------------------------------------------------------

#define GEMM_F32_BM 64
#define GEMM_F32_BN 64
#define GEMM_F32_BK 16

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
gemm_f32(const float* __restrict__ X, const float* __restrict__ W, const float* __restrict__ bias,
         const float* __restrict__ R, float* __restrict__ Y, int m, int n, int k, int act) {
    // k-major tiles: a thread's 4 rows (4 columns) are 4 consecutive floats of one k row.
    __shared__ float Xs[GEMM_F32_BK][GEMM_F32_BM + 4];
    __shared__ float Ws[GEMM_F32_BK][GEMM_F32_BN + 4];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // 16 × 16 threads
    const int block_m = blockIdx.y * GEMM_F32_BM, block_n = blockIdx.x * GEMM_F32_BN;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += GEMM_F32_BK) {
        // 64 × 16 values of each operand, 4 per thread; consecutive threads read consecutive k.
#pragma unroll
        for (int e = threadIdx.x; e < GEMM_F32_BM * GEMM_F32_BK; e += GEMM_THREADS) {
            const int row = e / GEMM_F32_BK, kk = e % GEMM_F32_BK;
            const int g_k = k0 + kk;
            const int x_row = block_m + row, w_row = block_n + row;
            Xs[kk][row] = (x_row < m && g_k < k) ? X[static_cast<size_t>(x_row) * k + g_k] : 0.0f;
            Ws[kk][row] = (w_row < n && g_k < k) ? W[static_cast<size_t>(w_row) * k + g_k] : 0.0f;
        }
        __syncthreads();
        const int k_len = min(GEMM_F32_BK, k - k0);  // zero padding must not join the chain
        for (int kk = 0; kk < k_len; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = Xs[kk][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Ws[kk][tx * 4 + j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int row = block_m + ty * 4 + i;
        if (row >= m) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int col = block_n + tx * 4 + j;
            if (col >= n) continue;
            float y = acc[i][j];
            if (bias) y += bias[col];
            y = activate(act, y);
            if (R) y += R[static_cast<size_t>(row) * n + col];
            Y[static_cast<size_t>(row) * n + col] = y;
        }
    }
}
