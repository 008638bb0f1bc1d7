//! What goes out on `text_src` and when, decided apart from the pads so the timing rules can be
//! unit-tested. Two layouts:
//!
//! - **Cues**: one buffer per caption, from its frame to the next sample (or the end of the
//!   stream), sent once that end is known. A subtitle file gets exactly one cue per caption with
//!   its true end. Nothing downstream waits for it: between cues the text pad only sends a
//!   zero-length GAP at its position per frame (so sinks preroll).
//! - **Per-frame**: one buffer per outgoing video frame carrying the caption shown on it ("" when
//!   none). The text advances with the video frame by frame, which is what elements that join
//!   text and video need: aggregator muxers (qtmux/mp4mux) advance a subtitle track only on real
//!   buffers, and overlays with `wait-text` hold each frame until text covers it.
//!
//! With `merge-repeats`, a cue whose next sample has the same text becomes one cue over both
//! (cues only: per-frame text repeats the caption on every frame anyway). A cue then waits for
//! the next sample's answer before it goes out.

use std::collections::VecDeque;

use gst::ClockTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Cues,
    PerFrame,
}

/// One thing to send on the text pad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextItem {
    Text {
        pts: ClockTime,
        duration: Option<ClockTime>,
        text: String,
    },
    Gap {
        pts: ClockTime,
        duration: ClockTime,
    },
}

/// What became of a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A caption to show.
    Text(String),
    /// The model answered nothing: nothing is shown for this sample.
    Nothing,
    /// No answer (dropped in realtime mode, or failed): its span has no cue; per-frame keeps
    /// showing what was shown.
    Lost,
}

/// Identifies a sample's slot on the text timeline.
pub type SlotId = u64;

#[derive(Debug)]
struct Slot {
    id: SlotId,
    start: ClockTime,
    end: Option<ClockTime>,
    resolution: Option<Resolution>,
    /// The prompts this sample was asked: `merge-repeats` merges equal answers to the same
    /// prompts only (`prompts` may change while playing).
    asked: Vec<String>,
}

#[derive(Debug)]
pub struct TextTrack {
    layout: Layout,
    /// Cues not sent yet, oldest first; the last one is open while its end is unknown.
    slots: VecDeque<Slot>,
    next_id: SlotId,
    /// The end of the last item sent in this segment.
    position: Option<ClockTime>,
    /// Per-frame: the caption on outgoing frames, and until when (`None`: until replaced).
    shown: Option<(String, Option<ClockTime>)>,
    /// `merge-repeats`: a cue followed by the same text extends over it.
    merge_repeats: bool,
}

