//! Pure candle BLIP-2: no GStreamer types in this module tree.
//!
//! Module layout mirrors the checkpoint: `vision` (`vision_model.*`), `qformer` (`qformer.*`,
//! `query_tokens`), `opt` / `t5` (`language_model.*`), plus `config`, `weights`, `processor`
//! (pixels and prompt ids as `Blip2Processor` makes them) and `generate` (greedy, beam, sampling).

mod error;
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
}

/// Wall-clock time spent in each stage of one `caption` call, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub vision_ms: f64,
    pub generate_ms: f64,
}
