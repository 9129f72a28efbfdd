//! The tokenizer transformers 5's `AutoTokenizer` builds for a folder — what
//! sentence-transformers loads — where it does not take `tokenizer.json` as it is.
//!
//! transformers 5 has one class per model family, each with its own `__init__` that builds the
//! pipeline from scratch: only the vocabulary (and BPE merges, and a SentencePiece charsmap)
//! comes from `tokenizer.json`; normaliser, pre-tokeniser, model settings and post-processor come
//! from `tokenizer_config.json` and the class's defaults. A folder whose `tokenizer.json` was
//! written by an older transformers (or by hand) can say something else, and then the class
//! wins: `PreTrainedTokenizerFast` (`TokenizersBackend`) is the one class that takes the file's
//! pipeline as it is.
//!
//! Every class, that one included, then registers added tokens the same way
//! (`register_added_tokens`): the config's `added_tokens_decoder`, else `added_tokens.json`'s
//! and `tokenizer.json`'s, then the named and extra special tokens not among them. The files
//! are read with transformers' precedence ([`TokenizerConfig::read`]).
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

use std::collections::{BTreeMap, HashSet};
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
use tokenizers::{AddedToken, AddedVocabulary, Model, Tokenizer};

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
const PAD: usize = 4;
const CLS: usize = 5;

const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";

/// A special token as the files name it.
#[derive(Clone, Debug)]
struct ConfigToken {
    /// Special; with the object's flags when given as an object (a string's are the class's).
    token: AddedToken,
    from_object: bool,
    /// Whether the object said `normalized` (tokenizers makes a token it did not say it for
    /// unnormalised when the token is made special).
    normalized_given: bool,
    /// The file that names it (for errors).
    file: &'static str,
}

/// What a failed build blames: a file of the folder, and why.
pub(crate) struct BuildError {
    pub file: &'static str,
    pub message: String,
}

impl BuildError {
    fn new(file: &'static str, message: impl Into<String>) -> Self {
        Self {
            file,
            message: message.into(),
        }
    }
}

/// The side `truncation_side` (or `tokenizer.json`'s truncation direction) cuts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TruncationSide {
    Right,
    Left,
}

/// The files sentence-transformers reads a Transformer module's config from, the first present
/// winning (`sentence_bert_config.json`, or an older model's name for it).
pub(crate) const SENTENCE_CONFIGS: [&str; 7] = [
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
];

/// The sentence-transformers config file of the module in `dir`, if any ([`SENTENCE_CONFIGS`]).
pub(crate) fn sentence_config(dir: &Path) -> Option<&'static str> {
    SENTENCE_CONFIGS
        .into_iter()
        .find(|name| dir.join(name).is_file())
}

