//! Comparing embeddings: dot product, cosine similarity and top-k search over rows.
//!
//! `cos(a, b) = a·b / max(‖a‖·‖b‖, ε)` with `ε = 1e-12` (so a zero row scores 0, not NaN, as
//! in `torch.nn.functional.cosine_similarity`). Sums use 16 independent f32 lanes with a
//! separate multiply and add (no FMA), which the compiler keeps in SIMD registers: SSE2 on any
//! x86-64, and one zmm (or two ymm) register when [`ember_cpu::active_isa`] says AVX-512 (or
//! AVX2) — the same operations in the same order, so every path gives the same bits.

use crate::Embeddings;

/// Lanes of the partial sums: one zmm register, or two ymm.
const LANES: usize = 16;

/// `Σ a[i]·b[i]` over the common length, in 16 interleaved partial sums.
///
/// On L2-normalised embeddings this is their cosine similarity, without the norms.
///
/// ```
/// use ember::similarity::dot;
///
/// assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0]), 4.0); // the common length only
/// ```
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match ember_cpu::active_isa() {
        // SAFETY: `active_isa` reports an ISA only when the CPU supports it.
        ember_cpu::Isa::Avx512 => return unsafe { dot_avx512(a, b) },
        // SAFETY: as above.
        ember_cpu::Isa::Avx2 => return unsafe { dot_avx2(a, b) },
        ember_cpu::Isa::Scalar => {}
    }
    dot_lanes(a, b)
}

/// [`dot_lanes`] compiled for AVX-512F.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

/// [`dot_lanes`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

/// The body of [`dot`], the same arithmetic whatever it is compiled for.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            // Not `mul_add`: without FMA in the target it is a call to `fmaf` per element.
            acc[l] += ca[l] * cb[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Cosine similarity of `a` and `b` (see the module docs for the zero-norm case), in
/// `[-1, 1]` up to rounding.
///
/// ```
/// use ember::similarity::cosine;
///
/// assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6); // same direction
/// assert_eq!(cosine(&[1.0, 0.0], &[0.0, 3.0]), 0.0); // orthogonal
/// assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0); // a zero row scores 0, not NaN
/// ```
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let norms = (dot(a, a) * dot(b, b)).sqrt();
    dot(a, b) / norms.max(1e-12)
}

/// The `k` rows of `corpus` most similar (cosine) to `query`, best first, as
/// `(row index, similarity)`; ties keep the lower index first, and a NaN score sorts last.
/// `k` larger than the corpus gives every row.
///
/// ```
/// use ember::{similarity::top_k, Embeddings};
///
/// // Three 2-d rows: the query [1, 0] is closest to row 2, then row 0.
/// let corpus = Embeddings::from_vec(vec![0.6, 0.8, 0.0, 1.0, 1.0, 0.1], 3, 2)?;
/// let hits = top_k(&[1.0, 0.0], &corpus, 2);
/// assert_eq!(hits.iter().map(|&(row, _)| row).collect::<Vec<_>>(), [2, 0]);
/// assert!((hits[1].1 - 0.6).abs() < 1e-6);
/// # Ok::<(), ember::EmberError>(())
/// ```
///
/// With an embedder: search a corpus for a query text.
///
/// ```
/// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-bert");
/// let embedder = ember::Embedder::builder().threads(1).load(model)?;
/// let corpus = embedder.encode(&["A cat sits on the mat.", "Stocks fell sharply.", "A kitten naps."])?;
/// let query = embedder.encode(&["A cat sits on the mat."])?;
/// let hits = ember::similarity::top_k(query.row(0), &corpus, 2);
/// assert_eq!(hits[0].0, 0); // the identical text is its own best match
/// assert!((hits[0].1 - 1.0).abs() < 1e-5);
/// assert_eq!(hits.len(), 2);
/// # Ok::<(), ember::EmberError>(())
/// ```
pub fn top_k(query: &[f32], corpus: &Embeddings, k: usize) -> Vec<(usize, f32)> {
    top_k_by(Similarity::Cosine, query, corpus, k)
}

/// `a·b / max(‖a‖·√(b·b), 1e-12)` with `‖a‖` given: [`top_k_by`]'s cosine (the query's norm
/// computed once) and [`Similarity::score`]'s.
fn cosine_of_norms(a: &[f32], b: &[f32], a_norm: f32) -> f32 {
    let norms = a_norm * dot(b, b).sqrt();
    dot(a, b) / norms.max(1e-12)
}

/// A model's similarity function: `config_sentence_transformers.json`'s `similarity_fn_name`
/// (sentence-transformers' `SimilarityFunction`; cosine when the folder names none). Larger is
/// more similar: the distances are negated, as sentence-transformers' are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Similarity {
    /// `a·b / max(‖a‖·‖b‖, 1e-12)`.
    #[default]
    Cosine,
    /// `a·b` (models trained for it, e.g. multi-qa-mpnet-base-dot-v1).
    Dot,
    /// `−‖a − b‖₂`.
    Euclidean,
    /// `−‖a − b‖₁`.
    Manhattan,
}

