//! Which frames get sampled. Kept apart from the pad plumbing so the rule is easy to read and
//! to unit-test.

use gst::ClockTime;

/// Samples the first frame at or after each multiple of `interval` in running time
/// (`interval` 0: every frame). The interval is read at every frame, so a change applies from
/// the next frame: the next sample is due at the first multiple of the *current* interval after
/// the last sample.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Running time of the last sampled frame.
    last: Option<ClockTime>,
}

impl Sampler {
    /// Starts over (flush, new pipeline run): the next frame is sampled.
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// The running time from which the next frame is due, `None` when none ever is (an
    /// interval whose next multiple is past the clock's range, e.g. u64::MAX: only the first
    /// frame is sampled). With interval 0 every frame is due.
    pub fn next_boundary(&self, interval_ns: u64) -> Option<ClockTime> {
        let Some(last) = self.last else {
            return Some(ClockTime::ZERO);
        };
        if interval_ns == 0 {
            return Some(last);
        }
        // The next multiple strictly after the last sample: a frame late by more than one
        // interval does not cause a burst of samples.
        (last.nseconds() / interval_ns + 1)
            .checked_mul(interval_ns)
            .filter(|&ns| ns != u64::MAX) // u64::MAX is GST_CLOCK_TIME_NONE
            .map(ClockTime::from_nseconds)
    }

    pub fn should_sample(&mut self, running_time: ClockTime, interval_ns: u64) -> bool {
        let due = match self.last {
            None => true,
            // Running time went back without a flush (a new segment from a confused upstream):
            // start over rather than wait for the old schedule.
            Some(last) if running_time < last => true,
            Some(_) if interval_ns == 0 => true,
            Some(_) => self
                .next_boundary(interval_ns)
                .is_some_and(|next| running_time >= next),
        };
        if due {
            self.last = Some(running_time);
        }
        due
    }
}

/// How long a caption for the frame at `running_time` is expected to stay up: until the next
/// sample, the first frame at or after `next_boundary`. With a known `frame_duration` the span
/// is rounded up to whole frames (remainders under 1 µs are timestamp rounding, not a frame: 7
/// fps frames sit at truncated multiples of 142 857 142 ns), and it is never shorter than one
/// frame. `None` when no next sample is due.
pub fn caption_duration(
    running_time: ClockTime,
    next_boundary: Option<ClockTime>,
    frame_duration: Option<ClockTime>,
) -> Option<ClockTime> {
    let span = next_boundary?.saturating_sub(running_time);
    Some(match frame_duration.filter(|d| !d.is_zero()) {
        Some(fd) => {
            let (span_ns, fd_ns) = (span.nseconds(), fd.nseconds());
            let frames = (span_ns.saturating_add(fd_ns).saturating_sub(1_000) / fd_ns).max(1);
            ClockTime::from_nseconds(span_ns.max(frames.saturating_mul(fd_ns)))
        }
        None => span,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(frame_ns: u64, interval_ns: u64, frames: u64) -> Vec<u64> {
        let mut s = Sampler::default();
        (0..frames)
            .map(|i| i * frame_ns)
            .filter(|&t| s.should_sample(ClockTime::from_nseconds(t), interval_ns))
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
    fn largest_interval_samples_only_the_first_frame() {
        assert_eq!(sampled(40_000_000, u64::MAX, 100), vec![0]);
        assert_eq!(sampled(40_000_000, u64::MAX - 1, 100), vec![0]);
        let s = Sampler::default();
        assert_eq!(s.next_boundary(u64::MAX), Some(ClockTime::ZERO));
    }

    #[test]
    fn interval_change_applies_from_the_next_frame() {
        let ms = ClockTime::from_mseconds;
        let mut s = Sampler::default();
        assert!(s.should_sample(ms(0), 100_000_000_000));
        assert!(!s.should_sample(ms(500), 100_000_000_000));
        // 100 s → 1 s at 3.5 s: due at once (the 1 s multiple after the last sample is past).
        assert!(s.should_sample(ms(3500), 1_000_000_000));
        assert!(!s.should_sample(ms(3900), 1_000_000_000));
        assert!(s.should_sample(ms(4000), 1_000_000_000));
        // 1 s → 10 s: the next one at 10 s, not at 5 s.
        assert!(!s.should_sample(ms(5000), 10_000_000_000));
        assert!(s.should_sample(ms(10_000), 10_000_000_000));
    }

    #[test]
    fn running_time_going_back_starts_over() {
        let ms = ClockTime::from_mseconds;
        let mut s = Sampler::default();
        assert!(s.should_sample(ms(9000), 1_000_000_000));
        assert!(s.should_sample(ms(10), 1_000_000_000));
        assert!(!s.should_sample(ms(500), 1_000_000_000));
    }

    #[test]
    fn caption_lasts_until_the_next_sample_and_at_least_a_frame() {
        let ms = ClockTime::from_mseconds;
        let d = |rt, next, fd| caption_duration(rt, Some(next), fd).unwrap();
        // 4 fps, 300 ms: samples at 0, 500, 750 ms.
        assert_eq!(d(ms(0), ms(300), Some(ms(250))), ms(500));
        assert_eq!(d(ms(500), ms(600), Some(ms(250))), ms(250));
        // 7 fps, 1 s: exactly one second, not eight frames.
        let fd = ClockTime::from_nseconds(142_857_142);
        assert_eq!(d(ms(0), ms(1000), Some(fd)), ms(1000));
        assert_eq!(d(ms(0), ms(1000), None), ms(1000));
        // A boundary 1 ns after the frame (a file boundary in `concat`): one frame, not 1 ns.
        let fd = ClockTime::from_nseconds(33_333_333);
        let rt = ClockTime::from_nseconds(9_999_999_999);
        assert_eq!(d(rt, ms(10_000), Some(fd)), fd);
        assert_eq!(caption_duration(ms(0), None, Some(fd)), None);
    }
}
