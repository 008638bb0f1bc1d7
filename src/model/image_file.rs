//! Reading image files into [`RgbImage`] the way `BlipImageProcessor` converts PIL images to RGB.

use std::path::Path;

use super::{Error, Result, RgbImage};

/// Pillow's `alpha_composite` of a pixel over opaque white (transformers' `convert_to_rgb` for
/// RGBA), in Pillow's fixed-point arithmetic (PRECISION_BITS = 7).
fn over_white(value: u8, alpha: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    let (v, a) = (value as u32, alpha as u32);
    // With an opaque destination Pillow's coefficients reduce to alpha and 255 - alpha, scaled.
    let coef1 = a << PRECISION_BITS;
    let coef2 = (255 << PRECISION_BITS) - coef1;
    let tmp = v * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    ((((tmp >> 8) + tmp) >> 8) >> PRECISION_BITS) as u8
}

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
            decoded
                .to_rgba8()
                .pixels()
                .flat_map(|p| {
                    let [r, g, b, a] = p.0;
                    [over_white(r, a), over_white(g, a), over_white(b, a)]
                })
                .collect()
        } else {
            decoded.to_rgb8().into_raw()
        };
        RgbImage::new(width, height, data)
    }
}

#[cfg(test)]
mod tests {
    use super::over_white;

    #[test]
    fn compositing_matches_pillow_corners() {
        // Image.alpha_composite(white, RGBA pixel).convert("RGB") in Pillow 13.
        assert_eq!(over_white(0, 0), 255);
        assert_eq!(over_white(0, 255), 0);
        assert_eq!(over_white(200, 255), 200);
        assert_eq!(over_white(0, 128), 127);
    }
}
