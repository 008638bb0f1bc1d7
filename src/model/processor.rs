//! The image half of `Blip2Processor`: pixel values exactly as transformers' `BlipImageProcessor`
//! with the PIL backend (`BlipImageProcessorPil`) makes them from an RGB image.
//!
//! transformers' steps, all reproduced bit for bit: `Image.resize((w, h), resample)` on the uint8
//! image (Pillow's fixed-point two-pass resampler, see [`super::resize`]), then
//! `rescale`: `(x.astype(float64) * rescale_factor).astype(float32)`, then `normalize`:
//! `(x - float32(mean)) / float32(std)` in float32, laid out CHW.
//!
//! Colour conversion happens before this module sees the image, which is always RGB, so the
//! snapshot's `do_convert_rgb` is not read (for an RGB image it changes nothing): grayscale is
//! replicated to 3 channels (PIL's `convert("RGB")`), and images with alpha are composited onto
//! white (transformers' `convert_to_rgb`, not PIL's `convert("RGB")`, which drops alpha); use
//! [`rgba_over_white`] for the latter.

use std::path::Path;

use serde_json::{Map, Value};

use super::json_file::read_json_if_present;
use super::resize::{self, Filter};
use super::{Error, Result, RgbImage};

const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";
const PROCESSOR_CONFIG: &str = "processor_config.json";

/// Settings of BlipImageProcessor as stored in a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessorConfig {
    pub height: usize,
    pub width: usize,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// PIL resampling filter: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING, 6 MKS2013,
    /// 7 MKS2021 (0, NEAREST, is rejected by [`ImageProcessorConfig::from_snapshot`]).
    pub resample: u32,
}

impl ImageProcessorConfig {
    /// Defaults of BlipImageProcessor for the given square size (OpenAI CLIP mean/std, bicubic, 1/255).
    pub fn with_size(size: usize) -> Self {
        Self {
            height: size,
            width: size,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            resample: 3,
        }
    }

    /// Reads the image processor settings of a snapshot the way transformers does: the
    /// `image_processor` entry of `processor_config.json` (newer snapshots) takes precedence over
    /// `preprocessor_config.json`. If neither exists, falls back to
    /// `with_size(default_image_size)` and returns a warning saying so.
    ///
    /// `default_image_size` is the vision config's `image_size`, the only size the model takes: a
    /// `size` other than `default_image_size` x `default_image_size` is an error naming the file,
    /// as are bad JSON, wrong types and settings this port does not implement. Other suspicious
    /// settings come back as warnings. Unknown keys are ignored.
    pub fn from_snapshot(dir: &Path, default_image_size: usize) -> Result<(Self, Vec<String>)> {
        let mut warnings = Vec::new();
        let nested_path = dir.join(PROCESSOR_CONFIG);
        let flat_path = dir.join(PREPROCESSOR_CONFIG);
        let nested = match read_json_if_present(&nested_path)? {
            Some(Value::Object(mut root)) => match root.remove("image_processor") {
                Some(Value::Object(entry)) => Some(entry),
                Some(_) => {
                    return Err(config_err(
                        &nested_path,
                        "`image_processor` must be an object",
                    ));
                }
                None => None,
            },
            Some(_) => return Err(config_err(&nested_path, "expected a JSON object")),
            None => None,
        };
        let (path, map) = if let Some(map) = nested {
            // transformers never parses the flat file here, so its errors only matter for the
            // warning.
            if let Ok(Some(Value::Object(flat))) = read_json_if_present(&flat_path) {
                let a = parse_settings(&nested_path, &map, default_image_size)?;
                if parse_settings(&flat_path, &flat, default_image_size).ok() != Some(a) {
                    warnings.push(format!(
                        "{} and {} disagree; using the former, as transformers does",
                        nested_path.display(),
                        flat_path.display()
                    ));
                }
            }
            (nested_path, map)
        } else {
            match read_json_if_present(&flat_path)? {
                Some(Value::Object(map)) => (flat_path, map),
                Some(_) => return Err(config_err(&flat_path, "expected a JSON object")),
                None => {
                    warnings.push(format!(
                        "no {PREPROCESSOR_CONFIG} or {PROCESSOR_CONFIG} with `image_processor` in {}; \
                         using BlipImageProcessor defaults at {default_image_size}x{default_image_size}",
                        dir.display()
                    ));
                    return Ok((Self::with_size(default_image_size), warnings));
                }
            }
        };
        let cfg = parse_settings(&path, &map, default_image_size)?;
        if let Some(Value::String(kind)) = map.get("image_processor_type")
            && !kind.starts_with("BlipImageProcessor")
        {
            warnings.push(format!(
                "{}: image_processor_type is {kind:?}, treated as BlipImageProcessor",
                path.display()
            ));
        }
        if !cfg.do_resize {
            warnings.push(format!(
                "{}: do_resize is false, images must already be {}x{}",
                path.display(),
                cfg.width,
                cfg.height
            ));
        }
        Ok((cfg, warnings))
    }

