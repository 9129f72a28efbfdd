//! A thin SIMD layer so that each element-wise kernel is written once and compiled per ISA.
//!
//! A *token* type per instruction set implements [`Simd`]: `ScalarToken` (one `f32` lane,
//! always available), `Avx2Token` (8 lanes), `Avx512Token` (16 lanes) and, on aarch64,
//! `NeonToken` (4 lanes). A token can only be obtained by `detect()`, which checks the CPU, so
//! holding one proves its instructions can run; that is why the arithmetic methods are safe.
//! Only the pointer methods are `unsafe`.
//!
//! Generic bodies are `#[inline(always)]` functions over `S: Simd`; [`isa_dispatch!`] wraps
//! them in one `#[target_feature]` function per ISA so that the intrinsics are inlined and
//! compiled with the right instructions (the `bluss/matrixmultiply` pattern).
//!
//! Reductions (`reduce_add`, `reduce_max`) combine lanes in a fixed order, so a kernel's result
//! depends only on its input, never on threads or batch composition.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::isa::Isa;

/// Vector operations over `f32` lanes. See the module docs for why arithmetic is safe.
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// One register of `LANES` floats.
    type V: Copy;
    /// Floats per register.
    const LANES: usize;

    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`: one rounding on the SIMD ISAs (FMA), two on `Scalar`.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum (for reductions; NaN handling unspecified).
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `x` clamped to `[lo, hi]`; a NaN in `x` stays NaN.
    fn clamp(self, x: Self::V, lo: f32, hi: f32) -> Self::V;
    /// `max(x, 0)`; a NaN in `x` stays NaN (as `torch.relu`).
    fn relu(self, x: Self::V) -> Self::V;
    /// `|x|` (clears the sign bit).
    fn abs(self, x: Self::V) -> Self::V;
    /// `|mag|` with the sign bit of `sign`.
    fn copysign(self, mag: Self::V, sign: Self::V) -> Self::V;
    /// Round to the nearest integer, ties to even (valid for |a| < 2²²).
    fn round(self, a: Self::V) -> Self::V;
    /// `2ⁿ` for integral-valued `n ∈ [−126, 127]`.
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Lane-wise `if a < b { t } else { f }`.
    fn select_lt(self, a: Self::V, b: Self::V, t: Self::V, f: Self::V) -> Self::V;
    /// Sum of the lanes, in a fixed order.
    fn reduce_add(self, v: Self::V) -> f32;
    /// Maximum of the lanes.
    fn reduce_max(self, v: Self::V) -> f32;

    /// Loads `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` floats (no alignment needed).
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Stores `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` floats (no alignment needed).
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// Loads the first `n ≤ LANES` floats; the other lanes are 0. Touches no memory past `n`.
    ///
    /// # Safety
    /// `n ≤ LANES` and `p` must be valid for reading `n` floats.
    unsafe fn load_partial(self, p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n ≤ LANES` lanes. Touches no memory past `n`.
    ///
    /// # Safety
    /// `n ≤ LANES` and `p` must be valid for writing `n` floats.
    unsafe fn store_partial(self, p: *mut f32, v: Self::V, n: usize);
}

/// Portable one-lane implementation; exists on every CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarToken;

