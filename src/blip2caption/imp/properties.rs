//! Properties of `blip2caption`: the settings they fill, their param specs, get and set.

use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::{DType, Mode, TextMode};
use super::remote::{self, RemoteSettings};
use super::sampling::{self, SamplingSettings};
use super::{Blip2Caption, CAT, lock};
use crate::model::{DTypeChoice, DeviceChoice, GenerationParams};

const DEFAULT_MODEL: &str = "Salesforce/blip2-opt-2.7b";
const DEFAULT_INTERVAL: u64 = 1_000_000_000;
/// Nanoseconds; -1 = automatic.
const DEFAULT_LATENCY: i64 = -1;
const DEFAULT_MAX_BATCH: u32 = 8;
const DEFAULT_MAX_IN_FLIGHT: u32 = 8;
/// Bound of `max-new-tokens` / `min-new-tokens`: far beyond any caption, and a finite amount of
/// work for language models without a position limit (Flan-T5). OPT is further capped at its
/// positions by the engine.
const MAX_TOKENS: u32 = 1024;

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) model: String,
    pub(super) prompt: String,
    /// Nanoseconds; any u64 (the param spec's whole range), so never a `ClockTime`, whose
    /// u64::MAX is NONE.
    pub(super) interval: u64,
    pub(super) mode: Mode,
    /// Nanoseconds; -1 = automatic.
    pub(super) latency: i64,
    pub(super) max_new_tokens: u32,
    pub(super) min_new_tokens: u32,
    pub(super) num_beams: u32,
    pub(super) repetition_penalty: f64,
    pub(super) device: String,
    pub(super) dtype: DType,
    pub(super) max_batch: u32,
    pub(super) max_in_flight: u32,
    pub(super) remote: RemoteSettings,
    pub(super) text_mode: TextMode,
    pub(super) sampling: SamplingSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let defaults = GenerationParams::default();
        Self {
            model: DEFAULT_MODEL.into(),
            prompt: String::new(),
            interval: DEFAULT_INTERVAL,
            mode: Mode::Auto,
            latency: DEFAULT_LATENCY,
            max_new_tokens: defaults.max_new_tokens as u32,
            min_new_tokens: defaults.min_new_tokens as u32,
            num_beams: defaults.num_beams as u32,
            repetition_penalty: defaults.repetition_penalty,
            device: "auto".into(),
            dtype: DType::Auto,
            max_batch: DEFAULT_MAX_BATCH,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            remote: RemoteSettings::default(),
            text_mode: TextMode::Auto,
            sampling: SamplingSettings::default(),
        }
    }
}

impl Settings {
    /// Generation settings for a request. `min-new-tokens` above `max-new-tokens` is capped at
    /// it (the element warns once, see [`Settings::token_conflict`]).
    pub(super) fn params(&self) -> GenerationParams {
        GenerationParams {
            max_new_tokens: self.max_new_tokens as usize,
            min_new_tokens: self.min_new_tokens.min(self.max_new_tokens) as usize,
            num_beams: self.num_beams as usize,
            repetition_penalty: self.repetition_penalty,
            ..GenerationParams::default()
        }
    }
}

impl Settings {
    /// The warning for `min-new-tokens` > `max-new-tokens`, naming both, if they conflict.
    pub(super) fn token_conflict(&self) -> Option<String> {
        (self.min_new_tokens > self.max_new_tokens).then(|| {
            format!(
                "min-new-tokens ({}) is larger than max-new-tokens ({}): answers stop at \
                 max-new-tokens",
                self.min_new_tokens, self.max_new_tokens
            )
        })
    }
}

pub(super) fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    // An empty string is what gst-launch gives for `device=`: the default.
    if s.trim().is_empty() {
        return Ok(DeviceChoice::Auto);
    }
    s.parse::<DeviceChoice>().map_err(|e| e.to_string())
}

pub(super) fn dtype_choice(d: DType) -> DTypeChoice {
    match d {
        DType::Auto => DTypeChoice::Auto,
        DType::F32 => DTypeChoice::F32,
        DType::F16 => DTypeChoice::F16,
        DType::BF16 => DTypeChoice::BF16,
        DType::Q8_0 => DTypeChoice::Q8_0,
    }
}

/// Properties read only when the model is loaded (NULL→READY).
const LOADED_AT_READY: [&str; 3] = ["model", "device", "dtype"];

