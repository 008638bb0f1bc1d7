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
