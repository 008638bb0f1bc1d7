//! gst-blip2: the `blip2caption` GStreamer element, captioning sampled video frames with BLIP-2.
//!
//! Three rooms with one-way doors: `blip2caption` (GStreamer) → [`engine`] (worker thread,
//! batching, model cache) → [`model`] (pure candle).

use gst::glib;

// Links Intel MKL (the `mkl` feature; see src/model/cpu_kernels/mkl.rs).
#[cfg(feature = "mkl")]
extern crate intel_mkl_src;

pub mod model;

pub mod engine;

mod sync;

#[cfg(test)]
mod test_support;

mod blip2caption;
/// The scene-change measure of `scene-threshold`, for applications that want to see the
/// distances of their own video before choosing a threshold.
pub use blip2caption::scene;
pub use blip2caption::{ANSWER_NAME, DType, MESSAGE_NAME, META_NAME, Mode, meta_answers};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    blip2caption::register(plugin)
}

gst::plugin_define!(
    blip2,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
