//! `Blip2ForConditionalGeneration`: vision tower → Q-Former → language projection → OPT / T5.

use std::path::Path;
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, linear};

use super::config::{Blip2Config, TextConfig};
use super::device::{resolve_device, resolve_dtype, resolve_quantization};
use super::error::candle_message;
use super::generate::{Decoder, Prompt, generate_beam, generate_greedy_or_sample};
use super::generation_config::GenerationDefaults;
use super::language_model::LanguageModel;
use super::opt::Opt;
use super::processor::ImageProcessorConfig;
use super::prompt::{PromptCodec, PromptStyle};
use super::qformer::QFormer;
use super::t5::T5;
use super::vision::VisionModel;
use super::weights::WeightFiles;
use super::{
    Caption, DTypeChoice, DeviceChoice, Error, GenerationParams, Result, RgbImage, Timings,
};

/// Everything but the weights.
struct Parts {
    /// The vision encoder's and language model's weights are quantized to this after loading
    /// (`dtype=q8_0`).
    quantization: Option<GgmlDType>,
    config: Blip2Config,
    generation: GenerationDefaults,
    image_processor: ImageProcessorConfig,
    codec: Option<PromptCodec>,
    warnings: Vec<String>,
}

/// A loaded BLIP-2 snapshot, ready to caption. Immutable after loading, so it can be shared
/// between threads.
pub struct Blip2 {
    config: Blip2Config,
    generation: GenerationDefaults,
    image_processor: ImageProcessorConfig,
    /// None for random-weight benchmark models.
    codec: Option<PromptCodec>,
    vision: VisionModel,
    qformer: QFormer,
    language_projection: Linear,
    language_model: LanguageModel,
    device: Device,
    dtype: DType,
    quantization: Option<GgmlDType>,
    warnings: Vec<String>,
}

