//! Multi-head self-attention over a packed batch, one sequence at a time (no padding, no mask).
//!
//! `qkv` is `[T, 3H]` (the fused projection: `[Q | K | V]`, head `h` at columns `h·hd..(h+1)·hd`
//! of each part), `seq_offsets` delimits the sequences, `out` is `[T, H]`:
//!
//! `out[t, h] = softmax(q_t,h · K_s,hᵀ / √hd) · V_s,h`   for the sequence `s` holding `t`.
//!
//! Sequences run in parallel on rayon's current pool; a sequence's result depends only on its
//! own rows, computed in a fixed order, so it is bit-identical alone or in any batch, with any
//! thread count. The score row lives in a per-thread buffer reused across calls.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::error::{check_len, checked_elems, KernelError};
use crate::math::exp_f32;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `*mut f32` that may cross threads: each task writes the rows of its own sequence only.
#[derive(Clone, Copy)]
struct OutRows(*mut f32);
// SAFETY: tasks write disjoint row ranges (sequences do not overlap: offsets are validated to be
// strictly increasing), so sharing the pointer cannot produce a data race.
unsafe impl Send for OutRows {}
unsafe impl Sync for OutRows {}

fn validate(
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    out: &[f32],
) -> Result<usize, KernelError> {
    const OP: &str = "attention_varlen";
    let hidden = checked_elems(OP, "hidden", heads, head_dim)?;
    let tokens = *seq_offsets.last().ok_or(KernelError::InvalidOffsets {
        op: OP,
        reason: "empty".into(),
    })?;
    if seq_offsets[0] != 0 || seq_offsets.windows(2).any(|w| w[1] <= w[0]) {
        return Err(KernelError::InvalidOffsets {
            op: OP,
            reason: "must start at 0 and strictly increase".into(),
        });
    }
    let row = checked_elems(OP, "qkv", hidden, 3)?;
    check_len(OP, "qkv", checked_elems(OP, "qkv", tokens, row)?, qkv.len())?;
    check_len(OP, "out", checked_elems(OP, "out", tokens, hidden)?, out.len())?;
    Ok(hidden)
}

/// Attention for every sequence and head of a packed batch; see the module docs.
pub fn attention_varlen(
    qkv: &[f32],
    seq_offsets: &[usize],
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let hidden = validate(qkv, seq_offsets, heads, head_dim, out)?;
    if hidden == 0 {
        return Ok(());
    }
    let scale = 1.0 / (head_dim as f32).sqrt();
    let out_rows = OutRows(out.as_mut_ptr());
    (0..seq_offsets.len() - 1).into_par_iter().for_each(|s| {
        let (start, end) = (seq_offsets[s], seq_offsets[s + 1]);
        // SAFETY: rows start..end of `out` (length checked in `validate`) belong to sequence `s`
        // alone; no other task touches them while this one runs.
        let out_seq = unsafe {
            let rows = out_rows;
            std::slice::from_raw_parts_mut(rows.0.add(start * hidden), (end - start) * hidden)
        };
        let qkv_seq = &qkv[start * 3 * hidden..end * 3 * hidden];
        SCORES.with(|scores| {
            let mut scores = scores.borrow_mut();
            if scores.len() < end - start {
                scores.resize(end - start, 0.0);
            }
            attend_sequence(qkv_seq, end - start, heads, head_dim, scale, &mut scores[..end - start], out_seq);
        });
    });
    Ok(())
}

