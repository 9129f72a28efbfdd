//! The tokenizer transformers 5's `AutoTokenizer` builds for a folder — what
//! sentence-transformers loads — where it does not take `tokenizer.json` as it is.
//!
//! transformers 5 has one class per model family, each with its own `__init__` that builds the
//! pipeline from scratch: only the vocabulary (and BPE merges, and a SentencePiece charsmap)
//! comes from `tokenizer.json`; normaliser, pre-tokeniser, model settings and post-processor come
//! from `tokenizer_config.json` and the class's defaults; the added tokens come from the config's
//! `added_tokens_decoder` when it has one, else from `tokenizer.json`. A folder whose
//! `tokenizer.json` was written by an older transformers (or by hand) can say something else, and
//! then the class wins: `PreTrainedTokenizerFast` (`TokenizersBackend`) is the one class that
//! takes the file as it is.
//!
//! The classes reproduced here, and what each builds:
//!
//! | class | normaliser | pre-tokeniser | model | post-processor |
//! |---|---|---|---|---|
//! | `BertTokenizer` (`DistilBertTokenizer`) | BertNormalizer(config) | BertPreTokenizer | WordPiece, `##`, 100 chars | `[CLS] $A [SEP]` |
//! | `MPNetTokenizer` | BertNormalizer(config) | BertPreTokenizer | WordPiece | `<s> $A </s>` (RobertaProcessing) |
//! | `RobertaTokenizer` | none | ByteLevel(add_prefix_space, false by default) | BPE, no dropout, no unknown token | RobertaProcessing(cls, sep) |
//! | `XLMRobertaTokenizer` | the file's Precompiled charsmap, alone | WhitespaceSplit, Metaspace(always, or never) | Unigram, unk_id 3 | `<s> $A </s>` from bos/eos |
//! | `CamembertTokenizer` | the same | the same | Unigram, unk_id of the config's unk_token | the same |

use std::path::Path;

use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::models::unigram::Unigram;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::{BertNormalizer, NormalizerWrapper};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::folder::read_json;
use crate::EmberError;

/// transformers' `SPECIAL_TOKENS_ATTRIBUTES` that name one token, in its order.
const NAMED: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];
const BOS: usize = 0;
const EOS: usize = 1;
const UNK: usize = 2;
const SEP: usize = 3;
const CLS: usize = 5;

/// A special token as a config names it: a string, or an `AddedToken` object (whose `lstrip`,
/// when it says, overrides the class's).
#[derive(Clone, Debug)]
struct ConfigToken {
    content: String,
    lstrip: Option<bool>,
}

/// `tokenizer_config.json`'s settings that matter here (and `special_tokens_map.json`'s named
/// tokens, which transformers lays over them when the config has no `added_tokens_decoder`).
pub(crate) struct TokenizerConfig {
    /// `tokenizer_class`, less a `Fast` suffix (transformers 5 has one class for both).
    pub tokenizer_class: Option<String>,
    pub model_max_length: Option<usize>,
    do_lower_case: bool,
    strip_accents: Option<bool>,
    tokenize_chinese_chars: bool,
    /// RoBERTa's and XLM-R's `add_prefix_space` (their defaults differ).
    add_prefix_space: Option<bool>,
    trim_offsets: bool,
    /// `split_special_tokens`: special tokens in a text are read as text.
    split_special_tokens: bool,
    /// [`NAMED`]'s tokens, where the files name them.
    named: [Option<ConfigToken>; 7],
    /// `added_tokens_decoder`, in id order: when present, the added tokens transformers
    /// registers (`tokenizer.json`'s are not read).
    added_tokens_decoder: Option<Vec<AddedToken>>,
}

