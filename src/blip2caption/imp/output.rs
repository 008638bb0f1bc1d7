//! Delivering captions: text buffers and GAPs on `text_src`, meta on video buffers, bus
//! messages, inference statistics and automatic latency.

use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::answers::sample_text;
use super::super::published::{self, Answer};
use super::super::text::{Layout, Resolution, TextItem, TextTrack};
use super::super::{META_NAME, TextMode, downstream};
use super::failure;
use super::state::{Asked, Sample};
use super::{Blip2Caption, CAT, lock};
use crate::engine::{Outcome, WaitError};

/// Automatic latency grows in steps of this size, so it is not re-announced for every jitter.
const LATENCY_STEP_MS: u64 = 100;

impl Blip2Caption {
    /// Emits every sample whose answers are all back (realtime); its meta goes on `frame` (the
    /// buffer that is about to leave, at the given PTS) when there is one.
    pub(super) fn emit_ready(
        &self,
        mut frame: Option<(&mut gst::Buffer, gst::ClockTime)>,
    ) -> Result<(), gst::FlowError> {
        let Some(client) = self.client() else {
            return Ok(());
        };
        for outcome in client.take_ready() {
            if let Some(asked) = self.file_answer(outcome) {
                let (sample, outcomes) = asked.answers().expect("complete");
                let frame = frame.as_mut().map(|(b, pts)| (&mut **b, *pts));
                self.emit_realtime(&sample, outcomes, frame)?;
            }
        }
        Ok(())
    }

    /// Files a realtime answer with its sample; returns the sample once all its answers are
    /// back. Answers for unknown samples (from before a flush) are dropped.
    fn file_answer(&self, outcome: Outcome) -> Option<Asked> {
        let mut state = lock(&self.state);
        let key = state
            .pending
            .iter()
            .find(|(_, asked)| asked.has(outcome.ticket))
            .map(|(&key, _)| key)?;
        let asked = state.pending.get_mut(&key).expect("found above");
        let _ = asked.file(outcome);
        if asked.missing().is_some() {
            return None;
        }
        state.pending.remove(&key)
    }

    /// Waits for every outstanding sample (EOS, segment change), emitting them in order.
    pub(super) fn drain(&self) -> Result<(), gst::FlowError> {
        if lock(&self.state).failed {
            return Err(gst::FlowError::Error);
        }
        if lock(&self.state).realtime == Some(false) {
            self.release_held(0)?;
            return Ok(());
        }
        let Some(client) = self.client() else {
            return Ok(());
        };
        loop {
            self.emit_ready(None)?;
            let next = {
                let state = lock(&self.state);
                state
                    .pending
                    .iter()
                    .next()
                    .map(|(&key, asked)| (key, asked.missing()))
            };
            let Some((key, missing)) = next else {
                return Ok(());
            };
            let Some(ticket) = missing else {
                // `emit_ready` emits samples as they complete; none is left complete here, but
                // one would go out rather than loop.
                let asked = lock(&self.state).pending.remove(&key);
                if let Some(Ok((sample, outcomes))) = asked.map(Asked::answers) {
                    self.emit_realtime(&sample, outcomes, None)?;
                }
                continue;
            };
            match client.wait_for(ticket) {
                Ok(outcome) => {
                    if let Some(asked) = self.file_answer(outcome) {
                        let (sample, outcomes) = asked.answers().expect("complete");
                        self.emit_realtime(&sample, outcomes, None)?;
                    }
                }
                Err(WaitError::Interrupted) => return Err(gst::FlowError::Flushing),
                Err(WaitError::Unknown) => {
                    if let Some(asked) = lock(&self.state).pending.remove(&key) {
                        self.resolve_lost(&asked.sample);
                    }
                }
            }
        }
    }