/// `tokenizer_config.json`'s settings that matter here, as transformers 5 reads them together
/// with the folder's other tokenizer files: sentence-transformers' `tokenizer_args`
/// (`processor_kwargs`) from `sentence_bert_config.json`, which it passes to `AutoTokenizer`
/// and which win over every file; `special_tokens_map.json` and `added_tokens.json`, which are
/// read only when the config has no `added_tokens_decoder` (the first's tokens laid over the
/// config's).
pub(crate) struct TokenizerConfig {
    /// `tokenizer_class` of `tokenizer_config.json`, less a `Fast` suffix (transformers 5 has
    /// one class for both).
    pub tokenizer_class: Option<String>,
    pub model_max_length: Option<usize>,
    /// `truncation_side`, where given.
    pub truncation_side: Option<TruncationSide>,
    do_lower_case: bool,
    strip_accents: Option<bool>,
    tokenize_chinese_chars: bool,
    /// RoBERTa's and XLM-R's `add_prefix_space` (their defaults differ); `Some(None)`: null,
    /// which XLM-R's class reads as false.
    add_prefix_space: Option<Option<bool>>,
    trim_offsets: bool,
    /// `split_special_tokens`: special tokens in a text are read as text.
    split_special_tokens: bool,
    /// [`NAMED`]'s tokens: `None` where no file names one (the class's default), `Some(None)`
    /// where a file sets it to null (none).
    named: [Option<Option<ConfigToken>>; 7],
    /// Other `*_token` keys (model-specific named tokens; `extra_special_tokens` as an object).
    model_specific: Vec<ConfigToken>,
    /// `extra_special_tokens` (or `additional_special_tokens`) as a list; `None` when no file
    /// gives one.
    extras: Option<Vec<ConfigToken>>,
    /// `added_tokens_decoder`, by id, with whether each says `normalized`: when present, the
    /// added tokens transformers starts from (`tokenizer.json`'s are not read).
    added_tokens_decoder: Option<Vec<(u32, AddedToken, bool)>>,
    /// `added_tokens.json` (read only without `added_tokens_decoder`), by id; `tokenizer.json`'s
    /// added tokens are laid over it.
    added_tokens_json: Vec<(u32, AddedToken)>,
    /// `add_bos_token` and `add_eos_token` (each false when absent) when sentence-transformers'
    /// tokenizer arguments give either, with the file that gives them: `AutoTokenizer`'s
    /// keyword arguments, with which `TokenizersBackend` replaces a tokenizer.json taken as it
    /// is's post-processor by `[bos] $A [eos]` (the same keys in `tokenizer_config.json`
    /// change nothing).
    bos_eos_args: Option<(bool, bool, &'static str)>,
}

/// Python's truth of a JSON value (`null`, `false`, `0`, `""`, `[]` and `{}` are false).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl TokenizerConfig {
    /// Reads the tokenizer files of `dir` (defaults for those that are absent), following
    /// transformers' `_from_pretrained` and `PreTrainedTokenizerBase.__init__` step by step. A
    /// key that is present must have the kind transformers writes.
    pub fn read(dir: &Path) -> Result<Self, EmberError> {
        let path = dir.join(TOKENIZER_CONFIG);
        let mut value = if path.exists() {
            read_json(&path)?
        } else {
            Value::Object(Default::default())
        };
        let invalid = |file: &str, message: String| EmberError::Invalid {
            path: dir.join(file),
            message,
        };
        let object = value
            .as_object_mut()
            .ok_or_else(|| invalid(TOKENIZER_CONFIG, "expected a JSON object".into()))?;
        // AutoTokenizer picks the class from the file, before any argument.
        let tokenizer_class = match object.get("tokenizer_class").filter(|v| !v.is_null()) {
            None => None,
            Some(Value::String(name)) => Some(name.strip_suffix("Fast").unwrap_or(name).to_owned()),
            Some(v) => {
                return Err(invalid(
                    TOKENIZER_CONFIG,
                    format!("\"tokenizer_class\" = {v} is not a string"),
                ))
            }
        };
        // sentence-transformers' tokenizer arguments replace the config's keys (and, when
        // true, keep special_tokens_map.json's away).
        let mut from_st: HashSet<String> = HashSet::new();
        let mut st_truthy: HashSet<String> = HashSet::new();
        let st_file = sentence_config(dir);
        if let Some(st_file) = st_file {
            let st = read_json(&dir.join(st_file))?;
            // sentence-transformers renames the old key to the new one, replacing it.
            let args = st
                .get("tokenizer_args")
                .map(|v| ("tokenizer_args", v))
                .or_else(|| st.get("processor_kwargs").map(|v| ("processor_kwargs", v)));
            match args {
                None | Some((_, Value::Null)) => {}
                Some((_, Value::Object(args))) => {
                    for (key, value) in args {
                        object.insert(key.clone(), value.clone());
                        from_st.insert(key.clone());
                        if truthy(value) {
                            st_truthy.insert(key.clone());
                        }
                    }
                }
                Some((key, other)) => {
                    return Err(invalid(
                        st_file,
                        format!("\"{key}\" = {other} is not an object"),
                    ))
                }
            }
        }
        let object = &*object;
        // A string (or AddedToken) value is no flag: transformers takes any `*_token` keyword
        // argument of that kind for a model-specific special token (as below).
        let flag_arg = |key: &str| {
            object
                .get(key)
                .filter(|v| from_st.contains(key) && !v.is_string() && v.get("__type").is_none())
        };
        let bos_eos_args = match st_file {
            Some(file)
                if flag_arg("add_bos_token").is_some() || flag_arg("add_eos_token").is_some() =>
            {
                let flag = |key: &str| flag_arg(key).is_some_and(truthy);
                Some((flag("add_bos_token"), flag("add_eos_token"), file))
            }
            _ => None,
        };
        let file_of = |key: &str| match (from_st.contains(key), st_file) {
            (true, Some(st_file)) => st_file,
            _ => TOKENIZER_CONFIG,
        };
        let get = |key: &str| object.get(key).filter(|v| !v.is_null());
        let flag = |key: &str| -> Result<Option<bool>, EmberError> {
            get(key)
                .map(|v| {
                    v.as_bool().ok_or_else(|| {
                        invalid(
                            file_of(key),
                            format!("\"{key}\" = {v} is not true or false"),
                        )
                    })
                })
                .transpose()
        };
        // transformers 5 writes 1e30 for "no limit": anything past usize range means none.
        let max_length = |key: &str| -> Result<Option<usize>, EmberError> {
            match get(key) {
                None => Ok(None),
                Some(v) => {
                    let n = v.as_f64().filter(|&n| n >= 1.0).ok_or_else(|| {
                        invalid(file_of(key), format!("\"{key}\" = {v} is not a number ≥ 1"))
                    })?;
                    Ok((n < 1e15).then_some(n as usize))
                }
            }
        };
        let model_max_length = max_length("model_max_length")?;
        let truncation_side = match get("truncation_side") {
            None => None,
            Some(v) => Some(match v.as_str() {
                Some("right") => TruncationSide::Right,
                Some("left") => TruncationSide::Left,
                _ => {
                    return Err(invalid(
                        file_of("truncation_side"),
                        format!("\"truncation_side\" = {v} is not \"right\" or \"left\""),
                    ))
                }
            }),
        };
        let add_prefix_space = match object.get("add_prefix_space") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(_) => Some(flag("add_prefix_space")?),
        };
        let added_tokens_decoder = get("added_tokens_decoder")
            .map(|v| {
                added_tokens_decoder(v).map_err(|m| invalid(file_of("added_tokens_decoder"), m))
            })
            .transpose()?;

