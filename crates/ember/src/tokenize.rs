//! Text → token ids, as sentence-transformers tokenizes for its Transformer module.
//!
//! `tokenizer.json` is loaded with the `tokenizers` crate; a folder with only `vocab.txt` and
//! `tokenizer_config.json` gets the BERT WordPiece pipeline transformers builds from them
//! (BERT normaliser with the config's lower-casing, accent and CJK rules, BERT pre-tokeniser,
//! `[CLS] … [SEP]`). Truncation is always `longest_first` to `max_seq_length` and padding is
//! off — whatever `tokenizer.json` says — because the batch is packed.

use std::path::Path;

use serde_json::Value;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::{BertNormalizer, Lowercase, NormalizerWrapper, Sequence};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::folder::read_json;
use crate::EmberError;

/// A tokenizer configured for one model: truncation to `max_seq_length`, no padding.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    max_seq_length: usize,
}

/// `tokenizer_config.json`'s settings that matter here.
struct TokenizerConfig {
    model_max_length: Option<usize>,
    do_lower_case: bool,
    strip_accents: Option<bool>,
    tokenize_chinese_chars: bool,
    unk: String,
    cls: String,
    sep: String,
    pad: String,
    mask: String,
}

impl TokenizerConfig {
    fn read(dir: &Path) -> Result<Self, EmberError> {
        let path = dir.join("tokenizer_config.json");
        let value = if path.exists() {
            read_json(&path)?
        } else {
            Value::Object(Default::default())
        };
        let token = |key: &str, default: &str| -> String {
            match value.get(key) {
                Some(Value::String(s)) => s.clone(),
                // transformers also writes special tokens as AddedToken objects.
                Some(Value::Object(o)) => o
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or(default)
                    .to_owned(),
                _ => default.to_owned(),
            }
        };
        Ok(Self {
            // transformers writes 1e30 for "no limit": anything past usize range means none.
            model_max_length: value
                .get("model_max_length")
                .and_then(Value::as_f64)
                .filter(|&n| (1.0..1e15).contains(&n))
                .map(|n| n as usize),
            do_lower_case: value
                .get("do_lower_case")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            strip_accents: value.get("strip_accents").and_then(Value::as_bool),
            tokenize_chinese_chars: value
                .get("tokenize_chinese_chars")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            unk: token("unk_token", "[UNK]"),
            cls: token("cls_token", "[CLS]"),
            sep: token("sep_token", "[SEP]"),
            pad: token("pad_token", "[PAD]"),
            mask: token("mask_token", "[MASK]"),
        })
    }
}

impl TextTokenizer {
    /// Loads the tokenizer of the Transformer module in `dir`.
    ///
    /// `max_seq_length` is sentence-transformers' (from `sentence_bert_config.json`), else the
    /// tokenizer config's `model_max_length`; either way capped at `max_position_embeddings`.
    /// `do_lower_case` prepends a `Lowercase` normaliser unless one is there, as
    /// sentence-transformers does.
    pub fn load(
        dir: &Path,
        max_seq_length: Option<usize>,
        do_lower_case: bool,
        max_position_embeddings: usize,
    ) -> Result<Self, EmberError> {
        let config = TokenizerConfig::read(dir)?;
        let json_path = dir.join("tokenizer.json");
        let vocab_path = dir.join("vocab.txt");
        let (mut tokenizer, source) = if json_path.exists() {
            let tokenizer =
                Tokenizer::from_file(&json_path).map_err(|e| EmberError::Tokenizer {
                    path: json_path.clone(),
                    message: e.to_string(),
                })?;
            (tokenizer, json_path)
        } else if vocab_path.exists() {
            (
                Self::wordpiece_from_vocab(&vocab_path, &config)?,
                vocab_path,
            )
        } else {
            return Err(EmberError::Tokenizer {
                path: dir.to_owned(),
                message: "neither tokenizer.json nor vocab.txt is in the folder".into(),
            });
        };

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
            }
        }

        let max_seq_length = max_seq_length
            .or(config.model_max_length)
            .unwrap_or(max_position_embeddings)
            .min(max_position_embeddings);
        if max_seq_length < 2 {
            return Err(EmberError::Tokenizer {
                path: source,
                message: format!(
                    "max_seq_length {max_seq_length} leaves no room for [CLS] and [SEP]"
                ),
            });
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| EmberError::Tokenizer {
                path: source.clone(),
                message: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            max_seq_length,
        })
    }

    /// The WordPiece pipeline transformers' `BertTokenizerFast` builds from a vocabulary.
    fn wordpiece_from_vocab(
        vocab_path: &Path,
        config: &TokenizerConfig,
    ) -> Result<Tokenizer, EmberError> {
        let error = |message: String| EmberError::Tokenizer {
            path: vocab_path.to_owned(),
            message,
        };
        let vocab_str = vocab_path
            .to_str()
            .ok_or_else(|| error("path is not UTF-8".into()))?;
        let model = WordPiece::from_file(vocab_str)
            .unk_token(config.unk.clone())
            .build()
            .map_err(|e| error(e.to_string()))?;
        let id_of = |token: &str| {
            tokenizers::Model::token_to_id(&model, token)
                .ok_or_else(|| error(format!("special token {token:?} is not in the vocabulary")))
        };
        let cls = (config.cls.clone(), id_of(&config.cls)?);
        let sep = (config.sep.clone(), id_of(&config.sep)?);
        id_of(&config.unk)?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_normalizer(Some(BertNormalizer::new(
            true,
            config.tokenize_chinese_chars,
            config.strip_accents,
            config.do_lower_case,
        )));
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        tokenizer.with_post_processor(Some(BertProcessing::new(sep, cls)));
        // transformers registers the special tokens as added tokens: a literal "[CLS]" in the
        // text becomes the [CLS] id rather than word pieces.
        let specials: Vec<AddedToken> = [
            &config.pad,
            &config.unk,
            &config.cls,
            &config.sep,
            &config.mask,
        ]
        .into_iter()
        .filter(|t| tokenizer.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
        tokenizer.add_special_tokens(&specials);
        Ok(tokenizer)
    }

    /// Tokenizes one text into `ids` (cleared first): `[CLS] … [SEP]`, at most
    /// `max_seq_length` ids.
    pub fn encode_into(&self, text: &str, ids: &mut Vec<u32>) -> Result<(), String> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| e.to_string())?;
        ids.clear();
        ids.extend_from_slice(encoding.get_ids());
        Ok(())
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }
}
