//! Text → token ids, as sentence-transformers tokenizes for its Transformer module.
//!
//! `tokenizer.json` is loaded with the `tokenizers` crate; a folder with only `vocab.txt` and
//! `tokenizer_config.json` gets the BERT WordPiece pipeline transformers builds from them
//! (BERT normaliser with the config's lower-casing, accent and CJK rules, BERT pre-tokeniser,
//! `[CLS] … [SEP]`). For a model-specific transformers class (BERT's, MPNet's, RoBERTa's,
//! XLM-R's, CamemBERT's) only the file's vocabulary and added tokens are kept and the rest is
//! built as that class builds it (`tokenizer_class.rs`). Truncation is always `longest_first`
//! to `max_seq_length` and padding is off — whatever `tokenizer.json` says — because the batch
//! is packed.
//!
//! When the pipeline is exactly the standard BERT one (BertNormalizer, optionally after a
//! `Lowercase`; BertPreTokenizer; WordPiece; `[CLS] … [SEP]` by BertProcessing or the
//! equivalent TemplateProcessing, or MPNet's `<s> … </s>` by RobertaProcessing; added tokens
//! without `single_word`), texts are encoded by
//! Ember's own [`WordPieceTokenizer`], which gives the same ids without allocating. When it is
//! a byte-level BPE one (GPT-2 / RoBERTa / ModernBERT: no normaliser or NFC / Lowercase; the
//! ByteLevel pre-tokeniser with its regex; BPE without dropout, byte fallback or affixes;
//! RobertaProcessing, BertProcessing, TemplateProcessing `[specials] $A [specials]`, ByteLevel
//! or none), by Ember's own `bpe::BpeTokenizer`, likewise. When it is a SentencePiece Unigram
//! one (XLM-RoBERTa: no normaliser, or Precompiled / Strip / Replace `" {n,}"` or a literal;
//! Metaspace, after WhitespaceSplit or alone; Unigram without byte fallback; the same
//! post-processors), by Ember's own `unigram::UnigramTokenizer`, likewise. Any other pipeline
//! runs on the `tokenizers` crate, which stays loaded as the reference either way.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Sequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme as MetaspacePrependScheme};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::bpe::{BpeAddedToken, BpeScratch, BpeSpec, BpeTokenizer, NormalizerStep};
use crate::folder::read_json;
use crate::tokenizer_class::{
    self, rebuilt_class, Specials, TokenizerClass, TokenizerConfig, TruncationSide,
};
use crate::unigram::{
    check_charsmap, PrependScheme, UnigramNormalizerStep, UnigramScratch, UnigramSpec,
    UnigramTokenizer,
};
use crate::wordpiece::{
    AddedTokenSpec, BertNormalization, WordPieceScratch, WordPieceSpec, WordPieceTokenizer,
};
use crate::EmberError;

/// A tokenizer configured for one model: truncation to `max_seq_length`, no padding.
pub struct TextTokenizer {
    /// The `tokenizers` crate's pipeline: the reference, and the path for pipelines
    /// `fast` does not reproduce. `None` once [`TextTokenizer::release_reference`] has
    /// dropped it (only ever with `fast` present).
    tokenizer: Option<Tokenizer>,
    /// The same pipeline without per-text allocation, when it is the standard BERT one, a
    /// byte-level BPE one or a SentencePiece Unigram one.
    fast: Option<FastTokenizer>,
    /// Why `fast` is `None`.
    fallback_reason: Option<String>,
    /// `tokenizer` without truncation, built the first time a text's full length is asked
    /// for: the reference count of dropped tokens, and the fallback path's way to count them.
    untruncated: OnceLock<Result<Tokenizer, String>>,
    max_seq_length: usize,
    /// transformers' `all_special_ids` (`[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`, …), sorted
    /// (`Specials::ids`): sentence-transformers consults them to count a prompt's
    /// tokens.
    special_ids: Vec<u32>,
    /// `tokenizer.json` or `vocab.txt`: the file errors about the vocabulary name.
    source: PathBuf,
    /// The transformers class whose pipeline was built (`None`: `tokenizer.json` as it is).
    class: Option<&'static str>,
}

/// Ember's own allocation-free tokenizers.
enum FastTokenizer {
    WordPiece(WordPieceTokenizer),
    Bpe(BpeTokenizer),
    Unigram(UnigramTokenizer),
}

/// Buffers [`TextTokenizer::encode_into_with`] reuses from one text to the next.
#[derive(Debug, Default)]
pub struct TokenizeScratch {
    wordpiece: WordPieceScratch,
    bpe: BpeScratch,
    unigram: UnigramScratch,
}

thread_local! {
    /// Scratch for [`TextTokenizer::encode_into`], whose callers bring none.
    static SCRATCH: RefCell<TokenizeScratch> = RefCell::new(TokenizeScratch::default());
}