        let token = |key: &str, v: &Value, file: &'static str, special_map: bool| {
            config_token(key, v, file, special_map).map_err(|m| invalid(file, m))
        };
        let token_list = |key: &str, v: &Value, file: &'static str, special_map: bool| {
            let list = v
                .as_array()
                .ok_or_else(|| invalid(file, format!("\"{key}\" = {v} is not a list of tokens")))?;
            list.iter()
                .map(|item| token(key, item, file, special_map))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut named: [Option<Option<ConfigToken>>; 7] = Default::default();
        for (slot, key) in named.iter_mut().zip(NAMED) {
            *slot = match object.get(key) {
                None => None,
                Some(Value::Null) => Some(None),
                Some(v) => Some(Some(token(key, v, file_of(key), false)?)),
            };
        }
        // Model-specific named tokens: other `*_token` keys whose values are tokens (a string,
        // or an object transformers wrote as an AddedToken).
        let is_token = |v: &Value| {
            v.is_string() || v.get("__type").and_then(Value::as_str) == Some("AddedToken")
        };
        let mut explicit: BTreeMap<String, ConfigToken> = BTreeMap::new();
        for (key, v) in object {
            if key.ends_with("_token") && !NAMED.contains(&key.as_str()) && is_token(v) {
                explicit.insert(key.clone(), token(key, v, file_of(key), false)?);
            }
        }
        // additional_special_tokens becomes extra_special_tokens unless that is given (and not
        // empty); an object of extra special tokens names model-specific ones.
        let mut extra: Option<Value> = object.get("extra_special_tokens").cloned();
        let mut additional: Option<Value> = object.get("additional_special_tokens").cloned();
        let mut extra_file = file_of("extra_special_tokens");
        let mut additional_file = file_of("additional_special_tokens");
        if additional.is_some() && !extra.as_ref().is_some_and(truthy) {
            extra = additional.take();
            extra_file = additional_file;
        }
        if let Some(Value::Object(map)) = &extra {
            let file = file_of("extra_special_tokens");
            for (key, v) in map {
                explicit.insert(key.clone(), token(key, v, file, false)?);
            }
            extra = None;
        }
        let mut auto: BTreeMap<String, ConfigToken> = BTreeMap::new();

        let mut added_tokens_json = Vec::new();
        if added_tokens_decoder.is_none() {
            let map_path = dir.join(SPECIAL_TOKENS_MAP);
            if map_path.exists() {
                let map = read_json(&map_path)?;
                let map = map
                    .as_object()
                    .ok_or_else(|| invalid(SPECIAL_TOKENS_MAP, "expected a JSON object".into()))?;
                let file = SPECIAL_TOKENS_MAP;
                for (key, v) in map {
                    if st_truthy.contains(key) {
                        continue;
                    }
                    if let Some(i) = NAMED.iter().position(|named| named == key) {
                        named[i] = match v {
                            Value::Null => Some(None),
                            v => Some(Some(token(key, v, file, true)?)),
                        };
                    } else if key == "extra_special_tokens" && v.is_array() {
                        let mut merged = match &extra {
                            Some(Value::Array(list)) => list.clone(),
                            _ => Vec::new(),
                        };
                        for item in v.as_array().into_iter().flatten() {
                            if !merged.contains(item) {
                                merged.push(item.clone());
                            }
                        }
                        extra = Some(Value::Array(merged));
                        extra_file = file;
                    } else if key == "extra_special_tokens" {
                        extra = Some(v.clone());
                        extra_file = file;
                    } else if key == "additional_special_tokens" {
                        additional = Some(v.clone());
                        additional_file = file;
                    } else if key.ends_with("_token") && !v.is_null() {
                        auto.insert(key.clone(), token(key, v, file, true)?);
                    }
                }
                // An object of extra special tokens from the map names model-specific ones.
                if let Some(Value::Object(map)) = &extra {
                    for (key, v) in map {
                        explicit.insert(key.clone(), token(key, v, file, true)?);
                    }
                    extra = None;
                }
            }
        }
        if extra.is_none() {
            if let Some(list) = additional.take() {
                extra = Some(list);
                extra_file = additional_file;
            }
        }
        let extras = match &extra {
            None | Some(Value::Null) => None,
            Some(list) => Some(token_list(
                "extra_special_tokens",
                list,
                extra_file,
                extra_file == SPECIAL_TOKENS_MAP,
            )?),
        };
        // The config's model-specific tokens win over the map's.
        auto.extend(explicit);
        let model_specific: Vec<ConfigToken> = auto.into_values().collect();

        if added_tokens_decoder.is_none() {
            let json_path = dir.join("added_tokens.json");
            if json_path.exists() {
                let special: HashSet<String> = named
                    .iter()
                    .flatten()
                    .flatten()
                    .chain(extras.iter().flatten())
                    .map(|t| t.token.content.clone())
                    .collect();
                let value = read_json(&json_path)?;
                let map = value.as_object().ok_or_else(|| {
                    invalid(
                        "added_tokens.json",
                        "expected a JSON object of token → id".into(),
                    )
                })?;
                for (content, id) in map {
                    let id = id
                        .as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or_else(|| {
                            invalid(
                                "added_tokens.json",
                                format!("the id of {content:?} ({id}) is not a token id"),
                            )
                        })?;
                    let is_special = special.contains(content);
                    added_tokens_json.push((
                        id,
                        AddedToken::from(content.clone(), is_special).normalized(!is_special),
                    ));
                }
                added_tokens_json.sort_by_key(|(id, _)| *id);
            }
        }

        Ok(Self {
            tokenizer_class,
            model_max_length,
            truncation_side,
            do_lower_case: flag("do_lower_case")?.unwrap_or(true),
            strip_accents: flag("strip_accents")?,
            tokenize_chinese_chars: flag("tokenize_chinese_chars")?.unwrap_or(true),
            add_prefix_space,
            trim_offsets: flag("trim_offsets")?.unwrap_or(true),
            split_special_tokens: flag("split_special_tokens")?.unwrap_or(false),
            named,
            model_specific,
            extras,
            added_tokens_decoder,
            added_tokens_json,
            bos_eos_args,
        })
    }
}