impl TokenizerConfig {
    /// Reads `dir/tokenizer_config.json` if there is one (defaults otherwise), and
    /// `special_tokens_map.json`'s named tokens unless the config has an `added_tokens_decoder`
    /// (as transformers does). A key that is present must have the kind transformers writes
    /// (`null` counts as absent).
    pub fn read(dir: &Path) -> Result<Self, EmberError> {
        let path = dir.join("tokenizer_config.json");
        let value = if path.exists() {
            read_json(&path)?
        } else {
            Value::Object(Default::default())
        };
        let invalid = |path: &Path, message: String| EmberError::Invalid {
            path: path.to_owned(),
            message,
        };
        let object = value
            .as_object()
            .ok_or_else(|| invalid(&path, "expected a JSON object".into()))?;
        let get = |key: &str| object.get(key).filter(|v| !v.is_null());
        let flag = |key: &str| -> Result<Option<bool>, EmberError> {
            get(key)
                .map(|v| {
                    v.as_bool().ok_or_else(|| {
                        invalid(&path, format!("\"{key}\" = {v} is not true or false"))
                    })
                })
                .transpose()
        };
        // transformers 5 writes 1e30 for "no limit": anything past usize range means none.
        let model_max_length = match get("model_max_length") {
            None => None,
            Some(v) => {
                let n = v.as_f64().filter(|&n| n >= 1.0).ok_or_else(|| {
                    invalid(
                        &path,
                        format!("\"model_max_length\" = {v} is not a number ≥ 1"),
                    )
                })?;
                (n < 1e15).then_some(n as usize)
            }
        };
        let tokenizer_class = match get("tokenizer_class") {
            None => None,
            Some(Value::String(name)) => Some(name.strip_suffix("Fast").unwrap_or(name).to_owned()),
            Some(v) => {
                return Err(invalid(
                    &path,
                    format!("\"tokenizer_class\" = {v} is not a string"),
                ))
            }
        };
        let added_tokens_decoder = get("added_tokens_decoder")
            .map(|v| added_tokens_decoder(v).map_err(|message| invalid(&path, message)))
            .transpose()?;

        let mut named: [Option<ConfigToken>; 7] = Default::default();
        for (slot, key) in named.iter_mut().zip(NAMED) {
            *slot = get(key)
                .map(|v| config_token(key, v).map_err(|message| invalid(&path, message)))
                .transpose()?;
        }
        let map_path = dir.join("special_tokens_map.json");
        if added_tokens_decoder.is_none() && map_path.exists() {
            let map = read_json(&map_path)?;
            let map = map
                .as_object()
                .ok_or_else(|| invalid(&map_path, "expected a JSON object".into()))?;
            for (slot, key) in named.iter_mut().zip(NAMED) {
                if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                    *slot = Some(config_token(key, v).map_err(|m| invalid(&map_path, m))?);
                }
            }
        }

        Ok(Self {
            tokenizer_class,
            model_max_length,
            do_lower_case: flag("do_lower_case")?.unwrap_or(true),
            strip_accents: flag("strip_accents")?,
            tokenize_chinese_chars: flag("tokenize_chinese_chars")?.unwrap_or(true),
            add_prefix_space: flag("add_prefix_space")?,
            trim_offsets: flag("trim_offsets")?.unwrap_or(true),
            split_special_tokens: flag("split_special_tokens")?.unwrap_or(false),
            named,
            added_tokens_decoder,
        })
    }
}

/// A named special token's value: a string, or an object with a `"content"` string (and
/// perhaps `"lstrip"`).
fn config_token(key: &str, v: &Value) -> Result<ConfigToken, String> {
    let content = v
        .as_str()
        .or_else(|| v.get("content")?.as_str())
        .ok_or_else(|| {
            format!(
                "\"{key}\" = {v} is not a token (a string, or an object with a \"content\" string)"
            )
        })?;
    Ok(ConfigToken {
        content: content.to_owned(),
        lstrip: v.get("lstrip").and_then(Value::as_bool),
    })
}

/// `added_tokens_decoder`: `{"<id>": {"content": …, "lstrip": …, "rstrip": …, "normalized": …,
/// "single_word": …, "special": …}}`, as transformers reads it (`AddedToken(**token)`: absent
/// flags false, `normalized` the opposite of `special`), in id order.
fn added_tokens_decoder(value: &Value) -> Result<Vec<AddedToken>, String> {
    let map = value
        .as_object()
        .ok_or_else(|| format!("\"added_tokens_decoder\" = {value} is not an object"))?;
    let mut tokens = Vec::with_capacity(map.len());
    for (id, token) in map {
        let id: u32 = id
            .parse()
            .map_err(|_| format!("\"added_tokens_decoder\" has a key {id:?} that is not an id"))?;
        let content = token
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                format!("\"added_tokens_decoder\" entry {id} has no \"content\" string")
            })?;
        let flag = |name: &str, default: bool| -> Result<bool, String> {
            match token.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(format!(
                    "\"added_tokens_decoder\" entry {id}: \"{name}\" = {other} is not true or false"
                )),
            }
        };
        let special = flag("special", false)?;
        let added = AddedToken::from(content.to_owned(), special)
            .single_word(flag("single_word", false)?)
            .lstrip(flag("lstrip", false)?)
            .rstrip(flag("rstrip", false)?)
            .normalized(flag("normalized", !special)?);
        tokens.push((id, added));
    }
    tokens.sort_by_key(|(id, _)| *id);
    Ok(tokens.into_iter().map(|(_, token)| token).collect())
}

