// activation.cu: a gated linear unit's gate, ModernBERT's GeGLU (crates/ember-cpu/src/activation.rs,
// `gated_activation`): for x [rows, 2F] (the up-projection's input half, then its gate half),
//
//   out[r, j] = act(x[r, j]) · x[r, F + j]        out [rows, F]
//
// act as in common.cuh's `activate`, in f32; bf16/f16 values are widened on load and rounded once
// on store. One thread per output value, a grid-stride loop.
#include "common.cuh"

#define GATED_THREADS 256

template <typename T>
__device__ __forceinline__ void gated_activation(const T* __restrict__ x, T* __restrict__ out,
                                                 long long rows, int f, int act) {
    const long long n = rows * f;
    for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < n;
         e += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long r = e / f;
        const int j = static_cast<int>(e % f);
        const T* xr = x + r * 2 * f;
        out[e] = from_f32<T>(__fmul_rn(activate(act, to_f32(xr[j])), to_f32(xr[f + j])));
    }
}

#define GATED(T, SUFFIX)                                                                        \
    extern "C" __global__ void __launch_bounds__(GATED_THREADS) gated_activation_##SUFFIX(      \
        const T* __restrict__ x, T* __restrict__ out, long long rows, int f, int act) {         \
        gated_activation<T>(x, out, rows, f, act);                                              \
    }

GATED(float, f32)
GATED(bf16, bf16)
GATED(f16, f16)
