// common.cuh: what every kernels/*.cu shares. No CUDA header is included (NVRTC ships none):
// bf16/f16 are raw 16-bit patterns converted with PTX `cvt`, tensor-core and async-copy
// instructions are inline PTX. Needs sm_80 or newer (cvt.rn.bf16.f32, cp.async, mma bf16).
//
// Shape legend (as in crates/ember-cpu): T = tokens of a packed batch (sequences concatenated,
// no padding), H = hidden size, nh = heads, hd = head dim (H = nh·hd).
#pragma once

// ---- element types ------------------------------------------------------------------------

// bfloat16 and IEEE half as their bits: distinct types so that overloads pick the conversion.
struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

// ---- the PTX primitives ----------------------------------------------------------------------
//
// Every instruction the kernels use that is not plain C++ is one of these wrappers; nothing else
// in kernels/ is inline PTX. With EMBER_CPU_EMULATION defined the same names come from the CPU
// emulation instead (crates/ember-cuda/emu/), which runs the unchanged kernels under g++.

#ifdef EMBER_CPU_EMULATION
#include "emulation.h"
#else
// A kernel's dynamic shared memory, `T name[]`, 16-byte aligned.
#define EMBER_DYNAMIC_SMEM(T, name) extern __shared__ __align__(16) T name[]
// After a kernel declared __cluster_dims__(x, 1, 1): tells the emulation (emulation.h) to launch
// it in clusters of x; nothing here, where the CUBIN carries the cluster shape.
#define EMBER_CLUSTER_DIMS(kernel, x)

__device__ __forceinline__ float ptx_cvt_f32_f16(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
// Round to nearest even, NaN stays NaN.
__device__ __forceinline__ unsigned short ptx_cvt_bf16_f32(float x) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ unsigned short ptx_cvt_f16_f32(float x) {
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
// Two values rounded as one 32-bit word, `lo` in the lower half (at the lower address).
// cvt puts its first source in the upper half.
__device__ __forceinline__ unsigned ptx_cvt_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ unsigned ptx_cvt_f16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// 2^x and 1/x on the multifunction unit, one instruction each (the activations' exponential and
// reciprocal): ex2.approx.ftz within 2 ulp, rcp.approx.ftz within 1 ulp, subnormal inputs and
// results flushed to zero. __expf and __fdividef are the same approximations without .ftz, which
// on sm_90 wraps each in 3–4 instructions that rescale subnormals; the activations' arguments
// never need that (see activate).
__device__ __forceinline__ float ptx_ex2_approx_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float ptx_rcp_approx_ftz(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Async copies and tensor cores (sm_80).

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes global → shared without passing through registers; bytes past `src_bytes`
// (0 or 16 here) are zero-filled, so out-of-range rows read nothing and contribute zeros.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
                 "l"(gmem), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8×8 b16 matrices from shared memory: lanes 8i..8i+7 give the row addresses of matrix i;
// lane l receives row l/4, columns 2·(l%4), 2·(l%4)+1 of each matrix, in r[0..3].
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* smem_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(smem_row))
                 : "memory");
}

// D = A·B + D on one m16n8k16 tile, f32 accumulators. Fragments (g = lane/4, t = lane%4):
// a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..];
// b[0] = B[2t..2t+1][g], b[1] = B[2t+8..][g]; d[0..1] = D[g][2t..2t+1], d[2..3] = D[g+8][2t..].
__device__ __forceinline__ void ptx_mma_bf16(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void ptx_mma_f16(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif  // EMBER_CPU_EMULATION

// ---- element conversions --------------------------------------------------------------------

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) {
    return __uint_as_float(static_cast<unsigned>(x.bits) << 16);
}
__device__ __forceinline__ float to_f32(f16 x) { return ptx_cvt_f32_f16(x.bits); }

// Round to nearest even, NaN stays NaN: what torch's .to(bfloat16) / .half() do.
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return bf16{ptx_cvt_bf16_f32(x)}; }
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) { return f16{ptx_cvt_f16_f32(x)}; }

