//! Rotary position embeddings (RoPE) on the packed `[T, 3H]` QKV buffer, as transformers'
//! ModernBERT applies them (`apply_rotary_pos_emb` with `rotate_half`).
//!
//! For the token at position `p` of its sequence (0 for its first token), head `h` and pair
//! `i < hd/2`, with `x1 = x[i]`, `x2 = x[i + hd/2]` of that head's query (and, the same, key):
//!
//! `x[i] = x1·cos(p·ωᵢ) − x2·sin(p·ωᵢ)`, `x[i + hd/2] = x2·cos(p·ωᵢ) + x1·sin(p·ωᵢ)`,
//!
//! with `ωᵢ = 1 / θ^(2i/hd)`. Values are the ones torch computes: `ωᵢ` in f32 (the exponent
//! divided in f32, the power rounded once to f32, then its reciprocal in f32), the angle
//! `p·ωᵢ` as an f32 product, `cos`/`sin` of that f32 angle rounded to f32 (torch's are within
//! an ulp of these), and each output as two rounded f32 products summed, as torch's
//! `q·cos + rotate_half(q)·sin` does. V is left alone.

use rayon::prelude::*;

use crate::error::{check_len, check_offsets, checked_elems, KernelError};

/// Below this many rotated values (`T·2H`) a call stays on the calling thread.
const SEQUENTIAL_VALUES: usize = 1 << 16;

/// The `cos` and `sin` tables of one `θ` for positions `0..max_len`: `[max_len, hd/2]` each.
#[derive(Clone, Debug)]
pub struct Rotary {
    head_dim: usize,
    max_len: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// `ωᵢ = 1 / θ^(2i/hd)` for `i < hd/2`, as torch computes ModernBERT's `inv_freq` (see the
/// module docs; torch's power may differ from the correctly rounded one by an ulp or two).
pub fn inverse_frequencies(theta: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            1.0f32 / theta.powf(exponent as f64) as f32
        })
        .collect()
}

impl Rotary {
    /// The tables of `theta` for heads of `head_dim` (even, > 0) and positions `0..max_len`.
    pub fn new(theta: f64, head_dim: usize, max_len: usize) -> Result<Self, KernelError> {
        const OP: &str = "Rotary::new";
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(KernelError::InvalidShape {
                op: OP,
                reason: format!("head_dim = {head_dim} must be even and > 0"),
            });
        }
        if !(theta.is_finite() && theta > 0.0) {
            return Err(KernelError::InvalidShape {
                op: OP,
                reason: format!("theta = {theta} must be a positive number"),
            });
        }
        Self::with_frequencies(&inverse_frequencies(theta, head_dim), max_len)
    }

    /// The tables of the given inverse frequencies `ωᵢ` (`hd/2` of them, finite; a scaled
    /// rotary embedding's) for positions `0..max_len`.
    pub fn with_frequencies(frequencies: &[f32], max_len: usize) -> Result<Self, KernelError> {
        const OP: &str = "Rotary::with_frequencies";
        let half = frequencies.len();
        if half == 0 || frequencies.iter().any(|w| !w.is_finite()) {
            return Err(KernelError::InvalidShape {
                op: OP,
                reason: format!("{half} inverse frequencies, each must be finite, at least one"),
            });
        }
        let head_dim = 2 * half;
        let len = checked_elems(OP, "table", max_len, half)?;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for table in [&mut cos, &mut sin] {
            table
                .try_reserve_exact(len)
                .map_err(|_| KernelError::InvalidShape {
                    op: OP,
                    reason: format!("no memory for a rotary table of {len} values"),
                })?;
        }
        for p in 0..max_len {
            for &w in frequencies {
                let angle = (p as f32 * w) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Self {
            head_dim,
            max_len,
            cos,
            sin,
        })
    }

    /// The head dimension the tables are for.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The longest sequence the tables cover.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The whole `cos` and `sin` tables, `[max_len, hd/2]` each (what a GPU backend uploads).
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    /// `(cos, sin)` of position `p`, `hd/2` values each.
    fn row(&self, p: usize) -> (&[f32], &[f32]) {
        let half = self.head_dim / 2;
        (
            &self.cos[p * half..(p + 1) * half],
            &self.sin[p * half..(p + 1) * half],
        )
    }
}

