//! Pads, properties, events and the chain function of `blip2caption`.
//!
//! Threads: the streaming thread samples, converts and submits frames, and does every push
//! (video, text, events), so pad ordering needs no extra locking. The engine's worker runs the
//! model. In realtime mode the streaming thread only collects finished captions as frames pass;
//! in complete mode it waits for each sample's caption (interruptible by flushes and state
//! changes) and puts the meta on the analysed frame itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use once_cell::sync::Lazy;

use super::convert::ToRgb;
use super::textqueue::TextQueue;
use super::timeline::{Sampler, TextTimeline, caption_duration};
use super::{DType, MESSAGE_NAME, META_NAME, Mode};
use crate::engine::{self, Client, Outcome, Request, Ticket, WaitError};
use crate::model::{DTypeChoice, DeviceChoice, GenerationParams};

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "blip2caption",
        gst::DebugColorFlags::empty(),
        Some("BLIP-2 video captioner"),
    )
});

const DEFAULT_MODEL: &str = "Salesforce/blip2-opt-2.7b";
const DEFAULT_INTERVAL: u64 = 1_000_000_000;
const DEFAULT_LATENCY_MS: i32 = -1;
const DEFAULT_MAX_BATCH: u32 = 8;
/// Used for a caption's duration when `interval` is 0 and the frame says nothing.
const FALLBACK_FRAME_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(40);
/// Automatic latency grows in steps of this size, so it is not re-announced for every jitter.
const LATENCY_STEP_MS: u64 = 100;

#[derive(Debug, Clone)]
struct Settings {
    model: String,
    prompt: String,
    interval: gst::ClockTime,
    mode: Mode,
    latency_ms: i32,
    max_new_tokens: u32,
    min_new_tokens: u32,
    num_beams: u32,
    repetition_penalty: f64,
    device: String,
    dtype: DType,
    max_batch: u32,
}