/// transformers 5's tokenizer classes that rebuild the pipeline rather than take
/// `tokenizer.json`'s (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenizerClass {
    /// `BertTokenizer` (also `DistilBertTokenizer`): `[CLS] $A [SEP]`.
    Bert,
    /// `MPNetTokenizer`: BERT's pipeline with `<s> $A </s>` and other default tokens.
    MPNet,
    /// `RobertaTokenizer`: byte-level BPE.
    Roberta,
    /// `XLMRobertaTokenizer`: SentencePiece Unigram.
    XlmRoberta,
    /// `CamembertTokenizer`: XLM-R's, with the unknown token's id looked up.
    Camembert,
}

impl TokenizerClass {
    /// The class's name in transformers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bert => "BertTokenizer",
            Self::MPNet => "MPNetTokenizer",
            Self::Roberta => "RobertaTokenizer",
            Self::XlmRoberta => "XLMRobertaTokenizer",
            Self::Camembert => "CamembertTokenizer",
        }
    }

    /// Its defaults for [`NAMED`]'s tokens, and whether each takes the space before it.
    fn defaults(self) -> [Option<(&'static str, bool)>; 7] {
        match self {
            Self::Bert => [
                None,
                None,
                Some(("[UNK]", false)),
                Some(("[SEP]", false)),
                Some(("[PAD]", false)),
                Some(("[CLS]", false)),
                Some(("[MASK]", false)),
            ],
            Self::MPNet => [
                Some(("<s>", false)),
                Some(("</s>", false)),
                Some(("[UNK]", false)),
                Some(("</s>", false)),
                Some(("<pad>", false)),
                Some(("<s>", false)),
                Some(("<mask>", true)),
            ],
            Self::Roberta | Self::XlmRoberta | Self::Camembert => [
                Some(("<s>", false)),
                Some(("</s>", false)),
                Some(("<unk>", false)),
                Some(("</s>", false)),
                Some(("<pad>", false)),
                Some(("<s>", false)),
                Some(("<mask>", self == Self::Camembert)),
            ],
        }
    }
}

/// A class's special tokens: the config's, else the class's defaults; with `lstrip`.
struct Specials([Option<(String, bool)>; 7]);

impl Specials {
    fn of(config: &TokenizerConfig, class: TokenizerClass) -> Self {
        let defaults = class.defaults();
        let mut named: [Option<(String, bool)>; 7] = Default::default();
        for (i, slot) in named.iter_mut().enumerate() {
            let default_lstrip = defaults[i].is_some_and(|(_, lstrip)| lstrip);
            *slot = match &config.named[i] {
                Some(token) => Some((
                    token.content.clone(),
                    token.lstrip.unwrap_or(default_lstrip),
                )),
                None => defaults[i].map(|(content, lstrip)| (content.to_owned(), lstrip)),
            };
        }
        Self(named)
    }

    /// Token `i` of [`NAMED`]; every class has a default for those asked for.
    fn get(&self, i: usize) -> &str {
        self.0[i]
            .as_ref()
            .map_or("", |(content, _)| content.as_str())
    }
}

/// Which of [`TokenizerClass`] transformers 5's `AutoTokenizer` loads the folder as, if any:
/// the class named by `tokenizer_config.json`'s `tokenizer_class`, else by `config.json`'s (a
/// `Fast` suffix dropped), or, with neither, the one `config.json`'s `model_type` maps to
/// (`bert`, `distilbert`, `nomic_bert`: BERT's; `mpnet`; `roberta`; `xlm-roberta`;
/// `camembert`). ModernBERT folders are taken as they are whatever they name (transformers lists
/// `modernbert` among the models whose hub class it overrides). Any other class
/// (`PreTrainedTokenizerFast`, `TokenizersBackend`, …) is taken as the file has it.
pub(crate) fn rebuilt_class(dir: &Path, config: &TokenizerConfig) -> Option<TokenizerClass> {
    let model_config = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    let key = |name: &str| {
        model_config
            .as_ref()
            .and_then(|c| c.get(name)?.as_str().map(str::to_owned))
    };
    let model_type = key("model_type");
    if model_type.as_deref() == Some("modernbert") {
        return None;
    }
    let class = config.tokenizer_class.clone().or_else(|| {
        key("tokenizer_class").map(|name| name.strip_suffix("Fast").unwrap_or(&name).to_owned())
    });
    match class.as_deref() {
        Some("BertTokenizer" | "DistilBertTokenizer") => Some(TokenizerClass::Bert),
        Some("MPNetTokenizer") => Some(TokenizerClass::MPNet),
        Some("RobertaTokenizer") => Some(TokenizerClass::Roberta),
        Some("XLMRobertaTokenizer") => Some(TokenizerClass::XlmRoberta),
        Some("CamembertTokenizer") => Some(TokenizerClass::Camembert),
        Some(_) => None,
        None => match model_type.as_deref() {
            Some("bert" | "distilbert" | "nomic_bert") => Some(TokenizerClass::Bert),
            Some("mpnet") => Some(TokenizerClass::MPNet),
            Some("roberta") => Some(TokenizerClass::Roberta),
            Some("xlm-roberta") => Some(TokenizerClass::XlmRoberta),
            Some("camembert") => Some(TokenizerClass::Camembert),
            _ => None,
        },
    }
}

