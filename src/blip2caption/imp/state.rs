//! Streaming state (reset on flushes and stream starts), samples in flight and statistics.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::super::convert::ToRgb;
use super::super::scene_gate::{MeterSlot, SceneGate};
use super::super::text::{Layout, SlotId, TextTrack};
use super::super::timeline::Sampler;
use crate::engine::{Outcome, Request, Ticket};

#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub(super) frames_seen: u64,
    pub(super) samples_taken: u64,
    pub(super) samples_dropped: u64,
    pub(super) captions_emitted: u64,
    pub(super) inference_failures: u64,
    pub(super) late_captions: u64,
    pub(super) inference_total: Duration,
    pub(super) inference_count: u64,
    pub(super) inference_last: Duration,
    pub(super) inference_max: Duration,
}

impl Stats {
    pub(super) fn to_structure(&self) -> gst::Structure {
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
            .field("max-inference-time", self.inference_max.as_nanos() as u64)
            .build()
    }
}

/// A frame handed to the model, remembered until its caption comes back.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) pts: gst::ClockTime,
    pub(super) running_time: gst::ClockTime,
    /// Position in the stream (the segment's time), for applications that show it.
    pub(super) stream_time: Option<gst::ClockTime>,
    /// Until the next scheduled sample (`None`: no further sample is due).
    pub(super) duration: Option<gst::ClockTime>,
    /// Its place on the text timeline.
    pub(super) slot: SlotId,
    /// When it was taken (how late its answer is: automatic latency).
    pub(super) submitted: std::time::Instant,
}

/// A sample handed to the model as one request per prompt, and the answers as they come back.
#[derive(Debug)]
pub(super) struct Asked {
    pub(super) sample: Sample,
    tickets: Vec<Ticket>,
    outcomes: Vec<Option<Outcome>>,
}

impl Asked {
    pub(super) fn new(sample: Sample, tickets: Vec<Ticket>) -> Self {
        let outcomes = tickets.iter().map(|_| None).collect();
        Self {
            sample,
            tickets,
            outcomes,
        }
    }

    /// The tickets of its requests, once they are handed to the model (complete mode prepares
    /// a sample first and hands it over with the next chunk).
    pub(super) fn handed_over(&mut self, tickets: Vec<Ticket>) {
        self.outcomes = tickets.iter().map(|_| None).collect();
        self.tickets = tickets;
    }

    /// Whether its requests are with the model.
    pub(super) fn handed(&self) -> bool {
        !self.tickets.is_empty()
    }

    pub(super) fn has(&self, ticket: Ticket) -> bool {
        self.tickets.contains(&ticket)
    }

    /// Files `outcome` if it answers one of this sample's requests (false: it does not, and is
    /// dropped).
    pub(super) fn file(&mut self, outcome: Outcome) -> bool {
        match self.tickets.iter().position(|&t| t == outcome.ticket) {
            Some(i) => {
                self.outcomes[i] = Some(outcome);
                true
            }
            None => false,
        }
    }

    /// The first request still without an answer.
    pub(super) fn missing(&self) -> Option<Ticket> {
        self.tickets
            .iter()
            .zip(&self.outcomes)
            .find(|(_, o)| o.is_none())
            .map(|(t, _)| *t)
    }

    /// Every answer, in prompt order, once all are back.
    pub(super) fn answers(self) -> Result<(Sample, Vec<Outcome>), Sample> {
        if self.missing().is_some() {
            return Err(self.sample);
        }
        let outcomes = self.outcomes.into_iter().flatten().collect();
        Ok((self.sample, outcomes))
    }
}

/// Where a video frame sits on the timeline.
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameTimes {
    /// The buffer's PTS, or the stand-in for a frame without one.
    pub(super) pts: gst::ClockTime,
    /// Buffer duration, else one frame at the caps' framerate.
    pub(super) duration: Option<gst::ClockTime>,
    /// `None` outside the segment (not shown, so neither captioned nor covered by text).
    pub(super) running_time: Option<gst::ClockTime>,
}

/// A frame waiting inside the element (complete mode) until the caption of the sample taken
/// from it, or from an earlier frame, is back: frames leave in order.
pub(super) struct Held {
    pub(super) buffer: gst::Buffer,
    pub(super) times: FrameTimes,
    pub(super) sample: Option<HeldSample>,
}

/// The sample of a held frame: prepared, then handed to the model with the next chunk.
pub(super) struct HeldSample {
    pub(super) asked: Asked,
    /// Its requests (one per prompt) until they are handed to the model; `asked` has their
    /// tickets from then on.
    pub(super) unsent: Option<Vec<Request>>,
}

/// Streaming state, reset on flushes and stream starts.
pub(super) struct State {
    pub(super) video_info: Option<gst_video::VideoInfo>,
    pub(super) to_rgb: Option<ToRgb>,
    pub(super) segment: gst::FormattedSegment<gst::ClockTime>,
    pub(super) sampler: Sampler,
    /// `scene-threshold`: the last sampled picture, and the measure for these caps.
    pub(super) scene_gate: SceneGate,
    pub(super) scene_meter: MeterSlot,
    /// A frame the scene measure could not read was warned about (once per stream).
    pub(super) scene_warned: bool,
    pub(super) text: TextTrack,
    /// Whether `text`'s layout has been chosen for this stream (at the first text caps).
    pub(super) text_layout_chosen: bool,
    /// Samples submitted and not fully answered yet, by their first ticket (realtime mode).
    pub(super) pending: BTreeMap<Ticket, Asked>,
    /// Frames waiting for their captions, oldest first (complete mode).
    pub(super) held: VecDeque<Held>,
    /// Where the last frame that went out ended: the end of the stream at EOS.
    pub(super) last_frame_end: Option<gst::ClockTime>,
    /// Decided at the first buffer of a stream: realtime (live or forced) or complete.
    pub(super) realtime: Option<bool>,
    pub(super) live: bool,
    pub(super) text_markup: bool,
    pub(super) text_caps_sent: bool,
    /// Where the previous frame ended: the stand-in PTS of a frame that has none.
    pub(super) next_pts: Option<gst::ClockTime>,
    /// The last inference error posted as a warning (realtime), until a caption succeeds.
    pub(super) last_failure: Option<String>,
    /// A failed caption was posted as an ERROR: this stream is over until a flush, the next
    /// stream or a restart, so no later sample is waited for and no second ERROR repeats it.
    pub(super) failed: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            video_info: None,
            to_rgb: None,
            segment: gst::FormattedSegment::new(),
            sampler: Sampler::default(),
            scene_gate: SceneGate::default(),
            scene_meter: MeterSlot::default(),
            scene_warned: false,
            text: TextTrack::new(Layout::Cues),
            text_layout_chosen: false,
            pending: BTreeMap::new(),
            held: VecDeque::new(),
            last_frame_end: None,
            realtime: None,
            live: false,
            text_markup: false,
            text_caps_sent: false,
            next_pts: None,
            last_failure: None,
            failed: false,
        }
    }
}
