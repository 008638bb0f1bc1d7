//! Pure candle BLIP-2: no GStreamer types in this module tree.
//!
//! Module layout mirrors the checkpoint: `vision` (`vision_model.*`), `qformer` (`qformer.*`,
//! `query_tokens`), `opt` / `t5` (`language_model.*`), plus `config`, `weights`, `processor`
//! (pixels and prompt ids as `Blip2Processor` makes them) and `generate` (greedy, beam, sampling).

mod blip2;
pub mod config;
mod cpu_kernels;
mod device;
mod error;
pub mod generate;
pub mod generation_config;
mod image_file;
mod json_file;
mod kv_cache;
mod language_model;
mod linear;
mod opt;
pub mod presets;
pub mod processor;
mod prompt;
mod qformer;
mod random_weights;
mod resize;
mod softmax;
mod t5;
mod t5_layers;
mod vision;
mod weights;

pub use blip2::Blip2;
pub use device::{resolve_device, resolve_dtype};
pub use error::{Error, Result};

/// A tightly packed 8-bit RGB image (row stride = 3 * width).
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height * 3 {
            return Err(Error::Input(format!(
                "RGB image {width}x{height} needs {} bytes, got {}",
                width * height * 3,
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

/// When beam search stops, as transformers' `early_stopping`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `True`: stop as soon as `num_beams` hypotheses are finished.
    Always,
    /// `False` (transformers' default): stop when no running beam can beat the finished ones,
    /// estimated from the current length.
    #[default]
    Heuristic,
    /// `"never"`: stop only when no beam can improve, considering `max_new_tokens`.
    Never,
}

/// Sampling settings; `None` in [`GenerationParams::sampling`] means deterministic decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables nucleus sampling.
    pub top_p: f64,
    pub seed: u64,
}

/// Decoding settings, named and defaulted as in transformers' `GenerationConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    pub num_beams: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    pub repetition_penalty: f64,
    pub sampling: Option<Sampling>,
    /// Overrides the checkpoint's end-of-sequence id (generation_config.json / text_config).
    pub eos_token_id: Option<u32>,
    /// Generate exactly `max_new_tokens`, ignoring EOS (benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::default(),
            repetition_penalty: 1.0,
            sampling: None,
            eos_token_id: None,
            ignore_eos: false,
        }
    }
}

/// One generated answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Caption {
    /// Newly generated ids only (no image positions, prompt or decoder start id), up to and
    /// including the EOS when one was produced.
    pub token_ids: Vec<u32>,
    /// `token_ids` decoded with special tokens skipped, trimmed.
    pub text: String,
}

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when compiled with `cuda` and a GPU is present, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

/// Compute dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DTypeChoice {
    /// f32 on CPU; on CUDA f16 for OPT, bf16 for Flan-T5.
    #[default]
    Auto,
    F32,
    F16,
    BF16,
    /// CPU only: f32, with the linear weights of the vision encoder and the language model
    /// quantized to 8 bits in blocks of 32 (GGML's q8_0, one f16 scale per block; the
    /// activations are rounded the same way inside each product). Decoding reads a quarter of
    /// the bytes and the encoder's products run on 8-bit integer instructions; answers can
    /// differ from f32's (the measured cost is in docs/benchmarks.md).
    Q8_0,
}

/// Wall-clock time spent in each stage of one `caption` call, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub vision_ms: f64,
    pub generate_ms: f64,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    /// `auto`, `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    Error::Input(format!(
                        "invalid device {other:?}: expected auto, cpu or cuda:N"
                    ))
                }),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DTypeChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(DTypeChoice::Auto),
            "f32" | "float32" => Ok(DTypeChoice::F32),
            "f16" | "float16" => Ok(DTypeChoice::F16),
            "bf16" | "bfloat16" => Ok(DTypeChoice::BF16),
            "q8_0" => Ok(DTypeChoice::Q8_0),
            other => Err(Error::Input(format!(
                "invalid dtype {other:?}: expected auto, f32, f16, bf16 or q8_0"
            ))),
        }
    }
}

impl std::fmt::Display for DTypeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            DTypeChoice::Auto => "auto",
            DTypeChoice::F32 => "f32",
            DTypeChoice::F16 => "f16",
            DTypeChoice::BF16 => "bf16",
            DTypeChoice::Q8_0 => "q8_0",
        };
        write!(f, "{name}")
    }
}
