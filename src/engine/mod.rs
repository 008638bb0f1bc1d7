//! The engine: one worker thread per loaded model, a request queue with batching, and a
//! process-wide model cache. No GStreamer types live here, so the engine can be unit-tested and
//! reused outside the element.
//!
//! The engine logs through the `log` crate (the element bridges it into GStreamer's debug log,
//! category `blip2engine`): each loading stage with its time at INFO, each batch at DEBUG.
//!
//! Door order: element → engine → model. The element only sees [`Engine`], [`Client`],
//! [`Request`] and [`Outcome`] (with a typed [`CaptionError`]); the engine only sees the
//! [`Captioner`] trait, [`load_blip2`] and the remote backend in [`openai`].

mod cache;
mod error;
mod hub;
mod hub_cache;
mod hub_error;
mod hub_http;
mod load_log;
pub mod openai;
mod prepared;
mod resolve;
mod worker;

use std::path::Path;
use std::sync::Arc;

use crate::model::{self, Caption, DTypeChoice, DeviceChoice, GenerationParams, RgbImage};

pub use cache::{
    ModelKey, get_or_load, get_or_load_with, register_captioner, unregister_captioner,
};
pub use error::{CaptionError, RemoteError, RemoteErrorKind, Result, redact_url};
pub use hub::{DownloadProgress, HubId, HubSettings, LoadProgress};
pub use hub_error::{LoadError, ResolveError, ResolveErrorKind};
pub use prepared::Prepared;
pub use resolve::resolve_model;
pub use worker::{BatchItem, CancelToken, Client, Engine, Outcome, Request, Ticket, WaitError};

/// Anything that turns a batch of images plus one prompt into one caption per image.
///
/// The real implementations are the BLIP-2 model and the remote server client
/// ([`openai::OpenAiCaptioner`]); tests inject fakes (slow, failing, deterministic) through
/// [`register_captioner`].
pub trait Captioner: Send + Sync {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> Result<Vec<Caption>>;

    /// Each image with its own prompt. The default runs one `caption` call per distinct prompt;
    /// BLIP-2 overrides it with one padded batch.
    fn caption_each(
        &self,
        images: &[RgbImage],
        prompts: &[&str],
        params: &GenerationParams,
    ) -> Result<Vec<Caption>> {
        let mut out: Vec<Option<Caption>> = vec![None; images.len()];
        let mut done = vec![false; images.len()];
        for i in 0..images.len() {
            if done[i] {
                continue;
            }
            let group: Vec<usize> = (i..images.len())
                .filter(|&j| !done[j] && prompts[j] == prompts[i])
                .collect();
            let batch: Vec<RgbImage> = group.iter().map(|&j| images[j].clone()).collect();
            let captions = self.caption(&batch, prompts[i], params)?;
            if captions.len() != group.len() {
                return Err(CaptionError::Internal(format!(
                    "model returned {} captions for {} images",
                    captions.len(),
                    group.len()
                )));
            }
            for (&j, caption) in group.iter().zip(captions) {
                out[j] = Some(caption);
                done[j] = true;
            }
        }
        Ok(out
            .into_iter()
            .map(|c| c.expect("every image is in a group"))
            .collect())
    }

    /// The per-image work a request needs before the model runs (conversion, resizing,
    /// normalisation, encoding), done on the submitting element's streaming thread so it
    /// overlaps the worker's inference. What it returns reaches [`Captioner::caption_batch`] as
    /// [`BatchItem::input`]. The default keeps the image as it is (for `caption_each`).
    fn prepare(&self, image: RgbImage) -> Result<Prepared> {
        Ok(Prepared::new(image))
    }

    /// What the worker calls: one result per item, in order. The default takes the items'
    /// images (prepared by the default [`Captioner::prepare`]) to `caption_each` and gives a
    /// failure to every item; backends whose requests are independent (remote servers) answer
    /// each item on its own, honour [`BatchItem::retry_transient`] and stop work for cancelled
    /// items.
    fn caption_batch(
        &self,
        items: Vec<BatchItem>,
        params: &GenerationParams,
    ) -> Vec<Result<Caption>> {
        let n = items.len();
        let prompts: Vec<&str> = items.iter().map(|i| i.prompt.as_str()).collect();
        let images: Option<Vec<RgbImage>> =
            items.iter().map(|i| i.input.image().cloned()).collect();
        let Some(images) = images else {
            return vec![Err(unexpected_input()); n];
        };
        one_per_item(self.caption_each(&images, &prompts, params), n)
    }