/// One sequence of `len` tokens: `qkv` is `[len, 3H]`, `out` is `[len, H]`.
fn attend_sequence(
    qkv: &[f32],
    len: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hidden = heads * head_dim;
    let row = 3 * hidden;
    for h in 0..heads {
        let (q_col, k_col, v_col) = (h * head_dim, hidden + h * head_dim, 2 * hidden + h * head_dim);
        for i in 0..len {
            let q = &qkv[i * row + q_col..i * row + q_col + head_dim];
            let mut max = f32::NEG_INFINITY;
            for (j, score) in scores.iter_mut().enumerate() {
                let k = &qkv[j * row + k_col..j * row + k_col + head_dim];
                *score = dot(q, k) * scale;
                max = max.max(*score);
            }
            let mut sum = 0.0f32;
            for score in scores.iter_mut() {
                *score = exp_f32(*score - max);
                sum += *score;
            }
            let inv = 1.0 / sum;
            let o = &mut out[i * hidden + h * head_dim..i * hidden + (h + 1) * head_dim];
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let v = &qkv[j * row + v_col..j * row + v_col + head_dim];
                let p = p * inv;
                for (o, &v) in o.iter_mut().zip(v) {
                    *o = p.mul_add(v, *o);
                }
            }
        }
    }
}

/// Dot product with 8 independent accumulators (vectorisable; fixed order).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] = a[c * 8 + l].mul_add(b[c * 8 + l], acc[l]);
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 8..a.len() {
        tail = a[i].mul_add(b[i], tail);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The plain reference: f64 throughout.
pub fn attention_varlen_reference(qkv: &[f32], seq_offsets: &[usize], heads: usize, head_dim: usize, out: &mut [f32]) {
    let hidden = heads * head_dim;
    let row = 3 * hidden;
    let scale = 1.0 / (head_dim as f64).sqrt();
    for w in seq_offsets.windows(2) {
        let (start, end) = (w[0], w[1]);
        for h in 0..heads {
            for i in start..end {
                let q = &qkv[i * row + h * head_dim..][..head_dim];
                let scores: Vec<f64> = (start..end)
                    .map(|j| {
                        let k = &qkv[j * row + hidden + h * head_dim..][..head_dim];
                        q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for d in 0..head_dim {
                    let value: f64 = (start..end)
                        .zip(&exps)
                        .map(|(j, e)| e / sum * qkv[j * row + 2 * hidden + h * head_dim + d] as f64)
                        .sum();
                    out[i * hidden + h * head_dim + d] = value as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
            })
            .collect()
    }

    #[test]
    fn matches_reference_and_is_batch_invariant() {
        for (heads, head_dim, lens) in [(1, 1, vec![1]), (4, 13, vec![3, 1, 40]), (12, 32, vec![7, 64, 2]), (2, 64, vec![130])] {
            let hidden = heads * head_dim;
            let mut offsets = vec![0];
            for l in &lens {
                offsets.push(offsets.last().unwrap() + l);
            }
            let tokens = *offsets.last().unwrap();
            let qkv = random(tokens * 3 * hidden, tokens as u64);
            let mut fast = vec![f32::NAN; tokens * hidden];
            let mut reference = vec![f32::NAN; tokens * hidden];
            attention_varlen(&qkv, &offsets, heads, head_dim, &mut fast).unwrap();
            attention_varlen_reference(&qkv, &offsets, heads, head_dim, &mut reference);
            for (a, b) in fast.iter().zip(&reference) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
            // The last sequence alone gives the same bits.
            let (s, e) = (offsets[lens.len() - 1], tokens);
            let mut alone = vec![f32::NAN; (e - s) * hidden];
            attention_varlen(&qkv[s * 3 * hidden..], &[0, e - s], heads, head_dim, &mut alone).unwrap();
            assert_eq!(alone, fast[s * hidden..]);
        }
    }

    #[test]
    fn bad_offsets_are_errors() {
        let qkv = vec![0.0; 2 * 3 * 4];
        let mut out = vec![0.0; 2 * 4];
        assert!(attention_varlen(&qkv, &[0, 1, 1, 2], 1, 4, &mut out).is_err());
        assert!(attention_varlen(&qkv, &[1, 2], 1, 4, &mut out).is_err());
        assert!(attention_varlen(&qkv, &[0, 3], 1, 4, &mut out).is_err());
        assert!(attention_varlen(&qkv, &[], 1, 4, &mut out).is_err());
    }
}
