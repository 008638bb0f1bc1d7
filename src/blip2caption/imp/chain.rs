//! The sink pad's chain function: mode choice, sampling, conversion and submission to the model,
//! and the order in which frames leave.

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::Mode;
use super::super::convert::ToRgb;
use super::super::timeline::caption_duration;
use super::model_slot::NotReady;
use super::properties::Settings;
use super::state::{Asked, FrameTimes, Held, HeldSample, Sample};
use super::{Blip2Caption, CAT, lock};
use crate::engine::{Outcome, Request, Ticket};

/// Used for a frame's place on the timeline when it has no duration and the caps no framerate.
const FALLBACK_FRAME_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(40);

impl Blip2Caption {
    pub(super) fn sink_chain(
        &self,
        _pad: &gst::Pad,
        mut buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if lock(&self.state).failed {
            // A failed caption ended this stream (its ERROR is posted); not another sample.
            return Err(gst::FlowError::Error);
        }
        let settings = lock(&self.settings).clone();
        lock(&self.stats).frames_seen += 1;
        let realtime = self.realtime(&settings);
        let times = self.frame_times(&buffer);
        let merged = lock(&self.state)
            .text
            .set_merge_repeats(settings.sampling.merge_repeats);
        self.push_text(merged);

        // Realtime: captions finished since the last frame are emitted now, their meta rides
        // on this frame.
        if realtime {
            self.emit_ready(Some((&mut buffer, times.pts)))?;
        }

        let sample = match times.running_time {
            Some(rt) => self.maybe_sample(&settings, &buffer, &times, rt, realtime)?,
            None => None,
        };

        if realtime {
            self.send_frame(buffer, times)
        } else {
            let window = settings.max_in_flight.max(1) as usize;
            lock(&self.state).held.push_back(Held {
                buffer,
                times,
                sample,
            });
            // Samples go to the model a batch at a time (see `submit_held`): a batch holds
            // `max-batch` requests, one per prompt.
            let per_sample = settings.sampling.prompts(&settings.prompt).len().max(1);
            let chunk = (settings.max_batch.max(1) as usize / per_sample).clamp(1, window);
            self.submit_held(chunk)?;
            self.release_held(window)
        }
    }