/// The pipeline `class` makes of a `tokenizer.json` (`file`), or `None` when the file's model
/// is not the class's kind (WordPiece, BPE, Unigram), where transformers would not load it as
/// that class and the file is taken as it is. `model_fields` (the file's `model` less its
/// vocabulary) gets the `unk_id` the class sets. Errors name a special token the post-processor
/// needs that is not in the vocabulary.
pub(crate) fn rebuild(
    file: &Tokenizer,
    model_fields: &mut Option<Value>,
    config: &TokenizerConfig,
    class: TokenizerClass,
) -> Result<Option<Tokenizer>, String> {
    let specials = Specials::of(config, class);
    let mut precompiled = None;
    let model: ModelWrapper = match (class, file.get_model()) {
        (TokenizerClass::Bert | TokenizerClass::MPNet, ModelWrapper::WordPiece(model)) => {
            let mut model = model.clone();
            model.unk_token = specials.get(UNK).to_owned();
            model.continuing_subword_prefix = "##".into();
            model.max_input_chars_per_word = 100;
            model.into()
        }
        (TokenizerClass::Roberta, ModelWrapper::BPE(model)) => {
            let mut model: BPE = model.clone();
            model.dropout = None;
            model.unk_token = None;
            model.continuing_subword_prefix = None;
            model.end_of_word_suffix = None;
            model.fuse_unk = false;
            model.byte_fallback = false;
            model.ignore_merges = false;
            model.into()
        }
        (TokenizerClass::XlmRoberta | TokenizerClass::Camembert, ModelWrapper::Unigram(model)) => {
            let vocab: Vec<(String, f64)> = model.iter().cloned().collect();
            let unk_id = match class {
                TokenizerClass::Camembert => vocab
                    .iter()
                    .position(|(piece, _)| piece == specials.get(UNK))
                    .unwrap_or(0),
                _ => 3,
            };
            let model = Unigram::from(vocab, Some(unk_id), false).map_err(|e| {
                format!("{} sets the Unigram unk_id to {unk_id}: {e}", class.name())
            })?;
            if let Some(Value::Object(fields)) = model_fields {
                fields.insert("unk_id".into(), unk_id.into());
            }
            precompiled = file_precompiled(file.get_normalizer());
            model.into()
        }
        _ => return Ok(None),
    };
    let file_added = {
        let mut added: Vec<(u32, AddedToken)> =
            file.get_added_tokens_decoder().into_iter().collect();
        added.sort_by_key(|(id, _)| *id);
        added.into_iter().map(|(_, token)| token).collect()
    };
    assemble(model, precompiled, file_added, config, class, &specials).map(Some)
}

/// The pipeline transformers' `BertTokenizer` builds from a `vocab.txt` alone (WordPiece with
/// the config's unknown token). Errors: the file cannot be read, or a special token the
/// pipeline needs is not in it.
pub(crate) fn bert_from_vocab(vocab: &str, config: &TokenizerConfig) -> Result<Tokenizer, String> {
    let class = TokenizerClass::Bert;
    let specials = Specials::of(config, class);
    let model = WordPiece::from_file(vocab)
        .unk_token(specials.get(UNK).to_owned())
        .build()
        .map_err(|e| e.to_string())?;
    assemble(model.into(), None, Vec::new(), config, class, &specials)
}

/// The first Precompiled normaliser of `normalizer`, at its top or in its top-level Sequence:
/// the charsmap transformers carries over.
fn file_precompiled(normalizer: Option<&NormalizerWrapper>) -> Option<NormalizerWrapper> {
    match normalizer? {
        precompiled @ NormalizerWrapper::Precompiled(_) => Some(precompiled.clone()),
        NormalizerWrapper::Sequence(sequence) => sequence
            .as_ref()
            .iter()
            .find(|n| matches!(n, NormalizerWrapper::Precompiled(_)))
            .cloned(),
        _ => None,
    }
}

