//! The engine: one worker thread per loaded model, a request queue with batching, and a
//! process-wide model cache. No GStreamer types live here, so the engine can be unit-tested and
//! reused outside the element.
//!
//! Door order: element → engine → model. The element only sees [`Engine`], [`Client`],
//! [`Request`] and [`Outcome`]; the engine only sees the [`Captioner`] trait and
//! [`load_blip2`].

mod cache;
mod resolve;
mod worker;

use std::path::Path;
use std::sync::Arc;

use crate::model::{self, Caption, DTypeChoice, DeviceChoice, GenerationParams, RgbImage};

pub use cache::{
    ModelKey, get_or_load, get_or_load_with, register_captioner, unregister_captioner,
};
pub use resolve::{default_hub_dirs, resolve_model, resolve_model_in};
pub use worker::{Client, Engine, Outcome, Request, Ticket, WaitError};

/// Anything that turns a batch of images plus one prompt into one caption per image.
///
/// The real implementation is the BLIP-2 model; tests inject fakes (slow, failing,
/// deterministic) through [`register_captioner`].
pub trait Captioner: Send + Sync {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> model::Result<Vec<Caption>>;

    /// Each image with its own prompt. The default runs one `caption` call per distinct prompt;
    /// BLIP-2 overrides it with one padded batch.
    fn caption_each(
        &self,
        images: &[RgbImage],
        prompts: &[&str],
        params: &GenerationParams,
    ) -> model::Result<Vec<Caption>> {
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
                return Err(model::Error::Input(format!(
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

    /// Problems the loader worked around (for example missing preprocessor settings), for the
    /// element to post as warnings.
    fn load_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Captioner for model::Blip2 {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> model::Result<Vec<Caption>> {
        model::Blip2::caption(self, images, prompt, params)
    }

    fn caption_each(
        &self,
        images: &[RgbImage],
        prompts: &[&str],
        params: &GenerationParams,
    ) -> model::Result<Vec<Caption>> {
        model::Blip2::caption_each(self, images, prompts, params)
    }

    fn load_warnings(&self) -> Vec<String> {
        self.warnings().to_vec()
    }
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
