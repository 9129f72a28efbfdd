//! Run-time instruction-set selection.
//!
//! The instruction set is detected once, on first use, and cached ([`active_isa`]). Every fast
//! kernel also has a `*_with_isa` entry point so tests can run each path this machine has
//! ([`supported_isas`]) in one process.
//!
//! `EMBER_ISA=avx512|avx2|neon|scalar` forces a path. A forced path the CPU lacks falls back to
//! the best supported one (with a note on stderr): unsupported instructions are never executed.
//!
//! | [`Isa`]  | requires                    | GEMM microkernel (MR × NR)            |
//! |----------|-----------------------------|---------------------------------------|
//! | `Avx512` | x86-64: AVX-512F, AVX2, FMA | 14 × 32 (two zmm per row)             |
//! | `Avx2`   | x86-64: AVX2, FMA           | 6 × 16 (two ymm per row), twice       |
//! | `Neon`   | aarch64: NEON (baseline)    | 8 × 8 (two q per row), four times     |
//! | `Scalar` | nothing                     | 4 × 32, plain `a·b + c`               |
//!
//! `Neon` exists only in aarch64 builds, so that an x86-64 build's matches over [`Isa`] stay
//! what they were (and need no arm for a path that cannot run there).

use std::fmt;
use std::sync::OnceLock;

/// An instruction set a kernel can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, no SIMD intrinsics; separate multiply and add (no FMA).
    Scalar,
    /// 256-bit AVX2 with FMA3.
    Avx2,
    /// 512-bit AVX-512F (with AVX2 and FMA3).
    Avx512,
    /// 128-bit Advanced SIMD (NEON) with fused multiply-add: baseline on every aarch64 CPU.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// Lower-case name, as accepted by `EMBER_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => "neon",
        }
    }

    /// Parses an `EMBER_ISA` value (case-insensitive); `None` if unknown.
    pub fn from_name(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx512f" => Some(Isa::Avx512),
            #[cfg(target_arch = "aarch64")]
            "neon" | "asimd" => Some(Isa::Neon),
            _ => None,
        }
    }

    /// Whether this CPU can execute this instruction set.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every instruction set this build knows, worst first.
const ALL_ISAS: &[Isa] = &[
    Isa::Scalar,
    Isa::Avx2,
    Isa::Avx512,
    #[cfg(target_arch = "aarch64")]
    Isa::Neon,
];

/// The `EMBER_ISA` values, for messages.
#[cfg(target_arch = "aarch64")]
const ISA_NAMES: &str = "neon, avx512, avx2 or scalar";
#[cfg(not(target_arch = "aarch64"))]
const ISA_NAMES: &str = "avx512, avx2 or scalar";

/// Every instruction set this CPU supports, best last (`Scalar` is always first).
pub fn supported_isas() -> Vec<Isa> {
    ALL_ISAS
        .iter()
        .copied()
        .filter(|isa| isa.is_supported())
        .collect()
}

/// The best instruction set this CPU supports, ignoring `EMBER_ISA`.
pub fn best_isa() -> Isa {
    supported_isas().last().copied().unwrap_or(Isa::Scalar)
}

/// The instruction set the kernels use: `EMBER_ISA` if set and supported, else [`best_isa`].
/// Decided on first call and cached for the life of the process.
pub fn active_isa() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = best_isa();
        let Ok(forced) = std::env::var("EMBER_ISA") else {
            return best;
        };
        match Isa::from_name(&forced) {
            Some(isa) if isa.is_supported() => isa,
            Some(isa) => {
                eprintln!("ember-cpu: EMBER_ISA={isa} is not supported by this CPU; using {best}");
                best
            }
            None => {
                eprintln!(
                    "ember-cpu: unknown EMBER_ISA={forced:?} (expected {ISA_NAMES}); using {best}"
                );
                best
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &isa in ALL_ISAS {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name(" AVX512 "), Some(Isa::Avx512));
        assert_eq!(Isa::from_name("sse9"), None);
    }

    #[test]
    fn active_is_supported() {
        assert!(active_isa().is_supported());
        assert!(supported_isas().contains(&Isa::Scalar));
        assert_eq!(supported_isas().last().copied(), Some(best_isa()));
    }
}
