//! The sink pad's chain function: mode choice, sampling, conversion and submission to the model.

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::Mode;
use super::super::convert::ToRgb;
use super::super::timeline::caption_duration;
use super::properties::Settings;
use super::state::Sample;
use super::{Blip2Caption, CAT, lock};
use crate::engine::{Request, WaitError};

/// Used for a caption's duration when `interval` is 0 and the frame says nothing.
const FALLBACK_FRAME_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(40);

impl Blip2Caption {
    pub(super) fn sink_chain(
        &self,
        _pad: &gst::Pad,
        mut buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = lock(&self.settings).clone();
        lock(&self.stats).frames_seen += 1;
        let realtime = self.realtime(&settings);

        // Realtime: captions finished since the last frame are emitted now, their meta rides
        // on this frame.
        if realtime {
            self.emit_ready(Some(&mut buffer))?;
        }

        if let Some((sample, image)) = self.maybe_sample(&settings, &buffer)? {
            let request = Request {
                image,
                prompt: settings.prompt.clone(),
                params: settings.params(),
                max_batch: settings.max_batch.max(1) as usize,
                retry_transient: !realtime,
            };
            let client = self.client().ok_or(gst::FlowError::Flushing)?;
            lock(&self.stats).samples_taken += 1;
            if realtime {
                let (ticket, replaced) = client.submit_replacing(request);
                let mut state = lock(&self.state);
                for t in &replaced {
                    state.pending.remove(t);
                }
                state.pending.insert(ticket, sample);
                drop(state);
                if !replaced.is_empty() {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "model busy, dropped {} sample(s)",
                        replaced.len()
                    );
                    lock(&self.stats).samples_dropped += replaced.len() as u64;
                }
            } else {
                let ticket = client.submit(request);
                let outcome = match client.wait_for(ticket) {
                    Ok(outcome) => outcome,
                    Err(WaitError::Interrupted) | Err(WaitError::Unknown) => {
                        gst::debug!(CAT, imp = self, "flushing while waiting for the model");
                        return Err(gst::FlowError::Flushing);
                    }
                };
                self.emit(&sample, outcome, Some(&mut buffer), false)?;
            }
        }

        self.cover_text_until(&buffer);
        let res = self.srcpad.push(buffer);
        let mut combiner = lock(&self.flow_combiner);
        if let Some(text_flow) = self.text_queue.flow() {
            let _ = combiner.update_pad_flow(&self.textpad, text_flow);
        }
        combiner.update_pad_flow(&self.srcpad, res)
    }

    /// Decides the mode for this stream on its first buffer (asks upstream whether it is live).
    pub(super) fn realtime(&self, settings: &Settings) -> bool {
        if let Some(realtime) = lock(&self.state).realtime {
            return realtime;
        }
        let mut q = gst::query::Latency::new();
        let live = self.sinkpad.peer_query(&mut q) && q.result().0;
        let realtime = match settings.mode {
            Mode::Realtime => true,
            Mode::Complete => false,
            Mode::Auto => live,
        };
        gst::info!(
            CAT,
            imp = self,
            "upstream is {}live: {} mode",
            if live { "" } else { "not " },
            if realtime { "realtime" } else { "complete" }
        );
        let mut state = lock(&self.state);
        state.live = live;
        state.realtime = Some(realtime);
        realtime
    }

    /// Returns the sample and its RGB image when this frame is due for captioning.
    pub(super) fn maybe_sample(
        &self,
        settings: &Settings,
        buffer: &gst::Buffer,
    ) -> Result<Option<(Sample, crate::model::RgbImage)>, gst::FlowError> {
        let mut state = lock(&self.state);
        let frame_duration = buffer.duration().or_else(|| {
            let fps = state.video_info.as_ref()?.fps();
            (fps.numer() > 0)
                .then(|| {
                    gst::ClockTime::SECOND.mul_div_floor(fps.denom() as u64, fps.numer() as u64)
                })
                .flatten()
        });
        // A frame without PTS is placed right after the previous frame (arrival order; the
        // first one at the segment start), so sampling and caption times still advance.
        let pts = match buffer.pts() {
            Some(pts) => pts,
            None => state
                .next_pts
                .or(state.segment.start())
                .unwrap_or(gst::ClockTime::ZERO),
        };
        state.next_pts = Some(pts + frame_duration.unwrap_or(FALLBACK_FRAME_DURATION));
        let running_time = state.segment.to_running_time(pts);
        // Frames outside the segment are not shown, so they are not captioned either.
        let Some(rt) = running_time else {
            return Ok(None);
        };
        if !state.sampler.should_sample(rt, settings.interval) {
            return Ok(None);
        }
        let duration = match state.sampler.next_boundary() {
            Some(next) => caption_duration(rt, next, frame_duration),
            // interval 0: every frame is a sample, each caption lasts one frame.
            None => frame_duration.unwrap_or(FALLBACK_FRAME_DURATION),
        };
        if state.to_rgb.is_none() {
            let Some(info) = state.video_info.as_ref() else {
                gst::element_imp_error!(self, gst::CoreError::Negotiation, ("No caps before data"));
                return Err(gst::FlowError::NotNegotiated);
            };
            match ToRgb::new(info) {
                Ok(c) => state.to_rgb = Some(c),
                Err(e) => {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ("Cannot convert {:?} to RGB: {}", info.format(), e)
                    );
                    return Err(gst::FlowError::NotNegotiated);
                }
            }
        }
        let to_rgb = state.to_rgb.as_ref().expect("created above");
        match to_rgb.convert(buffer) {
            Ok(image) => Ok(Some((
                Sample {
                    pts,
                    running_time,
                    duration,
                },
                image,
            ))),
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Decode,
                    ("Could not read a sampled frame: {}", e)
                );
                Ok(None)
            }
        }
    }
}
