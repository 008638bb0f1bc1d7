//! Streaming state (reset on flushes and stream starts), samples in flight and statistics.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::super::convert::ToRgb;
use super::super::text::{Layout, SlotId, TextTrack};
use super::super::timeline::Sampler;
use crate::engine::Ticket;

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
    pub(super) sample: Option<(Ticket, Sample)>,
}

/// Streaming state, reset on flushes and stream starts.
pub(super) struct State {
    pub(super) video_info: Option<gst_video::VideoInfo>,
    pub(super) to_rgb: Option<ToRgb>,
    pub(super) segment: gst::FormattedSegment<gst::ClockTime>,
    pub(super) sampler: Sampler,
    pub(super) text: TextTrack,
    /// Whether `text`'s layout has been chosen for this stream (at the first text caps).
    pub(super) text_layout_chosen: bool,
    /// Samples submitted and not answered yet, by ticket (realtime mode).
    pub(super) pending: BTreeMap<Ticket, Sample>,
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
}

impl Default for State {
    fn default() -> Self {
        Self {
            video_info: None,
            to_rgb: None,
            segment: gst::FormattedSegment::new(),
            sampler: Sampler::default(),
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
        }
    }
}