impl Simd for ScalarToken {
    type V = f32;
    const LANES: usize = 1;

    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        // Unfused on purpose: `f32::mul_add` is a slow libm call on CPUs without FMA, which
        // is exactly where this path runs.
        a * b + c
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn clamp(self, x: f32, lo: f32, hi: f32) -> f32 {
        if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    }
    #[inline(always)]
    fn relu(self, x: f32) -> f32 {
        if x < 0.0 {
            0.0
        } else {
            x
        }
    }
    #[inline(always)]
    fn abs(self, x: f32) -> f32 {
        x.abs()
    }
    #[inline(always)]
    fn copysign(self, mag: f32, sign: f32) -> f32 {
        mag.copysign(sign)
    }
    #[inline(always)]
    fn round(self, a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    fn pow2i(self, n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    fn select_lt(self, a: f32, b: f32, t: f32, f: f32) -> f32 {
        if a < b {
            t
        } else {
            f
        }
    }
    #[inline(always)]
    fn reduce_add(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn reduce_max(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is readable for one float.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` is writable for one float.
        unsafe { p.write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> f32 {
        if n == 0 {
            0.0
        } else {
            // SAFETY: n ≥ 1, so the caller guarantees one readable float.
            unsafe { p.read_unaligned() }
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: f32, n: usize) {
        if n != 0 {
            // SAFETY: n ≥ 1, so the caller guarantees one writable float.
            unsafe { p.write_unaligned(v) }
        }
    }
}

/// Proof that the CPU has AVX2 and FMA; 8 lanes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Token(());

#[cfg(target_arch = "x86_64")]
impl Avx2Token {
    /// `Some` iff the CPU supports AVX2 and FMA.
    pub(crate) fn detect() -> Option<Self> {
        Isa::Avx2.is_supported().then_some(Self(()))
    }
}

/// Proof that the CPU has AVX-512F (and AVX2, FMA); 16 lanes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Token(());

#[cfg(target_arch = "x86_64")]
impl Avx512Token {
    /// `Some` iff the CPU supports AVX-512F, AVX2 and FMA.
    pub(crate) fn detect() -> Option<Self> {
        Isa::Avx512.is_supported().then_some(Self(()))
    }
}

// Every arithmetic method below wraps one intrinsic in `unsafe`. The single justification,
// stated once instead of on each line: a value of `Self` exists only if `detect()` saw the
// required CPU features, so the instruction is available.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! simd_op {
    ($e:expr) => {
        // SAFETY: the token proves the CPU supports this ISA (see comment above).
        unsafe { $e }
    };
}

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2Token {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        simd_op!(_mm256_set1_ps(x))
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        simd_op!(_mm256_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        simd_op!(_mm256_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        simd_op!(_mm256_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        simd_op!(_mm256_div_ps(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        simd_op!(_mm256_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        simd_op!(_mm256_max_ps(a, b))
    }
    #[inline(always)]
    fn clamp(self, x: __m256, lo: f32, hi: f32) -> __m256 {
        // maxps/minps return the *second* operand when either is NaN: x goes second.
        simd_op!(_mm256_max_ps(
            _mm256_set1_ps(lo),
            _mm256_min_ps(_mm256_set1_ps(hi), x)
        ))
    }
    #[inline(always)]
    fn relu(self, x: __m256) -> __m256 {
        simd_op!(_mm256_max_ps(_mm256_setzero_ps(), x))
    }
    #[inline(always)]
    fn abs(self, x: __m256) -> __m256 {
        simd_op!(_mm256_andnot_ps(_mm256_set1_ps(-0.0), x))
    }
    #[inline(always)]
    fn copysign(self, mag: __m256, sign: __m256) -> __m256 {
        let sign_bit = self.splat(-0.0);
        simd_op!(_mm256_or_ps(
            _mm256_andnot_ps(sign_bit, mag),
            _mm256_and_ps(sign_bit, sign)
        ))
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        simd_op!(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(a))
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        simd_op!(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))
        )))
    }
    #[inline(always)]
    fn select_lt(self, a: __m256, b: __m256, t: __m256, f: __m256) -> __m256 {
        simd_op!(_mm256_blendv_ps(f, t, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)))
    }
    #[inline(always)]
    fn reduce_add(self, v: __m256) -> f32 {
        simd_op!({
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        })
    }
    #[inline(always)]
    fn reduce_max(self, v: __m256) -> f32 {
        simd_op!({
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        })
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats; the token guarantees AVX.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats; the token guarantees AVX.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> __m256 {
        // SAFETY: vmaskmovps does not touch masked-off lanes (no fault, no read), and the
        // caller guarantees the first n floats are readable.
        unsafe { _mm256_maskload_ps(p, avx2_prefix_mask(n)) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: __m256, n: usize) {
        // SAFETY: as in `load_partial`: masked-off lanes are not written.
        unsafe { _mm256_maskstore_ps(p, avx2_prefix_mask(n), v) }
    }
}

/// Lanes `i < n` all-ones, the others zero.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx2_prefix_mask(n: usize) -> __m256i {
    let n = n.min(8) as i32;
    // SAFETY: only called from Avx2Token methods, whose token proves AVX2.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

/// AVX-512 mask selecting lanes `i < n`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn avx512_prefix_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512Token {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        simd_op!(_mm512_set1_ps(x))
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        simd_op!(_mm512_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        simd_op!(_mm512_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        simd_op!(_mm512_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        simd_op!(_mm512_div_ps(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        simd_op!(_mm512_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        simd_op!(_mm512_max_ps(a, b))
    }
    #[inline(always)]
    fn clamp(self, x: __m512, lo: f32, hi: f32) -> __m512 {
        // maxps/minps return the *second* operand when either is NaN: x goes second.
        simd_op!(_mm512_max_ps(
            _mm512_set1_ps(lo),
            _mm512_min_ps(_mm512_set1_ps(hi), x)
        ))
    }
    #[inline(always)]
    fn relu(self, x: __m512) -> __m512 {
        simd_op!(_mm512_max_ps(_mm512_setzero_ps(), x))
    }
    #[inline(always)]
    fn abs(self, x: __m512) -> __m512 {
        simd_op!(_mm512_abs_ps(x))
    }
    #[inline(always)]
    fn copysign(self, mag: __m512, sign: __m512) -> __m512 {
        // AVX-512F has no float and/or (that is DQ): use the integer forms. Ternary-logic
        // 0xE4 = (C & A) | (~C & B) with C = sign-bit mask: bit from `sign` where C, else `mag`.
        simd_op!(_mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xE4>(
            _mm512_castps_si512(sign),
            _mm512_castps_si512(mag),
            _mm512_set1_epi32(i32::MIN)
        )))
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        simd_op!(_mm512_roundscale_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(a))
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        simd_op!(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(
            _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127))
        )))
    }
    #[inline(always)]
    fn select_lt(self, a: __m512, b: __m512, t: __m512, f: __m512) -> __m512 {
        simd_op!(_mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b),
            f,
            t
        ))
    }
    #[inline(always)]
    fn reduce_add(self, v: __m512) -> f32 {
        simd_op!(_mm512_reduce_add_ps(v))
    }
    #[inline(always)]
    fn reduce_max(self, v: __m512) -> f32 {
        simd_op!(_mm512_reduce_max_ps(v))
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats; the token guarantees AVX-512F.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats; the token guarantees AVX-512F.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> __m512 {
        // SAFETY: masked-off lanes are neither read nor able to fault (AVX-512 fault
        // suppression); the caller guarantees the first n floats are readable.
        unsafe { _mm512_maskz_loadu_ps(avx512_prefix_mask(n), p) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: __m512, n: usize) {
        // SAFETY: as in `load_partial`: masked-off lanes are not written.
        unsafe { _mm512_mask_storeu_ps(p, avx512_prefix_mask(n), v) }
    }
}

/// Proof that the CPU has NEON (Advanced SIMD, with FMA); 4 lanes. Every aarch64 CPU has it:
/// the token keeps the pattern of the x86 ones (and `EMBER_ISA=scalar` still avoids it).
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct NeonToken(());

#[cfg(target_arch = "aarch64")]
impl NeonToken {
    /// `Some` iff the CPU supports NEON.
    pub(crate) fn detect() -> Option<Self> {
        Isa::Neon.is_supported().then_some(Self(()))
    }
}

// As for the x86 tokens, every arithmetic method wraps its intrinsics in `simd_op!`: a
// `NeonToken` exists only if `detect()` saw NEON. The comparisons and selects below are
// written so that NaN and −0 come out as on the other paths (`relu(−0) = −0`,
// `relu(NaN) = NaN`, as `x < 0 ? 0 : x`), not as `fmax`/`fmin` would have them.
#[cfg(target_arch = "aarch64")]
impl Simd for NeonToken {
    type V = float32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
        simd_op!(vdupq_n_f32(x))
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        simd_op!(vaddq_f32(a, b))
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        simd_op!(vsubq_f32(a, b))
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        simd_op!(vmulq_f32(a, b))
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        simd_op!(vdivq_f32(a, b))
    }
    #[inline(always)]
    fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // vfmaq_f32(c, a, b) = c + a·b, one rounding.
        simd_op!(vfmaq_f32(c, a, b))
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        simd_op!(vmaxq_f32(a, b))
    }
    #[inline(always)]
    fn clamp(self, x: float32x4_t, lo: f32, hi: f32) -> float32x4_t {
        // Compares are false for NaN, so a NaN in x passes through both selects.
        simd_op!({
            let (lo, hi) = (vdupq_n_f32(lo), vdupq_n_f32(hi));
            let below = vbslq_f32(vcltq_f32(x, lo), lo, x);
            vbslq_f32(vcgtq_f32(x, hi), hi, below)
        })
    }
    #[inline(always)]
    fn relu(self, x: float32x4_t) -> float32x4_t {
        neon_relu(x)
    }
    #[inline(always)]
    fn abs(self, x: float32x4_t) -> float32x4_t {
        simd_op!(vabsq_f32(x))
    }
    #[inline(always)]
    fn copysign(self, mag: float32x4_t, sign: float32x4_t) -> float32x4_t {
        // Bit select: the sign bit from `sign`, the rest from `mag`.
        simd_op!(vbslq_f32(vdupq_n_u32(0x8000_0000), sign, mag))
    }
    #[inline(always)]
    fn round(self, a: float32x4_t) -> float32x4_t {
        // frintn: to nearest, ties to even.
        simd_op!(vrndnq_f32(a))
    }
    #[inline(always)]
    fn pow2i(self, n: float32x4_t) -> float32x4_t {
        // n is integral, so the conversion's rounding mode does not matter.
        simd_op!(vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
            vcvtq_s32_f32(n),
            vdupq_n_s32(127),
        ))))
    }
    #[inline(always)]
    fn select_lt(
        self,
        a: float32x4_t,
        b: float32x4_t,
        t: float32x4_t,
        f: float32x4_t,
    ) -> float32x4_t {
        simd_op!(vbslq_f32(vcltq_f32(a, b), t, f))
    }
    #[inline(always)]
    fn reduce_add(self, v: float32x4_t) -> f32 {
        // faddp twice: (v0 + v1) + (v2 + v3), a fixed order.
        simd_op!(vaddvq_f32(v))
    }
    #[inline(always)]
    fn reduce_max(self, v: float32x4_t) -> f32 {
        simd_op!(vmaxvq_f32(v))
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable floats (ld1 needs no alignment).
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller guarantees 4 writable floats (st1 needs no alignment).
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> float32x4_t {
        // NEON has no masked loads: go through a zeroed stack copy of the first n floats.
        let mut lanes = [0.0f32; 4];
        // SAFETY: the caller guarantees n ≤ 4 readable floats at p; `lanes` holds 4.
        unsafe {
            std::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), n.min(4));
            vld1q_f32(lanes.as_ptr())
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: float32x4_t, n: usize) {
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` holds 4 floats; the caller guarantees n ≤ 4 writable floats at p.
        unsafe {
            vst1q_f32(lanes.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n.min(4));
        }
    }
}

/// `x < 0 ? 0 : x` per lane: NaN and −0 pass through, as the other paths' ReLU.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) fn neon_relu(x: float32x4_t) -> float32x4_t {
    // SAFETY: NEON is in the aarch64 baseline, and every caller also holds a `NeonToken`.
    unsafe { vbslq_f32(vcltzq_f32(x), vdupq_n_f32(0.0), x) }
}

/// Defines `fn $name(isa: Isa, args…) -> Result<$ret, KernelError>` that runs the generic
/// `$body(token, args…)` compiled for `isa` (one `#[target_feature]` wrapper per ISA), or
/// returns `UnsupportedIsa` if this CPU lacks it.
macro_rules! isa_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty => $body:path) => {
        $(#[$meta])*
        $vis fn $name(
            isa: $crate::isa::Isa,
            $($arg: $ty),*
        ) -> ::core::result::Result<$ret, $crate::error::KernelError> {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn with_avx2(t: $crate::simd::Avx2Token, $($arg: $ty),*) -> $ret {
                $body(t, $($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn with_avx512(t: $crate::simd::Avx512Token, $($arg: $ty),*) -> $ret {
                $body(t, $($arg),*)
            }
            let unsupported = $crate::error::KernelError::UnsupportedIsa {
                op: stringify!($name),
                isa,
            };
            match isa {
                $crate::isa::Isa::Scalar => Ok($body($crate::simd::ScalarToken, $($arg),*)),
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Isa::Avx2 => {
                    let t = $crate::simd::Avx2Token::detect().ok_or(unsupported)?;
                    // SAFETY: the token proves the CPU has AVX2 and FMA.
                    Ok(unsafe { with_avx2(t, $($arg),*) })
                }
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Isa::Avx512 => {
                    let t = $crate::simd::Avx512Token::detect().ok_or(unsupported)?;
                    // SAFETY: the token proves the CPU has AVX-512F, AVX2 and FMA.
                    Ok(unsafe { with_avx512(t, $($arg),*) })
                }
                // NEON is in the aarch64 baseline: the generic body is compiled with it as is.
                #[cfg(target_arch = "aarch64")]
                $crate::isa::Isa::Neon => {
                    let t = $crate::simd::NeonToken::detect().ok_or(unsupported)?;
                    Ok($body(t, $($arg),*))
                }
                #[cfg(not(target_arch = "x86_64"))]
                _ => Err(unsupported),
            }
        }
    };
}
pub(crate) use isa_dispatch;
