//! A sentence-transformers model folder as published: where it is, which modules it chains,
//! and how its Transformer module is configured.
//!
//! ```text
//! modules.json                 [Transformer, Pooling, (Dense…), (Normalize)]
//! <transformer path>/          config.json, model.safetensors | pytorch_model.bin,
//!                              tokenizer.json | vocab.txt, tokenizer_config.json,
//!                              sentence_bert_config.json
//! 1_Pooling/config.json        pooling modes
//! 2_Dense/                     config.json, model.safetensors | pytorch_model.bin (see dense.rs)
//! config_sentence_transformers.json   prompts by name, default_prompt_name (optional)
//! ```
//! A folder without `modules.json` is a plain transformers folder; sentence-transformers then
//! uses mean pooling and no normalisation, and so does Ember.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ember_pooling::PoolingConfig;
use serde_json::Value;

use crate::hub::{resolve_model_with, HubConfig};
use crate::EmberError;

/// The modules of a model folder that Ember runs.
#[derive(Clone, Debug)]
pub struct ModelFolder {
    /// The folder itself.
    pub root: PathBuf,
    /// The Transformer module's folder (the root, or e.g. `0_Transformer` in older models).
    pub transformer_dir: PathBuf,
    /// The Pooling module's config file, if `modules.json` lists one.
    pub pooling_config: Option<PathBuf>,
    /// The folders of the `Dense` modules after Pooling, in order.
    pub dense: Vec<PathBuf>,
    /// Whether `modules.json` lists a `Normalize` module.
    pub normalize: bool,
    /// `sentence_bert_config.json`'s `max_seq_length`, when given (or that of
    /// `sentence_roberta_config.json`, `sentence_xlm-roberta_config.json`, …, the names older
    /// models have for it, as sentence-transformers reads them); its `tokenizer_args`'
    /// `model_max_length` instead where given.
    pub max_seq_length: Option<usize>,
    /// `sentence_bert_config.json`'s `do_lower_case`.
    pub do_lower_case: bool,
    /// `config_sentence_transformers.json`'s `prompts`: text put before a text to embed, by
    /// name (e5's `query: `, bge's instruction). `query` and `document` are always there (empty
    /// unless the file sets them), as sentence-transformers has them.
    pub prompts: BTreeMap<String, String>,
    /// `config_sentence_transformers.json`'s `default_prompt_name`: the prompt
    /// sentence-transformers' `encode` uses when the call names none.
    pub default_prompt_name: Option<String>,
    /// `config_sentence_transformers.json`'s `truncate_dim`: keep only the first values of each
    /// embedding (Matryoshka models).
    pub truncate_dim: Option<usize>,
    /// `config_sentence_transformers.json`'s `similarity_fn_name` (cosine when absent).
    pub similarity: crate::similarity::Similarity,
}

pub(crate) fn read_json(path: &Path) -> Result<Value, EmberError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmberError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EmberError::Json {
        path: path.to_owned(),
        source,
    })
}

