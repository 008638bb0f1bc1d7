//! Sampling on scene changes (`scene-threshold` > 0): the first frame is sampled, then a frame
//! is sampled when its thumbnail differs from the last sampled frame's by more than the
//! threshold, and no sooner than `interval` after the last sample (0 = no minimum). Frames inside
//! that minimum are not even measured.

use gst::ClockTime;

use super::scene::{SceneMeter, Thumbnail};

/// Why a frame was or was not sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The first frame (of the stream, or after a flush).
    First,
    /// Sampled: the picture changed by `distance` (above the threshold).
    Changed { distance: f64 },
    /// Not sampled: too soon after the last sample, not measured.
    TooSoon,
    /// Not sampled: changed by only `distance`.
    Same { distance: f64 },
}

impl Decision {
    pub fn sampled(&self) -> bool {
        matches!(self, Decision::First | Decision::Changed { .. })
    }
}

/// The reference picture and time of the last sample.
#[derive(Default)]
pub struct SceneGate {
    last: Option<(ClockTime, Thumbnail)>,
}

impl SceneGate {
    /// Starts over (flush, new stream): the next frame is sampled.
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Decides for the frame at `running_time`; `thumbnail` measures it (called only when the
    /// minimum interval, in nanoseconds, has passed; any u64, as the `interval` property). A frame that cannot be measured is the caller's error and
    /// leaves the gate as it was.
    pub fn decide<E>(
        &mut self,
        running_time: ClockTime,
        min_interval_ns: u64,
        threshold: f64,
        thumbnail: impl FnOnce() -> Result<Thumbnail, E>,
    ) -> Result<Decision, E> {
        let Some((last_time, reference)) = &self.last else {
            let thumb = thumbnail()?;
            self.last = Some((running_time, thumb));
            return Ok(Decision::First);
        };
        // Running time that went back (a new segment without a flush) starts over.
        let went_back = running_time < *last_time;
        let next_due = last_time.nseconds().saturating_add(min_interval_ns);
        if !went_back && running_time.nseconds() < next_due {
            return Ok(Decision::TooSoon);
        }
        let thumb = thumbnail()?;
        let distance = thumb.distance(reference);
        if went_back || distance > threshold {
            self.last = Some((running_time, thumb));
            Ok(Decision::Changed { distance })
        } else {
            Ok(Decision::Same { distance })
        }
    }
}

/// A [`SceneMeter`] for the negotiated caps, built on first use and rebuilt on new caps.
#[derive(Default)]
pub struct MeterSlot {
    meter: Option<SceneMeter>,
}

impl MeterSlot {
    /// Caps changed: the next measure builds a meter for them.
    pub fn invalidate(&mut self) {
        self.meter = None;
    }

