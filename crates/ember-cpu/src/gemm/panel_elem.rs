//! The element types a B panel of the f32 kernels can hold: `f32`, or a model's `f16` /
//! `bf16` weights kept in their stored width (half the memory) and widened as they are
//! loaded. Widening is exact (every f16 and bf16 value is an f32), so the products, and the
//! results, are bit-identical to those of the widened f32 weights.

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
}