impl Similarity {
    /// The function `similarity_fn_name` names: `cosine`, `dot`, `euclidean` or `manhattan`
    /// (sentence-transformers' `SimilarityFunction` values; it refuses any other).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "cosine" => Similarity::Cosine,
            "dot" => Similarity::Dot,
            "euclidean" => Similarity::Euclidean,
            "manhattan" => Similarity::Manhattan,
            _ => return None,
        })
    }

    /// Its name, as `similarity_fn_name` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Similarity::Cosine => "cosine",
            Similarity::Dot => "dot",
            Similarity::Euclidean => "euclidean",
            Similarity::Manhattan => "manhattan",
        }
    }

    /// The similarity of `a` and `b` (over their common length); cosine as [`top_k_by`]
    /// computes it (`a·b / max(√(a·a)·√(b·b), 1e-12)`), bit for bit.
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Similarity::Cosine => cosine_of_norms(a, b, dot(a, a).sqrt()),
            Similarity::Dot => dot(a, b),
            Similarity::Euclidean => -a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
            Similarity::Manhattan => -a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>(),
        }
    }
}

/// [`top_k`] by `similarity` (a model's: [`crate::Embedder::similarity`]).
///
/// ```
/// use ember::{similarity::{top_k_by, Similarity}, Embeddings};
///
/// // By dot product the longer row wins; by cosine the better aligned one.
/// let corpus = Embeddings::from_vec(vec![1.0, 0.0, 3.0, 3.0], 2, 2)?;
/// assert_eq!(top_k_by(Similarity::Dot, &[1.0, 0.0], &corpus, 1)[0], (1, 3.0));
/// assert_eq!(top_k_by(Similarity::Cosine, &[1.0, 0.0], &corpus, 1)[0].0, 0);
/// # Ok::<(), ember::EmberError>(())
/// ```
pub fn top_k_by(
    similarity: Similarity,
    query: &[f32],
    corpus: &Embeddings,
    k: usize,
) -> Vec<(usize, f32)> {
    let query_norm = dot(query, query).sqrt();
    let mut scored: Vec<(usize, f32)> = corpus
        .rows()
        .enumerate()
        .map(|(i, row)| match similarity {
            // The query's norm once, not per row.
            Similarity::Cosine => (i, cosine_of_norms(query, row, query_norm)),
            other => (i, other.score(query, row)),
        })
        .collect();
    // Best first; NaN last; ties by index (the sort is stable and rows come in index order).
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    scored.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)));
    scored.truncate(k);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_functions_by_name() {
        let (a, b) = ([1.0, 2.0], [4.0, -2.0]);
        for (name, expected) in [
            ("cosine", 0.0),
            ("dot", 0.0),
            ("euclidean", -5.0),
            ("manhattan", -7.0),
        ] {
            let f = Similarity::from_name(name).unwrap();
            assert_eq!(f.score(&a, &b), expected, "{name}");
        }
        assert_eq!(Similarity::from_name("dot").unwrap().name(), "dot");
        assert!(Similarity::from_name("jaccard").is_none());
        assert!(Similarity::from_name("dot_product").is_none()); // a member name, not a value
        assert_eq!(Similarity::default(), Similarity::Cosine);
    }

    /// f64 reference dot product.
    fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn dot_is_the_same_bits_on_every_isa() {
        for len in [0, 1, 15, 16, 17, 63, 384, 769] {
            let (a, b) = (values(len, 3), values(len, 4));
            let portable = dot_lanes(&a, &b).to_bits();
            #[cfg(target_arch = "x86_64")]
            for isa in ember_cpu::supported_isas() {
                let got = match isa {
                    // SAFETY: `supported_isas` lists only what this CPU has.
                    ember_cpu::Isa::Avx512 => unsafe { dot_avx512(&a, &b) },
                    // SAFETY: as above.
                    ember_cpu::Isa::Avx2 => unsafe { dot_avx2(&a, &b) },
                    ember_cpu::Isa::Scalar => dot_lanes(&a, &b),
                };
                assert_eq!(got.to_bits(), portable, "len {len}, {isa}");
            }
            assert_eq!(dot(&a, &b).to_bits(), portable, "len {len}");
        }
    }

    #[test]
    fn dot_matches_f64_reference_on_odd_lengths() {
        for len in [0, 1, 15, 16, 17, 63, 384, 769] {
            let (a, b) = (values(len, 1), values(len, 2));
            let ours = dot(&a, &b) as f64;
            let reference = dot_f64(&a, &b);
            assert!(
                (ours - reference).abs() <= 1e-5 * (1.0 + reference.abs()),
                "len {len}: {ours} vs {reference}"
            );
        }
    }

    #[test]
    fn cosine_bounds_and_zero_rows() {
        let a = values(384, 3);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        let neg: Vec<f32> = a.iter().map(|x| -x).collect();
        assert!((cosine(&a, &neg) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&a, &vec![0.0; 384]), 0.0);
    }

    #[test]
    fn top_k_orders_by_score_then_index_and_puts_nan_last() {
        let dim = 4;
        let rows = [
            [1.0, 0.0, 0.0, 0.0], // 1.0
            [0.0, 1.0, 0.0, 0.0], // 0.0
            [f32::NAN, 0.0, 0.0, 0.0],
            [2.0, 0.0, 0.0, 0.0],  // 1.0, later index
            [-1.0, 0.0, 0.0, 0.0], // -1.0
        ];
        let data: Vec<f32> = rows.iter().flatten().copied().collect();
        let corpus = Embeddings::from_vec(data, rows.len(), dim).expect("shape");
        let hits = top_k(&[3.0, 0.0, 0.0, 0.0], &corpus, 10);
        let order: Vec<usize> = hits.iter().map(|h| h.0).collect();
        assert_eq!(order, [0, 3, 1, 4, 2]);
        assert_eq!(top_k(&[1.0, 0.0, 0.0, 0.0], &corpus, 2).len(), 2);
        assert!(top_k(&[1.0, 0.0, 0.0, 0.0], &corpus, 0).is_empty());
    }
}