    pub fn measure(
        &mut self,
        info: &gst_video::VideoInfo,
        buffer: &gst::BufferRef,
    ) -> Result<Thumbnail, glib::BoolError> {
        if self.meter.is_none() {
            self.meter = Some(SceneMeter::new(info)?);
        }
        self.meter.as_mut().expect("built above").thumbnail(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> ClockTime {
        ClockTime::from_mseconds(v)
    }

    /// A gate fed frames whose "picture" is a uniform gray level: the thumbnail distance of two
    /// such frames is the difference of their levels.
    fn run(frames: &[(u64, f32)], min_interval_ms: u64, threshold: f64) -> Vec<(u64, Decision)> {
        run_ns(frames, min_interval_ms * 1_000_000, threshold)
    }

    /// [`run`] with the minimum interval in nanoseconds (up to `u64::MAX`).
    fn run_ns(frames: &[(u64, f32)], min_interval_ns: u64, threshold: f64) -> Vec<(u64, Decision)> {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, 8, 8)
            .build()
            .unwrap();
        let mut slot = MeterSlot::default();
        let mut gate = SceneGate::default();
        frames
            .iter()
            .map(|&(t, level)| {
                let buffer = gst::Buffer::from_mut_slice(vec![(level * 255.0) as u8; 64]);
                let d = gate
                    .decide(ms(t), min_interval_ns, threshold, || {
                        slot.measure(&info, &buffer)
                    })
                    .unwrap();
                (t, d)
            })
            .collect()
    }

    fn sampled(decisions: &[(u64, Decision)]) -> Vec<u64> {
        decisions
            .iter()
            .filter(|(_, d)| d.sampled())
            .map(|(t, _)| *t)
            .collect()
    }

    #[test]
    fn samples_the_first_frame_and_each_change() {
        // Three stills of 200 ms at 40 ms per frame, with noise of ±1 level.
        let frames: Vec<(u64, f32)> = (0..15)
            .map(|i| {
                let level = [0.2, 0.7, 0.4][i / 5];
                (i as u64 * 40, level + if i % 2 == 0 { 0.004 } else { 0.0 })
            })
            .collect();
        let d = run(&frames, 0, 0.05);
        assert_eq!(sampled(&d), vec![0, 200, 400]);
        assert_eq!(d[0].1, Decision::First);
        assert!(matches!(d[5].1, Decision::Changed { distance } if (distance - 0.5).abs() < 0.01));
        assert!(matches!(d[1].1, Decision::Same { distance } if distance < 0.01));
    }

    #[test]
    fn compares_with_the_last_sampled_frame_not_the_previous_one() {
        // A slow fade: 0.02 per frame never exceeds 0.05 between neighbours, but it adds up.
        let frames: Vec<(u64, f32)> = (0..10).map(|i| (i * 40, i as f32 * 0.02)).collect();
        let d = run(&frames, 0, 0.05);
        assert_eq!(sampled(&d), vec![0, 120, 240, 360]);
    }

    #[test]
    fn interval_is_the_shortest_time_between_samples() {
        // Every frame is a new picture; with 100 ms minimum only every third 40 ms frame counts.
        let frames: Vec<(u64, f32)> = (0..8)
            .map(|i| (i * 40, if i % 2 == 0 { 0.1 } else { 0.9 }))
            .collect();
        let d = run(&frames, 100, 0.05);
        assert_eq!(sampled(&d), vec![0, 120, 240]);
        // Frames inside the minimum are not measured at all.
        assert_eq!(d[1].1, Decision::TooSoon);
        assert_eq!(d[2].1, Decision::TooSoon);
    }

    #[test]
    fn the_largest_interval_means_only_the_first_frame() {
        let frames: Vec<(u64, f32)> = (0..5).map(|i| (i * 40, i as f32 * 0.2)).collect();
        let sampled: Vec<bool> = run_ns(&frames, u64::MAX, 0.05)
            .iter()
            .map(|(_, d)| d.sampled())
            .collect();
        assert_eq!(sampled, vec![true, false, false, false, false]);
    }

    #[test]
    fn running_time_going_back_starts_over() {
        let d = run(&[(1000, 0.5), (1040, 0.5), (10, 0.5), (50, 0.5)], 500, 0.05);
        assert_eq!(sampled(&d), vec![1000, 10]);
    }

    #[test]
    fn reset_samples_the_next_frame() {
        gst::init().unwrap();
        let mut gate = SceneGate::default();
        let thumb = || {
            let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, 4, 4)
                .build()
                .unwrap();
            SceneMeter::new(&info)
                .unwrap()
                .thumbnail(&gst::Buffer::from_mut_slice(vec![9u8; 16]))
        };
        assert!(gate.decide(ms(0), 0, 0.1, thumb).unwrap().sampled());
        assert!(!gate.decide(ms(40), 0, 0.1, thumb).unwrap().sampled());
        gate.reset();
        assert_eq!(gate.decide(ms(80), 0, 0.1, thumb).unwrap(), Decision::First);
    }

    #[test]
    fn a_frame_that_cannot_be_read_is_an_error_for_the_caller() {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 64, 64)
            .build()
            .unwrap();
        let mut slot = MeterSlot::default();
        // Too small for a 64x64 I420 frame.
        let short = gst::Buffer::from_mut_slice(vec![0u8; 100]);
        let mut gate = SceneGate::default();
        assert!(
            gate.decide(ms(0), 0, 0.1, || slot.measure(&info, &short))
                .is_err()
        );
    }
}
