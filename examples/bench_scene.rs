//! Cost of the `scene-threshold` measure per 1080p frame, per raw format, on one core.
//!
//! `cargo run --release --example bench_scene`
//!
//! Each frame is a real picture (videotestsrc colour bars with a moving ball, converted to the
//! format by videoconvert). For each format it prints the median and the fastest of many
//! thumbnails, and two yardsticks from the same run: the share of a 30 fps frame's time budget
//! (33.3 ms), and the time GStreamer's own converter takes to turn the same frame into RGB (what
//! the element spends on a frame it samples, and does not spend on frames it skips).

use std::time::{Duration, Instant};

use gstblip2::scene::SceneMeter;

#[path = "support/first_sample.rs"]
mod first_sample;
use first_sample::first_sample;

const FORMATS: [&str; 12] = [
    "I420",
    "NV12",
    "YUY2",
    "UYVY",
    "RGB",
    "BGRx",
    "GRAY8",
    "I420_10LE",
    "P010_10LE",
    "Y444_10LE",
    "v210",
    "NV12_4L4",
];
const ROUNDS: usize = 300;

fn frame(format: &str) -> (gst_video::VideoInfo, gst::Buffer) {
    let sample = first_sample(&format!(
        "videotestsrc num-buffers=1 pattern=smpte horizontal-speed=3 ! \
         video/x-raw,format=RGB,width=1920,height=1080 ! videoconvert ! \
         video/x-raw,format={format}"
    ));
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    (info, sample.buffer_owned().unwrap())
}

/// Median and minimum of `rounds` timed calls of `f`.
fn time(rounds: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    f(); // warm caches and lazily built tables
    let mut t: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    (t[rounds / 2], t[0])
}

fn main() {
    gst::init().unwrap();
    println!("scene measure, 1920x1080, {ROUNDS} frames per format, one thread");
    println!(
        "{:<11} {:>11} {:>9} {:>13} {:>16} {:>8}",
        "format", "median µs", "min µs", "% of 33.3 ms", "to RGB (conv) µs", "ratio"
    );
    for format in FORMATS {
        let (info, buffer) = frame(format);
        let mut meter = SceneMeter::new(&info).expect("a readable format");
        let (median, min) = time(ROUNDS, || {
            std::hint::black_box(meter.thumbnail(&buffer).unwrap());
        });

        // The converter the element uses for sampled frames, single-threaded like the measure.
        let out = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, 1920, 1080)
            .fps(info.fps())
            .build()
            .unwrap();
        let mut config = gst_video::VideoConverterConfig::new();
        config.set_threads(1);
        let conv = gst_video::VideoConverter::new(&info, &out, Some(config)).unwrap();
        let mut rgb = gst::Buffer::with_size(out.size()).unwrap();
        let (conv_median, _) = time(ROUNDS / 10, || {
            let src = gst_video::VideoFrameRef::from_buffer_ref_readable(&buffer, &info).unwrap();
            let mut dst =
                gst_video::VideoFrameRef::from_buffer_ref_writable(rgb.get_mut().unwrap(), &out)
                    .unwrap();
            conv.frame_ref(&src, &mut dst);
        });
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{:<11} {:>11.0} {:>9.0} {:>12.2}% {:>16.0} {:>7.0}x",
            format,
            us(median),
            us(min),
            100.0 * median.as_secs_f64() / (1.0 / 30.0),
            us(conv_median),
            conv_median.as_secs_f64() / median.as_secs_f64()
        );
    }
}
