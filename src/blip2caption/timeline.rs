//! Which frames get sampled, and where the text pad stands on the timeline. Kept apart from the
//! pad plumbing so the rules are easy to read and to unit-test.

use gst::ClockTime;

/// Samples the first frame at or after each multiple of `interval` in running time
/// (`interval` 0: every frame).
#[derive(Debug, Default)]
pub struct Sampler {
    next: Option<ClockTime>,
}

impl Sampler {
    /// The running time from which the next frame is sampled (`None` with interval 0).
    pub fn next_boundary(&self) -> Option<ClockTime> {
        self.next
    }

    /// Starts over (flush, new stream): the next frame is sampled.
    pub fn reset(&mut self) {
        self.next = None;
    }

    pub fn should_sample(&mut self, running_time: ClockTime, interval: ClockTime) -> bool {
        if self.next.is_some_and(|next| running_time < next) {
            return false;
        }
        self.next = if interval.is_zero() {
            None
        } else {
            // The next multiple strictly after this frame: a frame late by more than one
            // interval does not cause a burst of samples.
            let k = running_time.nseconds() / interval.nseconds() + 1;
            Some(ClockTime::from_nseconds(k * interval.nseconds()))
        };
        true
    }
}

/// How long a caption for the frame at `running_time` stays up: until the next sample. The next
/// sample is the first frame at or after `next_boundary`, so with a known `frame_duration` the
/// span is rounded up to whole frames (remainders under 1 µs are timestamp rounding, not a
/// frame: 7 fps frames sit at truncated multiples of 142 857 142 ns).
pub fn caption_duration(
    running_time: ClockTime,
    next_boundary: ClockTime,
    frame_duration: Option<ClockTime>,
) -> ClockTime {
    let span = next_boundary.saturating_sub(running_time);
    match frame_duration.filter(|d| !d.is_zero()) {
        Some(fd) => {
            let (span_ns, fd_ns) = (span.nseconds(), fd.nseconds());
            let frames = (span_ns + fd_ns).saturating_sub(1_000) / fd_ns;
            ClockTime::from_nseconds(span_ns.max(frames * fd_ns))
        }
        None => span,
    }
}

/// The text pad's position (buffer timestamps): captions and GAPs only move it forward, so
/// downstream sees a monotonic sparse stream.
#[derive(Debug, Default)]
pub struct TextTimeline {
    position: Option<ClockTime>,
}

/// Where a caption goes on the text pad.
#[derive(Debug, PartialEq, Eq)]
pub struct Placement {
    pub pts: ClockTime,
    pub duration: ClockTime,
    /// How far the caption had to be moved later than its frame (zero when on time).
    pub moved_by: ClockTime,
}

impl TextTimeline {
    pub fn reset(&mut self) {
        self.position = None;
    }

    #[cfg(test)]
    pub fn position(&self) -> Option<ClockTime> {
        self.position
    }

    /// Places a caption for a frame at `pts`: on time when the text pad has not gone past it,
    /// otherwise re-timed to the current position.
    pub fn place(&mut self, pts: ClockTime, duration: ClockTime) -> Placement {
        let start = self.position.map_or(pts, |pos| pos.max(pts));
        self.position = Some(start + duration);
        Placement {
            pts: start,
            duration,
            moved_by: start - pts,
        }
    }

    /// The GAP (start, duration) that covers the text pad up to `end`, if it is not covered yet.
    /// `from` is where the gap starts when nothing was sent yet.
    pub fn gap_to(&mut self, from: ClockTime, end: ClockTime) -> Option<(ClockTime, ClockTime)> {
        let start = self.position.unwrap_or(from);
        if end <= start {
            return None;
        }
        self.position = Some(end);
        Some((start, end - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(frame_ns: u64, interval_ns: u64, frames: u64) -> Vec<u64> {
        let mut s = Sampler::default();
        (0..frames)
            .map(|i| i * frame_ns)
            .filter(|&t| {
                s.should_sample(
                    ClockTime::from_nseconds(t),
                    ClockTime::from_nseconds(interval_ns),
                )
            })
            .collect()
    }

    #[test]
    fn samples_first_frame_at_or_after_each_multiple() {
        // 30 fps with truncated frame times: 99_999_999 is just before the 100 ms multiple,
        // so the frame after it is the one sampled.
        let got = sampled(33_333_333, 100_000_000, 8);
        assert_eq!(got, vec![0, 133_333_332, 233_333_331]);
    }

    #[test]
    fn zero_interval_samples_every_frame() {
        assert_eq!(sampled(40_000_000, 0, 4).len(), 4);
    }

    #[test]
    fn exact_multiples() {
        // 25 fps, 1 s: frames 0, 25, 50.
        let got = sampled(40_000_000, 1_000_000_000, 60);
        assert_eq!(got, vec![0, 1_000_000_000, 2_000_000_000]);
    }

    #[test]
    fn caption_lasts_until_the_next_sample() {
        let ms = ClockTime::from_mseconds;
        // 4 fps, 300 ms: samples at 0, 500, 750 ms.
        assert_eq!(caption_duration(ms(0), ms(300), Some(ms(250))), ms(500));
        assert_eq!(caption_duration(ms(500), ms(600), Some(ms(250))), ms(250));
        // 7 fps, 1 s: exactly one second, not eight frames.
        let fd = ClockTime::from_nseconds(142_857_142);
        assert_eq!(caption_duration(ms(0), ms(1000), Some(fd)), ms(1000));
        assert_eq!(caption_duration(ms(0), ms(1000), None), ms(1000));
    }

    #[test]
    fn timeline_retimes_late_captions() {
        let mut t = TextTimeline::default();
        let ms = ClockTime::from_mseconds;
        assert_eq!(t.gap_to(ms(0), ms(40)), Some((ms(0), ms(40))));
        assert_eq!(t.gap_to(ms(0), ms(40)), None);
        let p = t.place(ms(0), ms(1000));
        assert_eq!(
            p,
            Placement {
                pts: ms(40),
                duration: ms(1000),
                moved_by: ms(40)
            }
        );
        let p = t.place(ms(2000), ms(1000));
        assert_eq!(p.moved_by, ms(0));
        assert_eq!(t.position(), Some(ms(3000)));
    }
}
