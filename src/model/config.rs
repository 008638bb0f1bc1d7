//! `config.json` / `generation_config.json` of a BLIP-2 snapshot.
//!
//! Hub configs are sparse: `vision_config` and `qformer_config` are often nearly empty, and the
//! language model's block lists only a few keys. Every field therefore defaults to the value of the
//! matching transformers class (`Blip2VisionConfig`, `Blip2QFormerConfig`, `OPTConfig`,
//! `T5Config`), so that a missing key means exactly what it means to transformers.

use std::path::Path;

use candle_nn::Activation;
use serde::{Deserialize, Deserializer};

use super::json_file::{from_json_value, read_json};
use super::{Error, Result};

/// candle's `Activation` for a transformers activation name (`ACT2FN`), where candle computes
/// the same function; `None` for the names this port does not implement.
pub fn activation_from_hf(name: &str) -> Option<Activation> {
    Some(match name {
        // GELUActivation: the exact erf form (not the tanh approximation).
        "gelu" | "gelu_python" => Activation::Gelu,
        "gelu_new" => Activation::NewGelu,
        "gelu_pytorch_tanh" | "gelu_python_tanh" => Activation::GeluPytorchTanh,
        "relu" => Activation::Relu,
        "relu2" => Activation::Relu2,
        "relu6" => Activation::Relu6,
        "silu" | "swish" => Activation::Silu,
        "sigmoid" => Activation::Sigmoid,
        "mish" => Activation::Mish,
        "hardswish" => Activation::HardSwish,
        // nn.LeakyReLU's default slope.
        "leaky_relu" => Activation::LeakyRelu(0.01),
        _ => return None,
    })
}

fn hf_activation<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Activation, D::Error> {
    let name = String::deserialize(d)?;
    activation_from_hf(&name).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "activation {name:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, \
             relu2, relu6, silu, swish, sigmoid, mish, hardswish, leaky_relu)"
        ))
    })
}

/// An id field that transformers allows to be a single int or a list of ints.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `image_size` / `patch_size` may be an int or a `[h, w]` pair; BLIP-2 only uses squares.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Size {
    Square(usize),
    Pair(Vec<usize>),
}

impl Size {
    fn square(&self, what: &str) -> std::result::Result<usize, String> {
        match self {
            Size::Square(s) => Ok(*s),
            Size::Pair(v) if v.len() == 2 && v[0] == v[1] => Ok(v[0]),
            Size::Pair(v) => Err(format!("{what} must be square, got {v:?}")),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: Size,
    pub patch_size: Size,
    #[serde(deserialize_with = "hf_activation")]
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub qkv_bias: bool,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 1408,
            intermediate_size: 6144,
            num_hidden_layers: 39,
            num_attention_heads: 16,
            image_size: Size::Square(224),
            patch_size: Size::Square(14),
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-6,
            qkv_bias: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct QFormerConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(deserialize_with = "hf_activation")]
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub cross_attention_frequency: usize,
    /// Overwritten with the vision hidden size, as `Blip2Config.__post_init__` does.
    pub encoder_hidden_size: usize,
}

impl Default for QFormerConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            cross_attention_frequency: 2,
            encoder_hidden_size: 1408,
        }
    }
}

/// `OPTConfig` defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct OptConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub ffn_dim: usize,
    pub max_position_embeddings: usize,
    pub do_layer_norm_before: bool,
    #[serde(rename = "_remove_final_layer_norm")]
    pub remove_final_layer_norm: bool,
    pub word_embed_proj_dim: Option<usize>,
    pub num_attention_heads: usize,
    #[serde(deserialize_with = "hf_activation")]
    pub activation_function: Activation,
    pub enable_bias: bool,
    pub layer_norm_elementwise_affine: bool,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
}

impl Default for OptConfig {
    fn default() -> Self {
        Self {
            vocab_size: 50272,
            hidden_size: 768,
            num_hidden_layers: 12,
            ffn_dim: 3072,
            max_position_embeddings: 2048,
            do_layer_norm_before: true,
            remove_final_layer_norm: false,
            word_embed_proj_dim: None,
            num_attention_heads: 12,
            activation_function: Activation::Relu,
            enable_bias: true,
            layer_norm_elementwise_affine: true,
            pad_token_id: Some(1),
            bos_token_id: Some(2),
            eos_token_id: Some(TokenIds::One(2)),
        }
    }
}

impl OptConfig {
    pub fn word_embed_proj_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }
}

/// `T5Config` defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    pub feed_forward_proj: String,
    pub tie_word_embeddings: Option<bool>,
    /// Written by transformers 5; older configs only have `tie_word_embeddings`.
    pub scale_decoder_outputs: Option<bool>,
    pub pad_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    pub decoder_start_token_id: Option<u32>,
}