    /// Sends a frame's text, then the frame, and combines the flows of both pads.
    pub(super) fn send_frame(
        &self,
        buffer: gst::Buffer,
        times: FrameTimes,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if times.running_time.is_some() {
            let items = {
                let mut state = lock(&self.state);
                let end = times.duration.map(|d| times.pts + d);
                let end = match (end, state.segment.stop()) {
                    (Some(end), Some(stop)) => Some(end.min(stop.max(times.pts))),
                    (end, _) => end,
                };
                state.last_frame_end = Some(end.unwrap_or(times.pts));
                state.text.frame(times.pts, end.map(|e| e - times.pts))
            };
            self.push_text(items);
        }
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

    /// Where `buffer` sits: its PTS (a frame without one is placed right after the previous
    /// frame, the first one at the segment start: arrival order), duration and running time.
    fn frame_times(&self, buffer: &gst::Buffer) -> FrameTimes {
        let mut state = lock(&self.state);
        let duration = buffer.duration().or_else(|| {
            let fps = state.video_info.as_ref()?.fps();
            (fps.numer() > 0)
                .then(|| {
                    gst::ClockTime::SECOND.mul_div_floor(fps.denom() as u64, fps.numer() as u64)
                })
                .flatten()
        });
        let pts = match buffer.pts() {
            Some(pts) => pts,
            None => state
                .next_pts
                .or(state.segment.start())
                .unwrap_or(gst::ClockTime::ZERO),
        };
        state.next_pts = Some(pts.saturating_add(duration.unwrap_or(FALLBACK_FRAME_DURATION)));
        FrameTimes {
            pts,
            duration,
            running_time: state.segment.to_running_time(pts),
        }
    }

    /// Takes a sample from this frame when one is due and prepares it (one request per prompt).
    /// Realtime hands it to the model here, as one group; complete mode returns it, to go with
    /// the next chunk (`None`: no sample due, or none to wait for).
    fn maybe_sample(
        &self,
        settings: &Settings,
        buffer: &gst::Buffer,
        times: &FrameTimes,
        rt: gst::ClockTime,
        realtime: bool,
    ) -> Result<Option<HeldSample>, gst::FlowError> {
        let Some(duration) = self.due(settings, buffer, times, rt) else {
            return Ok(None);
        };
        let Some(image) = self.convert(buffer)? else {
            return Ok(None);
        };
        self.warn_token_conflict(settings);
        let client = if realtime {
            self.model.client()
        } else {
            match self.model.wait_ready() {
                Ok(client) => Some(client),
                Err(NotReady::Interrupted) => return Err(gst::FlowError::Flushing),
                // The load thread posted the error.
                Err(NotReady::Unavailable) => return Err(gst::FlowError::Error),
            }
        };
        // (`samples-taken` counts a sample once it is handed over, dropped or failed.)
        let (slot, items, stream_time) = {
            let mut state = lock(&self.state);
            let (slot, items) = state.text.sample(times.pts);
            (slot, items, state.segment.to_stream_time(times.pts))
        };
        self.push_text(items);
        gst::debug!(
            CAT,
            imp = self,
            "sample at {} (running time {rt})",
            times.pts
        );
        let sample = Sample {
            pts: times.pts,
            running_time: rt,
            stream_time,
            duration,
            slot,
            submitted: Instant::now(),
        };
        let prompts = settings.sampling.prompts(&settings.prompt);
        let Some(client) = client else {
            // Realtime while the model is still loading: the video goes on, the sample is
            // counted as dropped.
            gst::debug!(CAT, imp = self, "model not ready, sample dropped");
            let mut stats = lock(&self.stats);
            stats.samples_taken += 1;
            stats.samples_dropped += 1;
            drop(stats);
            self.resolve_lost(&sample);
            return Ok(None);
        };
        // Conversion to the model's input (resizing and normalisation for BLIP-2) happens here,
        // on the streaming thread, while the worker runs the samples before this one; the
        // prompts of one frame share it.
        let input = match client.prepare(image) {
            Ok(input) => input,
            Err(e) => {
                let failed = Outcome {
                    ticket: Ticket(0),
                    prompt: prompts.first().cloned().unwrap_or_default(),
                    result: Err(e),
                    inference_time: Duration::ZERO,
                    batch_size: 0,
                    answered_at: Instant::now(),
                };
                lock(&self.stats).samples_taken += 1;
                self.emit(&sample, vec![failed], None, realtime, None)?;
                return Ok(None);
            }
        };
        let requests: Vec<Request> = prompts
            .into_iter()
            .map(|prompt| Request {
                input: input.clone(),
                prompt,
                params: settings.params(),
                max_batch: settings.max_batch.max(1) as usize,
                retry_transient: !realtime,
            })
            .collect();
        if !realtime {
            return Ok(Some(HeldSample {
                asked: Asked::new(sample, Vec::new()),
                unsent: Some(requests),
            }));
        }
        let (tickets, replaced) =
            client.submit_group_bounded(requests, settings.max_in_flight.max(1) as usize);
        lock(&self.stats).samples_taken += 1;
        // There is always at least one prompt (`prompt` when `prompts` is empty).
        let Some(&key) = tickets.first() else {
            return Ok(None);
        };
        let mut state = lock(&self.state);
        let gone: Vec<Ticket> = state
            .pending
            .iter()
            .filter(|(_, asked)| replaced.iter().any(|&t| asked.has(t)))
            .map(|(&k, _)| k)
            .collect();
        let dropped: Vec<Sample> = gone
            .iter()
            .filter_map(|k| state.pending.remove(k))
            .map(|asked| asked.sample)
            .collect();
        state.pending.insert(key, Asked::new(sample, tickets));
        drop(state);
        if !dropped.is_empty() {
            gst::debug!(
                CAT,
                imp = self,
                "model busy, dropped {} sample(s)",
                dropped.len()
            );
            lock(&self.stats).samples_dropped += dropped.len() as u64;
        }
        for sample in &dropped {
            self.resolve_lost(sample);
        }
        Ok(None)
    }

    /// Whether this frame is due for a sample, and if so how long its caption is expected to
    /// last (`Some(None)`: until the next sample, whenever that comes).
    fn due(
        &self,
        settings: &Settings,
        buffer: &gst::Buffer,
        times: &FrameTimes,
        rt: gst::ClockTime,
    ) -> Option<Option<gst::ClockTime>> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let threshold = settings.sampling.scene_threshold;
        if threshold <= 0.0 {
            if !state.sampler.should_sample(rt, settings.interval) {
                return None;
            }
            let next = state.sampler.next_boundary(settings.interval);
            return Some(caption_duration(rt, next, times.duration));
        }
        // Scene changes: only frames past the minimum interval are measured, and only sampled
        // frames are converted.
        let info = state.video_info.as_ref()?;
        let meter = &mut state.scene_meter;
        let decision = state
            .scene_gate
            .decide(rt, settings.interval, threshold, || {
                meter.measure(info, buffer)
            });
        match decision {
            Ok(decision) => {
                gst::log!(CAT, imp = self, "scene at {}: {:?}", times.pts, decision);
                decision.sampled().then_some(None)
            }
            Err(e) => {
                let first = !std::mem::replace(&mut state.scene_warned, true);
                drop(guard);
                if first {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Decode,
                        ("Could not read a frame for scene-threshold: {}", e)
                    );
                } else {
                    gst::debug!(CAT, imp = self, "scene measure failed again: {e}");
                }
                None
            }
        }
    }

    /// The sampled frame as packed RGB; `None` (with a warning) when it cannot be read.
    fn convert(
        &self,
        buffer: &gst::Buffer,
    ) -> Result<Option<crate::model::RgbImage>, gst::FlowError> {
        let mut state = lock(&self.state);
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
            Ok(image) => Ok(Some(image)),
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

    /// `min-new-tokens` above `max-new-tokens` is capped; say so once per combination.
    fn warn_token_conflict(&self, settings: &Settings) {
        let pair = (settings.min_new_tokens, settings.max_new_tokens);
        let Some(message) = settings.token_conflict() else {
            return;
        };
        let mut warned = lock(&self.token_warning);
        if *warned != Some(pair) {
            *warned = Some(pair);
            drop(warned);
            gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{}", message));
        }
    }
}
