//! The sampling properties of issue 13: `scene-threshold` (caption on scene changes),
//! `merge-repeats` (one cue per distinct answer) and `prompts` (several questions per sample).

use gst::glib;
use gst::prelude::*;

use super::super::answers::effective_prompts;

/// Most prompts a sample may be asked: each one is an entry of the sample's model call.
pub(super) const MAX_PROMPTS: usize = 64;

#[derive(Debug, Clone, Default)]
pub(super) struct SamplingSettings {
    /// 0 = off (interval sampling).
    pub(super) scene_threshold: f64,
    pub(super) merge_repeats: bool,
    /// Empty = `prompt` alone.
    pub(super) prompts: Vec<String>,
}

impl SamplingSettings {
    /// The prompts every sample is asked, in order.
    pub(super) fn prompts(&self, prompt: &str) -> Vec<String> {
        effective_prompts(prompt, &self.prompts)
    }
}

/// Param specs, each with the name of the property it follows in `gst-inspect-1.0`.
pub(super) fn specs() -> Vec<(&'static str, glib::ParamSpec)> {
    vec![
        (
            "prompt",
            gst::ParamSpecArray::builder("prompts")
                .nick("Prompts")
                .blurb(
                    "Several prompts answered for every sample, in one model call; when not \
                     empty it takes the place of `prompt`. One blip2-caption message and one \
                     meta answer per prompt, each naming its prompt; the text pad carries the \
                     answers one per line in this order. In a gst-launch description: \
                     prompts=\"<\\\"\\\", \\\"Question: how many people are there? Answer:\\\">\" \
                     (on a shell command line, in single quotes as a whole). At most 64. A \
                     change applies from the next sample",
                )
                .element_spec(
                    &glib::ParamSpecString::builder("prompt")
                        .nick("Prompt")
                        .blurb("One prompt, as the `prompt` property")
                        .build(),
                )
                .mutable_playing()
                .build(),
        ),
        (
            "interval",
            glib::ParamSpecDouble::builder("scene-threshold")
                .nick("Scene threshold")
                .blurb(
                    "Caption on scene changes: 0 = off (sample every interval); otherwise \
                     the first frame and then each frame whose picture differs from the last \
                     sampled one by more than this, and `interval` becomes the shortest time \
                     between two samples (0 = no minimum). Scale: the mean brightness change \
                     of a 32x32 thumbnail, 0 = same picture, 1 = black against white \
                     everywhere; camera noise stays under 0.005, cuts between shots give \
                     0.2-0.4, 0.02-0.05 catches something entering the view. A caption lasts \
                     until the next sample. Changeable while playing",
                )
                .minimum(0.0)
                .maximum(1.0)
                .default_value(0.0)
                .mutable_playing()
                .build(),
        ),
        (
            "scene-threshold",
            glib::ParamSpecBoolean::builder("merge-repeats")
                .nick("Merge repeats")
                .blurb(
                    "A sample whose text equals the previous sample's extends the previous \
                     cue instead of starting a new one: one cue per distinct caption in \
                     subtitle files (text-mode=cues; per-frame text repeats the caption on \
                     every frame anyway). A cue then goes out once the next different answer, \
                     or the end of the stream, is known. Messages and meta still come for \
                     every sample. Changeable while playing",
                )
                .default_value(false)
                .mutable_playing()
                .build(),
        ),
    ]
}

pub(super) fn is_sampling_property(name: &str) -> bool {
    matches!(name, "prompts" | "scene-threshold" | "merge-repeats")
}

/// Sets one of these properties; `Err` is a message naming the property when the value is
/// refused (the old value stays).
pub(super) fn set(s: &mut SamplingSettings, name: &str, value: &glib::Value) -> Result<(), String> {
    match name {
        "scene-threshold" => s.scene_threshold = value.get().expect("type checked by GObject"),
        "merge-repeats" => s.merge_repeats = value.get().expect("type checked by GObject"),
        "prompts" => {
            let array = value.get::<gst::Array>().expect("type checked by GObject");
            let prompts: Vec<String> = array
                .iter()
                .map(|v| v.get::<Option<String>>().ok().flatten().unwrap_or_default())
                .collect();
            if prompts.len() > MAX_PROMPTS {
                return Err(format!(
                    "property `prompts`: {} prompts given, at most {MAX_PROMPTS}; keeping the \
                     previous prompts",
                    prompts.len()
                ));
            }
            s.prompts = prompts;
        }
        other => unreachable!("not a sampling property: {other}"),
    }
    Ok(())
}

pub(super) fn get(s: &SamplingSettings, name: &str) -> glib::Value {
    match name {
        "scene-threshold" => s.scene_threshold.to_value(),
        "merge-repeats" => s.merge_repeats.to_value(),
        "prompts" => gst::Array::new(s.prompts.iter().map(|p| p.to_send_value())).to_value(),
        other => unreachable!("not a sampling property: {other}"),
    }
}