/// A special token's value: a string, or an object with a `"content"` string and perhaps the
/// flags of an `AddedToken`, read as transformers does: `special_tokens_map.json`'s objects are
/// special whatever they say (`special_map`); a config's take their `special` (false when
/// absent; a named token is made special when it is registered); `normalized` defaults to the
/// opposite of `special`, the other flags to false.
fn config_token(
    key: &str,
    v: &Value,
    file: &'static str,
    special_map: bool,
) -> Result<ConfigToken, String> {
    if let Some(content) = v.as_str() {
        return Ok(ConfigToken {
            token: AddedToken::from(content.to_owned(), true),
            from_object: false,
            normalized_given: true,
            file,
        });
    }
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .filter(|_| v.is_object())
        .ok_or_else(|| {
            format!(
                "\"{key}\" = {v} is not a token (a string, or an object with a \"content\" string)"
            )
        })?;
    let flags = token_flags(v, special_map).map_err(|m| format!("\"{key}\": {m}"))?;
    Ok(ConfigToken {
        token: flags(content),
        from_object: true,
        normalized_given: normalized_given(v),
        file,
    })
}

/// Whether an `AddedToken` object says `normalized`.
fn normalized_given(v: &Value) -> bool {
    v.get("normalized").is_some_and(Value::is_boolean)
}

/// An `AddedToken` object's flags, as a function of its content.
fn token_flags(v: &Value, force_special: bool) -> Result<impl Fn(&str) -> AddedToken, String> {
    let flag = |name: &str| -> Result<Option<bool>, String> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!("\"{name}\" = {other} is not true or false")),
        }
    };
    let special = force_special || flag("special")?.unwrap_or(false);
    let normalized = flag("normalized")?.unwrap_or(!special);
    let single_word = flag("single_word")?.unwrap_or(false);
    let lstrip = flag("lstrip")?.unwrap_or(false);
    let rstrip = flag("rstrip")?.unwrap_or(false);
    Ok(move |content: &str| {
        AddedToken::from(content.to_owned(), special)
            .single_word(single_word)
            .lstrip(lstrip)
            .rstrip(rstrip)
            .normalized(normalized)
    })
}

/// `added_tokens_decoder`: `{"<id>": {"content": …, "lstrip": …, "rstrip": …, "normalized": …,
/// "single_word": …, "special": …}}`, as transformers reads it (`AddedToken(**token)`), in id
/// order.
fn added_tokens_decoder(value: &Value) -> Result<Vec<(u32, AddedToken, bool)>, String> {
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
        let flags = token_flags(token, false)
            .map_err(|m| format!("\"added_tokens_decoder\" entry {id}: {m}"))?;
        tokens.push((id, flags(content), normalized_given(token)));
    }
    tokens.sort_by_key(|(id, _, _)| *id);
    Ok(tokens)
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