    /// Convert to the model's input: resize to (height, width) with Pillow's filter `resample`,
    /// rescale, normalize. Returns CHW f32, length `3 * height * width` (with `do_resize` false,
    /// the image's own size). An unsupported `resample` (only possible when the struct is built
    /// by hand) falls back to bicubic.
    pub fn preprocess(&self, image: &RgbImage) -> Vec<f32> {
        let (w, h) = (image.width, image.height);
        let resized;
        let (pixels, w, h) = if self.do_resize {
            let filter = Filter::from_pil(self.resample).unwrap_or(Filter::Bicubic);
            resized = resize::resample(&image.data, 3, w, h, self.width, self.height, filter);
            (&resized[..], self.width, self.height)
        } else {
            (&image.data[..], w, h)
        };
        let plane = w * h;
        let mut out = vec![0f32; 3 * plane];
        for c in 0..3 {
            let (mean, std) = (self.image_mean[c] as f32, self.image_std[c] as f32);
            let dst = &mut out[c * plane..][..plane];
            for (o, px) in dst.iter_mut().zip(pixels.chunks_exact(3)) {
                let v = px[c];
                // numpy: rescale computes in float64 then casts; normalize works in float32.
                let mut x = if self.do_rescale {
                    (v as f64 * self.rescale_factor) as f32
                } else {
                    v as f32
                };
                if self.do_normalize {
                    x = (x - mean) / std;
                }
                *o = x;
            }
        }
        out
    }
}

/// Pillow-exact resample of packed 8-bit pixels: `Image.resize((dst_w, dst_h), BICUBIC)`. The
/// channel count is `src.len() / (src_w * src_h)` (1 = `L`, 3 = `RGB`, 4 = `RGBX`; Pillow
/// premultiplies `RGBA`, this does not). Panics on zero sizes or a length that is not a multiple.
pub fn resize_bicubic(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    let channels = src.len() / (src_w * src_h).max(1);
    resize::resample(src, channels, src_w, src_h, dst_w, dst_h, Filter::Bicubic)
}

/// transformers' `convert_to_rgb` for an image with alpha: `PIL.Image.alpha_composite` onto an
/// opaque white background, then `convert("RGB")`. `rgba` is packed RGBA8; returns packed RGB8.
pub fn rgba_over_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = px[3] as u32;
        for &c in &px[..3] {
            // Pillow's AlphaComposite.c with dst = (255, 255, 255, 255): coef1 = a << 7,
            // coef2 = (255 - a) << 7, then a rounded division by 255 via SHIFTFORDIV255.
            let v = if a == 0 {
                255
            } else {
                let tmp = ((c as u32 * a + 255 * (255 - a)) << 7) + (0x80 << 7);
                (((tmp >> 8) + tmp) >> 8) >> 7
            };
            out.push(v as u8);
        }
    }
    out
}

fn config_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads the settings BlipImageProcessor uses from one config object; `null` or absent keys keep
/// the class defaults.
fn parse_settings(
    path: &Path,
    map: &Map<String, Value>,
    image_size: usize,
) -> Result<ImageProcessorConfig> {
    let get = |key: &str| map.get(key).filter(|v| !v.is_null());
    let bad = |key: &str, what: &str| {
        config_err(path, format!("`{key}` must be {what}, got {}", map[key]))
    };
    let boolean = |key: &str, default: bool| match get(key) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| bad(key, "a boolean")),
    };
    let number = |v: &Value, key: &str| v.as_f64().ok_or_else(|| bad(key, "a number"));
    let triple = |key: &str, default: [f64; 3]| -> Result<[f64; 3]> {
        match get(key) {
            None => Ok(default),
            Some(Value::Array(items)) if items.len() == 3 => {
                let mut out = [0.0; 3];
                for (o, v) in out.iter_mut().zip(items) {
                    *o = number(v, key)?;
                }
                Ok(out)
            }
            Some(v) if v.is_number() => Ok([number(v, key)?; 3]),
            Some(_) => Err(bad(key, "a number or a list of 3 numbers")),
        }
    };
    let mut cfg = ImageProcessorConfig::with_size(image_size);
    if let Some((h, w)) = get("size").map(|v| parse_size(path, v)).transpose()? {
        if (h, w) != (image_size, image_size) {
            return Err(config_err(
                path,
                format!(
                    "size is {h}x{w} (height x width), but the vision model takes \
                     {image_size}x{image_size} images"
                ),
            ));
        }
        (cfg.height, cfg.width) = (h, w);
    }
    cfg.do_resize = boolean("do_resize", cfg.do_resize)?;
    cfg.do_rescale = boolean("do_rescale", cfg.do_rescale)?;
    cfg.do_normalize = boolean("do_normalize", cfg.do_normalize)?;
    if let Some(v) = get("rescale_factor") {
        cfg.rescale_factor = number(v, "rescale_factor")?;
    }
    cfg.image_mean = triple("image_mean", cfg.image_mean)?;
    cfg.image_std = triple("image_std", cfg.image_std)?;
    if let Some(v) = get("resample") {
        let r = v
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| bad("resample", "a PIL resampling filter number"))?;
        if Filter::from_pil(r).is_none() {
            return Err(config_err(
                path,
                format!(
                    "resample {r} is not supported (1-7: LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING, \
                     MKS2013, MKS2021)"
                ),
            ));
        }
        cfg.resample = r;
    }
    if boolean("do_center_crop", false)? {
        let crop = get("crop_size").map(|v| parse_size(path, v)).transpose()?;
        if crop != Some((cfg.height, cfg.width)) {
            return Err(config_err(
                path,
                "do_center_crop with a crop_size other than size is not supported",
            ));
        }
    }
    Ok(cfg)
}