// Two values as one 32-bit word, `lo` at the lower address (little-endian pairs).
template <typename T> __device__ __forceinline__ unsigned pack2(float lo, float hi);
template <> __device__ __forceinline__ unsigned pack2<bf16>(float lo, float hi) { return ptx_cvt_bf16x2(lo, hi); }
template <> __device__ __forceinline__ unsigned pack2<f16>(float lo, float hi) { return ptx_cvt_f16x2(lo, hi); }

__device__ __forceinline__ float f32_infinity() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float f32_nan() { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ float f32_neg_inf() { return -f32_infinity(); }

// D = A·B + D on one m16n8k16 tile (ptx_mma_bf16 / ptx_mma_f16 above).
template <typename T> __device__ __forceinline__ void mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2]);
template <> __device__ __forceinline__ void mma_m16n8k16<bf16>(float d[4], const unsigned a[4], const unsigned b[2]) {
    ptx_mma_bf16(d, a, b);
}
template <> __device__ __forceinline__ void mma_m16n8k16<f16>(float d[4], const unsigned a[4], const unsigned b[2]) {
    ptx_mma_f16(d, a, b);
}

// ---- activations: crates/ember-cpu/src/activation.rs ----------------------------------------

// Same numbering as the Rust side (ember_cuda::Activation as i32).
#define ACT_IDENTITY 0
#define ACT_GELU 1
#define ACT_GELU_TANH 2
#define ACT_RELU 3
#define ACT_SILU 4

// ½·erfc(|x|/√2), x ≥ 0 or not: Numerical Recipes' `erfcc` (Press et al., §6.2; a Chebyshev fit
// of erfc(z)·e^{z²} in t = 1/(1 + z/2), fractional error below 1.2e-7 for every z ≥ 0), one
// reciprocal and one exponential on the multifunction unit, no branch: GELU in ~23 instructions
// an element where erfcf took 49 (SASS of NVRTC 12.9, sm_90a), which the fused FFN-up epilogue
// runs 16,384 times a 128 × 128 tile. Error of the GELU in f32 (exact exp and division, |x| ≤ 6):
// 3.6e-6 relative, 3.8e-7 absolute at most, as erfcf's 2.8e-6; ex2.approx adds up to 2 ulp of
// e^{a} and the rounding of a·log₂e about |a|·2⁻²⁴ relative (a = −19 at |x| = 6: 1.1e-6).
// The .ftz flushes cannot matter: 1/(1 + z/2) is subnormal only for |x| > 2^127 (t = 0 gives
// the tail 0, its limit), and e^{a} only where a < −87.3, i.e. |x| > 13.2, where the tail
// (below 1e-38) is 0 to every output dtype but f32, and 0 in place of it leaves GELU(x) within
// 2e-37 of itself.
#define EMBER_LOG2_E 1.44269504088896341f
__device__ __forceinline__ float half_erfc_abs_over_sqrt2(float x) {
    const float z = fabsf(x) * 0.70710678118654752f;
    const float t = ptx_rcp_approx_ftz(fmaf(0.5f, z, 1.0f));
    float p = fmaf(t, 0.17087277f, -0.82215223f);
    p = fmaf(t, p, 1.48851587f);
    p = fmaf(t, p, -1.13520398f);
    p = fmaf(t, p, 0.27886807f);
    p = fmaf(t, p, -0.18628806f);
    p = fmaf(t, p, 0.09678418f);
    p = fmaf(t, p, 0.37409196f);
    p = fmaf(t, p, 1.00002368f);
    p = fmaf(t, p, -1.26551223f);
    return 0.5f * t * ptx_ex2_approx_ftz(fmaf(-z, z, p) * EMBER_LOG2_E);
}