impl Default for T5Config {
    fn default() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 512,
            d_kv: 64,
            d_ff: 2048,
            num_layers: 6,
            num_decoder_layers: None,
            num_heads: 8,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".into(),
            tie_word_embeddings: None,
            scale_decoder_outputs: None,
            pad_token_id: Some(0),
            eos_token_id: Some(TokenIds::One(1)),
            decoder_start_token_id: None,
        }
    }
}

impl T5Config {
    pub fn num_decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// (gated, activation) as `T5Config.__post_init__` derives them: `[gated-]ACT` with ACT a
    /// transformers activation name, except that `"gated-gelu"` means `gelu_new` (tanh) for
    /// backward compatibility; a plain `"gelu"` is the exact erf GELU.
    pub fn feed_forward(&self) -> std::result::Result<(bool, Activation), String> {
        let proj = self.feed_forward_proj.as_str();
        let (gated, name) = match proj.split('-').collect::<Vec<_>>().as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => return Err(format!("unsupported feed_forward_proj {proj:?}")),
        };
        let name = if proj == "gated-gelu" {
            "gelu_new"
        } else {
            name
        };
        let act = activation_from_hf(name).ok_or_else(|| {
            format!("feed_forward_proj {proj:?}: activation {name:?} is not supported")
        })?;
        Ok((gated, act))
    }

    /// Whether decoder outputs are scaled by d_model^-0.5 before the LM head (original T5 with tied
    /// embeddings); Flan-T5 (`tie_word_embeddings: false`) is not.
    pub fn scale_decoder_outputs(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings != Some(false))
    }
}

/// The language model half of a BLIP-2 checkpoint.
#[derive(Clone, Debug)]
pub enum TextConfig {
    Opt(OptConfig),
    T5(T5Config),
}

impl TextConfig {
    pub fn hidden_size(&self) -> usize {
        match self {
            TextConfig::Opt(c) => c.hidden_size,
            TextConfig::T5(c) => c.d_model,
        }
    }
}

/// `Blip2Config`, resolved: every default filled in.
#[derive(Clone, Debug)]
pub struct Blip2Config {
    pub vision: VisionConfig,
    pub qformer: QFormerConfig,
    pub text: TextConfig,
    pub num_query_tokens: usize,
    pub image_token_index: Option<u32>,
    pub image_size: usize,
    pub patch_size: usize,
}

#[derive(Deserialize)]
struct RawBlip2Config {
    #[serde(default)]
    vision_config: Option<serde_json::Value>,
    #[serde(default)]
    qformer_config: Option<serde_json::Value>,
    #[serde(default)]
    text_config: Option<serde_json::Value>,
    #[serde(default = "default_num_query_tokens")]
    num_query_tokens: usize,
    #[serde(default, alias = "image_token_id")]
    image_token_index: Option<u32>,
}

fn default_num_query_tokens() -> usize {
    32
}

fn sub_config<T: for<'de> Deserialize<'de> + Default>(
    value: Option<serde_json::Value>,
    key: &str,
    path: &Path,
) -> Result<T> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(v) => from_json_value(v, path, &format!("{key}.")),
    }
}