/// `class`'s pipeline around `model`, in transformers' order: normaliser and pre-tokeniser;
/// the added tokens (the config's `added_tokens_decoder`, else `file_added`), then the named
/// special tokens not among them (those in the vocabulary), all normalised with the normaliser
/// just set; the post-processor with its tokens' ids.
fn assemble(
    model: ModelWrapper,
    precompiled: Option<NormalizerWrapper>,
    file_added: Vec<AddedToken>,
    config: &TokenizerConfig,
    class: TokenizerClass,
    specials: &Specials,
) -> Result<Tokenizer, String> {
    let mut tokenizer = Tokenizer::new(model);
    match class {
        TokenizerClass::Bert | TokenizerClass::MPNet => {
            tokenizer.with_normalizer(Some(BertNormalizer::new(
                true,
                config.tokenize_chinese_chars,
                config.strip_accents,
                config.do_lower_case,
            )));
            tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        }
        TokenizerClass::Roberta => {
            tokenizer.with_normalizer(None::<NormalizerWrapper>);
            tokenizer.with_pre_tokenizer(Some(ByteLevel::new(
                config.add_prefix_space.unwrap_or(false),
                true,
                true,
            )));
        }
        TokenizerClass::XlmRoberta | TokenizerClass::Camembert => {
            tokenizer.with_normalizer(precompiled);
            let scheme = match config.add_prefix_space.unwrap_or(true) {
                true => PrependScheme::Always,
                false => PrependScheme::Never,
            };
            tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
                WhitespaceSplit.into(),
                Metaspace::new('▁', scheme, true).into(),
            ])));
        }
    }

    tokenizer.add_tokens(config.added_tokens_decoder.as_ref().unwrap_or(&file_added));
    let mut new: Vec<AddedToken> = Vec::new();
    for (content, lstrip) in specials.0.iter().flatten() {
        let present = tokenizer
            .get_added_vocabulary()
            .get_added_tokens_decoder()
            .values()
            .any(|token| &token.content == content);
        if !present
            && tokenizer.token_to_id(content).is_some()
            && !new.iter().any(|t| &t.content == content)
        {
            new.push(AddedToken::from(content.clone(), true).lstrip(*lstrip));
        }
    }
    tokenizer.add_special_tokens(&new);

    let id_of = |i: usize| {
        let token = specials.get(i);
        tokenizer
            .token_to_id(token)
            .map(|id| (token.to_owned(), id))
            .ok_or_else(|| {
                format!(
                    "special token {token:?} is not in the vocabulary (the config's, or {}'s default)",
                    class.name()
                )
            })
    };
    match class {
        TokenizerClass::Bert => {
            id_of(UNK)?;
            let processor = BertProcessing::new(id_of(SEP)?, id_of(CLS)?);
            tokenizer.with_post_processor(Some(processor));
        }
        TokenizerClass::MPNet => {
            id_of(UNK)?;
            let processor = RobertaProcessing::new(id_of(SEP)?, id_of(CLS)?)
                .trim_offsets(true)
                .add_prefix_space(false);
            tokenizer.with_post_processor(Some(processor));
        }
        TokenizerClass::Roberta => {
            let processor = RobertaProcessing::new(id_of(SEP)?, id_of(CLS)?)
                .trim_offsets(config.trim_offsets)
                .add_prefix_space(config.add_prefix_space.unwrap_or(false));
            tokenizer.with_post_processor(Some(processor));
        }
        TokenizerClass::XlmRoberta | TokenizerClass::Camembert => {
            let (bos, bos_id) = id_of(BOS)?;
            let (eos, eos_id) = id_of(EOS)?;
            let processor = TemplateProcessing::builder()
                .try_single(vec![bos.clone(), "$A".into(), eos.clone()])
                .and_then(|builder| {
                    builder.try_pair(vec![
                        bos.clone(),
                        "$A".into(),
                        eos.clone(),
                        eos.clone(),
                        "$B".into(),
                        eos.clone(),
                    ])
                })
                .map_err(|e| format!("{}'s template: {e}", class.name()))?
                .special_tokens(vec![(bos, bos_id), (eos, eos_id)])
                .build()
                .map_err(|e| format!("{}'s template: {e}", class.name()))?;
            tokenizer.with_post_processor(Some(processor));
        }
    }
    tokenizer.set_encode_special_tokens(config.split_special_tokens);
    Ok(tokenizer)
}
