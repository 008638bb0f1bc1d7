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
