//! The text an int8 model is calibrated on at load (see
//! [`ember_bert::BertModel::from_weights_calibrated`]): 16 short sentences of varied kinds
//! (news, questions, instructions, science, everyday life), written for this purpose, so
//! that neither the benchmark corpus (`benches/corpus/`) nor the test fixtures take part in
//! choosing the exact channels. The choice is stable: 8, 16 or 48 such sentences give the
//! same all-MiniLM-L6-v2 accuracy; each costs load time (one f32 forward pass over them).

use crate::tokenize::TextTokenizer;
use crate::EmberError;

/// The calibration sentences.
const CALIBRATION_TEXTS: &[&str] = &[
    "How do I reset my password if I no longer have access to my email?",
    "She planted tomatoes, basil and peppers in the small garden behind the house.",
    "The committee will review the proposal and publish its findings next month.",
    "The museum's new exhibition features paintings from the early twentieth century.",
    "The striker scored twice in the second half to win the match.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Prices for fresh vegetables rose sharply during the drought.",
    "The hotel offers free breakfast and a shuttle to the city centre.",
    "Can you recommend a good book about the history of mathematics?",
    "The orchestra performed Beethoven's ninth symphony to a full house.",
    "I left my umbrella on the bus this morning.",
    "Machine learning models can reflect biases present in their training data.",
    "Water boils at a lower temperature at high altitude.",
    "The treaty was signed by representatives of twelve countries.",
    "Add the onions to the pan and cook until they are soft and golden.",
    "The software update fixes several security vulnerabilities.",
];

/// The calibration batch, packed: token ids `[T]` and `seq_offsets` `[n + 1]`.
pub(crate) fn calibration_batch(
    tokenizer: &TextTokenizer,
) -> Result<(Vec<u32>, Vec<usize>), EmberError> {
    let mut ids = Vec::new();
    let mut offsets = vec![0];
    let mut text_ids = Vec::new();
    for (index, text) in CALIBRATION_TEXTS.iter().enumerate() {
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