/// The special tokens a tokenizer registers: the files' (else, for a class, the class's
/// defaults), model-specific named ones, and the extra ones.
pub(crate) struct Specials {
    /// [`NAMED`]'s: the token, whether it says `normalized`, and the file naming it (`None`
    /// for a class default).
    named: [Option<(AddedToken, bool, Option<&'static str>)>; 7],
    model_specific: Vec<(AddedToken, bool)>,
    extras: Vec<(AddedToken, bool)>,
}

impl Specials {
    /// `class` `None`: the tokenizer takes `tokenizer.json` as it is, and only the files name
    /// special tokens.
    pub fn of(config: &TokenizerConfig, class: Option<TokenizerClass>) -> Self {
        let defaults = class.map(TokenizerClass::defaults).unwrap_or_default();
        let mut named: [Option<(AddedToken, bool, Option<&'static str>)>; 7] = Default::default();
        for (i, slot) in named.iter_mut().enumerate() {
            let default_lstrip = defaults[i].is_some_and(|(_, lstrip)| lstrip);
            *slot = match &config.named[i] {
                // A class wraps a string in its own AddedToken (MPNet's and CamemBERT's mask
                // takes the space before it); an object stays as it is.
                Some(Some(given)) => {
                    let mut token = given.token.clone();
                    if !given.from_object {
                        token.lstrip = default_lstrip;
                    }
                    Some((token, given.normalized_given, Some(given.file)))
                }
                // Set to null: none, whatever the class's default.
                Some(None) => None,
                None => defaults[i].map(|(content, lstrip)| {
                    (AddedToken::from(content, true).lstrip(lstrip), true, None)
                }),
            };
        }
        let tokens = |list: &[ConfigToken]| {
            list.iter()
                .map(|t| (t.token.clone(), t.normalized_given))
                .collect()
        };
        let extras = match (&config.extras, class) {
            (Some(extras), _) => tokens(extras),
            (None, Some(TokenizerClass::Camembert)) => {
                ["<s>NOTUSED", "</s>NOTUSED", "<unk>NOTUSED"]
                    .map(|content| (AddedToken::from(content, true), true))
                    .to_vec()
            }
            (None, _) => Vec::new(),
        };
        Self {
            named,
            model_specific: tokens(&config.model_specific),
            extras,
        }
    }

    /// Token `i` of [`NAMED`] ("" when neither the files nor the class name one).
    fn get(&self, i: usize) -> &str {
        self.named[i]
            .as_ref()
            .map_or("", |(token, _, _)| token.content.as_str())
    }

    /// The file to blame when token `i` is not in the vocabulary.
    fn file(&self, i: usize) -> &'static str {
        self.named[i]
            .as_ref()
            .and_then(|(_, _, file)| *file)
            .unwrap_or(TOKENIZER_CONFIG)
    }

    /// The named tokens, [`NAMED`]'s then the model-specific ones, with whether each says
    /// `normalized`.
    fn named(&self) -> impl Iterator<Item = (&AddedToken, bool)> {
        self.named
            .iter()
            .flatten()
            .map(|(token, given, _)| (token, *given))
            .chain(
                self.model_specific
                    .iter()
                    .map(|(token, given)| (token, *given)),
            )
    }

    /// The named tokens, then the extra ones.
    fn all(&self) -> impl Iterator<Item = (&AddedToken, bool)> {
        self.named()
            .chain(self.extras.iter().map(|(token, given)| (token, *given)))
    }

    /// transformers' `all_special_ids`: the named and extra tokens' ids, sorted (those not in
    /// the vocabulary, which Ember does not register, have none).
    pub fn ids(&self, tokenizer: &Tokenizer) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .all()
            .filter_map(|(token, _)| tokenizer.token_to_id(&token.content))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Which of [`TokenizerClass`] transformers 5's `AutoTokenizer` loads the folder as, if any:
/// the class named by `tokenizer_config.json`'s `tokenizer_class`, else by `config.json`'s (a
/// `Fast` suffix dropped; the names transformers resolves to these classes too, such as
/// `ElectraTokenizer` or `BartTokenizer`), or, with neither, the one `config.json`'s
/// `model_type` maps to (`bert`, `distilbert`, `nomic_bert`, `electra`: BERT's; `mpnet`;
/// `roberta`; `xlm-roberta` and `gte`: XLM-R's; `camembert`). ModernBERT folders are taken as they are whatever
/// they name (transformers lists `modernbert` among the models whose hub class it overrides).
/// Any other class (`PreTrainedTokenizerFast`, `TokenizersBackend`, …) is taken as the file
/// has it.
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
        Some(
            "BertTokenizer"
            | "DistilBertTokenizer"
            | "ElectraTokenizer"
            | "LayoutLMTokenizer"
            | "LxmertTokenizer"
            | "MobileBertTokenizer"
            | "SqueezeBertTokenizer",
        ) => Some(TokenizerClass::Bert),
        Some("MPNetTokenizer") => Some(TokenizerClass::MPNet),
        Some(
            "RobertaTokenizer"
            | "BartTokenizer"
            | "LEDTokenizer"
            | "LongformerTokenizer"
            | "MvpTokenizer",
        ) => Some(TokenizerClass::Roberta),
        Some("XLMRobertaTokenizer") => Some(TokenizerClass::XlmRoberta),
        Some("CamembertTokenizer") => Some(TokenizerClass::Camembert),
        Some(_) => None,
        None => match model_type.as_deref() {
            Some("bert" | "distilbert" | "nomic_bert" | "electra") => Some(TokenizerClass::Bert),
            Some("mpnet") => Some(TokenizerClass::MPNet),
            Some("roberta") => Some(TokenizerClass::Roberta),
            Some("xlm-roberta" | "gte") => Some(TokenizerClass::XlmRoberta),
            Some("camembert") => Some(TokenizerClass::Camembert),
            _ => None,
        },
    }
}

/// Makes `tokenizer` (a `tokenizer.json`'s) the pipeline `class` builds of that file. The
/// model is replaced only where its settings differ from the class's (a real vocabulary's model
/// takes as long to build as the file to read); `model_fields` (the file's `model` less its
/// vocabulary) gets the `unk_id` the class sets. Refused when the file's model is not the
/// class's kind (WordPiece, BPE, Unigram): transformers would build the class's model over the
/// other kind's vocabulary. Other errors name a special token the post-processor needs that is
/// not in the vocabulary.
pub(crate) fn rebuild(
    tokenizer: &mut Tokenizer,
    model_fields: &mut Option<Value>,
    file_added: &[(u32, AddedToken)],
    config: &TokenizerConfig,
    class: TokenizerClass,
) -> Result<(), BuildError> {
    let specials = Specials::of(config, Some(class));
    let mut precompiled = None;
    let model: Option<ModelWrapper> = match (class, tokenizer.get_model()) {
        (TokenizerClass::Bert | TokenizerClass::MPNet, ModelWrapper::WordPiece(model)) => {
            let unk = specials.get(UNK);
            let as_built = model.unk_token == unk
                && model.continuing_subword_prefix == "##"
                && model.max_input_chars_per_word == 100;
            (!as_built).then(|| {
                let mut model = model.clone();
                model.unk_token = unk.to_owned();
                model.continuing_subword_prefix = "##".into();
                model.max_input_chars_per_word = 100;
                model.into()
            })
        }
        (TokenizerClass::Roberta, ModelWrapper::BPE(model)) => {
            let empty = |affix: &Option<String>| affix.as_deref().is_none_or(str::is_empty);
            let as_built = model.dropout.is_none()
                && model.unk_token.is_none()
                && empty(&model.continuing_subword_prefix)
                && empty(&model.end_of_word_suffix)
                && !model.fuse_unk
                && !model.byte_fallback
                && !model.ignore_merges;
            (!as_built).then(|| {
                let mut model: BPE = model.clone();
                model.dropout = None;
                model.unk_token = None;
                model.continuing_subword_prefix = None;
                model.end_of_word_suffix = None;
                model.fuse_unk = false;
                model.byte_fallback = false;
                model.ignore_merges = false;
                model.into()
            })
        }
        (TokenizerClass::XlmRoberta | TokenizerClass::Camembert, ModelWrapper::Unigram(model)) => {
            let unk_id = match class {
                TokenizerClass::Camembert => model
                    .iter()
                    .position(|(piece, _)| piece == specials.get(UNK))
                    .unwrap_or(0),
                _ => 3,
            };
            let file_unk_id = model_fields
                .as_ref()
                .and_then(|fields| fields.get("unk_id")?.as_u64());
            let as_built = file_unk_id == Some(unk_id as u64) && !model.byte_fallback();
            let rebuilt = match as_built {
                true => None,
                false => {
                    let vocab: Vec<(String, f64)> = model.iter().cloned().collect();
                    let model = Unigram::from(vocab, Some(unk_id), false).map_err(|e| {
                        BuildError::new(
                            "tokenizer.json",
                            format!("{} sets the Unigram unk_id to {unk_id}: {e}", class.name()),
                        )
                    })?;
                    Some(model.into())
                }
            };
            if let Some(Value::Object(fields)) = model_fields {
                fields.insert("unk_id".into(), unk_id.into());
            }
            precompiled = file_precompiled(tokenizer.get_normalizer());
            rebuilt
        }
        (_, file_model) => {
            let kind = match file_model {
                ModelWrapper::WordPiece(_) => "WordPiece",
                ModelWrapper::BPE(_) => "BPE",
                ModelWrapper::Unigram(_) => "Unigram",
                ModelWrapper::WordLevel(_) => "WordLevel",
            };
            let wants = match class {
                TokenizerClass::Bert | TokenizerClass::MPNet => "WordPiece",
                TokenizerClass::Roberta => "byte-level BPE",
                TokenizerClass::XlmRoberta | TokenizerClass::Camembert => "SentencePiece Unigram",
            };
            return Err(BuildError::new(
                TOKENIZER_CONFIG,
                format!(
                    "the folder's tokenizer class is {} (tokenizer_class, or config.json's model_type), which builds a {wants} tokenizer over tokenizer.json's vocabulary, but tokenizer.json's model is {kind} (tokenizer_class \"PreTrainedTokenizerFast\" takes the file as it is)",
                    class.name()
                ),
            ));
        }
    };
    if let Some(model) = model {
        tokenizer.with_model(model);
    }
    assemble(tokenizer, precompiled, file_added, config, class, &specials)
}

/// The pipeline transformers builds from a `vocab.txt` alone: `class`'s (MPNet's, else BERT's)
/// WordPiece with the files' unknown token, and the class built. Errors: the file cannot be
/// read, or a special token the pipeline needs is not in it.
pub(crate) fn wordpiece_from_vocab(
    vocab: &str,
    config: &TokenizerConfig,
    class: Option<TokenizerClass>,
) -> Result<(Tokenizer, TokenizerClass), BuildError> {
    let class = match class {
        Some(TokenizerClass::MPNet) => TokenizerClass::MPNet,
        _ => TokenizerClass::Bert,
    };
    let specials = Specials::of(config, Some(class));
    let model = WordPiece::from_file(vocab)
        .unk_token(specials.get(UNK).to_owned())
        .build()
        .map_err(|e| BuildError::new("vocab.txt", e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    assemble(&mut tokenizer, None, &[], config, class, &specials).map_err(|e| BuildError {
        file: "vocab.txt",
        ..e
    })?;
    Ok((tokenizer, class))
}

/// What transformers does with a `tokenizer.json` taken as it is: its added tokens stay, and
/// the files' are registered over them ([`register_added_tokens`]); with `add_bos_token` or
/// `add_eos_token` among sentence-transformers' tokenizer arguments, the post-processor becomes
/// `TokenizersBackend.update_post_processor`'s template, `[bos] $A [eos]` (each where its flag
/// is true and the token is set; refused when that token is not in the vocabulary, where
/// transformers would add it under a new id). Returns the special tokens (for
/// `all_special_ids`).
pub(crate) fn as_it_is(
    tokenizer: &mut Tokenizer,
    file_added: &[(u32, AddedToken)],
    config: &TokenizerConfig,
) -> Result<Specials, BuildError> {
    let mut specials = Specials::of(config, None);
    // Without a pad token in the files, the one of tokenizer.json's padding.
    if config.named[PAD].is_none() {
        if let Some(padding) = tokenizer.get_padding() {
            specials.named[PAD] = Some((
                AddedToken::from(padding.pad_token.clone(), true),
                true,
                None,
            ));
        }
    }
    register_added_tokens(tokenizer, file_added, config, &specials, false);
    if let Some((add_bos, add_eos, file)) = config.bos_eos_args {
        let token = |i: usize, add: bool| -> Result<Option<(String, u32)>, BuildError> {
            let Some((token, _, _)) = specials.named[i].as_ref().filter(|_| add) else {
                return Ok(None);
            };
            let id = tokenizer.token_to_id(&token.content).ok_or_else(|| {
                BuildError::new(
                    file,
                    format!(
                        "add_{}: {} {:?} is not in the vocabulary (transformers would give it a new id, past the tokenizer's; Ember does not)",
                        NAMED[i], NAMED[i], token.content
                    ),
                )
            })?;
            Ok(Some((token.content.clone(), id)))
        };
        let (bos, eos) = (token(BOS, add_bos)?, token(EOS, add_eos)?);
        let piece = |t: &Option<(String, u32)>, seq: u32| {
            t.as_ref().map(|(content, _)| format!("{content}:{seq}"))
        };
        let single: Vec<String> = piece(&bos, 0)
            .into_iter()
            .chain(["$A:0".to_owned()])
            .chain(piece(&eos, 0))
            .collect();
        let pair: Vec<String> = single
            .iter()
            .cloned()
            .chain(piece(&bos, 1))
            .chain(["$B:1".to_owned()])
            .chain(piece(&eos, 1))
            .collect();
        let template_error = |e: String| {
            BuildError::new(
                file,
                format!("the template of add_bos_token/add_eos_token: {e}"),
            )
        };
        let processor = TemplateProcessing::builder()
            .try_single(single)
            .and_then(|builder| builder.try_pair(pair))
            .map_err(template_error)?
            .special_tokens(bos.into_iter().chain(eos).collect::<Vec<_>>())
            .build()
            .map_err(|e| template_error(e.to_string()))?;
        tokenizer.with_post_processor(Some(processor));
    }
    Ok(specials)
}

/// `tokenizer.json`'s `added_tokens` as listed, with the ids the file gives them (transformers
/// orders them by those ids; the crate numbers them in the order listed). Entries the crate
/// would not read are left out (the crate then refuses the file).
pub(crate) fn listed_added_tokens(tokenizer_json: &Value) -> Vec<(u32, AddedToken)> {
    let Some(list) = tokenizer_json.get("added_tokens").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|entry| {
            let id = u32::try_from(entry.get("id")?.as_u64()?).ok()?;
            let content = entry.get("content")?.as_str()?;
            let flags = token_flags(entry, false).ok()?;
            Some((id, flags(content)))
        })
        .collect()
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

/// `class`'s pipeline around `tokenizer`'s model, in transformers' order: normaliser and
/// pre-tokeniser; the added tokens, registered afresh ([`register_added_tokens`]); the
/// post-processor with its tokens' ids.
fn assemble(
    tokenizer: &mut Tokenizer,
    precompiled: Option<NormalizerWrapper>,
    file_added: &[(u32, AddedToken)],
    config: &TokenizerConfig,
    class: TokenizerClass,
    specials: &Specials,
) -> Result<(), BuildError> {
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
                config.add_prefix_space.flatten().unwrap_or(false),
                true,
                true,
            )));
        }
        TokenizerClass::XlmRoberta | TokenizerClass::Camembert => {
            tokenizer.with_normalizer(precompiled);
            // None (null) is false to the class; absent, its default true.
            let scheme = match config
                .add_prefix_space
                .unwrap_or(Some(true))
                .unwrap_or(false)
            {
                true => PrependScheme::Always,
                false => PrependScheme::Never,
            };
            tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
                WhitespaceSplit.into(),
                Metaspace::new('▁', scheme, true).into(),
            ])));
        }
    }
    register_added_tokens(tokenizer, file_added, config, specials, true);

    let missing = |i: usize| {
        let token = specials.get(i);
        let whose = match specials.named[i].as_ref().and_then(|(_, _, file)| *file) {
            Some(file) => format!("named in {file}"),
            None => format!("{}'s default", class.name()),
        };
        BuildError::new(
            specials.file(i),
            format!("special token {token:?} is not in the vocabulary ({whose})"),
        )
    };
    let id_of = |i: usize| {
        let token = specials.get(i);
        tokenizer
            .token_to_id(token)
            .map(|id| (token.to_owned(), id))
            .ok_or_else(|| missing(i))
    };
    match class {
        TokenizerClass::Bert | TokenizerClass::MPNet => {
            // The unknown token must be the model's own (an added token cannot stand in: the
            // crate would fail on the first unknown word).
            if tokenizer
                .get_model()
                .token_to_id(specials.get(UNK))
                .is_none()
            {
                return Err(missing(UNK));
            }
            let (sep, cls) = (id_of(SEP)?, id_of(CLS)?);
            match class {
                TokenizerClass::Bert => {
                    tokenizer.with_post_processor(Some(BertProcessing::new(sep, cls)));
                }
                _ => {
                    let processor = RobertaProcessing::new(sep, cls)
                        .trim_offsets(true)
                        .add_prefix_space(false);
                    tokenizer.with_post_processor(Some(processor));
                }
            }
        }
        TokenizerClass::Roberta => {
            let processor = RobertaProcessing::new(id_of(SEP)?, id_of(CLS)?)
                .trim_offsets(config.trim_offsets)
                .add_prefix_space(config.add_prefix_space.flatten().unwrap_or(false));
            tokenizer.with_post_processor(Some(processor));
        }
        TokenizerClass::XlmRoberta | TokenizerClass::Camembert => {
            let (bos, bos_id) = id_of(BOS)?;
            let (eos, eos_id) = id_of(EOS)?;
            let template_error = |e: tokenizers::Error| {
                BuildError::new(
                    specials.file(BOS),
                    format!("{}'s template <s> $A </s>: {e}", class.name()),
                )
            };
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
                .map_err(|e| template_error(e.into()))?
                .special_tokens(vec![(bos, bos_id), (eos, eos_id)])
                .build()
                .map_err(|e| template_error(e.into()))?;
            tokenizer.with_post_processor(Some(processor));
        }
    }
    Ok(())
}