    /// A realtime caption, emitted as `frame` (if any) goes out: late ones are counted, and the
    /// per-frame text shows it from that frame for the time it was meant to last.
    fn emit_realtime(
        &self,
        sample: &Sample,
        outcomes: Vec<Outcome>,
        frame: Option<(&mut gst::Buffer, gst::ClockTime)>,
    ) -> Result<(), gst::FlowError> {
        let (buffer, shown_from) = match frame {
            Some((b, pts)) => (Some(b), pts.max(sample.pts)),
            None => (None, sample.pts),
        };
        let late_by = shown_from - sample.pts;
        if !late_by.is_zero() {
            let budget = self.latency();
            let live = lock(&self.state).live;
            if live && late_by > budget {
                lock(&self.stats).late_captions += 1;
                gst::warning!(
                    CAT,
                    imp = self,
                    "caption for {} is {} late (latency budget {})",
                    sample.pts,
                    late_by,
                    budget
                );
            }
        }
        let until = sample.duration.map(|d| shown_from.saturating_add(d));
        self.emit(sample, outcomes, buffer, true, until)
    }

    /// Sends one sample's answers (one per prompt, in order) out in their forms: meta on
    /// `buffer`, one bus message per answer, and the sample's place on the text timeline
    /// (`until`: how long per-frame text shows it; `None` = until replaced).
    pub(super) fn emit(
        &self,
        sample: &Sample,
        outcomes: Vec<Outcome>,
        buffer: Option<&mut gst::Buffer>,
        realtime: bool,
        until: Option<gst::ClockTime>,
    ) -> Result<(), gst::FlowError> {
        // The answers come from one model call: one inference, one time.
        let inference_time = outcomes
            .iter()
            .map(|o| o.inference_time)
            .max()
            .unwrap_or_default();
        // How late the last answer came after the sample was taken (queueing behind other
        // samples in flight included).
        let late = outcomes
            .iter()
            .map(|o| o.answered_at.saturating_duration_since(sample.submitted))
            .max()
            .unwrap_or_default();
        self.record_inference(inference_time, late);
        let mut answers = Vec::with_capacity(outcomes.len());
        for Outcome {
            prompt,
            result,
            inference_time,
            batch_size,
            ..
        } in outcomes
        {
            match result {
                Ok(caption) => {
                    let tokens = caption.token_ids.len() as u32;
                    let text = clean_text(&caption.text);
                    answers.push((prompt, (tokens, inference_time, batch_size), text));
                }
                // One failed answer fails the sample: its text would be incomplete.
                Err(e) => return self.emit_failure(sample, e, &prompt, realtime),
            }
        }
        lock(&self.state).last_failure = None;

        let element = self.obj().name();
        let model = lock(&self.loaded_model).clone();
        let mut buffer = buffer;
        // One meta entry and one message per prompt, in the order of `prompts`.
        for (prompt, (tokens, inference_time, batch_size), text) in &answers {
            let answer = Answer {
                element: &element,
                model: &model,
                prompt,
                text,
                pts: sample.pts,
                running_time: Some(sample.running_time),
                stream_time: sample.stream_time,
                duration: sample.duration,
                tokens: *tokens,
                inference_time: *inference_time,
                batch_size: *batch_size as u32,
            };
            gst::debug!(
                CAT,
                imp = self,
                "answer for {} (running time {}) to {:?}: {:?}, {} tokens, inference {:.1?} in a \
                 batch of {}",
                sample.pts,
                sample.running_time,
                prompt,
                text,
                answer.tokens,
                inference_time,
                batch_size
            );
            if let Some(buffer) = buffer.as_deref_mut()
                && let Err(e) = published::attach(buffer.make_mut(), &answer)
            {
                gst::warning!(CAT, imp = self, "cannot add {META_NAME}: {e}");
            }
            let _ = self.obj().post_message(
                gst::message::Element::builder(answer.to_message())
                    .src(&*self.obj())
                    .build(),
            );
        }
        lock(&self.stats).captions_emitted += answers.len() as u64;

        // One prompt: its answer as it is. Several: one line each, in prompt order.
        let text = match answers.as_slice() {
            [(_, _, text)] => text.clone(),
            _ => sample_text(answers.iter().map(|(_, _, t)| t.as_str())),
        };
        let resolution = if text.is_empty() {
            Resolution::Nothing
        } else {
            Resolution::Text(text)
        };
        let asked = answers
            .iter()
            .map(|(prompt, _, _)| prompt.clone())
            .collect();
        let items = lock(&self.state)
            .text
            .resolve_asked(sample.slot, asked, resolution, until);
        self.push_text(items);
        Ok(())
    }