/// The param specs of every property, in the order `gst-inspect-1.0` shows them.
pub(super) fn specs() -> &'static [glib::ParamSpec] {
    static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
        let d = Settings::default();
        let mut props = vec![
            glib::ParamSpecString::builder("model")
                .nick("Model")
                .blurb(
                    "BLIP-2 model: a snapshot folder, or a Hugging Face id such as \
                     Salesforce/blip2-opt-2.7b (optionally @revision) taken from the Hugging \
                     Face cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub) and \
                     downloaded into it on first use (HF_ENDPOINT, HF_TOKEN; HF_HUB_OFFLINE=1 \
                     never downloads). Loaded on NULL→READY, with Progress messages; a change \
                     in a later state applies at the next NULL→READY. With backend=openai: \
                     the served model name, unless server-model is set",
                )
                .default_value(Some(DEFAULT_MODEL))
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("prompt")
                .nick("Prompt")
                .blurb(
                    "Text the answer continues: empty for a plain caption, \
                     \"Question: ... Answer:\" for visual question answering. \
                     Can be changed while playing",
                )
                .default_value(Some(""))
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt64::builder("interval")
                .nick("Interval")
                .blurb(
                    "Sampling interval in nanoseconds of running time: the first frame at \
                     or after each multiple is captioned; 0 = every frame; a value whose \
                     next multiple is past the clock's range (18446744073709551615) = only \
                     the first frame. A caption lasts until the next sample or the end of \
                     the stream. A change applies from the next frame",
                )
                .default_value(DEFAULT_INTERVAL)
                .mutable_playing()
                .build(),
            glib::ParamSpecEnum::builder_with_default("mode", d.mode)
                .nick("Mode")
                .blurb("Whether video may wait for the model (auto: realtime when live)")
                .mutable_ready()
                .build(),
            glib::ParamSpecInt64::builder("latency")
                .nick("Latency")
                .blurb(
                    "Latency in nanoseconds added in live pipelines; captions later than \
                     this are re-timed and warned about. -1 = automatic (the slowest \
                     answer so far, from handing a sample to the model to its caption, \
                     queueing behind the other samples in flight included; announced with a \
                     latency message when it grows)",
                )
                .minimum(-1)
                .default_value(DEFAULT_LATENCY)
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt::builder("max-new-tokens")
                .nick("Max new tokens")
                .blurb(
                    "Most tokens generated per answer; for OPT models also capped at what the \
                     model's positions leave after the prompt",
                )
                .minimum(1)
                .maximum(MAX_TOKENS)
                .default_value(d.max_new_tokens)
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt::builder("min-new-tokens")
                .nick("Min new tokens")
                .blurb(
                    "Fewest tokens generated per answer before end-of-text is allowed; \
                     capped at max-new-tokens (a warning names both when it is larger)",
                )
                .maximum(MAX_TOKENS)
                .default_value(d.min_new_tokens)
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt::builder("num-beams")
                .nick("Beams")
                .blurb("Beam search width; 1 = greedy decoding")
                .minimum(1)
                .maximum(64)
                .default_value(d.num_beams)
                .mutable_playing()
                .build(),
            glib::ParamSpecDouble::builder("repetition-penalty")
                .nick("Repetition penalty")
                .blurb("Penalty for repeating tokens (1.0 = none), as in transformers")
                .minimum(0.01)
                .maximum(100.0)
                .default_value(d.repetition_penalty)
                .mutable_playing()
                .build(),
            glib::ParamSpecString::builder("device")
                .nick("Device")
                .blurb(
                    "Where the model runs: auto (CUDA 0 when built with CUDA and present, \
                     else CPU), cpu, cuda:N. Used on NULL→READY; a change in a later state \
                     applies at the next NULL→READY",
                )
                .default_value(Some("auto"))
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("dtype", d.dtype)
                .nick("DType")
                .blurb(
                    "Compute precision of the model. q8_0 (CPU only) keeps f32 but stores the \
                     weights of the vision encoder and the language model in 8 bits: faster on \
                     a CPU (docs/benchmarks.md), answers may differ from f32's. auto never \
                     picks q8_0. Used on NULL→READY; a change in a later state applies at the \
                     next NULL→READY",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-batch")
                .nick("Max batch")
                .blurb(
                    "Most frames captioned in one model call; frames with the same generation \
                     settings waiting together (from any element sharing the model) are \
                     batched, whatever their prompts",
                )
                .minimum(1)
                .maximum(256)
                .default_value(DEFAULT_MAX_BATCH)
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt::builder("max-in-flight")
                .nick("Max in flight")
                .blurb(
                    "Samples of this element handed to the model and not answered yet. \
                     complete: frames wait in the element until their sample's caption is \
                     back and leave in order, upstream waits only when this many are in \
                     flight (or the held frames reach max-in-flight x 32 MiB; 1080p I420 is \
                     3.1 MB a frame); samples go to the model max-batch at a time. \
                     realtime: at most this many samples wait for the model, older ones are \
                     dropped and counted",
                )
                .minimum(1)
                .maximum(256)
                .default_value(DEFAULT_MAX_IN_FLIGHT)
                .mutable_playing()
                .build(),
            glib::ParamSpecEnum::builder_with_default("text-mode", d.text_mode)
                .nick("Text mode")
                .blurb(
                    "How captions go out on text_src: cues (one buffer per caption, sent when \
                     its end is known: the next sample or the end of the stream; for \
                     subtitle files), per-frame (one buffer per video frame with the caption \
                     shown on it; for muxers such as mp4mux and overlays, which need the text \
                     to advance with the video), auto (per-frame when text_src leads to an \
                     element with several sink pads, else cues). Chosen when a stream starts",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                .nick("Statistics")
                .blurb(
                    "frames-seen, samples-taken, samples-dropped, captions-emitted, \
                     inference-failures, late-captions (counts), mean-inference-time, \
                     last-inference-time and max-inference-time (ns)",
                )
                .read_only()
                .build(),
        ];
        // The backend's properties right after `model`, which they qualify.
        props.splice(1..1, remote::specs());
        // The sampling properties next to those they work with.
        for (after, spec) in sampling::specs() {
            let at = props
                .iter()
                .position(|p| p.name() == after)
                .map_or(props.len(), |i| i + 1);
            props.insert(at, spec);
        }
        props
    });
    PROPS.as_ref()
}

