//! Shared pieces of Ember's benchmarks: BERT-shaped inputs. The denominator of every ratio, the
//! FMA peak, is `ember_cpu::probe::fma_peak_gflops`, measured in the same run.

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
