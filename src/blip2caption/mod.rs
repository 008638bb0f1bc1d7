//! `blip2caption`: taps raw video, samples frames, captions them with BLIP-2 on the engine's
//! worker and sends the answers downstream as timed text, buffer meta and bus messages.
//!
//! GStreamer types live only in this module; the engine and the model know nothing about them.

use gst::glib;
use gst::prelude::*;

mod answers;
mod convert;
mod downstream;
mod imp;
mod log_bridge;
mod published;
pub mod scene;
mod scene_gate;
mod text;
mod textqueue;
mod timeline;

pub use published::{ANSWER_NAME, answers as meta_answers};

/// Name of the custom meta carried by video buffers (GstCustomMeta, GStreamer ≥ 1.20): one per
/// buffer, its structure's `answers` array (GstValueArray) holding one [`ANSWER_NAME`]
/// structure per answer, from every `blip2caption` the buffer went through. Fields: see
/// [`MESSAGE_NAME`]; [`meta_answers`] reads them.
pub const META_NAME: &str = "Blip2CaptionMeta";

/// Name of the element message structure posted for every answer. Fields: `element`, `prompt`,
/// `text`, `model` (strings); `pts`, `running-time`, `stream-time`, `duration`,
/// `inference-time` (guint64 ns, `GST_CLOCK_TIME_NONE` when unknown); `tokens`, `batch-size`
/// (guint). docs/element.md describes each.
pub const MESSAGE_NAME: &str = "blip2-caption";

/// When the video may wait for the model.
#[derive(Debug, Default, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBlip2CaptionMode")]
pub enum Mode {
    /// `realtime` when the pipeline is live, `complete` otherwise.
    #[default]
    #[enum_value(
        name = "Auto: realtime when upstream is live, complete otherwise",
        nick = "auto"
    )]
    Auto,
    /// Video never waits; a new sample replaces the one still waiting for the model.
    #[enum_value(
        name = "Realtime: video never waits, samples the model cannot take are dropped",
        nick = "realtime"
    )]
    Realtime,
    /// Every sample is captioned; the video waits for the model.
    #[enum_value(
        name = "Complete: every sample is captioned, upstream waits for the model",
        nick = "complete"
    )]
    Complete,
}

/// How captions are laid out on `text_src`.
#[derive(Debug, Default, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBlip2CaptionTextMode")]
pub enum TextMode {
    /// `per-frame` when the text reaches an element that joins it with other streams (a muxer,
    /// an overlay), `cues` otherwise.
    #[default]
    #[enum_value(
        name = "Auto: per-frame into muxers and overlays, cues otherwise",
        nick = "auto"
    )]
    Auto,
    /// One buffer per caption, sent once its end is known.
    #[enum_value(
        name = "Cues: one buffer per caption, from its frame to the next sample or the end of \
                the stream, sent once that end is known (subtitle files)",
        nick = "cues"
    )]
    Cues,
    /// One buffer per video frame with the caption shown on it.
    #[enum_value(
        name = "Per-frame: one buffer per video frame carrying the caption shown on it \
                (\"\" when none), so the text advances with the video",
        nick = "per-frame"
    )]
    PerFrame,
}

/// Compute dtype, as the `dtype` property shows it.
#[derive(Debug, Default, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBlip2CaptionDType")]
pub enum DType {
    #[default]
    #[enum_value(
        name = "Auto: f32 on CPU, f16 (OPT) or bf16 (Flan-T5) on CUDA",
        nick = "auto"
    )]
    Auto,
    #[enum_value(name = "32-bit float", nick = "f32")]
    F32,
    #[enum_value(name = "16-bit float", nick = "f16")]
    F16,
    #[enum_value(name = "bfloat16", nick = "bf16")]
    BF16,
    #[enum_value(
        name = "CPU only: f32 with the vision encoder's and language model's weights in 8 \
                bits (q8_0): faster, answers may differ from f32",
        nick = "q8_0"
    )]
    Q8_0,
}

glib::wrapper! {
    pub struct Blip2Caption(ObjectSubclass<imp::Blip2Caption>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    log_bridge::install();
    if !gst::meta::CustomMeta::is_registered(META_NAME) {
        gst::meta::CustomMeta::register(META_NAME, &[]);
    }
    gst::Element::register(
        Some(plugin),
        "blip2caption",
        gst::Rank::NONE,
        Blip2Caption::static_type(),
    )?;
    // For GStreamer's documentation tooling (hotdoc), as gst-plugins-rs does: the enum types of
    // the properties (mode, dtype, text-mode, backend, ...) are documented with the plugin.
    #[cfg(feature = "doc")]
    if let Some(class) = glib::Class::<glib::Object>::from_type(Blip2Caption::static_type()) {
        for pspec in class.list_properties().iter() {
            if pspec.value_type().is_a(glib::Type::ENUM) {
                pspec
                    .value_type()
                    .mark_as_plugin_api(gst::PluginAPIFlags::empty());
            }
        }
    }
    Ok(())
}
