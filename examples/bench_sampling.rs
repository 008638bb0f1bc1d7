//! What `blip2caption` costs the video path at 1080p, with interval sampling and with
//! `scene-threshold`, against the same pipeline without the element.
//!
//! `cargo run --release --example bench_sampling`
//!
//! A still 1080p frame (colour bars, made once) is pushed N times from appsrc into fakesink,
//! with and without `blip2caption` in between; the model is a stand-in that answers at once, so
//! only the element's own work is timed: the pass-through (one sample, then none), sampling
//! every second (20 RGB conversions in 600 frames), and `scene-threshold` (the scene measure on
//! every frame; the still is sampled once). Each configuration is
//! run several times and the fastest run counts (the machine is shared).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstblip2::engine::{self, CaptionError, Captioner};
use gstblip2::model::{Caption, GenerationParams, RgbImage};

#[path = "support/first_sample.rs"]
mod first_sample;
use first_sample::first_sample;

const FRAMES: u64 = 600;
const RUNS: usize = 5;
const MODEL: &str = "/bench-models/instant";

/// Answers every image at once with the same text.
struct Instant0;

impl Captioner for Instant0 {
    fn caption(
        &self,
        images: &[RgbImage],
        _prompt: &str,
        _params: &GenerationParams,
    ) -> Result<Vec<Caption>, CaptionError> {
        Ok(images
            .iter()
            .map(|_| Caption {
                token_ids: vec![],
                text: "a still".into(),
            })
            .collect())
    }
}

fn still_frame(format: &str) -> (gst::Caps, gst::Buffer) {
    let sample = first_sample(&format!(
        "videotestsrc num-buffers=1 pattern=smpte ! \
         video/x-raw,format={format},width=1920,height=1080,framerate=30/1"
    ));
    (
        sample.caps().unwrap().to_owned(),
        sample.buffer_owned().unwrap(),
    )
}

/// Wall time to push `FRAMES` frames through `middle` (a gst-launch fragment, or "").
fn run(caps: &gst::Caps, frame: &gst::Buffer, middle: &str) -> Duration {
    let desc = format!("appsrc name=src format=time {middle} ! fakesink sync=false");
    let p = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = p
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_caps(Some(caps));
    src.set_max_buffers(4);
    src.set_block(true);
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let start = Instant::now();
    for i in 0..FRAMES {
        // Shares the frame's memory: no copy per frame.
        let mut b = frame.copy();
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i * 1_000_000_000 / 30));
            b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / 30));
        }
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS within 2 minutes");
    let took = start.elapsed();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{desc}: {} {:?}", e.error(), e.debug());
    }
    p.set_state(gst::State::Null).unwrap();
    took
}

/// The fastest of `RUNS` runs of each configuration, run in turns (a burst of load on the
/// shared machine then hits every configuration alike instead of all runs of one).
fn fastest_each(caps: &gst::Caps, frame: &gst::Buffer, middles: &[String]) -> Vec<Duration> {
    let mut best = vec![Duration::MAX; middles.len()];
    for _ in 0..RUNS {
        for (b, middle) in best.iter_mut().zip(middles) {
            *b = (*b).min(run(caps, frame, middle));
        }
    }
    best
}

fn main() {
    gst::init().unwrap();
    gstblip2::plugin_register_static().unwrap();
    engine::register_captioner(MODEL, Arc::new(Instant0));
    println!(
        "1920x1080, {FRAMES} frames of a still at 30 fps, fastest of {RUNS} runs; µs per frame"
    );
    println!(
        "{:<8} {:>10} {:>20} {:>20} {:>20}",
        "format",
        "no element",
        "one sample (+extra)",
        "interval=1s (+extra)",
        "scene 0.05 (+extra)"
    );
    let el = format!("! blip2caption model={MODEL} mode=complete");
    for format in ["I420", "NV12", "BGRx", "v210"] {
        let (caps, frame) = still_frame(format);
        let per = |d: Duration| d.as_secs_f64() * 1e6 / FRAMES as f64;
        let configs = [
            String::new(),
            // Only the first frame is sampled: the element's own cost per frame.
            format!("{el} interval=-1"),
            el.clone(),
            format!("{el} scene-threshold=0.05 interval=0"),
        ];
        let t: Vec<f64> = fastest_each(&caps, &frame, &configs)
            .into_iter()
            .map(per)
            .collect();
        let (base, once, interval, scene) = (t[0], t[1], t[2], t[3]);
        println!(
            "{:<8} {:>10.1} {:>11.1} ({:>+6.1}) {:>11.1} ({:>+6.1}) {:>11.1} ({:>+6.1})",
            format,
            base,
            once,
            once - base,
            interval,
            interval - base,
            scene,
            scene - base
        );
    }
}