    /// A sample whose model call failed: an error in complete mode (it promised a caption for
    /// every sample), a warning in realtime mode.
    fn emit_failure(
        &self,
        sample: &Sample,
        e: crate::engine::CaptionError,
        prompt: &str,
        realtime: bool,
    ) -> Result<(), gst::FlowError> {
        lock(&self.stats).inference_failures += 1;
        let settings = lock(&self.settings).clone();
        let mut failure = failure::describe(&e, &settings, prompt);
        failure.text = format!(
            "Captioning the frame at {} failed: {}",
            sample.pts, failure.text
        );
        if realtime && !failure::never_recovers(&e) {
            self.resolve_lost(sample);
            // Live video keeps flowing; one failed sample is not worth stopping for.
            // The same failure again and again is posted once (until a caption
            // succeeds), so a pipeline running for days does not flood the bus.
            let key = e.to_string();
            let repeated = {
                let mut state = lock(&self.state);
                let repeated = state.last_failure.as_deref() == Some(key.as_str());
                state.last_failure = Some(key);
                repeated
            };
            if repeated {
                gst::debug!(CAT, imp = self, "{} (again)", failure.text);
            } else {
                self.post_failure(&failure, &e, false);
            }
            return Ok(());
        }
        // Complete mode promised a caption for every sample; a server that refuses the
        // request (4xx) will refuse the next ones too.
        lock(&self.state).failed = true;
        self.post_failure(&failure, &e, true);
        Err(gst::FlowError::Error)
    }

    /// A sample that will never have a caption (dropped or failed): its span has no cue.
    pub(super) fn resolve_lost(&self, sample: &Sample) {
        let items = lock(&self.state)
            .text
            .resolve(sample.slot, Resolution::Lost, None);
        self.push_text(items);
    }

    /// Queues text items for the text pad's task, after the caps they need.
    pub(super) fn push_text(&self, items: Vec<TextItem>) {
        if items.is_empty() {
            return;
        }
        self.ensure_text_caps();
        let markup = lock(&self.state).text_markup;
        for item in items {
            match item {
                TextItem::Gap { pts, duration } => {
                    gst::trace!(CAT, imp = self, "text gap {} + {}", pts, duration);
                    self.text_queue.push_gap(pts, duration);
                }
                TextItem::Text {
                    pts,
                    duration,
                    text,
                } => {
                    let payload = if markup {
                        glib::markup_escape_text(&text).to_string()
                    } else {
                        text
                    };
                    let mut buffer = gst::Buffer::from_mut_slice(payload.into_bytes());
                    {
                        let b = buffer.get_mut().expect("fresh buffer is writable");
                        b.set_pts(pts);
                        b.set_duration(duration);
                    }
                    gst::log!(
                        CAT,
                        imp = self,
                        "text buffer at {pts} for {}",
                        duration.display()
                    );
                    self.text_queue.push_buffer(buffer);
                }
            }
        }
    }