impl Blip2Caption {
    pub(super) fn set_property_value(&self, value: &glib::Value, pspec: &glib::ParamSpec) {
        if LOADED_AT_READY.contains(&pspec.name()) {
            let state = self.obj().current_state();
            if state != gst::State::Null {
                gst::warning!(
                    CAT,
                    imp = self,
                    "{} set in state {state:?}: the model in use stays, the change applies at \
                     the next NULL→READY",
                    pspec.name()
                );
            }
        }
        let mut s = lock(&self.settings);
        if remote::is_remote_property(pspec.name()) {
            return remote::set(&mut s.remote, pspec.name(), value);
        }
        if sampling::is_sampling_property(pspec.name()) {
            let res = sampling::set(&mut s.sampling, pspec.name(), value);
            drop(s);
            match res {
                Ok(()) => gst::info!(CAT, imp = self, "{} changed", pspec.name()),
                Err(message) => {
                    gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{}", message))
                }
            }
            return;
        }
        match pspec.name() {
            "model" => s.model = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "prompt" => {
                s.prompt = value.get::<Option<String>>().unwrap().unwrap_or_default();
                gst::info!(CAT, imp = self, "prompt now {:?}", s.prompt);
            }
            "interval" => s.interval = value.get().unwrap(),
            "mode" => s.mode = value.get().unwrap(),
            "latency" => {
                let new: i64 = value.get().unwrap();
                if (1..1_000_000).contains(&new) {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "latency is in nanoseconds: {new} ns (for {new} ms, set {}000000)",
                        new
                    );
                }
                let changed = s.latency != new;
                s.latency = new;
                drop(s);
                if changed {
                    let _ = self
                        .obj()
                        .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
                }
            }
            "max-new-tokens" => s.max_new_tokens = value.get().unwrap(),
            "min-new-tokens" => s.min_new_tokens = value.get().unwrap(),
            "num-beams" => s.num_beams = value.get().unwrap(),
            "repetition-penalty" => s.repetition_penalty = value.get().unwrap(),
            "device" => {
                let device = value
                    .get::<Option<String>>()
                    .unwrap()
                    .unwrap_or_else(|| "auto".into());
                if let Err(e) = parse_device(&device) {
                    // Reported as an error message when the model is loaded.
                    gst::warning!(CAT, imp = self, "{e}");
                }
                s.device = device;
            }
            "dtype" => s.dtype = value.get().unwrap(),
            "max-batch" => s.max_batch = value.get().unwrap(),
            "max-in-flight" => s.max_in_flight = value.get().unwrap(),
            "text-mode" => s.text_mode = value.get().unwrap(),
            other => unreachable!("unknown property {other}"),
        }
    }

    pub(super) fn property_value(&self, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        if remote::is_remote_property(pspec.name()) {
            return remote::get(&s.remote, pspec.name());
        }
        if sampling::is_sampling_property(pspec.name()) {
            return sampling::get(&s.sampling, pspec.name());
        }
        match pspec.name() {
            "model" => s.model.to_value(),
            "prompt" => s.prompt.to_value(),
            "interval" => s.interval.to_value(),
            "mode" => s.mode.to_value(),
            "latency" => s.latency.to_value(),
            "max-new-tokens" => s.max_new_tokens.to_value(),
            "min-new-tokens" => s.min_new_tokens.to_value(),
            "num-beams" => s.num_beams.to_value(),
            "repetition-penalty" => s.repetition_penalty.to_value(),
            "device" => s.device.to_value(),
            "dtype" => s.dtype.to_value(),
            "max-batch" => s.max_batch.to_value(),
            "max-in-flight" => s.max_in_flight.to_value(),
            "text-mode" => s.text_mode.to_value(),
            "stats" => lock(&self.stats).to_structure().to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}
