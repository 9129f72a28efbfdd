//! The FMA peak probe: the denominator of every throughput ratio Ember reports.
//!
//! Independent chains of `a·b + c` on the widest vectors of an instruction set, kept in
//! registers (no memory traffic): 24 zmm chains for AVX-512 and 12 ymm chains for AVX2+FMA, enough to
//! cover two FMA pipes × 4-cycle latency. The machine is shared and noisy, so a kernel's GFLOP/s
//! is only ever reported divided by this, measured in the same run.

use crate::isa::Isa;

/// FMA peak of one core in GFLOP/s on `isa`: the best of 3 runs of about `millis` ms each.
/// `None` for [`Isa::Scalar`] and for an ISA this CPU does not support.
pub fn fma_peak_gflops(isa: Isa, millis: f64) -> Option<f64> {
    if !isa.is_supported() {
        return None;
    }
    peak_on_supported(isa, millis)
}

/// Summed FMA peak of `threads` cores running the probe at the same time, in GFLOP/s: the
/// peak a `threads`-thread run can reach. Below `threads ×` [`fma_peak_gflops`] when vCPUs
/// share a physical core. `None` where [`fma_peak_gflops`] is.
pub fn fma_peak_gflops_threads(isa: Isa, millis: f64, threads: usize) -> Option<f64> {
    if !isa.is_supported() || threads == 0 {
        return None;
    }
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    peak_on_supported(isa, millis)
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().ok().flatten())
            .sum::<Option<f64>>()
    })
}

#[cfg(target_arch = "x86_64")]
fn peak_on_supported(isa: Isa, millis: f64) -> Option<f64> {
    let (flops_per_iter, run): (f64, fn(usize) -> f32) = match isa {
        Isa::Avx512 => (2.0 * 16.0 * 24.0, |i| {
            // SAFETY: `fma_peak_gflops` checked that the CPU supports AVX-512F.
            unsafe { fma_chains_512(i) }
        }),
        Isa::Avx2 => (2.0 * 8.0 * 12.0, |i| {
            // SAFETY: `fma_peak_gflops` checked that the CPU supports AVX2 and FMA.
            unsafe { fma_chains_256(i) }
        }),
        Isa::Scalar => return None,
    };
    // ~100 GFLOP/s as a first guess of the iteration count.
    let iters = ((millis * 1e-3 * 100e9 / flops_per_iter) as usize).max(1000);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        std::hint::black_box(run(std::hint::black_box(iters)));
        best = best.min(t.elapsed().as_secs_f64());
    }
    Some(flops_per_iter * iters as f64 / best / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn peak_on_supported(_isa: Isa, _millis: f64) -> Option<f64> {
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // (No `unsafe` needed: value-only intrinsics are safe inside a matching target_feature fn.)
    let mut acc = [_mm512_set1_ps(0.0); 24];
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for v in acc {
        s = _mm512_add_ps(s, v);
    }
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains_256(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: avx2+fma are enabled on this function; callers check detection first.
    unsafe {
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let s = acc
            .iter()
            .fold(_mm256_setzero_ps(), |x, &y| _mm256_add_ps(x, y));
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().sum()
    }
}