impl TextTrack {
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            slots: VecDeque::new(),
            next_id: 0,
            position: None,
            shown: None,
            merge_repeats: false,
        }
    }

    /// Flush: everything not sent is dropped.
    pub fn reset(&mut self) {
        *self = Self {
            merge_repeats: self.merge_repeats,
            ..Self::new(self.layout)
        };
    }

    /// Sets `merge-repeats` (read at every frame, so a change applies from the next cue that
    /// goes out). Returns the cues that were only waiting to be merged.
    pub fn set_merge_repeats(&mut self, on: bool) -> Vec<TextItem> {
        if self.merge_repeats == on {
            return Vec::new();
        }
        self.merge_repeats = on;
        self.flush_ready()
    }

    /// A frame at `pts` was sampled: the open cue ends here. Returns the new slot.
    pub fn sample(&mut self, pts: ClockTime) -> (SlotId, Vec<TextItem>) {
        if let Some(open) = self.slots.back_mut().filter(|s| s.end.is_none()) {
            open.end = Some(pts.max(open.start));
        }
        let id = self.next_id;
        self.next_id += 1;
        if self.layout == Layout::Cues {
            self.slots.push_back(Slot {
                id,
                start: pts,
                end: None,
                resolution: None,
                asked: Vec::new(),
            });
        }
        (id, self.flush_ready())
    }

    /// The sample `id` has its answer. Per-frame shows a caption from the next outgoing frame
    /// until `until` (`None`: until another caption replaces it).
    pub fn resolve(
        &mut self,
        id: SlotId,
        resolution: Resolution,
        until: Option<ClockTime>,
    ) -> Vec<TextItem> {
        self.resolve_asked(id, Vec::new(), resolution, until)
    }

    /// [`Self::resolve`] for a sample asked `asked` (its prompts, in order): with
    /// `merge-repeats`, only answers to the same prompts extend each other's cue.
    pub fn resolve_asked(
        &mut self,
        id: SlotId,
        asked: Vec<String>,
        resolution: Resolution,
        until: Option<ClockTime>,
    ) -> Vec<TextItem> {
        match self.layout {
            Layout::Cues => {
                // A slot that is gone belongs to a sample from before a flush.
                if let Some(slot) = self.slots.iter_mut().find(|s| s.id == id) {
                    slot.resolution = Some(resolution);
                    slot.asked = asked;
                }
                self.flush_ready()
            }
            Layout::PerFrame => {
                match resolution {
                    Resolution::Text(text) => self.shown = Some((text, until)),
                    Resolution::Nothing => self.shown = None,
                    Resolution::Lost => (),
                }
                Vec::new()
            }
        }
    }

    /// Upstream sent a GAP instead of frames: the text has nothing there either (per-frame
    /// sends a GAP of its own, which aggregators count as data; cues treat it as a frame).
    pub fn gap(&mut self, pts: ClockTime, duration: Option<ClockTime>) -> Vec<TextItem> {
        if self.layout == Layout::PerFrame {
            let duration = duration.unwrap_or(ClockTime::ZERO);
            self.position = Some(pts.saturating_add(duration));
            return vec![TextItem::Gap { pts, duration }];
        }
        self.frame(pts, duration)
    }

    /// A video frame is about to go out: what the text pad sends before it.
    pub fn frame(&mut self, pts: ClockTime, duration: Option<ClockTime>) -> Vec<TextItem> {
        let end = pts.saturating_add(duration.unwrap_or(ClockTime::ZERO));
        match self.layout {
            Layout::PerFrame => {
                if self
                    .shown
                    .as_ref()
                    .is_some_and(|(_, until)| until.is_some_and(|u| u <= pts))
                {
                    self.shown = None;
                }
                let text = self.shown.as_ref().map_or("", |(t, _)| t).to_owned();
                self.position = Some(end);
                vec![TextItem::Text {
                    pts,
                    duration,
                    text,
                }]
            }
            Layout::Cues => {
                // A cue still to come starts at the front slot: stay there (zero-length GAP)
                // so the stream stays monotonic; with none pending, cover the frame.
                let here = match self.slots.front() {
                    Some(slot) => slot.start,
                    None => self.position.unwrap_or(pts),
                };
                let cover_to = if self.slots.is_empty() { end } else { here };
                let to = cover_to.max(here);
                self.position = Some(to);
                vec![TextItem::Gap {
                    pts: here,
                    duration: to - here,
                }]
            }
        }
    }

    /// The stream (or segment) ends at `end`: the open cue ends there, and every cue goes out
    /// (a slot still without an answer becomes a GAP). The next segment starts afresh.
    pub fn end(&mut self, end: ClockTime) -> Vec<TextItem> {
        if let Some(open) = self.slots.back_mut().filter(|s| s.end.is_none()) {
            open.end = Some(end.max(open.start));
        }
        for slot in &mut self.slots {
            slot.resolution.get_or_insert(Resolution::Lost);
        }
        let items = self.flush_ready();
        self.position = None;
        self.shown = None;
        items
    }

    fn flush_ready(&mut self) -> Vec<TextItem> {
        let mut items = Vec::new();
        while let Some(slot) = self.slots.front() {
            let (Some(end), Some(resolution)) = (slot.end, &slot.resolution) else {
                break;
            };
            if self.merge_repeats
                && let Resolution::Text(text) = resolution
                && let Some(next) = self.slots.get(1)
            {
                match &next.resolution {
                    // The next answer may repeat this one: wait for it.
                    None => break,
                    Some(Resolution::Text(t))
                        if t == text && next.asked == slot.asked && next.start == end =>
                    {
                        let next = self.slots.remove(1).expect("checked above");
                        self.slots[0].end = next.end;
                        continue;
                    }
                    Some(_) => (),
                }
            }
            let slot = self.slots.pop_front().expect("checked above");
            let start = slot.start;
            self.position = Some(end);
            if end <= start {
                continue;
            }
            let duration = end - start;
            items.push(match slot.resolution {
                Some(Resolution::Text(text)) if !text.is_empty() => TextItem::Text {
                    pts: start,
                    duration: Some(duration),
                    text,
                },
                _ => TextItem::Gap {
                    pts: start,
                    duration,
                },
            });
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> ClockTime {
        ClockTime::from_mseconds(v)
    }

    fn text(pts: u64, dur: u64, t: &str) -> TextItem {
        TextItem::Text {
            pts: ms(pts),
            duration: Some(ms(dur)),
            text: t.into(),
        }
    }

    fn gap(pts: u64, dur: u64) -> TextItem {
        TextItem::Gap {
            pts: ms(pts),
            duration: ms(dur),
        }
    }

    #[test]
    fn cues_go_out_when_their_end_is_known() {
        let mut t = TextTrack::new(Layout::Cues);
        let (a, out) = t.sample(ms(0));
        assert!(out.is_empty());
        assert!(t.resolve(a, Resolution::Text("a".into()), None).is_empty());
        // Between samples only a zero-length GAP at the cue's start.
        assert_eq!(t.frame(ms(0), Some(ms(100))), vec![gap(0, 0)]);
        assert_eq!(t.frame(ms(100), Some(ms(100))), vec![gap(0, 0)]);
        let (b, out) = t.sample(ms(300));
        assert_eq!(out, vec![text(0, 300, "a")]);
        t.resolve(b, Resolution::Nothing, None);
        // The stream ends after the frame at 400 ms: the last cue ends there, not at the next
        // interval boundary.
        assert_eq!(t.end(ms(500)), vec![gap(300, 200)]);
    }

    #[test]
    fn cues_keep_order_when_answers_come_back_late() {
        let mut t = TextTrack::new(Layout::Cues);
        let (a, _) = t.sample(ms(0));
        let (b, _) = t.sample(ms(1000));
        let (_c, _) = t.sample(ms(2000));
        assert!(t.resolve(b, Resolution::Text("b".into()), None).is_empty());
        assert_eq!(
            t.resolve(a, Resolution::Lost, None),
            vec![gap(0, 1000), text(1000, 1000, "b")]
        );
        // Realtime EOS with the last one never answered.
        assert_eq!(t.end(ms(2500)), vec![gap(2000, 500)]);
    }

    #[test]
    fn cues_cover_frames_when_nothing_is_pending() {
        let mut t = TextTrack::new(Layout::Cues);
        assert_eq!(t.frame(ms(0), Some(ms(40))), vec![gap(0, 40)]);
        assert_eq!(t.frame(ms(40), Some(ms(40))), vec![gap(40, 40)]);
        let (a, _) = t.sample(ms(80));
        t.resolve(a, Resolution::Text("x".into()), None);
        assert_eq!(t.frame(ms(80), Some(ms(40))), vec![gap(80, 0)]);
        assert_eq!(t.end(ms(120)), vec![text(80, 40, "x")]);
        // A stale answer (from before a flush) changes nothing.
        t.reset();
        assert!(t.resolve(a, Resolution::Text("y".into()), None).is_empty());
    }

    #[test]
    fn merge_repeats_makes_one_cue_of_equal_answers() {
        let mut t = TextTrack::new(Layout::Cues);
        assert!(t.set_merge_repeats(true).is_empty());
        let mut out = vec![];
        // A still at 1 s intervals: five equal answers, then the stream ends at 5 s.
        for i in 0..5 {
            let (id, items) = t.sample(ms(i * 1000));
            out.extend(items);
            out.extend(t.resolve(id, Resolution::Text("car".into()), None));
            // Frames between samples stay at the cue's start.
            assert_eq!(t.frame(ms(i * 1000 + 500), Some(ms(500))), vec![gap(0, 0)]);
        }
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(t.end(ms(5000)), vec![text(0, 5000, "car")]);
    }

    #[test]
    fn merge_repeats_keeps_equal_answers_to_different_prompts_apart() {
        let mut t = TextTrack::new(Layout::Cues);
        t.set_merge_repeats(true);
        let mut out = vec![];
        // `prompts` changed while playing after the second sample; the answer text did not.
        let asked = [["q1"], ["q1"], ["q2"]];
        for (i, prompts) in asked.iter().enumerate() {
            let (id, items) = t.sample(ms(i as u64 * 1000));
            out.extend(items);
            let prompts = prompts.iter().map(|p| p.to_string()).collect();
            out.extend(t.resolve_asked(id, prompts, Resolution::Text("a".into()), None));
        }
        assert_eq!(out, vec![text(0, 2000, "a")]);
        assert_eq!(t.end(ms(3000)), vec![text(2000, 1000, "a")]);
    }

    #[test]
    fn merge_repeats_starts_a_new_cue_when_the_answer_changes() {
        let mut t = TextTrack::new(Layout::Cues);
        t.set_merge_repeats(true);
        let mut out = vec![];
        let answers = ["a", "a", "b", "b", "b", "a"];
        for (i, answer) in answers.iter().enumerate() {
            let (id, items) = t.sample(ms(i as u64 * 1000));
            out.extend(items);
            out.extend(t.resolve(id, Resolution::Text(answer.to_string()), None));
        }
        // "a" goes out once "b" is known, "b" once the second "a" is.
        assert_eq!(out, vec![text(0, 2000, "a"), text(2000, 3000, "b")]);
        assert_eq!(t.end(ms(6500)), vec![text(5000, 1500, "a")]);
    }

    #[test]
    fn merge_repeats_waits_for_late_answers_and_never_bridges_a_gap() {
        let mut t = TextTrack::new(Layout::Cues);
        t.set_merge_repeats(true);
        let (a, _) = t.sample(ms(0));
        let (b, _) = t.sample(ms(1000));
        let (c, _) = t.sample(ms(2000));
        let (d, _) = t.sample(ms(3000));
        assert!(t.resolve(a, Resolution::Text("x".into()), None).is_empty());
        // b is not answered yet: a waits even though c is.
        assert!(t.resolve(c, Resolution::Text("x".into()), None).is_empty());
        // b was dropped: no cue bridges its span, c starts afresh.
        assert_eq!(
            t.resolve(b, Resolution::Lost, None),
            vec![text(0, 1000, "x"), gap(1000, 1000)]
        );
        assert_eq!(
            t.resolve(d, Resolution::Nothing, None),
            vec![text(2000, 1000, "x")]
        );
        let (e, out) = t.sample(ms(4000));
        assert_eq!(out, vec![gap(3000, 1000)]);
        assert!(t.resolve(e, Resolution::Text("y".into()), None).is_empty());
        // e waits for the next answer, and the text pad stays at its start meanwhile.
        let (_f, out) = t.sample(ms(5000));
        assert!(out.is_empty());
        assert_eq!(t.frame(ms(5000), Some(ms(40))), vec![gap(4000, 0)]);
        // Turning merging off lets the waiting cue go at once.
        assert_eq!(t.set_merge_repeats(false), vec![text(4000, 1000, "y")]);
        assert_eq!(t.end(ms(6000)), vec![gap(5000, 1000)]);
    }

    #[test]
    fn per_frame_carries_the_shown_caption_on_every_frame() {
        let mut t = TextTrack::new(Layout::PerFrame);
        let f = |t: &mut TextTrack, pts| t.frame(ms(pts), Some(ms(100)));
        assert_eq!(f(&mut t, 0), vec![text(0, 100, "")]);
        let (a, _) = t.sample(ms(100));
        t.resolve(a, Resolution::Text("a".into()), None);
        assert_eq!(f(&mut t, 100), vec![text(100, 100, "a")]);
        assert_eq!(f(&mut t, 200), vec![text(200, 100, "a")]);
        let (b, _) = t.sample(ms(300));
        t.resolve(b, Resolution::Lost, None);
        assert_eq!(f(&mut t, 300), vec![text(300, 100, "a")]);
        let (c, _) = t.sample(ms(400));
        t.resolve(c, Resolution::Nothing, None);
        assert_eq!(f(&mut t, 400), vec![text(400, 100, "")]);
        // Realtime: shown for a limited time.
        let (d, _) = t.sample(ms(500));
        t.resolve(d, Resolution::Text("d".into()), Some(ms(700)));
        assert_eq!(f(&mut t, 600), vec![text(600, 100, "d")]);
        assert_eq!(f(&mut t, 700), vec![text(700, 100, "")]);
    }
}