// y = act(x).
// Gelu:     ½·x·(1 + erf(x/√2)) = x·Φ(x), Φ(x) = ½·erfc(−x/√2): ½·erfc(|x|/√2) for x ≤ 0 (no
//           cancellation), 1 − that for x > 0 (half_erfc_abs_over_sqrt2).
// GeluTanh: ½·x·(1 + tanh u) = x / (1 + e^{−2u}), u = √(2/π)·(x + 0.044715·x³), −2u ≥ −80.
// SiLU:     x / (1 + e^{−x}), −x ≥ −80.
// (Both exponentiate and take the reciprocal on the multifunction unit, ex2.approx.ftz within
// 2 ulp, rcp.approx.ftz within 1 ulp: an IEEE division inlines a call to its slow path at every
// copy of the epilogue. With the exponent floored at −80, e^{…} ≥ e^{−80} is normal; a
// denominator past 2^126 (x far below 0) has a flushed or zero reciprocal and gives x·0 = −0,
// the function's limit there, within 1e-37 of it.)
// Relu:     x < 0 ? 0 : x, so NaN passes through as on the CPU.
__device__ __forceinline__ float activate(int act, float x) {
    switch (act) {
    case ACT_GELU: {
        const float tail = half_erfc_abs_over_sqrt2(x);
        return x * (x > 0.0f ? 1.0f - tail : tail);
    }
    case ACT_GELU_TANH: {
        float minus_2u = -2.0f * 0.7978845608f * x * fmaf(x * x, 0.044715f, 1.0f);
        return x * ptx_rcp_approx_ftz(1.0f + ptx_ex2_approx_ftz(fmaxf(minus_2u, -80.0f) * EMBER_LOG2_E));
    }
    case ACT_RELU:
        return x < 0.0f ? 0.0f : x;
    case ACT_SILU:  // torch's x / (1 + e^{−x}); the exponent floored at −80 (x > 80 gives x)
        return x * ptx_rcp_approx_ftz(1.0f + ptx_ex2_approx_ftz(fmaxf(-x, -80.0f) * EMBER_LOG2_E));
    default:
        return x;
    }
}

// Runs the expression CALL, which names the activation as the constant EMBER_ACT, in a switch on
// `act` (ACT_*): an epilogue's loops are instantiated once for each activation and the switch
// stays outside them. (A generic lambda would say it without a macro, but NVRTC takes device
// lambdas only with --extended-lambda.) CALL goes in parentheses when it holds commas.
#define EMBER_SWITCH_ACTIVATION(act, CALL)            \
    switch (act) {                                    \
    case ACT_GELU: {                                  \
        constexpr int EMBER_ACT = ACT_GELU;           \
        CALL;                                         \
    } break;                                          \
    case ACT_GELU_TANH: {                             \
        constexpr int EMBER_ACT = ACT_GELU_TANH;      \
        CALL;                                         \
    } break;                                          \
    case ACT_RELU: {                                  \
        constexpr int EMBER_ACT = ACT_RELU;           \
        CALL;                                         \
    } break;                                          \
    case ACT_SILU: {                                  \
        constexpr int EMBER_ACT = ACT_SILU;           \
        CALL;                                         \
    } break;                                          \
    default: {                                        \
        constexpr int EMBER_ACT = ACT_IDENTITY;       \
        CALL;                                         \
    } break;                                          \
    }

// ---- warp reductions ------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// fmaxf drops a NaN operand; scores that are NaN still reach the output through exp().
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// ---- GEMM epilogue ----------------------------------------------------------------------------

// The tensor-core GEMMs' (gemm.cu, gemm_sm90.cu) common epilogue, for an activation known at
// compile time: rows r0, r0 + r_step, … (< rows) of an f32 accumulator tile Cs [rows][cs] (row
// stride cs floats, even; staged by the caller, which synchronises first) become
// Y[row0 + r][col0 + c] = act(Cs[r][c] + b) + R for c < BN (a multiple of 64), rounded once to T;
// rows past m and columns past n are skipped. Each lane of a warp owns the column pairs 2l + 64q
// of every row it stores, so that its bias values are loaded once and the warp reads Cs and writes
// Y 256 contiguous bytes of a row at a time. An absent bias adds −0, which leaves every value
// (−0 too) as it is.
template <typename T, int BN, int ACT, int UNROLL>
__device__ __forceinline__ void gemm_store_rows_act(
    const float* Cs, int cs, int r0, int r_step, int rows, const float* __restrict__ bias,
    const T* __restrict__ R, T* __restrict__ Y, int m, int n, int row0, int col0, int lane) {
    static_assert(BN % 64 == 0, "whole 64-column groups");
    constexpr int Q = BN / 64;
    const bool paired = (n % 2) == 0;  // then (col, col + 1) is one aligned 32-bit word of Y
    float b[Q][2];
    bool in_n[Q][2];
#pragma unroll
    for (int q = 0; q < Q; ++q)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int col = col0 + 64 * q + 2 * lane + e;
            in_n[q][e] = col < n;
            b[q][e] = bias != nullptr && in_n[q][e] ? bias[col] : -0.0f;
        }
    // UNROLL rows at a time: see gemm_store_rows.