    /// Problems the loader worked around (for example missing preprocessor settings), for the
    /// element to post as warnings.
    fn load_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Splits one model call's answer for `n` items into one result per item: a failure, or a
/// caption count other than `n`, fails every item.
fn one_per_item(answer: Result<Vec<Caption>>, n: usize) -> Vec<Result<Caption>> {
    match answer {
        Ok(captions) if captions.len() == n => captions.into_iter().map(Ok).collect(),
        Ok(captions) => {
            let e = CaptionError::Internal(format!(
                "model returned {} captions for {n} images",
                captions.len()
            ));
            vec![Err(e); n]
        }
        Err(e) => vec![Err(e); n],
    }
}

impl Captioner for model::Blip2 {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> Result<Vec<Caption>> {
        let params = fit_to_positions(self, &[prompt], params)?;
        Ok(model::Blip2::caption(self, images, prompt, &params)?)
    }

    fn caption_each(
        &self,
        images: &[RgbImage],
        prompts: &[&str],
        params: &GenerationParams,
    ) -> Result<Vec<Caption>> {
        let params = fit_to_positions(self, prompts, params)?;
        Ok(model::Blip2::caption_each(self, images, prompts, &params)?)
    }

    /// Pixel values (1, 3, S, S) on the model's device, exactly as `Blip2Processor` makes them.
    fn prepare(&self, image: RgbImage) -> Result<Prepared> {
        Ok(Prepared::new(self.pixel_values(&[image])?))
    }

    /// One padded batch from the items' pixel values. An item whose prompt alone does not fit
    /// the language model fails on its own: requests of several elements share batches, and
    /// one element's prompt must not fail the others'.
    fn caption_batch(
        &self,
        items: Vec<BatchItem>,
        params: &GenerationParams,
    ) -> Vec<Result<Caption>> {
        let mut results: Vec<Option<Result<Caption>>> = items
            .iter()
            .map(|i| prompt_overflow(self, &i.prompt).map(Err))
            .collect();
        let runnable: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
        if !runnable.is_empty() {
            let run = || -> Result<Vec<Caption>> {
                let pixels: Option<Vec<&candle_core::Tensor>> =
                    runnable.iter().map(|&i| items[i].input.get()).collect();
                let pixels = pixels.ok_or_else(unexpected_input)?;
                let pixels = candle_core::Tensor::cat(&pixels, 0).map_err(model::Error::from)?;
                let prompts: Vec<&str> =
                    runnable.iter().map(|&i| items[i].prompt.as_str()).collect();
                let params = fit_to_positions(self, &prompts, params)?;
                Ok(self.caption_pixels_each(&pixels, &prompts, &params)?)
            };
            let n = runnable.len();
            let answers = one_per_item(run(), n);
            for (i, answer) in runnable.into_iter().zip(answers) {
                results[i] = Some(answer);
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every item answered"))
            .collect()
    }

    fn load_warnings(&self) -> Vec<String> {
        self.warnings().to_vec()
    }
}

/// A batch item that its backend's `prepare` did not make.
fn unexpected_input() -> CaptionError {
    CaptionError::Internal("a request's input was prepared for another backend".into())
}

/// Caps `max_new_tokens` (and `min_new_tokens` with it) at what OPT's learned positions leave
/// after the image tokens and the longest prompt, so a large setting makes the longest possible
/// answer instead of an error. A prompt that alone fills the positions is left to fail, naming
/// the prompt. Flan-T5 has relative positions and no such limit.
fn fit_to_positions(
    model: &model::Blip2,
    prompts: &[&str],
    params: &GenerationParams,
) -> model::Result<GenerationParams> {
    let mut params = params.clone();
    if let model::config::TextConfig::Opt(opt) = &model.config().text {
        let mut used = 0;
        for prompt in prompts {
            used = used.max(model.input_ids(prompt)?.len());
        }
        // The last new token is never fed back, so `room` tokens fit after `used` positions.
        let room = (opt.max_position_embeddings + 1).saturating_sub(used);
        if room > 0 {
            params.max_new_tokens = params.max_new_tokens.min(room);
        }
    }
    params.min_new_tokens = params.min_new_tokens.min(params.max_new_tokens);
    Ok(params)
}

/// The error for a prompt that alone fills OPT's learned positions (image tokens included), if
/// it does. Flan-T5 has relative positions and no such limit.
fn prompt_overflow(model: &model::Blip2, prompt: &str) -> Option<CaptionError> {
    let model::config::TextConfig::Opt(opt) = &model.config().text else {
        return None;
    };
    let used = match model.input_ids(prompt) {
        Ok(ids) => ids.len(),
        Err(e) => return Some(e.into()),
    };
    (used > opt.max_position_embeddings).then_some(CaptionError::TooLong {
        prompt_positions: used,
        max_positions: opt.max_position_embeddings,
    })
}

/// Loads BLIP-2 from a resolved snapshot folder; `progress` hears each loading stage.
pub fn load_blip2(
    dir: &Path,
    device: DeviceChoice,
    dtype: DTypeChoice,
    progress: &mut dyn FnMut(&str),
) -> model::Result<Arc<dyn Captioner>> {
    Ok(Arc::new(model::Blip2::load(dir, device, dtype, progress)?))
}
