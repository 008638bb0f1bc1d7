//! Soak: one hour of 30 fps video (108000 frames, not synced to the clock, so it runs much
//! faster than real time) through realtime mode with the real tiny model.
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! Prints frames in/out, samples, captions, drops, failures and RSS at start and end, and
//! asserts that the counts add up and that RSS grows by less than 64 MiB. The bound: the
//! frames are 320×240 RGB (225 KiB), so leaking one frame per sample (3600 samples) would add
//! about 790 MiB and leaking one per frame far more, while allocator noise after warm-up stays
//! in the low MiB.

mod gst_common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_common::*;

const FRAMES: u64 = 108_000;
const WARMUP_FRAMES: u64 = 3_000;
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[test]
#[ignore = "one hour of stream time; run with --ignored"]
fn one_hour_realtime_soak() {
    init();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/opt-tiny");
    let p = pipeline(&format!(
        "videotestsrc num-buffers={FRAMES} pattern=ball \
         ! video/x-raw,format=RGB,width=320,height=240,framerate=30/1 \
         ! blip2caption name=c model={} device=cpu mode=realtime ! fakesink name=v sync=false \
         c.text_src ! fakesink name=t sync=false async=false",
        model.display()
    ));
    let out = Arc::new(AtomicU64::new(0));
    let rss_start = Arc::new(AtomicU64::new(0));
    {
        let out = out.clone();
        let rss_start = rss_start.clone();
        p.by_name("v")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if out.fetch_add(1, Ordering::SeqCst) + 1 == WARMUP_FRAMES {
                    rss_start.store(rss_kib(), Ordering::SeqCst);
                }
                gst::PadProbeReturn::Ok
            });
    }
    let text_out = Arc::new(AtomicU64::new(0));
    {
        let text_out = text_out.clone();
        p.by_name("t")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                text_out.fetch_add(1, Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            });
    }
    let started = Instant::now();
    let run = run_to_eos(&p, Duration::from_secs(3 * 3600));
    let wall = started.elapsed();
    let rss_end = rss_kib();
    let s = p.by_name("c").unwrap().property::<gst::Structure>("stats");
    let get = |n: &str| s.get::<u64>(n).unwrap();
    let (seen, samples, dropped, captions, failures) = (
        get("frames-seen"),
        get("samples-taken"),
        get("samples-dropped"),
        get("captions-emitted"),
        get("inference-failures"),
    );
    let frames_out = out.load(Ordering::SeqCst);
    let rss_start = rss_start.load(Ordering::SeqCst);
    println!(
        "soak: {FRAMES} frames (1 h at 30 fps) in {:.1} s wall\n\
         frames in {seen}, frames out {frames_out}\n\
         samples {samples} = captions {captions} + drops {dropped} + failures {failures}\n\
         caption messages {}, text buffers {}, late {}, mean inference {:.1} ms\n\
         RSS after {WARMUP_FRAMES} frames {rss_start} KiB, at the end {rss_end} KiB, growth {} KiB (bound {RSS_BOUND_KIB} KiB)",
        wall.as_secs_f64(),
        run.captions.len(),
        text_out.load(Ordering::SeqCst),
        get("late-captions"),
        get("mean-inference-time") as f64 / 1e6,
        rss_end as i64 - rss_start as i64,
    );
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(seen, FRAMES);
    assert_eq!(frames_out, FRAMES);
    // One sample per second of stream time.
    assert_eq!(samples, FRAMES / 30);
    assert_eq!(samples, captions + dropped + failures);
    assert_eq!(failures, 0);
    assert_eq!(run.captions.len() as u64, captions);
    assert!(rss_start > 0);
    assert!(
        rss_end < rss_start + RSS_BOUND_KIB,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}