#pragma unroll(UNROLL)
    for (int r = r0; r < rows; r += r_step) {
        const int g_row = row0 + r;
        if (g_row >= m) break;
#pragma unroll
        for (int q = 0; q < Q; ++q) {
            if (!in_n[q][0]) continue;
            const int col = col0 + 64 * q + 2 * lane;
            const float2 c = *reinterpret_cast<const float2*>(Cs + r * cs + 64 * q + 2 * lane);
            float v[2] = {activate(ACT, c.x + b[q][0]), activate(ACT, c.y + b[q][1])};
            const size_t at = static_cast<size_t>(g_row) * n + col;
            if (R) {
                v[0] += to_f32(R[at]);
                if (in_n[q][1]) v[1] += to_f32(R[at + 1]);
            }
            if (paired) {
                *reinterpret_cast<unsigned*>(Y + at) = pack2<T>(v[0], v[1]);
            } else {
                Y[at] = from_f32<T>(v[0]);
                if (in_n[q][1]) Y[at + 1] = from_f32<T>(v[1]);
            }
        }
    }
}

// gemm_store_rows_act for the activation `act` (ACT_*): the switch is outside the loops.
// UNROLL rows a loop iteration: by default two for 128 columns (8 independent activations a
// lane), one for 256 (the same 8) and for 64 (gemm_mma_64x64 spills at two).
template <typename T, int BN, int UNROLL = (BN == 128 ? 2 : 1)>
__device__ __forceinline__ void gemm_store_rows(
    const float* Cs, int cs, int r0, int r_step, int rows, const float* __restrict__ bias,
    const T* __restrict__ R, T* __restrict__ Y, int m, int n, int row0, int col0, int act, int lane) {
    EMBER_SWITCH_ACTIVATION(act, (gemm_store_rows_act<T, BN, EMBER_ACT, UNROLL>(Cs, cs, r0, r_step, rows, bias, R,
                                                                                 Y, m, n, row0, col0, lane)))
}

// The whole BM × BN tile Cs [BM][cs] into Y[block_m.., block_n..] by THREADS threads (`tid` is
// this one's index among them, 0 .. THREADS − 1): warp w stores rows w, w + THREADS/32, ….
template <typename T, int BM, int BN, int THREADS>
__device__ __forceinline__ void gemm_store_tile(
    const float* Cs, int cs, const float* __restrict__ bias, const T* __restrict__ R,
    T* __restrict__ Y, int m, int n, int block_m, int block_n, int act, int tid) {
    static_assert(THREADS % 32 == 0, "whole warps");
    gemm_store_rows<T, BN>(Cs, cs, tid / 32, THREADS / 32, BM, bias, R, Y, m, n, block_m, block_n, act,
                           tid % 32);
}

// One warp's ROWS × BN tile Cs [ROWS][cs] (staged by the warp, which synchronises first) into
// Y[row0.., col0..], one row a loop iteration: its caller (the ping-pong GEMM) inlines it 4 times
// for each activation, and overlaps it with the other consumer's MMAs, so its code's size
// (instruction cache) matters more than its ILP.
template <typename T, int ROWS, int BN>
__device__ __forceinline__ void gemm_store_rows_warp(
    const float* Cs, int cs, const float* __restrict__ bias, const T* __restrict__ R,
    T* __restrict__ Y, int m, int n, int row0, int col0, int act, int lane) {
    gemm_store_rows<T, BN, 1>(Cs, cs, 0, 1, ROWS, bias, R, Y, m, n, row0, col0, act, lane);
}
