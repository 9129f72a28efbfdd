//! Test helpers shared by the kernel tests.

/// Tiny deterministic PRNG (splitmix64), so tests need no `rand` dependency.
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `len` uniform values in [-1, 1).
    pub(crate) fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.uniform()).collect()
    }
}

/// Counts heap allocations made by the current thread (the test binary's global allocator),
/// so tests can check that kernels allocate nothing after warm-up.
pub(crate) mod alloc_counter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: defers every operation to `System`; the counter is a const-initialised
    // thread-local `Cell`, which never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as our caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations made by this thread while running `f`.
    pub(crate) fn allocations_during(f: impl FnOnce()) -> usize {
        let before = ALLOCATIONS.with(|c| c.get());
        f();
        ALLOCATIONS.with(|c| c.get()) - before
    }
}

#[cfg(test)]
mod tests {
    use super::alloc_counter::allocations_during;
    use super::SplitMix;
    use crate::{attention_varlen, layernorm, linear, softmax_inplace, Activation, PackedLinear};

    /// Small shapes run on the calling thread, so its counter sees every allocation: after one
    /// warm-up call, the kernels must not allocate at all.
    #[test]
    fn kernels_do_not_allocate_after_warm_up() {
        let mut rng = SplitMix(77);
        let (m, n, k) = (9, 40, 70);
        let x = rng.vec(m * k);
        let w = PackedLinear::new(&rng.vec(n * k), Some(&rng.vec(n)), n, k).unwrap();
        let w8 = PackedLinear::with_precision(
            &rng.vec(n * k),
            Some(&rng.vec(n)),
            n,
            k,
            crate::Precision::Int8,
        )
        .unwrap();
        let w8_outliers = PackedLinear::from_weight_with_outliers(
            crate::gemm::WeightData::F32(&rng.vec(n * k)),
            Some(&rng.vec(n)),
            n,
            k,
            crate::Precision::Int8,
            &[3, 50, 69],
        )
        .unwrap();
        let r = rng.vec(m * n);
        let mut out = vec![0.0f32; m * n];
        let (heads, hd, offsets) = (2, 8, [0usize, 3, 9]);
        let qkv = rng.vec(9 * 3 * heads * hd);
        let mut ctx = vec![0.0f32; 9 * heads * hd];
        let gamma = rng.vec(n);
        let beta = rng.vec(n);
        let mut run = || {
            linear(&x, m, &w, Activation::Gelu, Some(&r), &mut out).unwrap();
            linear(&x, m, &w, Activation::Identity, None, &mut out).unwrap();
            linear(&x, m, &w8, Activation::Relu, Some(&r), &mut out).unwrap();
            linear(&x, m, &w8_outliers, Activation::Gelu, Some(&r), &mut out).unwrap();
            attention_varlen(&qkv, &offsets, heads, hd, &mut ctx).unwrap();
            layernorm(&mut out, m, n, &gamma, &beta, 1e-5).unwrap();
            softmax_inplace(&mut out[..n]);
        };
        run(); // warm-up: scratch buffers grow, the ISA is detected
        assert_eq!(allocations_during(run), 0);
    }
}