/// `size` as transformers' `get_size_dict(default_to_square=True)` reads it: an int is a square,
/// a list is (height, width), a dict needs `height` and `width`. `shortest_edge` and the other
/// aspect-preserving forms give images of varying size, which BLIP's vision model cannot take.
fn parse_size(path: &Path, v: &Value) -> Result<(usize, usize)> {
    let dim = |v: &Value| v.as_u64().filter(|&n| n > 0).map(|n| n as usize);
    let bad = || {
        config_err(
            path,
            format!("unsupported size {v}: expected {{\"height\": H, \"width\": W}}"),
        )
    };
    match v {
        Value::Number(_) => dim(v).map(|n| (n, n)).ok_or_else(bad),
        Value::Array(items) if items.len() == 2 => Ok((
            dim(&items[0]).ok_or_else(bad)?,
            dim(&items[1]).ok_or_else(bad)?,
        )),
        Value::Object(m) => match (m.get("height"), m.get("width")) {
            (Some(h), Some(w)) => Ok((dim(h).ok_or_else(bad)?, dim(w).ok_or_else(bad)?)),
            _ => Err(config_err(
                path,
                format!(
                    "size {v} keeps the aspect ratio (transformers resizes the shortest edge), \
                     but the vision model needs a fixed {{\"height\": H, \"width\": W}}"
                ),
            )),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch;

    /// `preprocessor_config.json` of Salesforce/blip2-opt-2.7b.
    const BLIP2_PREPROCESSOR: &str = r#"{
      "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
      "image_mean": [0.48145466, 0.4578275, 0.40821073],
      "image_processor_type": "BlipImageProcessor",
      "image_std": [0.26862954, 0.26130258, 0.27577711],
      "processor_class": "Blip2Processor", "resample": 3,
      "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224}
    }"#;

    fn expect_config_err(dir: &Path, file: &str, default: usize, needle: &str) {
        match ImageProcessorConfig::from_snapshot(dir, default) {
            Err(Error::Config { path, message }) => {
                assert_eq!(path, dir.join(file));
                assert!(message.contains(needle), "{message}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn reads_preprocessor_config() {
        let dir = scratch("flat");
        std::fs::write(dir.join(PREPROCESSOR_CONFIG), BLIP2_PREPROCESSOR).unwrap();
        let (cfg, warnings) = ImageProcessorConfig::from_snapshot(&dir, 224).unwrap();
        // Parsed exactly: the JSON's 0.00392156862745098 is Python's 1 / 255.
        assert_eq!(cfg, ImageProcessorConfig::with_size(224));
        assert_eq!(cfg.rescale_factor.to_bits(), (1.0f64 / 255.0).to_bits());
        assert!(warnings.is_empty(), "{warnings:?}");
        expect_config_err(&dir, PREPROCESSOR_CONFIG, 364, "224x224");
    }

    #[test]
    fn processor_config_entry_wins() {
        let dir = scratch("nested");
        let nested = r#"{"image_processor": {"size": {"height": 364, "width": 364}, "resample": 2,
            "image_mean": 0.5, "image_std": [0.5, 0.5, 0.5], "some_future_key": [1, {}]},
            "processor_class": "Blip2Processor", "num_query_tokens": 32}"#;
        std::fs::write(dir.join(PROCESSOR_CONFIG), nested).unwrap();
        let (cfg, warnings) = ImageProcessorConfig::from_snapshot(&dir, 364).unwrap();
        let want = ImageProcessorConfig {
            resample: 2,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            ..ImageProcessorConfig::with_size(364)
        };
        assert_eq!(cfg, want);
        assert!(warnings.is_empty(), "{warnings:?}");

        let flat = BLIP2_PREPROCESSOR.replace("224", "364");
        std::fs::write(dir.join(PREPROCESSOR_CONFIG), flat).unwrap();
        let (cfg, warnings) = ImageProcessorConfig::from_snapshot(&dir, 364).unwrap();
        assert_eq!(cfg, want);
        assert!(
            warnings.len() == 1 && warnings[0].contains("disagree"),
            "{warnings:?}"
        );

        // Without an `image_processor` entry, preprocessor_config.json is used.
        std::fs::write(dir.join(PROCESSOR_CONFIG), r#"{"num_query_tokens": 32}"#).unwrap();
        let (cfg, _) = ImageProcessorConfig::from_snapshot(&dir, 364).unwrap();
        assert_eq!(cfg, ImageProcessorConfig::with_size(364));
    }

    #[test]
    fn missing_configs_fall_back_with_a_warning() {
        let dir = scratch("none");
        let (cfg, warnings) = ImageProcessorConfig::from_snapshot(&dir, 224).unwrap();
        assert_eq!(cfg, ImageProcessorConfig::with_size(224));
        assert!(
            warnings.len() == 1 && warnings[0].contains("defaults"),
            "{warnings:?}"
        );
    }

    #[test]
    fn bad_configs_name_the_file() {
        let dir = scratch("bad");
        let cases = [
            (PREPROCESSOR_CONFIG, "{\"size\": ", "not valid JSON"),
            (PREPROCESSOR_CONFIG, r#"{"do_resize": "yes"}"#, "do_resize"),
            (
                PREPROCESSOR_CONFIG,
                r#"{"image_std": [0.5, 0.5]}"#,
                "image_std",
            ),
            (
                PREPROCESSOR_CONFIG,
                r#"{"size": {"shortest_edge": 224}}"#,
                "aspect ratio",
            ),
            (
                PREPROCESSOR_CONFIG,
                r#"{"size": {"height": 224, "width": 200}}"#,
                "224x200",
            ),
            (PREPROCESSOR_CONFIG, r#"{"resample": 0}"#, "resample 0"),
            (PREPROCESSOR_CONFIG, r#"[1, 2]"#, "object"),
            (
                PROCESSOR_CONFIG,
                r#"{"image_processor": 3}"#,
                "image_processor",
            ),
        ];
        for (file, text, needle) in cases {
            std::fs::write(dir.join(file), text).unwrap();
            expect_config_err(&dir, file, 224, needle);
            std::fs::remove_file(dir.join(file)).unwrap();
        }
        // Old forms of `size`: an int or a [height, width] list.
        for size in ["224", "[224, 224]"] {
            std::fs::write(
                dir.join(PREPROCESSOR_CONFIG),
                format!(r#"{{"size": {size}}}"#),
            )
            .unwrap();
            let (cfg, _) = ImageProcessorConfig::from_snapshot(&dir, 224).unwrap();
            assert_eq!(cfg, ImageProcessorConfig::with_size(224));
        }
    }

    /// Expected values from transformers 5.24.0 + Pillow 13.0.0:
    /// `python3 -c "import numpy as np; from PIL import Image; from transformers.models.blip.
    ///  image_processing_pil_blip import BlipImageProcessorPil as P; d = np.frombuffer(bytes((i*37+11)%256
    ///  for i in range(36)), dtype=np.uint8).reshape(3, 4, 3); print(P(size={'height': 2, 'width': 2})(
    ///  images=Image.fromarray(d, 'RGB'), return_tensors='np')['pixel_values'][0].ravel().tolist())"`
    #[test]
    fn preprocess_matches_transformers() {
        let data = (0..36).map(|i| ((i * 37 + 11) % 256) as u8).collect();
        let image = RgbImage::new(4, 3, data).unwrap();
        let got = ImageProcessorConfig::with_size(2).preprocess(&image);
        #[rustfmt::skip]
        let want = [
            -0.30322301387786865, 0.12013141810894012, 0.5872810482978821, 0.14932826161384583,
            0.09385836124420166, -0.3563746511936188, 0.12387389689683914, 0.5590992569923401,
            0.14086775481700897, 0.4821494221687317, 0.2546282708644867, 0.2119680792093277,
        ];
        let want: Vec<f32> = want.iter().map(|&v: &f64| v as f32).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn rgba_composite() {
        // alpha 0 -> white, 255 -> the colour, in between rounded as Pillow's alpha_composite.
        let px = [10, 20, 30, 0, 10, 20, 30, 255, 0, 100, 200, 128];
        assert_eq!(
            rgba_over_white(&px),
            [255, 255, 255, 10, 20, 30, 127, 177, 227]
        );
    }
}
