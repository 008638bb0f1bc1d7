//! An image after a backend's per-image preparation ([`super::Captioner::prepare`]).

use std::any::Any;
use std::sync::Arc;

use crate::model::RgbImage;

/// What a backend made of one image before its request reached the worker: BLIP-2's pixel
/// values, a remote backend's encoded image, or the image itself for backends that prepare
/// nothing. Only the backend that made it looks inside ([`Prepared::get`]). Cheap to clone, so
/// one frame asked several prompts is prepared once.
#[derive(Clone)]
pub struct Prepared(Arc<dyn Any + Send + Sync>);

impl Prepared {
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(value))
    }

    /// The prepared value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// The image, for backends whose preparation keeps it as it is.
    pub fn image(&self) -> Option<&RgbImage> {
        self.get()
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.image() {
            Some(image) => write!(f, "Prepared(image {}x{})", image.width, image.height),
            None => write!(f, "Prepared(..)"),
        }
    }
}
