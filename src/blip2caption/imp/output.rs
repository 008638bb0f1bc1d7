//! Delivering captions: text buffers and GAPs on `text_src`, meta on video buffers, bus
//! messages, inference statistics and automatic latency.

use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::{MESSAGE_NAME, META_NAME};
use super::failure;
use super::state::Sample;
use super::{Blip2Caption, CAT, lock};
use crate::engine::{Outcome, WaitError};

/// Automatic latency grows in steps of this size, so it is not re-announced for every jitter.
const LATENCY_STEP_MS: u64 = 100;

impl Blip2Caption {
    /// Emits every caption that is ready (realtime), attaching meta to `buffer` when given.
    pub(super) fn emit_ready(
        &self,
        mut buffer: Option<&mut gst::Buffer>,
    ) -> Result<(), gst::FlowError> {
        let Some(client) = self.client() else {
            return Ok(());
        };
        for outcome in client.take_ready() {
            let sample = lock(&self.state).pending.remove(&outcome.ticket);
            // Unknown tickets belong to samples from before a flush.
            if let Some(sample) = sample {
                self.emit(&sample, outcome, buffer.as_deref_mut(), true)?;
            }
        }
        Ok(())
    }

    /// Waits for every outstanding sample (EOS), emitting them in order.
    pub(super) fn drain(&self) -> Result<(), gst::FlowError> {
        let Some(client) = self.client() else {
            return Ok(());
        };
        loop {
            self.emit_ready(None)?;
            let next = lock(&self.state).pending.keys().next().copied();
            let Some(ticket) = next else {
                return Ok(());
            };
            match client.wait_for(ticket) {
                Ok(outcome) => {
                    let sample = lock(&self.state).pending.remove(&ticket);
                    if let Some(sample) = sample {
                        self.emit(&sample, outcome, None, true)?;
                    }
                }
                Err(WaitError::Interrupted) => return Err(gst::FlowError::Flushing),
                Err(WaitError::Unknown) => {
                    lock(&self.state).pending.remove(&ticket);
                }
            }
        }
    }