impl TextTokenizer {
    /// Loads the tokenizer of the Transformer module in `dir`.
    ///
    /// `max_seq_length` is sentence-transformers' (from `sentence_bert_config.json`), else the
    /// tokenizer config's `model_max_length`; either way capped at `max_tokens`, the longest
    /// sequence the model's position table (ModernBERT: its rotary tables) holds
    /// ([`ember_bert::BertConfig::max_tokens`]).
    /// `do_lower_case` prepends a `Lowercase` normaliser unless one is there, as
    /// sentence-transformers does.
    pub fn load(
        dir: &Path,
        max_seq_length: Option<usize>,
        do_lower_case: bool,
        max_tokens: usize,
    ) -> Result<Self, EmberError> {
        let config = TokenizerConfig::read(dir)?;
        let json_path = dir.join("tokenizer.json");
        let vocab_path = dir.join("vocab.txt");
        let class = rebuilt_class(dir, &config);
        let built = |e: tokenizer_class::BuildError| EmberError::Tokenizer {
            path: dir.join(e.file),
            message: e.message,
        };
        let mut as_is_specials = None;
        let mut file_left = false;
        let (mut tokenizer, source, model_fields, built_class) = if json_path.exists() {
            let (mut tokenizer, mut model_fields, file_added) = read_tokenizer_json(&json_path)?;
            match class {
                Some(class) => {
                    tokenizer_class::rebuild(
                        &mut tokenizer,
                        &mut model_fields,
                        &file_added,
                        &config,
                        class,
                    )
                    .map_err(built)?;
                }
                None => {
                    // The crate loads such a file and then fails on the first unknown word.
                    // (Rebuilt, the files' unknown token is the one checked.)
                    if let ModelWrapper::WordPiece(model) = tokenizer.get_model() {
                        if tokenizer.token_to_id(&model.unk_token).is_none() {
                            return Err(EmberError::Tokenizer {
                                path: json_path,
                                message: format!(
                                    "the WordPiece unknown token {:?} is not in the vocabulary",
                                    model.unk_token
                                ),
                            });
                        }
                    }
                    as_is_specials = Some(
                        tokenizer_class::as_it_is(&mut tokenizer, &file_added, &config)
                            .map_err(built)?,
                    );
                }
            }
            file_left = tokenizer
                .get_truncation()
                .is_some_and(|t| t.direction == TruncationDirection::Left);
            (tokenizer, json_path, model_fields, class)
        } else if vocab_path.exists() {
            let vocab = vocab_path.to_str().ok_or_else(|| EmberError::Tokenizer {
                path: vocab_path.clone(),
                message: "path is not UTF-8".into(),
            })?;
            let (tokenizer, built) =
                tokenizer_class::wordpiece_from_vocab(vocab, &config, class).map_err(built)?;
            (tokenizer, vocab_path, None, Some(built))
        } else {
            return Err(EmberError::Tokenizer {
                path: dir.to_owned(),
                message: "neither tokenizer.json nor vocab.txt is in the folder".into(),
            });
        };

        // sentence-transformers' do_lower_case: a `Lowercase` in front of the normaliser. Setting
        // a normaliser in tokenizers (the Python package) normalises the added tokens'
        // patterns again; the crate does that when tokens are added, so add none.
        if do_lower_case {
            let normalizer = tokenizer.get_normalizer().cloned();
            let has_lowercase = match &normalizer {
                Some(NormalizerWrapper::Lowercase(_)) => true,
                Some(NormalizerWrapper::Sequence(seq)) => seq
                    .as_ref()
                    .iter()
                    .any(|n| matches!(n, NormalizerWrapper::Lowercase(_))),
                _ => false,
            };
            if !has_lowercase {
                let mut chain = vec![NormalizerWrapper::Lowercase(Lowercase)];
                match normalizer {
                    Some(NormalizerWrapper::Sequence(seq)) => chain.extend(seq),
                    Some(other) => chain.push(other),
                    None => {}
                }
                tokenizer.with_normalizer(Some(Sequence::new(chain)));
                tokenizer.add_tokens(&[]);
            }
        }

        let max_seq_length = max_seq_length
            .or(config.model_max_length)
            .unwrap_or(max_tokens)
            .min(max_tokens);
        // transformers' truncation_side, else tokenizer.json's direction.
        let left = match config.truncation_side {
            Some(side) => side == TruncationSide::Left,
            None => file_left,
        };
        if max_seq_length < 2 {
            return Err(EmberError::Tokenizer {
                path: source,
                message: format!(
                    "max_seq_length {max_seq_length} leaves no room for the text beside the special tokens ([CLS] and [SEP], or <s> and </s>)"
                ),
            });
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: match left {
                    true => TruncationDirection::Left,
                    false => TruncationDirection::Right,
                },
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| EmberError::Tokenizer {
                path: source.clone(),
                message: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        if let Some(PostProcessorWrapper::Template(template)) = tokenizer.get_post_processor() {
            check_template_tokens(template).map_err(|message| EmberError::Tokenizer {
                path: source.clone(),
                message,
            })?;
        }
        let fast = match tokenizer.get_model() {
            // Ember's own tokenizers cut from the right.
            _ if left => Err("truncation from the left (truncation_side)".to_owned()),
            ModelWrapper::BPE(_) => byte_level_bpe_spec(
                &tokenizer,
                model_fields
                    .as_ref()
                    .and_then(|fields| fields.get("merges")),
                max_seq_length,
            )
            .and_then(|spec| BpeTokenizer::new(&spec).map_err(|e| e.to_string()))
            .map(FastTokenizer::Bpe),
            ModelWrapper::Unigram(_) => {
                unigram_spec(&tokenizer, model_fields.as_ref(), max_seq_length)
                    .and_then(|spec| UnigramTokenizer::new(&spec).map_err(|e| e.to_string()))
                    .map(FastTokenizer::Unigram)
            }
            _ => standard_bert_spec(&tokenizer, max_seq_length)
                .and_then(|spec| WordPieceTokenizer::new(&spec).map_err(|e| e.to_string()))
                .map(FastTokenizer::WordPiece),
        };
        let (fast, fallback_reason) = match fast {
            Ok(fast) => (Some(fast), None),
            Err(reason) => (None, Some(reason)),
        };
        let specials = as_is_specials.unwrap_or_else(|| Specials::of(&config, built_class));
        let special_ids = specials.ids(&tokenizer);
        Ok(Self {
            tokenizer: Some(tokenizer),
            fast,
            fallback_reason,
            untruncated: OnceLock::new(),
            max_seq_length,
            special_ids,
            source,
            class: built_class.map(TokenizerClass::name),
        })
    }

    /// Tokenizes one text into `ids` (cleared first): `[CLS] … [SEP]`, at most
    /// `max_seq_length` ids. Uses a per-thread scratch; see
    /// [`encode_into_with`](Self::encode_into_with) to bring one.
    pub fn encode_into(&self, text: &str, ids: &mut Vec<u32>) -> Result<(), String> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.encode_into_with(text, ids, &mut scratch),
            // Re-entered on this thread (cannot happen here): a fresh scratch is still right.
            Err(_) => self.encode_into_with(text, ids, &mut TokenizeScratch::default()),
        })
    }

    /// Gives `scratch` room for texts of up to `text_bytes` bytes on this tokenizer's path
    /// (for words of up to 256 bytes), so that none of them grows it; the fallback path has
    /// no scratch.
    pub fn reserve_scratch(&self, scratch: &mut TokenizeScratch, text_bytes: usize) {
        match &self.fast {
            Some(FastTokenizer::WordPiece(_)) => scratch.wordpiece.reserve(text_bytes),
            Some(FastTokenizer::Bpe(_)) => scratch.bpe.reserve(text_bytes),
            Some(FastTokenizer::Unigram(_)) => scratch.unigram.reserve(text_bytes),
            None => {}
        }
    }

    /// How many tokens of a text prefixed by `prompt` sentence-transformers counts as the
    /// prompt's (its Transformer's `_get_prompt_length`, which `include_prompt: false` pooling
    /// leaves out): the prompt tokenized alone, special tokens included and truncated as a
    /// text, less one when its last id is a special token (the trailing `[SEP]`). `ids` and
    /// `scratch` are working space, as for [`encode_into_with`](Self::encode_into_with).
    pub fn prompt_length(
        &self,
        prompt: &str,
        ids: &mut Vec<u32>,
        scratch: &mut TokenizeScratch,
    ) -> Result<usize, String> {
        self.encode_into_with(prompt, ids, scratch)?;
        let trailing_special = ids
            .last()
            .is_some_and(|id| self.special_ids.binary_search(id).is_ok());
        Ok(ids.len() - usize::from(trailing_special))
    }

    /// [`encode_into`](Self::encode_into) with the caller's scratch: on the fast path nothing
    /// is allocated once `ids` and `scratch` have grown to the longest text.
    pub fn encode_into_with(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        scratch: &mut TokenizeScratch,
    ) -> Result<(), String> {
        match &self.fast {
            Some(FastTokenizer::WordPiece(wordpiece)) => {
                wordpiece.encode_into(text, ids, &mut scratch.wordpiece);
                Ok(())
            }
            Some(FastTokenizer::Bpe(bpe)) => {
                bpe.encode_into(text, ids, &mut scratch.bpe);
                Ok(())
            }
            Some(FastTokenizer::Unigram(unigram)) => {
                unigram.encode_into(text, ids, &mut scratch.unigram);
                Ok(())
            }
            None => self.reference_encode_into(text, ids),
        }
    }

    /// [`encode_into_with`](Self::encode_into_with) that also returns how many tokens
    /// truncation dropped (0 when the text fits): `ids.len()` + the result is the text's
    /// untruncated length. The whole text is tokenized, in time linear in its length; on the
    /// fast path nothing is allocated beyond what `encode_into_with` would grow.
    pub fn encode_into_counting_dropped(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        scratch: &mut TokenizeScratch,
    ) -> Result<usize, String> {
        match &self.fast {
            Some(FastTokenizer::WordPiece(wordpiece)) => {
                Ok(wordpiece.encode_into_counting_dropped(text, ids, &mut scratch.wordpiece))
            }
            Some(FastTokenizer::Bpe(bpe)) => {
                Ok(bpe.encode_into_counting_dropped(text, ids, &mut scratch.bpe))
            }
            Some(FastTokenizer::Unigram(unigram)) => {
                Ok(unigram.encode_into_counting_dropped(text, ids, &mut scratch.unigram))
            }
            None => {
                self.reference_encode_into(text, ids)?;
                Ok(self
                    .reference_untruncated_len(text)?
                    .saturating_sub(ids.len()))
            }
        }
    }

    /// The text's length in tokens without truncation (special tokens included), by the
    /// `tokenizers` crate: the reference for the dropped counts.
    pub fn reference_untruncated_len(&self, text: &str) -> Result<usize, String> {
        let untruncated = self
            .untruncated
            .get_or_init(|| {
                let mut tokenizer = self.reference()?.clone();
                tokenizer.with_truncation(None).map_err(|e| e.to_string())?;
                Ok(tokenizer)
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let encoding = untruncated
            .encode_fast(text, true)
            .map_err(|e| e.to_string())?;
        Ok(encoding.len())
    }

    /// Tokenizes with the `tokenizers` crate whatever the pipeline: the reference the fast
    /// path is tested against.
    ///
    /// A panic of the crate (it has some on malformed pipelines, see
    /// `check_template_tokens`) is caught and returned as the error.
    pub fn reference_encode_into(&self, text: &str, ids: &mut Vec<u32>) -> Result<(), String> {
        let reference = self.reference()?;
        let encoded = std::panic::catch_unwind(|| reference.encode_fast(text, true));
        let encoding = match encoded {
            Ok(encoded) => encoded.map_err(|e| e.to_string())?,
            Err(payload) => {
                return Err(format!(
                    "the tokenizers crate panicked: {}",
                    panic_message(payload.as_ref())
                ))
            }
        };
        ids.clear();
        ids.extend_from_slice(encoding.get_ids());
        Ok(())
    }

    /// Drops the `tokenizers` crate's pipeline when texts take Ember's own WordPiece, BPE or
    /// Unigram path, which then needs nothing else (about 4 MB for a 30k-word vocabulary: the
    /// crate keeps its own vocabulary maps). The `reference_*` methods are errors afterwards; a
    /// tokenizer on the crate's path keeps it.
    pub fn release_reference(&mut self) {
        if self.fast.is_some() {
            self.tokenizer = None;
        }
    }

    /// The `tokenizers` crate's pipeline, unless [`release_reference`](Self::release_reference)
    /// dropped it.
    fn reference(&self) -> Result<&Tokenizer, String> {
        self.tokenizer.as_ref().ok_or_else(|| {
            "the tokenizers crate's pipeline was released (TextTokenizer::release_reference)"
                .to_owned()
        })
    }

    /// The transformers 5 tokenizer class whose pipeline this is (`BertTokenizer`,
    /// `MPNetTokenizer`, `RobertaTokenizer`, `XLMRobertaTokenizer`, `CamembertTokenizer`), or
    /// `None` where `tokenizer.json` is taken as it is (`PreTrainedTokenizerFast`, and classes
    /// Ember does not rebuild).
    pub fn transformers_class(&self) -> Option<&'static str> {
        self.class
    }

    /// transformers' `all_special_ids`, sorted: the ids of the named special tokens (`[CLS]`,
    /// `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`, model-specific ones) and the extra ones, as the
    /// folder's files (or its class's defaults) name them.
    pub fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    /// Whether texts take Ember's allocation-free WordPiece, byte-level BPE or Unigram path
    /// (the pipeline is the standard BERT one, a byte-level BPE one or a SentencePiece Unigram
    /// one) rather than the `tokenizers` crate.
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Why the pipeline runs on the `tokenizers` crate; `None` on the fast path.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The most tokens a text becomes, `[CLS]` and `[SEP]` (or `<s>`, `</s>`) included (`≥ 2`,
    /// `≤` the model's [`ember_bert::BertConfig::max_tokens`]); longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Checks that every id the tokenizer can emit — its vocabulary, added tokens and the
    /// post-processor's special tokens — has a row in an embedding table of `vocab_size` rows;
    /// otherwise the folder would load and then fail on the first text that used the word.
    pub fn check_ids_below(&self, vocab_size: usize) -> Result<(), EmberError> {
        let vocab = self
            .reference()
            .map_err(|message| EmberError::Tokenizer {
                path: self.source.clone(),
                message,
            })?
            .get_vocab(true);
        let largest_in_vocab = vocab.iter().max_by_key(|&(_, &id)| id);
        // Whatever the post-processor is, encoding "" gives exactly its special tokens.
        let mut special_ids = Vec::new();
        self.reference_encode_into("", &mut special_ids)
            .map_err(|message| EmberError::Tokenizer {
                path: self.source.clone(),
                message,
            })?;
        let largest_special = special_ids.iter().max().map(|&id| ("(special token)", id));
        let largest = largest_in_vocab
            .map(|(token, &id)| (token.as_str(), id))
            .into_iter()
            .chain(largest_special)
            .max_by_key(|&(_, id)| id);
        match largest {
            Some((token, id)) if id as usize >= vocab_size => Err(EmberError::Tokenizer {
                path: self.source.clone(),
                message: format!(
                    "token {token:?} has id {id}, but the embeddings have config.json's vocab_size {vocab_size} rows"
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// Reads `tokenizer.json` with the `tokenizers` crate, which panics rather than erring on some
/// malformed files (0.22.2: a JSON syntax error inside `"decoder"` reaches an
/// `expect("Helper")`, found by the `tokenizer_files` fuzz target; a `Precompiled` normaliser
/// whose fields do not parse, an `expect("Precompiled")`). The file is parsed as JSON here first,
/// so syntax errors are reported like any other file's, and the crate builds the tokenizer from
/// the parsed value; a panic that still escapes it is caught and reported as an error naming the
/// file (under `panic = "abort"` it would abort instead).
///
/// Also returns the model's fields other than its vocabulary, as written: the crate keeps some
/// private that the fast paths need (BPE's `merges`, Unigram's `unk_id`).
/// `tokenizer.json` as the crate reads it, the model's fields but its vocabulary, and the file's
/// added tokens as listed, with the ids the file gives them.
type TokenizerFile = (Tokenizer, Option<Value>, Vec<(u32, AddedToken)>);

fn read_tokenizer_json(path: &Path) -> Result<TokenizerFile, EmberError> {
    let value = read_json(path)?;
    let added = tokenizer_class::listed_added_tokens(&value);
    let model_fields = value.get("model").and_then(Value::as_object).map(|model| {
        Value::Object(
            model
                .iter()
                .filter(|(key, _)| key.as_str() != "vocab")
                .map(|(key, field)| (key.clone(), field.clone()))
                .collect(),
        )
    });
    let error = |message: String| EmberError::Tokenizer {
        path: path.to_owned(),
        message,
    };
    if let Some(normalizer) = value.get("normalizer") {
        check_charsmaps(normalizer).map_err(error)?;
    }
    match std::panic::catch_unwind(|| serde_json::from_value::<Tokenizer>(value)) {
        Ok(Ok(tokenizer)) => Ok((tokenizer, model_fields, added)),
        Ok(Err(e)) => Err(error(e.to_string())),
        Err(payload) => Err(error(format!(
            "the tokenizers crate panicked reading it: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// Every Precompiled charsmap in a `normalizer` value (nested in Sequences) must be safe to
/// read ([`check_charsmap`]), checked on the JSON before the crate parses it: the crate
/// reserves `trie_size / 4` units before it looks at the length (a 16-byte charsmap claiming
/// 4 GiB asks for 8 GiB: an abort, not a panic, where memory is short), and it loads a double
/// array that points past its end, then panics on the texts that reach there (whatever the
/// model). A charsmap that is not base64 is left to the crate to report.
fn check_charsmaps(normalizer: &Value) -> Result<(), String> {
    match normalizer.get("type").and_then(Value::as_str) {
        // The crate reads a string (or null); anything else made it panic inside its
        // deserialiser, which is caught, but only after the panic hook printed to stderr.
        Some("Precompiled") => match &normalizer["precompiled_charsmap"] {
            Value::String(text) => match base64::decode(text) {
                Ok(blob) => check_charsmap(&blob).map_err(|e| e.to_string()),
                Err(_) => Ok(()), // the crate's own error names it
            },
            Value::Null => Ok(()),
            // The kind only: a hostile file's value may be megabytes long.
            other => Err(format!(
                "a Precompiled normaliser's precompiled_charsmap is {}, not a base64 string",
                match other {
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::Array(_) => "an array",
                    _ => "an object",
                }
            )),
        },
        Some("Sequence") => normalizer["normalizers"]
            .as_array()
            .map_or(Ok(()), |steps| steps.iter().try_for_each(check_charsmaps)),
        _ => Ok(()),
    }
}

/// The message a panic was raised with.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Every special token a TemplateProcessing's templates use must be one of its
/// `special_tokens`: the crate checks this when a template is built, not when one is
/// deserialised, and then panics (a `HashMap` index, "no entry found for key") on every text.
/// Found by the `tokenizer_files` fuzz target.
fn check_template_tokens(template: &TemplateProcessing) -> Result<(), String> {
    let value = serde_json::to_value(template).map_err(|e| e.to_string())?;
    for which in ["single", "pair"] {
        let pieces = value[which]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for piece in pieces {
            if let Some(name) = piece["SpecialToken"]["id"].as_str() {
                if value["special_tokens"].get(name).is_none() {
                    return Err(format!(
                        "the TemplateProcessing's {which} template uses special token {name:?}, which its special_tokens do not define"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Describes `tokenizer` for [`WordPieceTokenizer`] if its pipeline is the standard BERT one;
/// otherwise says what differs.
fn standard_bert_spec(tokenizer: &Tokenizer, max_length: usize) -> Result<WordPieceSpec, String> {
    let (lowercase_first, bert) = match tokenizer.get_normalizer() {
        Some(NormalizerWrapper::BertNormalizer(bert)) => (false, bert),
        Some(NormalizerWrapper::Sequence(sequence)) => match sequence.as_ref() {
            [NormalizerWrapper::BertNormalizer(bert)] => (false, bert),
            [NormalizerWrapper::Lowercase(_), NormalizerWrapper::BertNormalizer(bert)] => {
                (true, bert)
            }
            _ => {
                return Err(
                    "the normaliser is a sequence other than [Lowercase,] BertNormalizer".into(),
                )
            }
        },
        Some(_) => return Err("the normaliser is not BertNormalizer".into()),
        None => return Err("there is no normaliser".into()),
    };
    let normalization = BertNormalization {
        lowercase_first,
        clean_text: bert.clean_text,
        handle_chinese_chars: bert.handle_chinese_chars,
        strip_accents: bert.strip_accents.unwrap_or(bert.lowercase),
        lowercase: bert.lowercase,
    };
    if !matches!(
        tokenizer.get_pre_tokenizer(),
        Some(PreTokenizerWrapper::BertPreTokenizer(_))
    ) {
        return Err("the pre-tokeniser is not BertPreTokenizer".into());
    }
    let ModelWrapper::WordPiece(model) = tokenizer.get_model() else {
        return Err("the model is not WordPiece".into());
    };
    let (prefix_ids, suffix_ids) = match tokenizer.get_post_processor() {
        Some(PostProcessorWrapper::Bert(bert)) => {
            (vec![bert.get_cls_copy().1], vec![bert.get_sep_copy().1])
        }
        Some(PostProcessorWrapper::Template(template)) => template_single_ids(template)?,
        // MPNet's (`<s> … </s>`): for one sequence its ids are BertProcessing's; trim_offsets
        // and add_prefix_space change only offsets.
        Some(PostProcessorWrapper::Roberta(roberta)) => (vec![roberta.cls.1], vec![roberta.sep.1]),
        _ => {
            return Err(
                "the post-processor is none of BertProcessing, RobertaProcessing and \
                 TemplateProcessing"
                    .into(),
            )
        }
    };
    if prefix_ids.len() + suffix_ids.len() > max_length {
        return Err(format!(
            "max_seq_length {max_length} is shorter than the post-processor's special tokens"
        ));
    }
    if tokenizer.get_encode_special_tokens() || tokenizer.get_padding().is_some() {
        return Err("special tokens are encoded as text, or padding is on".into());
    }

    let mut added_tokens = Vec::new();
    for (id, token) in consistent_added_tokens(tokenizer)? {
        if token.single_word {
            return Err(format!("added token {:?} is single_word", token.content));
        }
        added_tokens.push(AddedTokenSpec {
            content: token.content,
            id,
            lstrip: token.lstrip,
            rstrip: token.rstrip,
            normalized: token.normalized,
        });
    }

    Ok(WordPieceSpec {
        vocab: tokenizers::Model::get_vocab(model),
        unk_token: model.unk_token.clone(),
        continuing_subword_prefix: model.continuing_subword_prefix.clone(),
        max_input_chars_per_word: model.max_input_chars_per_word,
        normalization,
        added_tokens,
        prefix_ids,
        suffix_ids,
        max_length,
    })
}

/// The added tokens, sorted by id, if the crate's content → id and id → token maps agree.
fn consistent_added_tokens(tokenizer: &Tokenizer) -> Result<Vec<(u32, AddedToken)>, String> {
    // The crate matches added tokens by content (its content → id map) but keeps one token per
    // id: two contents on one id (a vocabulary giving "[MASK]" the id of "[SEP]", found by the
    // tokenizer_files fuzz target) leave a matched content out of the id → token list read below.
    let decoder = tokenizer.get_added_tokens_decoder();
    for (content, id) in tokenizer.get_added_vocabulary().get_vocab() {
        if decoder.get(id).map(|token| &token.content) != Some(content) {
            return Err(format!(
                "added token {content:?} shares id {id} with another token"
            ));
        }
    }
    let mut tokens = Vec::new();
    for (id, token) in decoder {
        // The crate matches by content and looks flags up by id: they must agree.
        if tokenizer.token_to_id(&token.content) != Some(id) {
            return Err(format!("added token {:?} has two ids", token.content));
        }
        tokens.push((id, token));
    }
    tokens.sort_by_key(|&(id, _)| id);
    Ok(tokens)
}

/// Describes `tokenizer` for [`BpeTokenizer`] if its pipeline is a byte-level BPE one that
/// Ember reproduces exactly; otherwise says what differs. `merges`: the model's `merges` as
/// `tokenizer.json` has them.
fn byte_level_bpe_spec(
    tokenizer: &Tokenizer,
    merges: Option<&Value>,
    max_length: usize,
) -> Result<BpeSpec, String> {
    let step = |normalizer: &NormalizerWrapper| match normalizer {
        NormalizerWrapper::NFC(_) => Ok(NormalizerStep::Nfc),
        NormalizerWrapper::Lowercase(_) => Ok(NormalizerStep::Lowercase),
        _ => Err(
            "the normaliser is not NFC, Lowercase or a sequence of them (BPE fast path)".to_owned(),
        ),
    };
    let normalizer = match tokenizer.get_normalizer() {
        None => Vec::new(),
        Some(NormalizerWrapper::Sequence(sequence)) => sequence
            .as_ref()
            .iter()
            .map(step)
            .collect::<Result<_, _>>()?,
        Some(other) => vec![step(other)?],
    };

    let add_prefix_space = match tokenizer.get_pre_tokenizer() {
        Some(PreTokenizerWrapper::ByteLevel(ByteLevel {
            add_prefix_space,
            use_regex: true,
            ..
        })) => *add_prefix_space,
        _ => {
            return Err("the pre-tokeniser is not ByteLevel with use_regex (BPE fast path)".into())
        }
    };

    let ModelWrapper::BPE(model) = tokenizer.get_model() else {
        return Err("the model is not BPE".into());
    };
    if model.dropout.is_some_and(|p| p != 0.0) {
        return Err("BPE dropout is set".into());
    }
    if model.byte_fallback {
        return Err("BPE byte_fallback is set".into());
    }
    if model
        .continuing_subword_prefix
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        || model
            .end_of_word_suffix
            .as_ref()
            .is_some_and(|s| !s.is_empty())
    {
        return Err("BPE has a continuing_subword_prefix or end_of_word_suffix".into());
    }
    let merges = bpe_merges(merges)?;

    let SpecialsAndAddedTokens {
        prefix_ids,
        suffix_ids,
        added_tokens,
    } = specials_and_added_tokens(tokenizer, max_length)?;

    Ok(BpeSpec {
        vocab: tokenizers::Model::get_vocab(model),
        merges,
        unk_token: model.unk_token.clone(),
        fuse_unk: model.fuse_unk,
        ignore_merges: model.ignore_merges,
        normalizer,
        add_prefix_space,
        added_tokens,
        prefix_ids,
        suffix_ids,
        max_length,
    })
}

/// `tokenizer.json`'s BPE merges, read as the crate reads them: pairs `["a", "b"]`, or the
/// legacy strings `"a b"` (lines starting `#version` skipped).
fn bpe_merges(merges: Option<&Value>) -> Result<Vec<(String, String)>, String> {
    let unsupported = || "the BPE merges are not a list of pairs or \"a b\" strings".to_owned();
    let list = merges.and_then(Value::as_array).ok_or_else(unsupported)?;
    if list.iter().all(Value::is_array) {
        list.iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(a), Value::String(b)]) => Ok((a.clone(), b.clone())),
                _ => Err(unsupported()),
            })
            .collect()
    } else {
        let mut pairs = Vec::with_capacity(list.len());
        for line in list {
            let line = line.as_str().ok_or_else(unsupported)?;
            if line.starts_with("#version") {
                continue;
            }
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => pairs.push((a.to_owned(), b.to_owned())),
                _ => return Err(unsupported()),
            }
        }
        Ok(pairs)
    }
}

/// The ids a post-processor puts before and after a single sequence: RobertaProcessing and
/// BertProcessing (`cls … sep`), TemplateProcessing (see [`template_single_ids`]), ByteLevel
/// (none), or a Sequence of ByteLevels and at most one of the others.
fn special_ids(processor: &PostProcessorWrapper) -> Result<(Vec<u32>, Vec<u32>), String> {
    match processor {
        PostProcessorWrapper::Roberta(roberta) => Ok((vec![roberta.cls.1], vec![roberta.sep.1])),
        PostProcessorWrapper::Bert(bert) => {
            Ok((vec![bert.get_cls_copy().1], vec![bert.get_sep_copy().1]))
        }
        PostProcessorWrapper::Template(template) => template_single_ids(template),
        PostProcessorWrapper::ByteLevel(_) => Ok((Vec::new(), Vec::new())),
        PostProcessorWrapper::Sequence(sequence) => {
            // Its members are not public; its serialised form is.
            let members: Vec<PostProcessorWrapper> = serde_json::to_value(sequence)
                .ok()
                .and_then(|value| serde_json::from_value(value["processors"].clone()).ok())
                .ok_or("the post-processor Sequence cannot be read back")?;
            let mut ids = (Vec::new(), Vec::new());
            let mut adding = 0;
            for member in &members {
                if !matches!(member, PostProcessorWrapper::ByteLevel(_)) {
                    adding += 1;
                    ids = special_ids(member)?;
                }
            }
            if adding > 1 {
                return Err(
                    "the post-processor Sequence has more than one member adding tokens".into(),
                );
            }
            Ok(ids)
        }
    }
}

/// The ids a TemplateProcessing puts before and after a single sequence, if its `single`
/// template is special tokens, `$A`, special tokens.
fn template_single_ids(template: &TemplateProcessing) -> Result<(Vec<u32>, Vec<u32>), String> {
    let unsupported = || "the TemplateProcessing is not [specials] $A [specials]".to_string();
    // The template's pieces are not public; its serialised form is (the tokenizer.json one).
    let value = serde_json::to_value(template).map_err(|e| e.to_string())?;
    let pieces = value["single"].as_array().ok_or_else(unsupported)?;
    let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
    let mut seen_sequence = false;
    for piece in pieces {
        if let Some(sequence) = piece.get("Sequence") {
            if seen_sequence || sequence["id"] != "A" {
                return Err(unsupported());
            }
            seen_sequence = true;
        } else if let Some(name) = piece["SpecialToken"]["id"].as_str() {
            let ids = value["special_tokens"][name]["ids"]
                .as_array()
                .ok_or_else(unsupported)?;
            for id in ids {
                let id = id
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(unsupported)?;
                if seen_sequence {
                    suffix.push(id);
                } else {
                    prefix.push(id);
                }
            }
        } else {
            return Err(unsupported());
        }
    }
    if !seen_sequence {
        return Err(unsupported());
    }
    Ok((prefix, suffix))
}

/// Describes `tokenizer` for [`UnigramTokenizer`] if its pipeline is a SentencePiece Unigram
/// one that Ember reproduces exactly; otherwise says what differs. `model_fields`: the model's
/// fields as `tokenizer.json` has them (its `unk_id`).
fn unigram_spec(
    tokenizer: &Tokenizer,
    model_fields: Option<&Value>,
    max_length: usize,
) -> Result<UnigramSpec, String> {
    let normalizer = match tokenizer.get_normalizer() {
        None => Vec::new(),
        Some(NormalizerWrapper::Sequence(sequence)) => sequence
            .as_ref()
            .iter()
            .map(unigram_normalizer_step)
            .collect::<Result<_, _>>()?,
        Some(other) => vec![unigram_normalizer_step(other)?],
    };

    let unsupported_pre_tokenizer = || {
        "the pre-tokeniser is not Metaspace, alone or after WhitespaceSplit (Unigram fast path)"
            .to_owned()
    };
    let (whitespace_split, metaspace): (bool, &Metaspace) = match tokenizer.get_pre_tokenizer() {
        Some(PreTokenizerWrapper::Metaspace(metaspace)) => (false, metaspace),
        Some(PreTokenizerWrapper::Sequence(sequence)) => match sequence.as_ref() {
            [PreTokenizerWrapper::Metaspace(metaspace)] => (false, metaspace),
            [PreTokenizerWrapper::WhitespaceSplit(_), PreTokenizerWrapper::Metaspace(metaspace)] => {
                (true, metaspace)
            }
            _ => return Err(unsupported_pre_tokenizer()),
        },
        _ => return Err(unsupported_pre_tokenizer()),
    };
    let prepend_scheme = match metaspace.prepend_scheme {
        MetaspacePrependScheme::Always => PrependScheme::Always,
        MetaspacePrependScheme::Never => PrependScheme::Never,
        MetaspacePrependScheme::First => PrependScheme::First,
    };
    // `first` asks whether a word is aligned to the text's first char. Ember follows the
    // crate's alignments exactly through one Precompiled and Strip of the right only; a Replace
    // aligns what it inserts to the last char it replaced (or moves the next char's), a Strip
    // of the left moves the start, and a word after WhitespaceSplit or a normalised added token
    // may start anywhere: with any of those steps, `first` falls back.
    if prepend_scheme == PrependScheme::First {
        let exact = normalizer.iter().all(|step| {
            matches!(
                step,
                UnigramNormalizerStep::Precompiled(_)
                    | UnigramNormalizerStep::Strip { left: false, .. }
            )
        }) && normalizer
            .iter()
            .filter(|step| matches!(step, UnigramNormalizerStep::Precompiled(_)))
            .count()
            <= 1;
        if !exact {
            return Err(
                "Metaspace's prepend_scheme \"first\" after a normaliser whose alignments Ember does not follow (Unigram fast path)"
                    .into(),
            );
        }
    }

    let ModelWrapper::Unigram(model) = tokenizer.get_model() else {
        return Err("the model is not Unigram".into());
    };
    if model.byte_fallback() {
        return Err("Unigram byte_fallback is set".into());
    }
    let unk_id = model_fields
        .and_then(|fields| fields.get("unk_id"))
        .and_then(Value::as_u64)
        .and_then(|id| u32::try_from(id).ok())
        .ok_or(
            "the Unigram model has no unk_id (the crate errs on any text with a char outside its vocabulary)",
        )?;

    let SpecialsAndAddedTokens {
        prefix_ids,
        suffix_ids,
        added_tokens,
    } = specials_and_added_tokens(tokenizer, max_length)?;

    Ok(UnigramSpec {
        vocab: model.iter().cloned().collect(),
        unk_id,
        normalizer,
        whitespace_split,
        replacement: metaspace.get_replacement(),
        prepend_scheme,
        split: metaspace.split,
        added_tokens,
        prefix_ids,
        suffix_ids,
        max_length,
    })
}

/// What the BPE and Unigram fast paths take from around the model, read by
/// [`specials_and_added_tokens`].
struct SpecialsAndAddedTokens {
    /// The post-processor's ids before the model's tokens (`<s>`); empty without one.
    prefix_ids: Vec<u32>,
    /// The post-processor's ids after the model's tokens (`</s>`); empty without one.
    suffix_ids: Vec<u32>,
    /// `tokenizer.json`'s added tokens (consistent with the vocabulary), split out of the text
    /// before the model runs.
    added_tokens: Vec<BpeAddedToken>,
}

/// What the BPE and Unigram fast paths take from around the model: the post-processor's ids
/// before and after the tokens (which must leave room under `max_length`), and the added tokens
/// (consistent with the vocabulary); refused when special tokens are encoded as text or padding
/// is on.
fn specials_and_added_tokens(
    tokenizer: &Tokenizer,
    max_length: usize,
) -> Result<SpecialsAndAddedTokens, String> {
    let (prefix_ids, suffix_ids) = match tokenizer.get_post_processor() {
        None => (Vec::new(), Vec::new()),
        Some(processor) => special_ids(processor)?,
    };
    if prefix_ids.len() + suffix_ids.len() > max_length {
        return Err(format!(
            "max_seq_length {max_length} is shorter than the post-processor's special tokens"
        ));
    }
    if tokenizer.get_encode_special_tokens() || tokenizer.get_padding().is_some() {
        return Err("special tokens are encoded as text, or padding is on".into());
    }
    let added_tokens = consistent_added_tokens(tokenizer)?
        .into_iter()
        .map(|(id, token)| BpeAddedToken {
            content: token.content,
            id,
            lstrip: token.lstrip,
            rstrip: token.rstrip,
            single_word: token.single_word,
            normalized: token.normalized,
        })
        .collect();
    Ok(SpecialsAndAddedTokens {
        prefix_ids,
        suffix_ids,
        added_tokens,
    })
}

/// A Precompiled normaliser's charsmap, decoded from the base64 the crate serialises it to (the
/// bytes are private).
fn precompiled_charsmap(
    precompiled: &tokenizers::normalizers::precompiled::Precompiled,
) -> Result<Vec<u8>, String> {
    let value = serde_json::to_value(precompiled).map_err(|e| e.to_string())?;
    value["precompiled_charsmap"]
        .as_str()
        .and_then(|text| base64::decode(text).ok())
        .ok_or_else(|| "the Precompiled normaliser's charsmap cannot be read back".to_owned())
}

/// One normaliser of a Unigram pipeline, if the fast path reproduces it: Precompiled, Strip,
/// Replace of a literal string or of the regex `" {n,}"` / `" +"`.
fn unigram_normalizer_step(
    normalizer: &NormalizerWrapper,
) -> Result<UnigramNormalizerStep, String> {
    match normalizer {
        NormalizerWrapper::Precompiled(precompiled) => Ok(UnigramNormalizerStep::Precompiled(
            precompiled_charsmap(precompiled)?,
        )),
        NormalizerWrapper::StripNormalizer(strip) => Ok(UnigramNormalizerStep::Strip {
            left: strip.strip_left,
            right: strip.strip_right,
        }),
        NormalizerWrapper::Replace(replace) => {
            // The pattern is private too.
            let value = serde_json::to_value(replace).map_err(|e| e.to_string())?;
            let content = value["content"]
                .as_str()
                .ok_or("the Replace normaliser cannot be read back")?
                .to_owned();
            if let Some(pattern) = value["pattern"]["String"].as_str() {
                if pattern.is_empty() {
                    return Err("a Replace normaliser's pattern is empty (Unigram fast path)".into());
                }
                return Ok(UnigramNormalizerStep::ReplaceLiteral {
                    pattern: pattern.to_owned(),
                    content,
                });
            }
            let regex = value["pattern"]["Regex"].as_str().unwrap_or_default();
            let min_run = if regex == " +" {
                Some(1)
            } else {
                regex
                    .strip_prefix(" {")
                    .and_then(|rest| rest.strip_suffix(",}"))
                    .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|digits| digits.parse::<usize>().ok())
                    .filter(|&n| n >= 1)
            };
            match min_run {
                Some(min_run) => Ok(UnigramNormalizerStep::ReplaceSpaceRuns { min_run, content }),
                None => Err(format!(
                    "the Replace regex {regex:?} is not one the Unigram fast path reproduces (\" {{n,}}\", \" +\")"
                )),
            }
        }
        _ => Err(
            "the normaliser is not Precompiled, Strip, Replace or a sequence of them (Unigram fast path)"
                .into(),
        ),
    }
}