    /// Records an inference that `took` this long, for a sample answered `late` after it was
    /// handed to the model (queueing behind other samples included).
    pub(super) fn record_inference(&self, took: Duration, late: Duration) {
        {
            let mut stats = lock(&self.stats);
            stats.inference_last = took;
            stats.inference_total += took;
            stats.inference_count += 1;
            stats.inference_max = stats.inference_max.max(took);
        }
        // Automatic latency follows the latest answer (from sample to caption, so queueing
        // behind other samples in flight counts: complete mode holds the frames that long),
        // rounded up, announced when it grows.
        if lock(&self.settings).latency >= 0 || !lock(&self.state).live {
            return;
        }
        let step = LATENCY_STEP_MS * 1_000_000;
        let ns = (late.max(took).as_nanos() as u64).div_ceil(step) * step;
        let new = gst::ClockTime::from_nseconds(ns);
        let changed = {
            let mut auto = lock(&self.auto_latency);
            let grew = new > *auto;
            if grew {
                *auto = new;
            }
            grew
        };
        if changed {
            gst::info!(CAT, imp = self, "latency now {}", new);
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    /// Picks utf8 unless downstream only takes pango-markup; re-picks on reconfigure.
    pub(super) fn ensure_text_caps(&self) {
        let reconfigure = self.textpad.check_reconfigure();
        if lock(&self.state).text_caps_sent && !reconfigure {
            return;
        }
        let templ = self.textpad.pad_template_caps();
        let peer = self.textpad.peer_query_caps(Some(&templ));
        let utf8 = gst::Caps::builder("text/x-raw")
            .field("format", "utf8")
            .build();
        let markup = !peer.can_intersect(&utf8) && !peer.is_empty();
        let caps = if markup {
            gst::Caps::builder("text/x-raw")
                .field("format", "pango-markup")
                .build()
        } else {
            utf8
        };
        // The layout is chosen once per stream, before any text. (No lock is held meanwhile:
        // the warning goes to the bus, whose sync handlers may call back into the element.)
        let chosen = lock(&self.state).text_layout_chosen;
        let layout = (!chosen).then(|| {
            let text_mode = lock(&self.settings).text_mode;
            let join = downstream::join_downstream(&self.textpad);
            match (text_mode, join) {
                (TextMode::Cues, Some(join)) => {
                    self.warn_cues_into_a_join(&join);
                    Layout::Cues
                }
                (TextMode::Cues, None) => Layout::Cues,
                (TextMode::PerFrame, _) | (TextMode::Auto, Some(_)) => Layout::PerFrame,
                (TextMode::Auto, None) => Layout::Cues,
            }
        });
        {
            let mut state = lock(&self.state);
            state.text_markup = markup;
            state.text_caps_sent = true;
            if let Some(layout) = layout {
                gst::info!(CAT, imp = self, "text layout {:?}", layout);
                state.text = TextTrack::new(layout);
                state.text_layout_chosen = true;
            }
        }
        gst::debug!(CAT, imp = self, "text caps {}", caps);
        self.text_queue.push_event(gst::event::Caps::new(&caps));
    }

    /// `text-mode=cues` chosen by hand for text that meets other streams: said once per stream,
    /// because an aggregator muxer then holds the video until the next cue and the pipeline
    /// stalls once the video queue is full (../shared/notes/muxers.md); `auto` avoids it.
    fn warn_cues_into_a_join(&self, join: &gst::Element) {
        let factory = join
            .factory()
            .map(|f| f.name().to_string())
            .unwrap_or_default();
        gst::element_imp_warning!(
            self,
            gst::LibraryError::Settings,
            (
                "property `text-mode` is `cues`, but text_src feeds {} ({factory}), which joins \
                 the text with other streams: text comes only when a caption is ready, and a \
                 muxer such as mp4mux or matroskamux may hold the video meanwhile and stall; \
                 `text-mode=auto` (or `per-frame`) sends text with every frame",
                join.name()
            )
        );
    }
}

/// The answer as it goes out: control characters (C0 other than newline and tab) removed, so no
/// subtitle, message or meta carries a stray escape or NUL; surrounding whitespace trimmed.
pub(super) fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|&c| c >= ' ' || c == '\n' || c == '\t')
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_removed() {
        assert_eq!(
            super::clean_text(" a\u{0}b\u{7}c\u{1b}[31m\nd\te\r\u{1f}f "),
            "abc[31m\nd\tef"
        );
        assert_eq!(super::clean_text("été 😀\u{7f}"), "été 😀\u{7f}");
    }
}