impl Blip2Config {
    /// Parses `config.json` text; `path` is only used in error messages.
    pub fn from_json(value: serde_json::Value, path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        if let Some(mt) = value.get("model_type").and_then(|v| v.as_str())
            && mt != "blip-2"
            && mt != "blip_2"
        {
            return Err(bad(format!(
                "model_type is {mt:?}, expected \"blip-2\" (a BLIP-2 snapshot)"
            )));
        }
        let raw: RawBlip2Config = serde_json::from_value(value)
            .map_err(|e| bad(format!("invalid BLIP-2 config: {e}")))?;
        let vision: VisionConfig = sub_config(raw.vision_config, "vision_config", path)?;
        let mut qformer: QFormerConfig = sub_config(raw.qformer_config, "qformer_config", path)?;
        qformer.encoder_hidden_size = vision.hidden_size;

        // transformers' default language model is OPT (`SubConfigSpec(model_type="opt")`).
        let text_value = raw.text_config.unwrap_or(serde_json::json!({}));
        let model_type = text_value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("opt")
            .to_string();
        let text = match model_type.as_str() {
            "opt" => TextConfig::Opt(sub_config(Some(text_value), "text_config", path)?),
            "t5" => TextConfig::T5(sub_config(Some(text_value), "text_config", path)?),
            other => {
                return Err(bad(format!(
                    "text_config.model_type {other:?} is not supported (expected \"opt\" or \"t5\")"
                )));
            }
        };

        let image_size = vision
            .image_size
            .square("vision_config.image_size")
            .map_err(bad)?;
        let patch_size = vision
            .patch_size
            .square("vision_config.patch_size")
            .map_err(bad)?;
        let check = |ok: bool, message: &str| if ok { Ok(()) } else { Err(bad(message.into())) };
        check(
            patch_size > 0 && image_size % patch_size == 0,
            "vision_config.image_size must be a multiple of patch_size",
        )?;
        check(
            vision.num_attention_heads > 0
                && vision
                    .hidden_size
                    .is_multiple_of(vision.num_attention_heads),
            "vision_config.hidden_size must be divisible by num_attention_heads",
        )?;
        check(
            qformer.num_attention_heads > 0
                && qformer
                    .hidden_size
                    .is_multiple_of(qformer.num_attention_heads),
            "qformer_config.hidden_size must be divisible by num_attention_heads",
        )?;
        check(
            qformer.cross_attention_frequency > 0,
            "qformer_config.cross_attention_frequency must be positive",
        )?;
        check(
            raw.num_query_tokens > 0,
            "num_query_tokens must be positive",
        )?;
        match &text {
            TextConfig::Opt(c) => {
                check(
                    c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0,
                    "text_config.hidden_size must be divisible by num_attention_heads",
                )?;
            }
            TextConfig::T5(c) => {
                c.feed_forward().map_err(bad)?;
                check(
                    c.num_heads > 0 && c.d_kv > 0,
                    "text_config.num_heads and d_kv must be positive",
                )?;
            }
        }
        Ok(Self {
            vision,
            qformer,
            text,
            num_query_tokens: raw.num_query_tokens,
            image_token_index: raw.image_token_index,
            image_size,
            patch_size,
        })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(read_json(path)?, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Tensor};

    fn parse(json: &str) -> Result<Blip2Config> {
        Blip2Config::from_json(
            serde_json::from_str(json).unwrap(),
            Path::new("dir/config.json"),
        )
    }

    #[test]
    fn plain_gelu_is_the_exact_erf_gelu_as_in_transformers() {
        let x = Tensor::new(&[-2.5f32, -0.7, 0.3, 1.9], &Device::Cpu).unwrap();
        let gelu = activation_from_hf("gelu").unwrap().forward(&x).unwrap();
        let erf = x.gelu_erf().unwrap();
        let tanh = x.gelu().unwrap();
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert_eq!(diff(&gelu, &erf), 0.0);
        assert!(
            diff(&gelu, &tanh) > 1e-4,
            "the tanh form differs measurably"
        );
        // T5: a non-gated "gelu" is erf GELU; "gated-gelu" keeps transformers' gelu_new.
        let t5 = |proj: &str| T5Config {
            feed_forward_proj: proj.into(),
            ..T5Config::default()
        };
        assert_eq!(t5("gelu").feed_forward(), Ok((false, Activation::Gelu)));
        assert_eq!(
            t5("gated-gelu").feed_forward(),
            Ok((true, Activation::NewGelu))
        );
        assert_eq!(
            t5("gated-silu").feed_forward(),
            Ok((true, Activation::Silu))
        );
        assert!(t5("gated-quick_gelu").feed_forward().is_err());
        assert!(t5("a-b-c").feed_forward().is_err());
    }

    #[test]
    fn activations_parse_by_transformers_names() {
        for (name, act) in [
            ("gelu", Activation::Gelu),
            ("gelu_new", Activation::NewGelu),
            ("gelu_pytorch_tanh", Activation::GeluPytorchTanh),
            ("relu", Activation::Relu),
            ("silu", Activation::Silu),
            ("swish", Activation::Silu),
            ("leaky_relu", Activation::LeakyRelu(0.01)),
        ] {
            let cfg = parse(&format!(
                r#"{{"vision_config": {{"hidden_act": "{name}"}},
                    "text_config": {{"model_type": "opt", "activation_function": "{name}"}}}}"#
            ))
            .unwrap();
            assert_eq!(cfg.vision.hidden_act, act, "{name}");
            let TextConfig::Opt(opt) = cfg.text else {
                panic!("opt")
            };
            assert_eq!(opt.activation_function, act, "{name}");
        }
        // Names candle spells differently, or transformers does not know, are errors that name
        // the file and the key.
        for name in ["newgelu", "quick_gelu", "swiglu", "gelu_fast"] {
            let err = parse(&format!(
                r#"{{"qformer_config": {{"hidden_act": "{name}"}}}}"#
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("dir/config.json: qformer_config.hidden_act: "),
                "{err}"
            );
        }
    }

    #[test]
    fn a_wrongly_typed_key_is_named() {
        let err = parse(r#"{"text_config": {"model_type": "opt", "hidden_size": "768"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("text_config.hidden_size"), "{err}");
    }
}