    /// Sends one caption out in its three forms: text buffer, meta on `buffer`, bus message.
    pub(super) fn emit(
        &self,
        sample: &Sample,
        outcome: Outcome,
        buffer: Option<&mut gst::Buffer>,
        realtime: bool,
    ) -> Result<(), gst::FlowError> {
        let inference_ns = outcome.inference_time.as_nanos() as u64;
        self.record_inference(outcome.inference_time);
        let caption = match outcome.result {
            Ok(caption) => caption,
            Err(e) => {
                lock(&self.stats).inference_failures += 1;
                let settings = lock(&self.settings).clone();
                let mut failure = failure::describe(&e, &settings, &outcome.prompt);
                failure.text = format!(
                    "Captioning the frame at {} failed: {}",
                    sample.pts, failure.text
                );
                if realtime && !failure::never_recovers(&e) {
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
                self.post_failure(&failure, &e, true);
                return Err(gst::FlowError::Error);
            }
        };
        lock(&self.state).last_failure = None;
        let text = caption.text.trim().to_owned();

        if let Some(buffer) = buffer {
            let buffer = buffer.make_mut();
            match gst::meta::CustomMeta::add(buffer, META_NAME) {
                Ok(mut meta) => {
                    let s = meta.mut_structure();
                    s.set("text", &text);
                    s.set("prompt", &outcome.prompt);
                    s.set("pts", sample.pts.nseconds());
                    s.set("inference-time", inference_ns);
                }
                Err(e) => gst::warning!(CAT, imp = self, "cannot add {META_NAME}: {e}"),
            }
        }

        let placement = {
            let mut state = lock(&self.state);
            let placement = state.text.place(sample.pts, sample.duration);
            (placement, state.live, state.text_markup)
        };
        let (placement, live, markup) = placement;
        if !placement.moved_by.is_zero() {
            let budget = self.latency();
            if live && placement.moved_by > budget {
                lock(&self.stats).late_captions += 1;
                gst::warning!(
                    CAT,
                    imp = self,
                    "caption for {} is {} late (latency budget {}), re-timed to {}",
                    sample.pts,
                    placement.moved_by,
                    budget,
                    placement.pts
                );
            } else {
                gst::debug!(
                    CAT,
                    imp = self,
                    "caption for {} re-timed to {}",
                    sample.pts,
                    placement.pts
                );
            }
        }

        let msg = gst::Structure::builder(MESSAGE_NAME)
            .field("text", &text)
            .field("prompt", &outcome.prompt)
            .field("pts", sample.pts.nseconds())
            .field(
                "running-time",
                sample.running_time.map_or(u64::MAX, |t| t.nseconds()),
            )
            .field("duration", sample.duration.nseconds())
            .field("inference-time", inference_ns)
            .build();
        let _ = self.obj().post_message(
            gst::message::Element::builder(msg)
                .src(&*self.obj())
                .build(),
        );
        lock(&self.stats).captions_emitted += 1;

        if text.is_empty() {
            // Nothing to show: keep the text pad covered instead.
            self.push_gap(placement.pts, placement.duration);
            return Ok(());
        }
        self.ensure_text_caps();
        let payload = if markup {
            glib::markup_escape_text(&text).to_string()
        } else {
            text
        };
        let mut text_buffer = gst::Buffer::from_mut_slice(payload.into_bytes());
        {
            let b = text_buffer.get_mut().expect("fresh buffer is writable");
            b.set_pts(placement.pts);
            b.set_duration(placement.duration);
        }
        gst::log!(CAT, imp = self, "caption buffer {:?}", text_buffer);
        self.text_queue.push_buffer(text_buffer);
        Ok(())
    }

    pub(super) fn record_inference(&self, took: Duration) {
        {
            let mut stats = lock(&self.stats);
            stats.inference_last = took;
            stats.inference_total += took;
            stats.inference_count += 1;
            stats.inference_max = stats.inference_max.max(took);
        }
        // Automatic latency follows the slowest inference, rounded up, announced when it grows.
        if lock(&self.settings).latency_ms >= 0 || !lock(&self.state).live {
            return;
        }
        let step = LATENCY_STEP_MS * 1_000_000;
        let ns = (took.as_nanos() as u64).div_ceil(step) * step;
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

    /// Before a frame goes out, the text pad must cover it: `textoverlay wait-text=true` would
    /// otherwise hold the frame while waiting for text that only this thread can send.
    pub(super) fn cover_text_until(&self, buffer: &gst::Buffer) {
        let Some(pts) = buffer.pts() else { return };
        let end = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
        // A zero-length GAP would not move textoverlay past this frame.
        let end = end.max(pts + gst::ClockTime::from_nseconds(1));
        let gap = lock(&self.state).text.gap_to(pts, end);
        match gap {
            Some((start, duration)) => self.push_gap(start, duration),
            // Already covered by a caption that lasts until the next sample. Muxers that need
            // data on every pad before they let video through (qtmux/mp4mux, aggregator-based)
            // would hold this frame until the next caption, which needs the frames after it:
            // a zero-length GAP at the frame tells them the text pad has reached it.
            None => self.push_gap(pts, gst::ClockTime::ZERO),
        }
    }

    pub(super) fn push_gap(&self, start: gst::ClockTime, duration: gst::ClockTime) {
        self.ensure_text_caps();
        gst::trace!(CAT, imp = self, "text gap {} + {}", start, duration);
        self.text_queue.push_gap(start, duration);
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
        {
            let mut state = lock(&self.state);
            state.text_markup = markup;
            state.text_caps_sent = true;
        }
        gst::debug!(CAT, imp = self, "text caps {}", caps);
        self.text_queue.push_event(gst::event::Caps::new(&caps));
    }
}