impl Default for Settings {
    fn default() -> Self {
        let defaults = GenerationParams::default();
        Self {
            model: DEFAULT_MODEL.into(),
            prompt: String::new(),
            interval: gst::ClockTime::from_nseconds(DEFAULT_INTERVAL),
            mode: Mode::Auto,
            latency_ms: DEFAULT_LATENCY_MS,
            max_new_tokens: defaults.max_new_tokens as u32,
            min_new_tokens: defaults.min_new_tokens as u32,
            num_beams: defaults.num_beams as u32,
            repetition_penalty: defaults.repetition_penalty,
            device: "auto".into(),
            dtype: DType::Auto,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

impl Settings {
    fn params(&self) -> GenerationParams {
        GenerationParams {
            max_new_tokens: self.max_new_tokens as usize,
            min_new_tokens: self.min_new_tokens as usize,
            num_beams: self.num_beams as usize,
            repetition_penalty: self.repetition_penalty,
            ..GenerationParams::default()
        }
    }
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    match s.trim() {
        "auto" | "" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| format!("device `{other}` is not one of auto, cpu, cuda:N")),
    }
}

fn dtype_choice(d: DType) -> DTypeChoice {
    match d {
        DType::Auto => DTypeChoice::Auto,
        DType::F32 => DTypeChoice::F32,
        DType::F16 => DTypeChoice::F16,
        DType::BF16 => DTypeChoice::BF16,
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    frames_seen: u64,
    samples_taken: u64,
    samples_dropped: u64,
    captions_emitted: u64,
    inference_failures: u64,
    late_captions: u64,
    inference_total: Duration,
    inference_count: u64,
    inference_last: Duration,
    inference_max: Duration,
}

impl Stats {
    fn to_structure(&self) -> gst::Structure {
        let mean = if self.inference_count == 0 {
            0
        } else {
            (self.inference_total.as_nanos() / self.inference_count as u128) as u64
        };
        gst::Structure::builder("blip2caption-stats")
            .field("frames-seen", self.frames_seen)
            .field("samples-taken", self.samples_taken)
            .field("samples-dropped", self.samples_dropped)
            .field("captions-emitted", self.captions_emitted)
            .field("inference-failures", self.inference_failures)
            .field("late-captions", self.late_captions)
            .field("mean-inference-time", mean)
            .field("last-inference-time", self.inference_last.as_nanos() as u64)
            .build()
    }
}

/// A frame handed to the model, remembered until its caption comes back.
#[derive(Debug, Clone)]
struct Sample {
    pts: gst::ClockTime,
    running_time: Option<gst::ClockTime>,
    duration: gst::ClockTime,
}

/// Streaming state, reset on flushes and stream starts.
struct State {
    video_info: Option<gst_video::VideoInfo>,
    to_rgb: Option<ToRgb>,
    segment: gst::FormattedSegment<gst::ClockTime>,
    sampler: Sampler,
    text: TextTimeline,
    /// Samples submitted and not answered yet, by ticket (realtime mode).
    pending: BTreeMap<Ticket, Sample>,
    /// Decided at the first buffer of a stream: realtime (live or forced) or complete.
    realtime: Option<bool>,
    live: bool,
    text_markup: bool,
    text_caps_sent: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            video_info: None,
            to_rgb: None,
            segment: gst::FormattedSegment::new(),
            sampler: Sampler::default(),
            text: TextTimeline::default(),
            pending: BTreeMap::new(),
            realtime: None,
            live: false,
            text_markup: false,
            text_caps_sent: false,
        }
    }
}

pub struct Blip2Caption {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    textpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    stats: Mutex<Stats>,
    /// Separate from `state` so waiting for the model never holds the state lock.
    client: Mutex<Option<Arc<Client>>>,
    flow_combiner: Mutex<gst_base::UniqueFlowCombiner>,
    /// Latency chosen from measured inference time when `latency` is -1.
    auto_latency: Mutex<gst::ClockTime>,
    /// Everything for `text_src`, pushed by that pad's own task.
    text_queue: Arc<TextQueue>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Blip2Caption {
    fn client(&self) -> Option<Arc<Client>> {
        lock(&self.client).clone()
    }

    fn latency(&self) -> gst::ClockTime {
        let ms = lock(&self.settings).latency_ms;
        if ms >= 0 {
            gst::ClockTime::from_mseconds(ms as u64)
        } else {
            *lock(&self.auto_latency)
        }
    }

    fn sink_chain(
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
    fn realtime(&self, settings: &Settings) -> bool {
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
    fn maybe_sample(
        &self,
        settings: &Settings,
        buffer: &gst::Buffer,
    ) -> Result<Option<(Sample, crate::model::RgbImage)>, gst::FlowError> {
        let mut state = lock(&self.state);
        let Some(pts) = buffer.pts() else {
            return Ok(None);
        };
        let running_time = state.segment.to_running_time(pts);
        // Frames outside the segment are not shown, so they are not captioned either.
        let Some(rt) = running_time else {
            return Ok(None);
        };
        if !state.sampler.should_sample(rt, settings.interval) {
            return Ok(None);
        }
        let frame_duration = buffer.duration().or_else(|| {
            let fps = state.video_info.as_ref()?.fps();
            (fps.numer() > 0)
                .then(|| {
                    gst::ClockTime::SECOND.mul_div_floor(fps.denom() as u64, fps.numer() as u64)
                })
                .flatten()
        });
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

    /// Emits every caption that is ready (realtime), attaching meta to `buffer` when given.
    fn emit_ready(&self, mut buffer: Option<&mut gst::Buffer>) -> Result<(), gst::FlowError> {
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
    fn drain(&self) -> Result<(), gst::FlowError> {
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
    fn emit(
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
                if realtime {
                    // Live video keeps flowing; one failed sample is not worth stopping for.
                    gst::element_imp_warning!(
                        self,
                        gst::LibraryError::Failed,
                        ("Captioning the frame at {} failed: {}", sample.pts, e)
                    );
                    return Ok(());
                }
                // Complete mode promised a caption for every sample.
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    ("Captioning the frame at {} failed: {}", sample.pts, e)
                );
                return Err(gst::FlowError::Error);
            }
        };
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

    fn record_inference(&self, took: Duration) {
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
    fn cover_text_until(&self, buffer: &gst::Buffer) {
        let Some(pts) = buffer.pts() else { return };
        let end = pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO);
        // A zero-length GAP would not move textoverlay past this frame.
        let end = end.max(pts + gst::ClockTime::from_nseconds(1));
        let gap = lock(&self.state).text.gap_to(pts, end);
        if let Some((start, duration)) = gap {
            self.push_gap(start, duration);
        }
    }

    fn push_gap(&self, start: gst::ClockTime, duration: gst::ClockTime) {
        self.ensure_text_caps();
        gst::trace!(CAT, imp = self, "text gap {} + {}", start, duration);
        self.text_queue.push_gap(start, duration);
    }

    /// Picks utf8 unless downstream only takes pango-markup; re-picks on reconfigure.
    fn ensure_text_caps(&self) {
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

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "event {:?}", event);
        match event.view() {
            EventView::StreamStart(ev) => {
                // Both streams belong to one group; make one up if upstream did not.
                let (event, group_id) = match ev.group_id() {
                    Some(group_id) => (event.clone(), group_id),
                    None => {
                        let group_id = gst::GroupId::next();
                        let event = gst::event::StreamStart::builder(ev.stream_id())
                            .flags(ev.stream_flags())
                            .group_id(group_id)
                            .seqnum(event.seqnum())
                            .build();
                        (event, group_id)
                    }
                };
                let stream_id = self
                    .textpad
                    .create_stream_id(&*self.obj(), Some("text"))
                    .to_string();
                {
                    let mut state = lock(&self.state);
                    let info = state.video_info.take();
                    *state = State {
                        video_info: info,
                        ..State::default()
                    };
                }
                let text_start = gst::event::StreamStart::builder(&stream_id)
                    .flags(gst::StreamFlags::SPARSE)
                    .group_id(group_id)
                    .build();
                self.text_queue.push_event(text_start);
                self.srcpad.push_event(event)
            }
            EventView::Caps(ev) => {
                let info = match gst_video::VideoInfo::from_caps(ev.caps()) {
                    Ok(info) => info,
                    Err(_) => {
                        gst::error!(CAT, obj = pad, "unusable caps {}", ev.caps());
                        return false;
                    }
                };
                {
                    let mut state = lock(&self.state);
                    state.video_info = Some(info);
                    state.to_rgb = None;
                }
                // Text caps go out early: matroskamux waits for caps on every pad.
                self.ensure_text_caps();
                self.srcpad.push_event(event)
            }
            EventView::Segment(ev) => {
                match ev.segment().clone().downcast::<gst::ClockTime>() {
                    Ok(segment) => lock(&self.state).segment = segment,
                    Err(_) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ("Only TIME segments are supported")
                        );
                        return false;
                    }
                }
                self.ensure_text_caps();
                self.text_queue.push_event(event.clone());
                self.srcpad.push_event(event)
            }
            EventView::Gap(ev) => {
                // Upstream has no video for a while: the text pad has nothing there either.
                let (start, duration) = ev.get();
                let end = start + duration.unwrap_or(gst::ClockTime::from_nseconds(1));
                let gap = lock(&self.state).text.gap_to(start, end);
                if let Some((s, d)) = gap {
                    self.push_gap(s, d);
                }
                self.srcpad.push_event(event)
            }
            EventView::FlushStart(_) => {
                // Wake a chain function waiting for the model, so the flush can take the
                // stream lock.
                if let Some(client) = self.client() {
                    client.interrupt();
                }
                self.text_queue.set_flushing();
                let _ = self.textpad.push_event(event.clone());
                let _ = self.textpad.pause_task();
                self.srcpad.push_event(event)
            }
            EventView::FlushStop(_) => {
                self.reset_after_flush();
                lock(&self.flow_combiner).reset();
                let _ = self.textpad.push_event(event.clone());
                self.text_queue.reset();
                self.start_text_task();
                self.srcpad.push_event(event)
            }
            EventView::Eos(_) => {
                // Nothing is lost: captions still being computed are waited for.
                if let Err(e) = self.drain() {
                    gst::debug!(CAT, imp = self, "not draining: {:?}", e);
                }
                self.text_queue.push_event(event.clone());
                self.srcpad.push_event(event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn start_text_task(&self) {
        let pad = self.textpad.downgrade();
        let queue = self.text_queue.clone();
        let res = self.textpad.start_task(move || {
            if let Some(pad) = pad.upgrade() {
                queue.run_once(&pad);
            }
        });
        if let Err(e) = res {
            gst::error!(CAT, imp = self, "cannot start the text task: {e}");
        }
    }

    fn text_activate(&self, pad: &gst::Pad, active: bool) -> Result<(), gst::LoggableError> {
        if active {
            self.text_queue.reset();
            self.start_text_task();
        } else {
            self.text_queue.set_flushing();
            pad.stop_task()
                .map_err(|e| gst::loggable_error!(CAT, "cannot stop the text task: {e}"))?;
        }
        Ok(())
    }

    fn reset_after_flush(&self) {
        if let Some(client) = self.client() {
            client.cancel_queued();
            client.discard_ready();
            client.resume();
        }
        let mut state = lock(&self.state);
        state.pending.clear();
        state.sampler.reset();
        state.text.reset();
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let mut upstream = gst::query::Latency::new();
            if !self.sinkpad.peer_query(&mut upstream) {
                return false;
            }
            let (live, min, max) = upstream.result();
            if live {
                let ours = self.latency();
                q.set(true, min + ours, max.map(|m| m + ours));
                gst::debug!(CAT, obj = pad, "latency: upstream {min}, ours {ours}");
            } else {
                q.set(false, min, max);
            }
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    /// NULL→READY: resolve and load the model (or share an already loaded one).
    fn load_model(&self) -> Result<(), gst::StateChangeError> {
        let settings = lock(&self.settings).clone();
        let obj = self.obj();
        let device = match parse_device(&settings.device) {
            Ok(d) => d,
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Settings,
                    ("Property `device`: {}", e)
                );
                return Err(gst::StateChangeError);
            }
        };
        let post = |t: gst::ProgressType, text: &str| {
            let _ = obj.post_message(
                gst::message::Progress::builder(t, "load", text)
                    .src(&*obj)
                    .build(),
            );
        };
        post(
            gst::ProgressType::Start,
            &format!("Loading BLIP-2 model {}", settings.model),
        );
        let mut progress = |msg: &str| post(gst::ProgressType::Continue, msg);
        match engine::get_or_load_with(
            &settings.model,
            device,
            dtype_choice(settings.dtype),
            &mut progress,
        ) {
            Ok(engine) => {
                gst::info!(CAT, imp = self, "model {} ready", engine.name());
                *lock(&self.client) = Some(Arc::new(engine.client()));
                post(gst::ProgressType::Complete, "Model loaded");
                Ok(())
            }
            Err(e) => {
                post(
                    gst::ProgressType::Error,
                    &format!("Model loading failed: {e}"),
                );
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::OpenRead,
                    (
                        "Failed to load model `{}` (property `model`): {}",
                        settings.model,
                        e
                    )
                );
                Err(gst::StateChangeError)
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for Blip2Caption {
    const NAME: &'static str = "GstBlip2Caption";
    type Type = super::Blip2Caption;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .iterate_internal_links_function(|_pad, parent| {
                // Caps and allocation go to the video src pad only, never to text_src.
                let pads = parent
                    .and_then(|p| p.downcast_ref::<super::Blip2Caption>())
                    .map(|e| vec![e.imp().srcpad.clone()])
                    .unwrap_or_default();
                gst::Iterator::from_vec(pads)
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();

        let src_links = |_pad: &gst::Pad, parent: Option<&gst::Object>| {
            let pads = parent
                .and_then(|p| p.downcast_ref::<super::Blip2Caption>())
                .map(|e| vec![e.imp().sinkpad.clone()])
                .unwrap_or_default();
            gst::Iterator::from_vec(pads)
        };
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .query_function(|pad, parent, query| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .iterate_internal_links_function(src_links)
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        let textpad = gst::Pad::builder_from_template(&klass.pad_template("text_src").unwrap())
            .query_function(|pad, parent, query| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .iterate_internal_links_function(src_links)
            .activatemode_function(|pad, parent, mode, active| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic activating text_src")),
                    |imp| match mode {
                        gst::PadMode::Push => imp.text_activate(pad, active),
                        _ => Err(gst::loggable_error!(CAT, "text_src only pushes")),
                    },
                )
            })
            .build();

        let mut combiner = gst_base::UniqueFlowCombiner::new();
        combiner.add_pad(&srcpad);
        combiner.add_pad(&textpad);

        Self {
            sinkpad,
            srcpad,
            textpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            stats: Mutex::new(Stats::default()),
            client: Mutex::new(None),
            flow_combiner: Mutex::new(combiner),
            auto_latency: Mutex::new(gst::ClockTime::ZERO),
            text_queue: Arc::new(TextQueue::default()),
        }
    }
}

impl ObjectImpl for Blip2Caption {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: Lazy<Vec<glib::ParamSpec>> = Lazy::new(|| {
            let d = Settings::default();
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb(
                        "BLIP-2 model: a Hugging Face snapshot folder, or an id such as \
                         Salesforce/blip2-opt-2.7b looked up in the local Hugging Face cache \
                         ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub). Loaded on \
                         NULL→READY",
                    )
                    .default_value(Some(DEFAULT_MODEL))
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
                         or after each multiple is captioned; 0 = every frame. Also the \
                         duration of each caption",
                    )
                    .default_value(DEFAULT_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("mode", d.mode)
                    .nick("Mode")
                    .blurb("Whether video may wait for the model (auto: realtime when live)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("latency")
                    .nick("Latency")
                    .blurb(
                        "Latency in milliseconds added in live pipelines; captions later than \
                         this are re-timed and warned about. -1 = automatic (from measured \
                         inference time, announced with a latency message when it grows)",
                    )
                    .minimum(-1)
                    .maximum(i32::MAX)
                    .default_value(DEFAULT_LATENCY_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-new-tokens")
                    .nick("Max new tokens")
                    .blurb("Most tokens generated per answer")
                    .minimum(1)
                    .default_value(d.max_new_tokens)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("min-new-tokens")
                    .nick("Min new tokens")
                    .blurb("Fewest tokens generated per answer before end-of-text is allowed")
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
                         else CPU), cpu, cuda:N. Used on NULL→READY",
                    )
                    .default_value(Some("auto"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("dtype", d.dtype)
                    .nick("DType")
                    .blurb("Compute precision of the model. Used on NULL→READY")
                    .build(),
                glib::ParamSpecUInt::builder("max-batch")
                    .nick("Max batch")
                    .blurb(
                        "Most frames captioned in one model call; frames with the same prompt \
                         and settings waiting together (from any element sharing the model) \
                         are batched",
                    )
                    .minimum(1)
                    .maximum(256)
                    .default_value(DEFAULT_MAX_BATCH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "frames-seen, samples-taken, samples-dropped, captions-emitted, \
                         inference-failures, late-captions (counts), mean-inference-time and \
                         last-inference-time (ns)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "model" => s.model = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "prompt" => {
                s.prompt = value.get::<Option<String>>().unwrap().unwrap_or_default();
                gst::info!(CAT, imp = self, "prompt now {:?}", s.prompt);
            }
            "interval" => s.interval = gst::ClockTime::from_nseconds(value.get().unwrap()),
            "mode" => s.mode = value.get().unwrap(),
            "latency" => {
                let new = value.get().unwrap();
                let changed = s.latency_ms != new;
                s.latency_ms = new;
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
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "model" => s.model.to_value(),
            "prompt" => s.prompt.to_value(),
            "interval" => s.interval.nseconds().to_value(),
            "mode" => s.mode.to_value(),
            "latency" => s.latency_ms.to_value(),
            "max-new-tokens" => s.max_new_tokens.to_value(),
            "min-new-tokens" => s.min_new_tokens.to_value(),
            "num-beams" => s.num_beams.to_value(),
            "repetition-penalty" => s.repetition_penalty.to_value(),
            "device" => s.device.to_value(),
            "dtype" => s.dtype.to_value(),
            "max-batch" => s.max_batch.to_value(),
            "stats" => lock(&self.stats).to_structure().to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
        obj.add_pad(&self.textpad).unwrap();
    }
}

impl GstObjectImpl for Blip2Caption {}

impl ElementImpl for Blip2Caption {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: Lazy<gst::subclass::ElementMetadata> = Lazy::new(|| {
            gst::subclass::ElementMetadata::new(
                "BLIP-2 video captioner",
                "Filter/Analyzer/Video/Text",
                "Captions sampled video frames with BLIP-2; passes video through and outputs \
                 timed text, buffer meta and bus messages",
                "gst-blip2 developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: Lazy<Vec<gst::PadTemplate>> = Lazy::new(|| {
            // Every raw format the video converter can unpack: only sampled frames are
            // converted to RGB, the video itself passes untouched.
            let formats = gst_video::VideoFormat::iter_raw().map(|f| f.to_str());
            let video = gst::Caps::builder("video/x-raw")
                .field("format", gst::List::new(formats))
                .field("width", gst::IntRange::new(1, i32::MAX))
                .field("height", gst::IntRange::new(1, i32::MAX))
                .field(
                    "framerate",
                    gst::FractionRange::new(
                        gst::Fraction::new(0, 1),
                        gst::Fraction::new(i32::MAX, 1),
                    ),
                )
                .build();
            let text = gst::Caps::builder("text/x-raw")
                .field("format", gst::List::new(["utf8", "pango-markup"]))
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &video,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &video,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "text_src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &text,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::debug!(CAT, imp = self, "{:?}", transition);
        match transition {
            gst::StateChange::NullToReady => self.load_model()?,
            gst::StateChange::ReadyToPaused => {
                if let Some(client) = self.client() {
                    client.resume();
                }
                *lock(&self.state) = State::default();
                *lock(&self.stats) = Stats::default();
                lock(&self.flow_combiner).reset();
            }
            gst::StateChange::PausedToReady => {
                // Before the parent deactivates the pads: a chain function waiting for the
                // model holds the stream lock and must be woken first.
                if let Some(client) = self.client() {
                    client.interrupt();
                    client.cancel_queued();
                }
            }
            _ => (),
        }
        let res = self.parent_change_state(transition);
        match transition {
            gst::StateChange::PausedToReady => {
                let mut state = lock(&self.state);
                let info = state.video_info.take();
                *state = State {
                    video_info: info,
                    ..State::default()
                };
            }
            gst::StateChange::ReadyToNull => {
                // The last element using a model frees it.
                *lock(&self.client) = None;
            }
            gst::StateChange::NullToReady if res.is_err() => {
                *lock(&self.client) = None;
            }
            _ => (),
        }
        res
    }
}