impl ModelFolder {
    /// Reads `modules.json` (when present) and `sentence_bert_config.json` of `root`.
    pub fn open(root: &Path) -> Result<Self, EmberError> {
        if !root.is_dir() {
            return Err(EmberError::ModelNotFound {
                model: root.display().to_string(),
                looked: vec![root.to_owned()],
            });
        }
        let modules_path = root.join("modules.json");
        let mut folder = ModelFolder {
            root: root.to_owned(),
            transformer_dir: root.to_owned(),
            pooling_config: None,
            dense: Vec::new(),
            normalize: false,
            max_seq_length: None,
            do_lower_case: false,
            // sentence-transformers gives every model `query` and `document` prompts, empty
            // unless the folder sets them.
            prompts: BTreeMap::from(
                ["query", "document"].map(|name| (name.to_owned(), String::new())),
            ),
            default_prompt_name: None,
            truncate_dim: None,
            similarity: crate::similarity::Similarity::Cosine,
        };
        if modules_path.exists() {
            folder.read_modules(&modules_path)?;
        }
        // sentence_bert_config.json, or an older model's name for it.
        let sbert = crate::tokenizer_class::sentence_config(&folder.transformer_dir);
        if let Some(sbert) = sbert {
            let sbert_path = folder.transformer_dir.join(sbert);
            let value = read_json(&sbert_path)?;
            let invalid = |message: String| EmberError::Invalid {
                path: sbert_path.clone(),
                message,
            };
            let object = value
                .as_object()
                .ok_or_else(|| invalid("expected a JSON object".into()))?;
            folder.max_seq_length = match object.get("max_seq_length") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let n = v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                        invalid(format!("max_seq_length {v} is not a positive integer"))
                    })?;
                    if n < 2 {
                        return Err(invalid(format!(
                            "max_seq_length {n} leaves no room for [CLS] and [SEP]"
                        )));
                    }
                    Some(usize::try_from(n).unwrap_or(usize::MAX))
                }
            };
            // A model_max_length among the tokenizer arguments (which sentence-transformers
            // passes to AutoTokenizer) wins over max_seq_length: sentence-transformers passes
            // its max_seq_length as model_max_length only without one (1e30 and the like: none).
            let args = object
                .get("tokenizer_args")
                .or_else(|| object.get("processor_kwargs"));
            if let Some(v) = args.and_then(|args| args.get("model_max_length")) {
                if !v.is_null() {
                    let n = v.as_f64().filter(|&n| n >= 2.0).ok_or_else(|| {
                        invalid(format!(
                            "tokenizer_args model_max_length {v} is not a number ≥ 2"
                        ))
                    })?;
                    folder.max_seq_length = Some(match n < 1e15 {
                        true => n as usize,
                        false => usize::MAX,
                    });
                }
            }
            folder.do_lower_case = match object.get("do_lower_case") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(invalid(format!("do_lower_case {v} is not true or false"))),
            };
        }
        let st_config = root.join("config_sentence_transformers.json");
        if st_config.exists() {
            folder.read_prompts(&st_config)?;
        }
        Ok(folder)
    }

    /// `config_sentence_transformers.json`: `prompts` (an object of strings),
    /// `default_prompt_name` (null or one of them) and `truncate_dim` (null or a positive
    /// integer).
    fn read_prompts(&mut self, path: &Path) -> Result<(), EmberError> {
        let invalid = |message: String| EmberError::Invalid {
            path: path.to_owned(),
            message,
        };
        let value = read_json(path)?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".into()))?;
        match object.get("prompts") {
            None | Some(Value::Null) => {}
            Some(Value::Object(prompts)) => {
                for (name, prompt) in prompts {
                    let prompt = prompt.as_str().ok_or_else(|| {
                        invalid(format!("prompt {name:?} = {prompt} is not a string"))
                    })?;
                    self.prompts.insert(name.clone(), prompt.to_owned());
                }
            }
            Some(v) => return Err(invalid(format!("\"prompts\" = {v} is not an object"))),
        }
        self.similarity = match object.get("similarity_fn_name") {
            None | Some(Value::Null) => crate::similarity::Similarity::Cosine,
            Some(Value::String(name)) => crate::similarity::Similarity::from_name(name)
                .ok_or_else(|| {
                    invalid(format!(
                        "\"similarity_fn_name\" = {name:?} is not cosine, dot, euclidean or manhattan"
                    ))
                })?,
            Some(v) => {
                return Err(invalid(format!(
                    "\"similarity_fn_name\" = {v} is not a string"
                )))
            }
        };
        self.truncate_dim = match object.get("truncate_dim") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|&n| n > 0)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(format!("\"truncate_dim\" = {v} is not a positive integer"))
                    })?,
            ),
        };
        self.default_prompt_name = match object.get("default_prompt_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if self.prompts.contains_key(name) => Some(name.clone()),
            Some(v) => {
                return Err(invalid(format!(
                    "\"default_prompt_name\" = {v} is not one of the prompts ({})",
                    self.prompts.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
        };
        Ok(())
    }

    fn read_modules(&mut self, path: &Path) -> Result<(), EmberError> {
        let invalid = |message: String| EmberError::Invalid {
            path: path.to_owned(),
            message,
        };
        let value = read_json(path)?;
        let modules = value
            .as_array()
            .ok_or_else(|| invalid("expected a JSON list of modules".into()))?;
        let mut saw_transformer = false;
        for (i, module) in modules.iter().enumerate() {
            let kind = module
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("module {i} has no \"type\"")))?;
            let sub_path = match module.get("path") {
                None => "",
                Some(Value::String(sub_path)) => sub_path,
                // Read as "" it would make the folder root the module's (a Pooling module
                // would then read the transformer's config.json as its own).
                Some(other) => {
                    return Err(invalid(format!(
                        "module {i} \"path\" {other} is not a string"
                    )))
                }
            };
            let dir = safe_join(&self.root, sub_path).ok_or_else(|| {
                invalid(format!(
                    "module {i} path {sub_path:?} leaves the model folder"
                ))
            })?;
            // Types are dotted Python paths that moved between versions
            // (`sentence_transformers.models.Pooling`, `…base.modules.…`): match the class name.
            let class = kind.rsplit('.').next().unwrap_or(kind);
            match class {
                "Transformer" if !saw_transformer && i == 0 => {
                    saw_transformer = true;
                    self.transformer_dir = dir;
                }
                "Pooling" if saw_transformer && self.pooling_config.is_none() && !self.normalize => {
                    self.pooling_config = Some(dir.join("config.json"));
                }
                "Dense" if self.pooling_config.is_some() && !self.normalize => {
                    self.dense.push(dir);
                }
                "Normalize" if self.pooling_config.is_some() && !self.normalize => {
                    // Newer sentence-transformers' Normalize may name another input (token
                    // embeddings): refused rather than run on the sentence embedding.
                    let config = dir.join("config.json");
                    if config.is_file() {
                        let value = read_json(&config)?;
                        match value.get("module_input_name") {
                            None | Some(Value::Null) => {}
                            Some(Value::String(name)) if name == "sentence_embedding" => {}
                            Some(v) => {
                                return Err(EmberError::Invalid {
                                    path: config,
                                    message: format!(
                                        "\"module_input_name\" = {v}: Ember normalises the sentence embedding only"
                                    ),
                                })
                            }
                        }
                    }
                    self.normalize = true;
                }
                "Transformer" | "Pooling" | "Dense" | "Normalize" => {
                    return Err(invalid(format!(
                        "module {i} ({kind}) is out of the order Ember runs: Transformer, Pooling, Dense…, Normalize"
                    )))
                }
                _ => {
                    return Err(EmberError::UnsupportedModule {
                        path: path.to_owned(),
                        module: kind.to_owned(),
                    })
                }
            }
        }
        if !saw_transformer {
            return Err(invalid("no Transformer module".into()));
        }
        if self.pooling_config.is_none() {
            // sentence-transformers would have no sentence embedding to return.
            return Err(invalid("no Pooling module after the Transformer".into()));
        }
        Ok(())
    }

    /// The Transformer module's weights: `model.safetensors` when present, else
    /// `pytorch_model.bin` (a `torch.save` archive, read by `ember_tensor::TorchFile` without
    /// running its pickle); an error naming both when neither exists.
    pub fn weights_file(&self) -> Result<PathBuf, EmberError> {
        ember_tensor::find_weight_file(&self.transformer_dir)
            .map_err(|e| EmberError::Bert(e.into()))
    }

    /// The pooling to apply: `1_Pooling/config.json` when listed, else sentence-transformers'
    /// default (mean) over `hidden_size`.
    pub fn pooling(&self, hidden_size: usize) -> Result<PoolingConfig, EmberError> {
        match &self.pooling_config {
            Some(path) => {
                let config = PoolingConfig::from_file(path)?;
                if config.embedding_dimension != hidden_size {
                    return Err(EmberError::Invalid {
                        path: path.clone(),
                        message: format!(
                            "word_embedding_dimension {} differs from the model's hidden_size {hidden_size}",
                            config.embedding_dimension
                        ),
                    });
                }
                Ok(config)
            }
            None => Ok(PoolingConfig::mean(hidden_size)),
        }
    }
}

/// `root/sub`, refusing absolute paths and `..` so a module path cannot leave the folder.
fn safe_join(root: &Path, sub: &str) -> Option<PathBuf> {
    let sub = Path::new(sub);
    let escapes = sub.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    (!escapes).then(|| root.join(sub))
}

/// Resolves `--model`: a folder path, or a hub id `org/name[@revision]` in the local Hugging
/// Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), at
/// `models--org--name/snapshots/<refs/main>/` (with no refs at all, the only snapshot); with
/// the `hub` feature, a hub id not cached is downloaded there. The settings come from the environment
/// ([`HubConfig::from_env`]); [`resolve_model_with`] takes them explicitly.
pub fn resolve_model(model: &str) -> Result<PathBuf, EmberError> {
    resolve_model_with(model, &HubConfig::from_env())
}
