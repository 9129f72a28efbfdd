//! Shared pieces of Ember's benchmarks: the FMA peak probe every figure is divided by, and
//! BERT-shaped inputs.
//!
//! The machine is shared and noisy, so a figure is only reported as a ratio measured in the
//! same run: GFLOP/s of a kernel over the GFLOP/s of a register-only FMA loop.

use std::time::Instant;

/// Single-thread f32 FMA peak in GFLOP/s: a register-only loop of independent FMAs on the widest
/// vectors this CPU has (no memory traffic), best of a few runs.
pub fn fma_peak_gflops() -> f64 {
    (0..5).map(|_| probe_once()).fold(0.0, f64::max)
}

fn probe_once() -> f64 {
    const ITERS: u64 = 20_000_000;
    let start = Instant::now();
    let flops_per_iter = probe_loop(ITERS);
    let seconds = start.elapsed().as_secs_f64();
    (ITERS as f64 * flops_per_iter) / seconds / 1e9
}

/// Runs `iters` iterations; returns FLOPs per iteration.
fn probe_loop(iters: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { x86::probe_avx512(iters) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { x86::probe_avx2(iters) };
        }
    }
    let mut acc = [1.0f32; 8];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    16.0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 12 independent zmm FMA chains: enough to cover 2 FMA pipes × 4-cycle latency.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn probe_avx512(iters: u64) -> f64 {
        let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        std::hint::black_box(acc);
        (12 * 16 * 2) as f64
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn probe_avx2(iters: u64) -> f64 {
        let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        std::hint::black_box(acc);
        (12 * 8 * 2) as f64
    }
}

/// Deterministic values in [-1, 1) (a 64-bit LCG): benches never run on zeros.
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}
