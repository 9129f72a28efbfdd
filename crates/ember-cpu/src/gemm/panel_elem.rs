//! The element types a B panel of the f32 kernels can hold: `f32`, or a model's `f16` /
//! `bf16` weights kept in their stored width (half the memory) and widened as they are
//! loaded. Widening is exact (every f16 and bf16 value is an f32), so the products, and the
//! results, are bit-identical to those of the widened f32 weights.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::{bf16, f16};

/// A B panel element of the f32 kernels (see the module docs).
pub(crate) trait PanelElem: bytemuck::Pod + Send + Sync + 'static {
    /// The value as f32 (exact).
    fn to_f32(self) -> f32;

    /// Widens 8 consecutive elements.
    ///
    /// # Safety
    /// CPU has AVX2 and F16C; `p` readable for 8 elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> __m256;

    /// Widens 16 consecutive elements.
    ///
    /// # Safety
    /// CPU has AVX-512F; `p` readable for 16 elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> __m512;

    /// Widens 4 consecutive elements.
    ///
    /// # Safety
    /// `p` readable for 4 elements (NEON is in the aarch64 baseline).
    #[cfg(target_arch = "aarch64")]
    unsafe fn load4(p: *const Self) -> float32x4_t;
}

impl PanelElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: forwarded contract.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        // SAFETY: forwarded contract.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        // SAFETY: forwarded contract.
        unsafe { vld1q_f32(p) }
    }
}

impl PanelElem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: forwarded contract (vcvtph2ps is F16C).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        // SAFETY: forwarded contract (vcvtph2ps zmm is AVX-512F).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn load4(p: *const f16) -> float32x4_t {
        // SAFETY: forwarded contract (4 halves = 8 bytes).
        let halves = unsafe { vld1_u16(p.cast()) };
        let wide: float32x4_t;
        // `fcvtl` (half to single, in every ARMv8 NEON): exact under the default FPCR (IEEE
        // halves, AHP = 0; no flushing), NaNs quietened as `half` does.
        // Through `asm!` because its intrinsic, `vcvt_f32_f16`, is stable only in Rust
        // releases newer than this crate's MSRV (1.89).
        // SAFETY: one register-to-register NEON instruction; no memory or stack (it may set
        // FPSR's cumulative flags on a signalling NaN, which nothing reads).
        unsafe {
            std::arch::asm!(
                "fcvtl {wide:v}.4s, {halves:v}.4h",
                wide = lateout(vreg) wide,
                halves = in(vreg) halves,
                options(pure, nomem, nostack),
            );
        }
        wide
    }
}

impl PanelElem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> __m256 {
        // SAFETY: forwarded contract. bf16 is the top half of an f32: zero-extend, shift.
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> __m512 {
        // SAFETY: forwarded contract. bf16 is the top half of an f32: zero-extend, shift.
        unsafe {
            let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn load4(p: *const bf16) -> float32x4_t {
        // SAFETY: forwarded contract. bf16 is the top half of an f32: widen, shift (ushll).
        unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.cast()))) }
    }
}

#[cfg(all(test, target_arch = "aarch64"))]
mod tests {
    use super::*;

    #[test]
    fn neon_widening_equals_the_scalar_conversion_for_every_bit_pattern() {
        // All 65 536 patterns of each type: zeros, subnormals, normals, ±∞, NaNs. f16 as
        // `half` converts it (NaNs quietened, as `fcvt`); bf16 as the x86 loads widen it, by
        // the shift alone (`half` also quietens a signalling NaN; any arithmetic on it does).
        let halves: Vec<u16> = (0..=u16::MAX).collect();
        for chunk in halves.chunks_exact(4) {
            let f16s: [f16; 4] = std::array::from_fn(|i| f16::from_bits(chunk[i]));
            let bf16s: [bf16; 4] = std::array::from_fn(|i| bf16::from_bits(chunk[i]));
            let mut got = [[0.0f32; 4]; 2];
            // SAFETY: each array holds 4 elements; `got` rows hold 4 floats.
            unsafe {
                vst1q_f32(got[0].as_mut_ptr(), f16::load4(f16s.as_ptr()));
                vst1q_f32(got[1].as_mut_ptr(), bf16::load4(bf16s.as_ptr()));
            }
            for lane in 0..4 {
                let want = [
                    f16s[lane].to_f32(),
                    f32::from_bits(u32::from(chunk[lane]) << 16),
                ];
                for (row, kind) in ["f16", "bf16"].iter().enumerate() {
                    assert_eq!(
                        got[row][lane].to_bits(),
                        want[row].to_bits(),
                        "{kind} bits {:#06x}",
                        chunk[lane]
                    );
                }
            }
        }
    }
}
