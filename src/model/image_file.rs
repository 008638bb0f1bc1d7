//! Reading image files into [`RgbImage`] the way `BlipImageProcessor` converts PIL images to RGB.

use std::path::Path;

use super::processor::rgba_over_white;
use super::{Error, Result, RgbImage};

impl RgbImage {
    /// Decodes a PNG or JPEG file. Grayscale is replicated to RGB (PIL `convert("RGB")`); an
    /// alpha channel is composited over white, as transformers does before resizing.
    pub fn open(path: &Path) -> Result<Self> {
        let decoded = image::open(path).map_err(|e| match e {
            image::ImageError::IoError(source) => Error::Io {
                path: path.to_path_buf(),
                source,
            },
            other => Error::Input(format!("{}: cannot decode image: {other}", path.display())),
        })?;
        let (width, height) = (decoded.width() as usize, decoded.height() as usize);
        let data = if decoded.color().has_alpha() {
            rgba_over_white(decoded.to_rgba8().as_raw())
        } else {
            decoded.to_rgb8().into_raw()
        };
        RgbImage::new(width, height, data)
    }
}