impl Blip2 {
    /// Loads a Hugging Face BLIP-2 snapshot folder. `progress` receives one line per stage.
    pub fn load(
        dir: &Path,
        device: DeviceChoice,
        dtype: DTypeChoice,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model folder does not exist",
                ),
            });
        }
        progress("reading config.json");
        let config = Blip2Config::from_file(&dir.join("config.json"))?;
        let generation = GenerationDefaults::load(dir, &config.text)?;
        let (image_processor, warnings) =
            ImageProcessorConfig::from_snapshot(dir, config.image_size)?;
        progress("loading tokenizer.json");
        let style = match &config.text {
            TextConfig::Opt(c) => {
                PromptStyle::BosFirst(generation.bos_token_id.or(c.bos_token_id).unwrap_or(2))
            }
            TextConfig::T5(c) => PromptStyle::EosLast(
                c.eos_token_id
                    .as_ref()
                    .and_then(|e| e.to_vec().first().copied())
                    .unwrap_or(1),
            ),
        };
        let codec = PromptCodec::load(dir, style)?;
        let device = resolve_device(device)?;
        let quantization = resolve_quantization(dtype, &device)?;
        let dtype = resolve_dtype(dtype, &device, &config.text);
        let files = WeightFiles::find(dir)?;
        let vb = files.var_builder(dtype, &device)?;
        let parts = Parts {
            quantization,
            config,
            generation,
            image_processor,
            codec: Some(codec),
            warnings,
        };
        Self::from_parts(parts, vb, progress).map_err(|e| Error::Weights {
            path: files.origin.clone(),
            message: candle_message(&e),
        })
    }

    /// A model with random weights for `config` (benchmarks at real shapes without a download).
    /// It has no tokenizer: prompts must be empty and captions come back as ids only.
    pub fn random(config: Blip2Config, device: DeviceChoice, dtype: DTypeChoice) -> Result<Self> {
        let device = resolve_device(device)?;
        let quantization = resolve_quantization(dtype, &device)?;
        let dtype = resolve_dtype(dtype, &device, &config.text);
        let generation = GenerationDefaults::from_text_config(&config.text);
        let image_processor = ImageProcessorConfig::with_size(config.image_size);
        let vb = super::random_weights::var_builder(dtype, &device);
        let parts = Parts {
            quantization,
            config,
            generation,
            image_processor,
            codec: None,
            warnings: Vec::new(),
        };
        Ok(Self::from_parts(parts, vb, &mut |_| {})?)
    }

    fn from_parts(
        parts: Parts,
        vb: candle_nn::VarBuilder,
        progress: &mut dyn FnMut(&str),
    ) -> candle_core::Result<Self> {
        let Parts {
            quantization,
            config,
            generation,
            image_processor,
            codec,
            warnings,
        } = parts;
        let (device, dtype) = (vb.device().clone(), vb.dtype());
        progress("loading vision encoder weights");
        let vision = VisionModel::new(
            &config.vision,
            config.patch_size,
            config.image_size,
            vb.pp("vision_model"),
        )?;
        progress("loading Q-Former weights");
        // transformers keeps the Q-Former and query tokens in f32 (`_keep_in_fp32_modules`).
        let qformer = QFormer::new(
            &config.qformer,
            config.num_query_tokens,
            vb.clone().set_dtype(DType::F32),
        )?;
        let language_projection = linear(
            config.qformer.hidden_size,
            config.text.hidden_size(),
            vb.pp("language_projection"),
        )?;
        progress("loading language model weights");
        let lm_vb = vb.pp("language_model");
        let language_model = match &config.text {
            TextConfig::Opt(c) => LanguageModel::Opt(Opt::new(c, lm_vb)?),
            TextConfig::T5(c) => LanguageModel::T5(T5::new(c, lm_vb)?),
        };
        // Surfaces asynchronous upload/cast failures here rather than in the first caption.
        // (Ordering needs no wait: every thread uses the device's one stream, see `device`.)
        device.synchronize()?;
        let mut model = Self {
            config,
            generation,
            image_processor,
            codec,
            vision,
            qformer,
            language_projection,
            language_model,
            device,
            dtype,
            quantization: None,
            warnings,
        };
        if let Some(q) = quantization {
            progress(&format!(
                "quantizing the vision encoder and language model to {q:?}"
            ));
            model.quantize(q)?;
        }
        progress("model ready");
        Ok(model)
    }

    /// Stores the linear weights of the vision encoder and the language model quantized to
    /// `dtype` (what `dtype=q8_0` does at load), on the CPU only. The Q-Former, which
    /// transformers keeps in f32 whatever the dtype, the projection between the two, the
    /// embeddings and the norms stay as they are. Layers whose input width is not a whole
    /// number of blocks keep their weights, with a warning (see [`Blip2::warnings`]).
    pub fn quantize(&mut self, dtype: GgmlDType) -> candle_core::Result<()> {
        if !self.device.is_cpu() {
            candle_core::bail!("quantized models run on the CPU only");
        }
        let mut kept = 0;
        let layers = self.vision.linears_mut();
        let layers = layers.into_iter().chain(self.language_model.linears_mut());
        for layer in layers {
            if !layer.quantize(dtype)? {
                kept += 1;
            }
        }
        if kept > 0 {
            self.warnings.push(format!(
                "{dtype:?}: {kept} linear layers keep their weights (their input width is not a \
                 multiple of {})",
                dtype.block_size()
            ));
        }
        self.quantization = Some(dtype);
        Ok(())
    }

    pub fn config(&self) -> &Blip2Config {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How the vision encoder's and language model's weights are quantized (`dtype=q8_0`), if
    /// they are.
    pub fn quantization(&self) -> Option<GgmlDType> {
        self.quantization
    }

    /// Non-fatal problems found while loading (e.g. missing preprocessor settings).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn generation_defaults(&self) -> &GenerationDefaults {
        &self.generation
    }

    /// The decoding settings transformers' `generate()` would use for `prompt` when the caller
    /// passes none: the snapshot's `generation_config.json`, then transformers' global defaults
    /// (see [`GenerationDefaults::params`]; a `max_length` there counts the prompt).
    pub fn default_generation_params(&self, prompt: &str) -> Result<GenerationParams> {
        let (input_len, max_positions) = match &self.config.text {
            TextConfig::Opt(c) => (
                self.config.num_query_tokens + self.encode_prompt(prompt)?.len(),
                Some(c.max_position_embeddings),
            ),
            // The decoder's own ids: its start id.
            TextConfig::T5(_) => (1, None),
        };
        self.generation
            .params(input_len, max_positions)
            .map_err(Error::Input)
    }

    /// Pixel values (B, 3, S, S) f32 on the model's device, as `Blip2Processor` makes them.
    pub fn pixel_values(&self, images: &[RgbImage]) -> Result<Tensor> {
        let s = (self.image_processor.height, self.image_processor.width);
        let per_image = 3 * s.0 * s.1;
        let mut data = vec![0f32; images.len() * per_image];
        // Resizing is the costly part of a large batch on a GPU machine: one core per slice.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = images.len().div_ceil(threads).max(1);
        let sizes_ok = std::thread::scope(|scope| {
            let workers: Vec<_> = images
                .chunks(chunk)
                .zip(data.chunks_mut(chunk * per_image))
                .map(|(images, out)| {
                    scope.spawn(move || {
                        images
                            .iter()
                            .zip(out.chunks_mut(per_image))
                            .all(|(image, out)| {
                                let pixels = self.image_processor.preprocess(image);
                                // Without `do_resize` the image keeps its own size.
                                let fits = pixels.len() == out.len();
                                if fits {
                                    out.copy_from_slice(&pixels);
                                }
                                fits
                            })
                    })
                })
                .collect();
            workers.into_iter().all(|w| w.join().unwrap_or(false))
        });
        if !sizes_ok {
            return Err(Error::Input(format!(
                "an image does not come out of preprocessing at the model's {}x{}",
                s.1, s.0
            )));
        }
        Ok(Tensor::from_vec(
            data,
            (images.len(), 3, s.0, s.1),
            &self.device,
        )?)
    }

    /// The ids transformers feeds for `prompt`: image placeholders, then the tokenized prompt.
    pub fn input_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let image = self.config.image_token_index.unwrap_or(0);
        let mut ids = vec![image; self.config.num_query_tokens];
        ids.extend(self.encode_prompt(prompt)?);
        Ok(ids)
    }

    /// Projected query embeddings (B, num_query_tokens, LM hidden) in the LM dtype.
    fn image_embeddings(&self, pixel_values: &Tensor) -> Result<Tensor> {
        // Pixel values made elsewhere (transformers' references) may live on the CPU.
        let pixel_values = pixel_values.to_device(&self.device)?;
        let image_states = self.vision.forward(&pixel_values)?;
        let queries = self.qformer.forward(&image_states)?.to_dtype(self.dtype)?;
        Ok(self.language_projection.forward(&queries)?)
    }

    fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        match (&self.codec, &self.config.text) {
            (Some(codec), _) => codec.encode(prompt),
            (None, _) if !prompt.is_empty() => Err(Error::Input(
                "this model has no tokenizer: only an empty prompt is possible".into(),
            )),
            (None, TextConfig::Opt(_)) => Ok(vec![self.generation.bos_token_id.unwrap_or(2)]),
            (None, TextConfig::T5(_)) => Ok(vec![
                self.generation.eos_token_ids.first().copied().unwrap_or(1),
            ]),
        }
    }

    fn check_params(&self, params: &GenerationParams) -> Result<()> {
        if params.num_beams == 0 {
            return Err(Error::Input("num_beams must be at least 1".into()));
        }
        if params.num_beams > 1 && params.sampling.is_some() {
            return Err(Error::Input(
                "beam search with sampling is not supported".into(),
            ));
        }
        if params.repetition_penalty.is_nan() || params.repetition_penalty <= 0.0 {
            return Err(Error::Input("repetition_penalty must be > 0".into()));
        }
        Ok(())
    }

    fn prefill(
        &self,
        image_embeds: &Tensor,
        rows: &[Vec<u32>],
        new_tokens: usize,
    ) -> Result<(Tensor, Box<dyn Decoder + '_>)> {
        Ok(self.language_model.prefill(
            image_embeds,
            rows,
            self.generation.pad_token_id,
            self.generation.decoder_start_token_id,
            new_tokens,
        )?)
    }

    /// Logits of the first generated token for each image (B, vocab), f32.
    pub fn first_step_logits(&self, pixel_values: &Tensor, prompt: &str) -> Result<Tensor> {
        let embeds = self.image_embeddings(pixel_values)?;
        let text_ids = self.encode_prompt(prompt)?;
        let rows = vec![text_ids; embeds.dim(0)?];
        Ok(self.prefill(&embeds, &rows, 0)?.0.to_dtype(DType::F32)?)
    }

    /// Captions (or answers `prompt` about) each image; all images run as one batch.
    pub fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> Result<Vec<Caption>> {
        Ok(self.caption_timed(images, prompt, params)?.0)
    }

    /// Each image with its own prompt, all in one batch (one vision pass, one decoding loop).
    pub fn caption_each(
        &self,
        images: &[RgbImage],
        prompts: &[&str],
        params: &GenerationParams,
    ) -> Result<Vec<Caption>> {
        if images.len() != prompts.len() {
            return Err(Error::Input(format!(
                "{} images but {} prompts",
                images.len(),
                prompts.len()
            )));
        }
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .generate(&self.pixel_values(images)?, prompts, params)?
            .0)
    }

    /// [`Blip2::caption`] plus the time spent in each stage.
    pub fn caption_timed(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> Result<(Vec<Caption>, Timings)> {
        if images.is_empty() {
            return Ok((Vec::new(), Timings::default()));
        }
        let t = Instant::now();
        let pixel_values = self.pixel_values(images)?;
        let preprocess_ms = ms(t);
        let (captions, mut timings) = self.caption_pixels(&pixel_values, prompt, params)?;
        timings.preprocess_ms = preprocess_ms;
        Ok((captions, timings))
    }

    /// Generation from ready pixel values (B, 3, S, S), e.g. ones made by transformers.
    pub fn caption_pixels(
        &self,
        pixel_values: &Tensor,
        prompt: &str,
        params: &GenerationParams,
    ) -> Result<(Vec<Caption>, Timings)> {
        let prompts = vec![prompt; pixel_values.dim(0)?];
        self.generate(pixel_values, &prompts, params)
    }

    /// [`Blip2::caption_each`] from ready pixel values (B, 3, S, S), one prompt per row: the
    /// engine prepares each frame's pixels before its request reaches the worker.
    pub fn caption_pixels_each(
        &self,
        pixel_values: &Tensor,
        prompts: &[&str],
        params: &GenerationParams,
    ) -> Result<Vec<Caption>> {
        if pixel_values.dim(0)? != prompts.len() {
            return Err(Error::Input(format!(
                "{} images but {} prompts",
                pixel_values.dim(0)?,
                prompts.len()
            )));
        }
        Ok(self.generate(pixel_values, prompts, params)?.0)
    }

    fn generate(
        &self,
        pixel_values: &Tensor,
        prompts: &[&str],
        params: &GenerationParams,
    ) -> Result<(Vec<Caption>, Timings)> {
        self.check_params(params)?;
        let mut timings = Timings::default();
        let text_ids = prompts
            .iter()
            .map(|p| self.encode_prompt(p))
            .collect::<Result<Vec<_>>>()?;
        // OPT's positions are learned and end at max_position_embeddings (T5's are relative):
        // a prompt that does not fit is refused before the vision pass.
        let max_positions = match &self.config.text {
            TextConfig::Opt(c) => Some(c.max_position_embeddings),
            TextConfig::T5(_) => None,
        };
        let positions_before_generation =
            self.config.num_query_tokens + text_ids.iter().map(Vec::len).max().unwrap_or(0);
        if let Some(max) = max_positions
            && positions_before_generation > max
        {
            return Err(Error::TooLong {
                prompt_positions: positions_before_generation,
                max_positions: max,
            });
        }

        let t = Instant::now();
        let embeds = self.image_embeddings(pixel_values)?;
        sync(&self.device)?;
        timings.vision_ms = ms(t);

        let t = Instant::now();
        let mut eos = match params.eos_token_id {
            Some(id) => vec![id],
            None => self.generation.eos_token_ids.clone(),
        };
        eos.dedup();
        // What transformers' logits processors see as `input_ids` (the repetition penalty uses
        // it), and the prompt length its beam search subtracts from the sequence length.
        let longest = text_ids.iter().map(Vec::len).max().unwrap_or(0);
        let (history, prompt_len) = match &self.language_model {
            LanguageModel::Opt(_) => {
                let image = self.config.image_token_index.unwrap_or(0);
                let history = text_ids
                    .iter()
                    .map(|ids| {
                        let mut h = vec![self.generation.pad_token_id; longest - ids.len()];
                        h.extend(std::iter::repeat_n(image, self.config.num_query_tokens));
                        h.extend(ids);
                        h
                    })
                    .collect();
                (history, self.config.num_query_tokens + longest)
            }
            LanguageModel::T5(_) => (
                vec![vec![self.generation.decoder_start_token_id]; text_ids.len()],
                1,
            ),
        };
        let (first_logits, mut decoder) =
            self.prefill(&embeds, &text_ids, params.max_new_tokens)?;
        let prompt = Prompt {
            first_logits,
            history,
            eos,
        };
        let mut guarded = PositionGuard {
            inner: decoder.as_mut(),
            positions: positions_before_generation,
            max_positions,
            overflowed: false,
        };
        let ids = if params.num_beams > 1 {
            generate_beam(&mut guarded, prompt, params, prompt_len)
        } else {
            generate_greedy_or_sample(&mut guarded, prompt, params)
        };
        if guarded.overflowed {
            return Err(Error::TooLong {
                prompt_positions: positions_before_generation,
                max_positions: max_positions.unwrap_or(usize::MAX),
            });
        }
        let ids = ids?;
        timings.generate_ms = ms(t);
        let captions = ids
            .into_iter()
            .map(|token_ids| {
                Ok(Caption {
                    text: match &self.codec {
                        Some(codec) => codec.decode(&token_ids)?,
                        None => String::new(),
                    },
                    token_ids,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((captions, timings))
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Waits for queued GPU work so stage timings are honest.
fn sync(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

/// Counts the positions a decoding loop uses and stops it, with a flag the caller turns into
/// [`Error::TooLong`], before OPT would run past its learned positions (a typed error instead of
/// the model's generic one).
struct PositionGuard<'a> {
    inner: &'a mut dyn Decoder,
    positions: usize,
    max_positions: Option<usize>,
    overflowed: bool,
}

impl Decoder for PositionGuard<'_> {
    fn step(&mut self, ids: &Tensor) -> candle_core::Result<Tensor> {
        if self.max_positions.is_some_and(|max| self.positions >= max) {
            self.overflowed = true;
            candle_core::bail!("out of positions");
        }
        self.positions += 1;
        self.inner.step(ids)
    }

    fn select_rows(&mut self, rows: &[u32]) -> candle_core::Result<()> {
        self.inner.select_rows(rows)
    }

    fn reorder_beams(&mut self, rows: &[u32]) -> candle_core::Result<()> {
        self.inner.reorder_beams(rows)
    }

    fn device(&self) -> Device {
        self.inner.device()
    }
}
