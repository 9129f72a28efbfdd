//! The text an int8 model is calibrated on at load (see
//! [`ember_bert::BertModel::from_weights_calibrated`]): 48 short sentences of varied kinds
//! (news, questions, instructions, science, everyday life), written for this purpose, so
//! that neither the benchmark corpus (`benches/corpus/`) nor the test fixtures take part in
//! choosing the exact channels.

use ember_cpu::Precision;

use crate::tokenize::TextTokenizer;
use crate::EmberError;

/// The calibration sentences.
const CALIBRATION_TEXTS: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "The central bank raised interest rates by a quarter of a percentage point on Tuesday.",
    "She planted tomatoes, basil and peppers in the small garden behind the house.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "What time does the last train to the airport leave on Sundays?",
    "The committee will review the proposal and publish its findings next month.",
    "A compiler translates source code written in a high-level language into machine code.",
    "He apologised for the delay and promised to deliver the package by Friday.",
    "The museum's new exhibition features paintings from the early twentieth century.",
    "Heavy rain caused flooding in several villages along the river.",
    "Is it safe to take ibuprofen together with paracetamol?",
    "The striker scored twice in the second half to win the match.",
    "Our team is looking for an engineer with experience in distributed systems.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Please remember to lock the door when you leave the office.",
    "The novel follows a young woman who travels across Europe after the war.",
    "Prices for fresh vegetables rose sharply during the drought.",
    "The server returned an error because the request was missing a header.",
    "Children learn languages more easily than adults, according to the study.",
    "The hotel offers free breakfast and a shuttle to the city centre.",
    "Mountains covered in snow surrounded the quiet lake.",
    "The defendant pleaded not guilty to all charges.",
    "Can you recommend a good book about the history of mathematics?",
    "The company reported a loss for the third consecutive quarter.",
    "Regular exercise improves sleep quality and reduces stress.",
    "The orchestra performed Beethoven's ninth symphony to a full house.",
    "Add the onions to the pan and cook until they are soft and golden.",
    "The satellite will measure changes in sea level over the next decade.",
    "I left my umbrella on the bus this morning.",
    "Voters will elect a new mayor in November.",
    "The bridge was closed for repairs after engineers found cracks in the supports.",
    "Machine learning models can reflect biases present in their training data.",
    "My grandmother used to tell us stories about her childhood on the farm.",
    "The airline cancelled dozens of flights because of the storm.",
    "Water boils at a lower temperature at high altitude.",
    "The students presented their research at an international conference.",
    "He bought a second-hand bicycle and rode it to work every day.",
    "The treaty was signed by representatives of twelve countries.",
    "Where can I find the user manual for this washing machine?",
    "The patient was discharged from hospital after a week of treatment.",
    "Tall grass swayed in the wind as the sun went down.",
    "The new law requires all restaurants to display calorie information.",
    "A violin, a cello and a piano filled the small hall with music.",
    "The software update fixes several security vulnerabilities.",
    "They argued about politics all through dinner.",
    "The ancient city was buried under volcanic ash for centuries.",
];

/// The calibration batch for `dtype`, packed: token ids `[T]` and `seq_offsets` `[n + 1]`;
/// empty unless `dtype` is [`Precision::Int8`] (the only precision that uses it).
pub(crate) fn calibration_batch(
    tokenizer: &TextTokenizer,
    dtype: Precision,
) -> Result<(Vec<u32>, Vec<usize>), EmberError> {
    let mut ids = Vec::new();
    let mut offsets = vec![0];
    if dtype != Precision::Int8 {
        return Ok((ids, offsets));
    }
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