/// transformers' added-token step, which every class runs (`TokenizersBackend.__init__`):
/// the starting tokens (the config's `added_tokens_decoder`; else `added_tokens.json`'s with
/// `tokenizer.json`'s, `file_added`, laid over them by id), in id order, then the named and
/// extra special tokens not among them or already added (those in the vocabulary: Ember gives
/// none a new id), a named one made special (and, unless it says otherwise, unnormalised);
/// added to the `tokenizer`'s own (the file's, in the order listed; none when `fresh`, as a
/// class that builds its own tokenizer starts empty), a token added again replacing the one
/// before it, as tokenizers 0.23 (the Python package) does; normalised with the tokenizer's
/// normaliser. Then `split_special_tokens`.
fn register_added_tokens(
    tokenizer: &mut Tokenizer,
    file_added: &[(u32, AddedToken)],
    config: &TokenizerConfig,
    specials: &Specials,
    fresh: bool,
) {
    // (token, whether it says `normalized`)
    let mut to_add: Vec<(AddedToken, bool)> = match &config.added_tokens_decoder {
        Some(decoder) => decoder
            .iter()
            .map(|(_, token, given)| (token.clone(), *given))
            .collect(),
        None => {
            let mut by_id: BTreeMap<u32, AddedToken> =
                config.added_tokens_json.iter().cloned().collect();
            by_id.extend(file_added.iter().cloned());
            by_id.into_values().map(|token| (token, true)).collect()
        }
    };
    let file_added: &[(u32, AddedToken)] = match fresh {
        true => &[],
        false => file_added,
    };
    let mut encoder: HashSet<String> = file_added.iter().map(|(_, t)| t.content.clone()).collect();
    encoder.extend(to_add.iter().map(|(token, _)| token.content.clone()));
    // Each content once: the encoder holds every token added so far.
    for (token, given) in specials.all() {
        if tokenizer.token_to_id(&token.content).is_some() && encoder.insert(token.content.clone())
        {
            to_add.push((token.clone(), given));
        }
    }
    let named: HashSet<&str> = specials.named().map(|(t, _)| t.content.as_str()).collect();
    for (token, normalized_given) in &mut to_add {
        if !token.special && named.contains(token.content.as_str()) {
            token.special = true;
            if !*normalized_given {
                token.normalized = false;
            }
        }
    }
    // The crate keeps the first flags of a special token added twice: build the list whole.
    let mut all: Vec<AddedToken> = file_added.iter().map(|(_, token)| token.clone()).collect();
    for (token, _) in to_add {
        match all.iter_mut().find(|t| t.content == token.content) {
            Some(earlier) => *earlier = token,
            None => all.push(token),
        }
    }
    tokenizer.with_added_vocabulary(AddedVocabulary::new());
    tokenizer.add_tokens(&all);
    tokenizer.set_encode_special_tokens(config.split_special_tokens);
}
