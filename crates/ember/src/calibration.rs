//! The text an int8 model is calibrated on at load (see
//! [`ember_bert::BertModel::calibrated_int8`]): `calibration/sentences.txt`, 480 sentences
//! written for this purpose (news, science, law, cooking, software, conversation,
//! questions, reviews, a few long ones and a few in French, German or Spanish), so that
//! neither the benchmark corpus (`benches/corpus/`) nor the test fixtures take part in
//! quantising the model; no line shares six words in a row with the corpus.
//!
//! GPTQ rounding needs this many: it fits each weight to the inputs' correlations, which
//! some thousands of tokens pin down and a handful of sentences do not. Simulated on
//! all-MiniLM-L6-v2 (calibrating on held-out corpus lines), 16 sentences gave GPTQ little
//! over rounding to nearest, 150 (3,200 tokens) most of the gain, 300 to 600 nearly all of
//! it. The cost is load time: one f32 forward pass over these (about 9,700 tokens), plus
//! GPTQ's `XᵀX`, factorisations and rounding (see `ember_cpu`'s `gemm/gptq.rs`).

use crate::tokenize::TextTokenizer;
use crate::EmberError;

/// The calibration sentences, one per line.
const CALIBRATION_TEXT: &str = include_str!("calibration/sentences.txt");

/// The calibration batch, packed: token ids `[T]` and `seq_offsets` `[n + 1]`.
pub(crate) fn calibration_batch(
    tokenizer: &TextTokenizer,
) -> Result<(Vec<u32>, Vec<usize>), EmberError> {
    let mut ids = Vec::new();
    let mut offsets = vec![0];
    let mut text_ids = Vec::new();
    for (index, text) in CALIBRATION_TEXT.lines().enumerate() {
        tokenizer
            .encode_into(text, &mut text_ids)
            .map_err(|message| EmberError::Tokenize {
                index,
                message: format!("int8 calibration text: {message}"),
            })?;
        ids.extend_from_slice(&text_ids);
        offsets.push(ids.len());
    }
    Ok((ids, offsets))
}
