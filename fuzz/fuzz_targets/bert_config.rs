//! Bytes → `BertConfig::from_json_str`: `Ok` or `Err`, never a panic; an accepted config is
//! within the bounds the loader sizes buffers from.

#![no_main]

use std::path::Path;

use ember_bert::BertConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = BertConfig::from_json_str(text, Path::new("config.json")) else {
        return;
    };
    assert_eq!(
        config.head_dim() * config.num_attention_heads,
        config.hidden_size
    );
    assert!(config.hidden_size <= 1 << 16 && config.num_hidden_layers <= 1024);
    assert!(config.layer_norm_eps > 0.0 && config.layer_norm_eps < 1.0);
    assert!(config
        .encoder_flops(config.max_position_embeddings)
        .is_finite());
});