/// Checks the buffer against the offsets and the tables; returns `H`.
fn validate(
    op: &'static str,
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    rotary: &Rotary,
) -> Result<usize, KernelError> {
    let t = check_offsets(op, seq_offsets)?;
    // Even with no tokens: a `[0, 0]` offsets list still walks its (empty) sequence in rows of
    // `3H`, which must not be 0.
    if heads == 0 {
        return Err(KernelError::InvalidShape {
            op,
            reason: "heads = 0 must be > 0".into(),
        });
    }
    let h = checked_elems(op, "qkv", heads, rotary.head_dim)?;
    let h3 = checked_elems(op, "qkv", h, 3)?;
    check_len(op, "qkv", checked_elems(op, "qkv", t, h3)?, qkv.len())?;
    if let Some(len) = seq_offsets
        .windows(2)
        .map(|w| w[1] - w[0])
        .find(|&len| len > rotary.max_len)
    {
        return Err(KernelError::InvalidShape {
            op,
            reason: format!(
                "a sequence of {len} tokens is longer than the rotary tables' {}",
                rotary.max_len
            ),
        });
    }
    Ok(h)
}

/// Rotates one token's Q and K (the first `2H` values of its `[3H]` row) by position `p`.
fn rotate_row(row: &mut [f32], heads: usize, rotary: &Rotary, p: usize) {
    let half = rotary.head_dim / 2;
    let (cos, sin) = rotary.row(p);
    for head in row[..2 * heads * rotary.head_dim].chunks_exact_mut(rotary.head_dim) {
        let (x1, x2) = head.split_at_mut(half);
        for (((a, b), &c), &s) in x1.iter_mut().zip(x2.iter_mut()).zip(cos).zip(sin) {
            let (v1, v2) = (*a, *b);
            *a = v1 * c - v2 * s;
            *b = v2 * c + v1 * s;
        }
    }
}

/// Applies RoPE in place to the queries and keys of `qkv` (`[T, 3H]`, laid out as for
/// [`crate::attention_varlen`]), each token by its position in its sequence. Errors (leaving
/// `qkv` untouched) on inconsistent shapes or offsets, or a sequence past the tables.
pub fn apply_rotary(
    qkv: &mut [f32],
    seq_offsets: &[usize],
    heads: usize,
    rotary: &Rotary,
) -> Result<(), KernelError> {
    let h = validate("apply_rotary", qkv, seq_offsets, heads, rotary)?;
    let ld = 3 * h;
    let parallel = qkv.len() / 3 * 2 >= SEQUENTIAL_VALUES;
    for w in seq_offsets.windows(2) {
        let rows = &mut qkv[w[0] * ld..w[1] * ld];
        if parallel {
            rows.par_chunks_mut(ld)
                .enumerate()
                .for_each(|(p, row)| rotate_row(row, heads, rotary, p));
        } else {
            for (p, row) in rows.chunks_mut(ld).enumerate() {
                rotate_row(row, heads, rotary, p);
            }
        }
    }
    Ok(())
}

