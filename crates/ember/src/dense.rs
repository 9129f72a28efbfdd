//! sentence-transformers' `Dense` module: `y = act(W·x + b)` on each pooled row, after Pooling
//! and before Normalize (LaBSE: 768 → 768 with tanh; distiluse-base-multilingual: 768 → 512
//! with tanh).
//!
//! ```text
//! 2_Dense/config.json          {"in_features", "out_features", "bias", "activation_function"}
//! 2_Dense/model.safetensors    linear.weight [out, in], linear.bias [out]   (or pytorch_model.bin)
//! ```
//!
//! Rows are few (one per text), so the layer runs on the CPU whatever the device, in f32.

use std::path::{Path, PathBuf};

use ember_cpu::gemm::WeightData;
use ember_cpu::{linear, Activation, PackedLinear, Precision};
use ember_tensor::{find_weight_file, WeightFile};
use serde_json::Value;

use crate::folder::read_json;
use crate::EmberError;

/// Bounds no published Dense module nears, checked before anything is sized from the config.
const MAX_FEATURES: u64 = 1 << 16;

/// The activation after the projection (`activation_function`, a torch class path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DenseActivation {
    Identity,
    Tanh,
    Relu,
    Sigmoid,
    Gelu,
}

impl DenseActivation {
    /// The torch class `activation_function` names (`torch.nn.modules.activation.Tanh`); a
    /// path outside torch is code Ember cannot run (sentence-transformers imports it only with
    /// `trust_remote_code`), whatever its class is called.
    fn from_torch_name(name: &str) -> Option<Self> {
        if !name.starts_with("torch.") {
            return None;
        }
        Some(match name.rsplit('.').next().unwrap_or(name) {
            "Identity" => DenseActivation::Identity,
            "Tanh" => DenseActivation::Tanh,
            "ReLU" => DenseActivation::Relu,
            "Sigmoid" => DenseActivation::Sigmoid,
            "GELU" => DenseActivation::Gelu,
            _ => return None,
        })
    }
}

/// One `Dense` module, loaded.
pub(crate) struct DenseLayer {
    linear: PackedLinear,
    activation: DenseActivation,
    in_features: usize,
    out_features: usize,
}

impl DenseLayer {
    /// Reads the module in `dir` (its `config.json` and weights), which takes rows of
    /// `in_features` (the previous module's output width).
    pub(crate) fn load(dir: &Path, in_features: usize) -> Result<Self, EmberError> {
        let config_path = dir.join("config.json");
        let value = read_json(&config_path)?;
        let invalid = |path: &Path, message: String| EmberError::Invalid {
            path: path.to_owned(),
            message,
        };
        let object = value
            .as_object()
            .ok_or_else(|| invalid(&config_path, "expected a JSON object".into()))?;
        let features = |key: &str| -> Result<usize, EmberError> {
            object
                .get(key)
                .and_then(Value::as_u64)
                .filter(|&n| (1..=MAX_FEATURES).contains(&n))
                .map(|n| n as usize)
                .ok_or_else(|| {
                    invalid(
                        &config_path,
                        format!("\"{key}\" must be an integer in 1..={MAX_FEATURES}"),
                    )
                })
        };
        let (n_in, n_out) = (features("in_features")?, features("out_features")?);
        if n_in != in_features {
            return Err(invalid(
                &config_path,
                format!("in_features {n_in}, but the rows before it have {in_features} values"),
            ));
        }
        let has_bias = match object.get("bias") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(invalid(
                    &config_path,
                    format!("\"bias\" = {v} is not true or false"),
                ))
            }
        };
        // What newer sentence-transformers' Dense can do besides act(W·x + b) on the sentence
        // embedding: another input or output (a token-level Dense), or a residual `+ x`. Ember
        // would run neither as written, so they are refused rather than ignored.
        for key in ["module_input_name", "module_output_name"] {
            match object.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(name)) if name == "sentence_embedding" => {}
                Some(v) => {
                    return Err(invalid(
                        &config_path,
                        format!(
                            "\"{key}\" = {v}: Ember's Dense runs on the sentence embedding only"
                        ),
                    ))
                }
            }
        }
        match object.get("use_residual") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(v) => {
                return Err(invalid(
                    &config_path,
                    format!("\"use_residual\" = {v}: a residual Dense is not supported"),
                ))
            }
        }
        // sentence-transformers' default is Tanh.
        let activation = match object.get("activation_function") {
            None | Some(Value::Null) => DenseActivation::Tanh,
            Some(Value::String(name)) => {
                DenseActivation::from_torch_name(name).ok_or_else(|| {
                    invalid(
                        &config_path,
                        format!(
                            "activation_function {name:?} is not supported (torch.nn's Identity, Tanh, ReLU, Sigmoid, GELU)"
                        ),
                    )
                })?
            }
            Some(v) => {
                return Err(invalid(
                    &config_path,
                    format!("\"activation_function\" = {v} is not a string"),
                ))
            }
        };
        let tensor_error = |e: ember_tensor::TensorError| EmberError::Bert(e.into());
        let weights_path: PathBuf = find_weight_file(dir).map_err(tensor_error)?;
        let file = WeightFile::open(&weights_path).map_err(tensor_error)?;
        let weight = file
            .f32_tensor_with_shape("linear.weight", &[n_out, n_in])
            .map_err(tensor_error)?;
        let bias = if has_bias {
            Some(
                file.f32_tensor_with_shape("linear.bias", &[n_out])
                    .map_err(tensor_error)?,
            )
        } else {
            None
        };
        let linear = PackedLinear::from_weight(
            WeightData::F32(weight.data()),
            bias.as_ref().map(|b| b.data()),
            n_out,
            n_in,
            Precision::F32,
        )
        .map_err(|e| invalid(&weights_path, e.to_string()))?;
        Ok(DenseLayer {
            linear,
            activation,
            in_features: n_in,
            out_features: n_out,
        })
    }

    /// Width of the rows it takes.
    pub(crate) fn in_features(&self) -> usize {
        self.in_features
    }

    /// Width of the rows it returns.
    pub(crate) fn out_features(&self) -> usize {
        self.out_features
    }

    /// `out[r] = act(W·x[r] + b)` for the `rows` rows of `x` (`[rows, in_features]`) into
    /// `out` (`[rows, out_features]`).
    pub(crate) fn apply(&self, x: &[f32], rows: usize, out: &mut [f32]) -> Result<(), EmberError> {
        debug_assert_eq!(x.len(), rows * self.in_features);
        let fused = match self.activation {
            DenseActivation::Identity => Activation::Identity,
            DenseActivation::Relu => Activation::Relu,
            // torch.nn.GELU() is the exact erf form.
            DenseActivation::Gelu => Activation::Gelu,
            DenseActivation::Tanh | DenseActivation::Sigmoid => Activation::Identity,
        };
        linear(x, rows, &self.linear, fused, None, out).map_err(ember_bert::BertError::from)?;
        match self.activation {
            DenseActivation::Tanh => out.iter_mut().for_each(|v| *v = v.tanh()),
            DenseActivation::Sigmoid => out.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
            _ => {}
        }
        Ok(())
    }
}
