//! Prints the scene distance of every frame of a video, to choose `scene-threshold`.
//!
//! ```sh
//! cargo run --release --example scene_distances -- clip.mp4
//! cargo run --release --example scene_distances -- "videotestsrc pattern=ball num-buffers=90"
//! ```
//!
//! The argument is a file, a URI, or a gst-launch description of a raw video source. For each
//! frame: its time, the distance to the previous frame and to the last frame that
//! `scene-threshold=0.05 interval=0` would have sampled. At the end: how many frames each
//! threshold would sample. The measure is the element's own (0 = same picture, 1 = black versus
//! white everywhere).

use gst::prelude::*;
use gstblip2::scene::{SceneMeter, Thumbnail};

const THRESHOLDS: [f64; 7] = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3];
const SHOWN: f64 = 0.05;

fn source(arg: &str) -> String {
    if arg.contains('!') || arg.contains("src") && !std::path::Path::new(arg).exists() {
        return arg.to_owned();
    }
    let uri = if arg.contains("://") {
        arg.to_owned()
    } else {
        let path = std::fs::canonicalize(arg).unwrap_or_else(|e| panic!("{arg}: {e}"));
        glib::filename_to_uri(path, None)
            .expect("an absolute path")
            .to_string()
    };
    format!("uridecodebin uri={uri}")
}

fn main() {
    let Some(arg) = std::env::args().nth(1) else {
        eprintln!("usage: scene_distances VIDEO|URI|\"gst-launch source description\"");
        std::process::exit(2);
    };
    gst::init().unwrap();
    // Any raw format: the measure reads them all, as the element does.
    let desc = format!(
        "{} ! appsink name=s sync=false caps=video/x-raw",
        source(&arg)
    );
    let p = gst::parse::launch(&desc)
        .unwrap_or_else(|e| panic!("{desc}: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = p
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();

    let mut meter: Option<(gst::Caps, SceneMeter)> = None;
    let mut previous: Option<Thumbnail> = None;
    // Per threshold: the reference (last sampled) thumbnail and the number of samples.
    let mut references: Vec<(Option<Thumbnail>, u64)> = vec![(None, 0); THRESHOLDS.len()];
    let mut frames = 0u64;
    println!("{:>12} {:>10} {:>12}", "time", "previous", "last sample");
    while let Ok(sample) = sink.pull_sample() {
        let caps = sample.caps().unwrap().to_owned();
        if meter.as_ref().is_none_or(|(c, _)| *c != caps) {
            let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
            meter = Some((caps, SceneMeter::new(&info).unwrap()));
        }
        let buffer = sample.buffer().unwrap();
        let thumb = meter.as_mut().unwrap().1.thumbnail(buffer).unwrap();
        frames += 1;
        let mut to_last = f64::NAN;
        let mut sampled = "";
        for (threshold, (reference, count)) in THRESHOLDS.iter().zip(references.iter_mut()) {
            let distance = reference.as_ref().map_or(1.0, |r| thumb.distance(r));
            let take = reference.is_none() || distance > *threshold;
            if *threshold == SHOWN {
                to_last = if reference.is_none() {
                    f64::NAN
                } else {
                    distance
                };
                sampled = if take { "  sampled at 0.05" } else { "" };
            }
            if take {
                *reference = Some(thumb.clone());
                *count += 1;
            }
        }
        let to_previous = previous.as_ref().map_or(f64::NAN, |p| p.distance(&thumb));
        println!(
            "{:>12} {:>10.4} {:>12.4}{sampled}",
            buffer.pts().map_or("-".to_string(), |t| t.to_string()),
            to_previous,
            to_last
        );
        previous = Some(thumb);
    }
    p.set_state(gst::State::Null).unwrap();
    println!("\n{frames} frames; frames sampled with interval=0 at each scene-threshold:");
    for (threshold, (_, count)) in THRESHOLDS.iter().zip(&references) {
        println!("  {threshold:<6} {count}");
    }
}