/// Plain-loop reference: the rotation in f64 of the exact angle `p·ωᵢ` (ωᵢ from
/// [`inverse_frequencies`]).
pub fn apply_rotary_reference(
    qkv: &mut [f32],
    seq_offsets: &[usize],
    heads: usize,
    theta: f64,
    rotary: &Rotary,
) -> Result<(), KernelError> {
    let h = validate("apply_rotary_reference", qkv, seq_offsets, heads, rotary)?;
    let hd = rotary.head_dim;
    let half = hd / 2;
    let frequencies = inverse_frequencies(theta, hd);
    for w in seq_offsets.windows(2) {
        for t in w[0]..w[1] {
            let p = (t - w[0]) as f64;
            for head in 0..2 * heads {
                let base = t * 3 * h + head * hd;
                for (i, &f) in frequencies.iter().enumerate() {
                    let (c, s) = ((p * f as f64).cos(), (p * f as f64).sin());
                    let (x1, x2) = (qkv[base + i] as f64, qkv[base + half + i] as f64);
                    qkv[base + i] = (x1 * c - x2 * s) as f32;
                    qkv[base + half + i] = (x2 * c + x1 * s) as f32;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::SplitMix;

    #[test]
    fn matches_the_reference_and_leaves_v_alone() {
        let (heads, hd, theta) = (3, 16, 10_000.0);
        let offsets = [0usize, 1, 40, 40, 300];
        let t = *offsets.last().unwrap();
        let h = heads * hd;
        let rotary = Rotary::new(theta, hd, 300).unwrap();
        let qkv: Vec<f32> = SplitMix(3).vec(t * 3 * h);
        let mut want = qkv.clone();
        apply_rotary_reference(&mut want, &offsets, heads, theta, &rotary).unwrap();
        for threads in [1, 2] {
            let mut got = qkv.clone();
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| apply_rotary(&mut got, &offsets, heads, &rotary))
                .unwrap();
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                // The f32 angle p·ω carries a rounding of up to p·ulp(ω): ~1e-5 rad at p = 300.
                assert!((g - w).abs() <= 2e-5, "[{i}] {g} vs {w}");
            }
            for row in 0..t {
                let v = row * 3 * h + 2 * h..(row + 1) * 3 * h;
                assert_eq!(got[v.clone()], qkv[v], "V of token {row} changed");
            }
            // Each sequence's first token (position 0) is not rotated.
            for &s0 in &offsets[..offsets.len() - 1] {
                if s0 < t {
                    assert_eq!(
                        got[s0 * 3 * h..(s0 + 1) * 3 * h],
                        qkv[s0 * 3 * h..(s0 + 1) * 3 * h]
                    );
                }
            }
            // Rotation keeps each pair's length.
            let p = 41;
            for i in 0..hd / 2 {
                let norm = |x: &[f32]| {
                    let (a, b) = (x[p * 3 * h + i] as f64, x[p * 3 * h + hd / 2 + i] as f64);
                    (a * a + b * b).sqrt()
                };
                assert!((norm(&got) - norm(&qkv)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn torch_s_inverse_frequencies() {
        // torch 2.15: 1.0 / (160000.0 ** (torch.arange(0, 64, 2, dtype=torch.float) / 64)),
        // ModernBERT-base's global layers, as bits.
        let want: [u32; 32] = [
            0x3f80_0000,
            0x3f30_0a3a,
            0x3ef2_1c1f,
            0x3ea6_7d01,
            0x3e64_f92e,
            0x3e1d_7475,
            0x3dd8_8cb4,
            0x3d94_e963,
            0x3d4c_cccd,
            0x3d0c_d4fb,
            0x3cc1_b019,
            0x3c85_30ce,
            0x3c37_2dbf,
            0x3bfb_ed88,
            0x3bad_3d5e,
            0x3b6e_4237,
            0x3b23_d70a,
            0x3ae1_54c5,
            0x3a9a_f347,
            0x3a55_1ae3,
            0x3a12_8aff,
            0x39c9_8ad3,
            0x398a_977e,
            0x393e_9b60,
            0x3903_126f,
            0x38b4_43d0,
            0x3877_eba6,
            0x382a_7be8,
            0x37ea_77ff,
            0x37a1_3bdc,
            0x375d_bf30,
            0x3718_7c4d,
        ];
        let got = inverse_frequencies(160_000.0, 64);
        assert_eq!(got.len(), 32);
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.to_bits(), w, "{g} vs {}", f32::from_bits(w));
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        assert!(Rotary::new(10_000.0, 15, 8).is_err());
        assert!(Rotary::new(0.0, 16, 8).is_err());
        let rotary = Rotary::new(10_000.0, 4, 8).unwrap();
        let mut qkv = vec![0.0f32; 9 * 12];
        // 9 tokens in one sequence: past the 8 positions of the tables.
        assert!(apply_rotary(&mut qkv, &[0, 9], 1, &rotary).is_err());
        assert!(apply_rotary(&mut qkv, &[0, 4, 9], 1, &rotary).is_ok());
        assert!(apply_rotary(&mut qkv, &[0, 4, 8], 1, &rotary).is_err()); // T·3H ≠ len
        assert!(apply_rotary(&mut qkv, &[1, 9], 1, &rotary).is_err());
    }

    #[test]
    fn zero_heads_is_an_error_not_a_panic() {
        let rotary = Rotary::new(10_000.0, 4, 8).unwrap();
        // Empty sequences, no tokens: with H = 0 the rows of 3H = 0 values used to reach
        // `chunks_mut(0)` (and `par_chunks_mut(0)`) and panic.
        for offsets in [&[0usize, 0][..], &[0], &[0, 0, 0]] {
            let err = apply_rotary(&mut [], offsets, 0, &rotary).unwrap_err();
            assert!(matches!(err, KernelError::InvalidShape { .. }), "{err}");
            assert!(err.to_string().contains("heads = 0"), "{err}");
            let err = apply_rotary_reference(&mut [], offsets, 0, 10_000.0, &rotary).unwrap_err();
            assert!(matches!(err, KernelError::InvalidShape { .. }), "{err}");
        }
    }
}
