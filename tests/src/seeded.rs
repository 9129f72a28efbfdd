//! A BERT model folder whose weights come from a seed, without Python.
//!
//! `make_reference.py` implements the same recipe in numpy, so the committed reference outputs
//! describe exactly the weights this module writes. For flat index `j` of tensor `name`:
//!
//! ```text
//! u = mix(fnv1a64(name) + (j + 1)·0x9E3779B97F4A7C15)      (mod 2^64; mix = splitmix64's finaliser)
//! f = (u >> 40) / 2^24                                     ∈ [0, 1), exact
//! w = f32(center + scale·(2f − 1))                         (f64, rounded once)
//! ```
//! `(center, scale)`: LayerNorm weight (1, 0.2), LayerNorm bias (0, 0.2), embedding tables
//! (0, 1), other biases (0, 0.1), linear weights (0, 0.06).

use std::path::Path;

use ember_tensor::DType;

/// FNV-1a, 64-bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's output function.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `(center, scale)` for a tensor name.
pub fn center_scale(name: &str) -> (f64, f64) {
    if name.ends_with("LayerNorm.weight") {
        (1.0, 0.2)
    } else if name.ends_with("LayerNorm.bias") {
        (0.0, 0.2)
    } else if name.starts_with("embeddings.") && name.ends_with("_embeddings.weight") {
        (0.0, 1.0)
    } else if name.ends_with(".bias") {
        (0.0, 0.1)
    } else {
        (0.0, 0.06)
    }
}

/// The `len` values of tensor `name`.
pub fn seeded_values(name: &str, len: usize) -> Vec<f32> {
    let base = fnv1a64(name.as_bytes());
    let (center, scale) = center_scale(name);
    (0..len as u64)
        .map(|j| {
            let u = mix(base.wrapping_add((j + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let f = (u >> 40) as f64 / (1u64 << 24) as f64;
            (center + scale * (2.0 * f - 1.0)) as f32
        })
        .collect()
}

/// Shape of a BERT encoder: `(vocab, hidden, layers, heads, intermediate, max_positions)`.
#[derive(Clone, Copy, Debug)]
pub struct BertShape {
    /// Vocabulary size (rows of the word-embedding table).
    pub vocab: usize,
    /// `H`, the hidden size.
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads; divides `hidden`.
    pub heads: usize,
    /// `F`, the feed-forward width.
    pub intermediate: usize,
    /// Rows of the position-embedding table: the longest sequence.
    pub max_positions: usize,
}

/// SBERT-base-nli-v2's encoder: bert-base-uncased.
pub const SBERT_BASE: BertShape = BertShape {
    vocab: 30522,
    hidden: 768,
    layers: 12,
    heads: 12,
    intermediate: 3072,
    max_positions: 512,
};

/// Every `BertModel` tensor (no `bert.` prefix, no pooler) with its shape, in checkpoint order.
pub fn bert_tensor_shapes(s: BertShape) -> Vec<(String, Vec<usize>)> {
    let (h, f) = (s.hidden, s.intermediate);
    let mut shapes = vec![
        (
            "embeddings.word_embeddings.weight".to_owned(),
            vec![s.vocab, h],
        ),
        (
            "embeddings.position_embeddings.weight".to_owned(),
            vec![s.max_positions, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_owned(),
            vec![2, h],
        ),
        ("embeddings.LayerNorm.weight".to_owned(), vec![h]),
        ("embeddings.LayerNorm.bias".to_owned(), vec![h]),
    ];
    for i in 0..s.layers {
        let p = format!("encoder.layer.{i}");
        for part in ["query", "key", "value"] {
            shapes.push((format!("{p}.attention.self.{part}.weight"), vec![h, h]));
            shapes.push((format!("{p}.attention.self.{part}.bias"), vec![h]));
        }
        shapes.push((format!("{p}.attention.output.dense.weight"), vec![h, h]));
        shapes.push((format!("{p}.attention.output.dense.bias"), vec![h]));
        shapes.push((format!("{p}.attention.output.LayerNorm.weight"), vec![h]));
        shapes.push((format!("{p}.attention.output.LayerNorm.bias"), vec![h]));
        shapes.push((format!("{p}.intermediate.dense.weight"), vec![f, h]));
        shapes.push((format!("{p}.intermediate.dense.bias"), vec![f]));
        shapes.push((format!("{p}.output.dense.weight"), vec![h, f]));
        shapes.push((format!("{p}.output.dense.bias"), vec![h]));
        shapes.push((format!("{p}.output.LayerNorm.weight"), vec![h]));
        shapes.push((format!("{p}.output.LayerNorm.bias"), vec![h]));
    }
    shapes
}

/// Writes a complete sentence-transformers folder at `dir`: seeded weights of shape `s`, the
/// tokenizer files of `tokenizer_from` (a BERT-uncased vocabulary), mean pooling, no Normalize,
/// `max_seq_length`.
pub fn write_seeded_folder(dir: &Path, s: BertShape, tokenizer_from: &Path, max_seq_length: usize) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": s.vocab, "hidden_size": s.hidden, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "intermediate_size": s.intermediate,
        "max_position_embeddings": s.max_positions, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "pad_token_id": 0
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        format!(r#"{{"max_seq_length": {max_seq_length}, "do_lower_case": false}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        format!(
            r#"{{"word_embedding_dimension": {}, "pooling_mode_mean_tokens": true}}"#,
            s.hidden
        ),
    )
    .unwrap();
    for file in [
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let from = tokenizer_from.join(file);
        if from.exists() {
            std::fs::copy(&from, dir.join(file)).unwrap();
        }
    }
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = bert_tensor_shapes(s)
        .into_iter()
        .map(|(name, shape)| {
            let values = seeded_values(&name, shape.iter().product());
            let bytes = ember_tensor::f32_to_le_bytes(&values);
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(&str, DType, Vec<usize>, &[u8])> = tensors
        .iter()
        .map(|(n, shape, b)| (n.as_str(), DType::F32, shape.clone(), b.as_slice()))
        .collect();
    ember_tensor::write_safetensors(dir.join("model.safetensors"), &views).unwrap();
}
