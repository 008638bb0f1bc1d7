//! Cue times: the last cue ends with the stream (its last frame, or the segment stop), a file
//! boundary in `concat` samples no frame twice and makes no cue shorter than a frame, and a
//! runtime `interval` change applies from the next frame.

mod gst_common;

use std::time::Duration;

use gst::prelude::*;
use gst_common::*;

const SEC: u64 = 1_000_000_000;

/// A clip of `frames` 64×48 frames at `fps` (JPEG in Matroska), made once per test.
fn clip(name: &str, frames: u32, fps: u32) -> std::path::PathBuf {
    let path = scratch(name).join("clip.mkv");
    let p = pipeline(&format!(
        "videotestsrc num-buffers={frames} pattern=ball \
         ! video/x-raw,format=I420,width=64,height=48,framerate={fps}/1 \
         ! jpegenc ! matroskamux ! filesink location={}",
        path.display()
    ));
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    path
}

/// SRT cues of `clip` captioned every `interval` ns: (start, end) in ms.
fn srt_cues(clip: &std::path::Path, interval: u64, tag: &str) -> Vec<(u64, u64)> {
    let model = install(&format!("timing-{tag}"), Fake::new(0));
    let out = scratch(&format!("timing-{tag}")).join("out.srt");
    let p = pipeline(&format!(
        "filesrc location={} ! decodebin ! blip2caption name=c model={model} interval={interval} \
         ! fakesink sync=false c.text_src ! srtenc ! filesink location={}",
        clip.display(),
        out.display()
    ));
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    let srt = std::fs::read_to_string(&out).unwrap();
    let ms = |t: &str| {
        let (hms, ms) = t.trim().split_once(',').unwrap();
        let v: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
        ((v[0] * 60 + v[1]) * 60 + v[2]) * 1000 + ms.parse::<u64>().unwrap()
    };
    srt.lines()
        .filter_map(|l| l.split_once(" --> "))
        .map(|(a, b)| (ms(a), ms(b)))
        .collect()
}

/// The README's case: a 10 s clip captioned every 3 s ended on 9 s → 12 s; every 100 s, one cue
/// spanned 100 s. A cue ends at the next sample or at the end of the stream, whichever is first.
#[test]
fn last_cue_ends_with_the_stream() {
    init();
    let clip = clip("timing-10s", 100, 10);
    assert_eq!(
        srt_cues(&clip, 3 * SEC, "3s"),
        vec![(0, 3000), (3000, 6000), (6000, 9000), (9000, 10000)]
    );
    assert_eq!(srt_cues(&clip, 100 * SEC, "100s"), vec![(0, 10000)]);
}

/// Every text buffer until EOS on the text harness: (pts, duration).
fn cues_until_eos(th: &mut gst_check::Harness) -> Vec<(u64, u64)> {
    let mut out = vec![];
    loop {
        // The text pad's own task pushes: wait for each event (bounded by the harness).
        let ev = th.pull_event().expect("EOS on text_src");
        if ev.type_() == gst::EventType::Eos {
            break;
        }
        while let Some(b) = th.try_pull() {
            out.push((
                b.pts().unwrap().nseconds(),
                b.duration().unwrap().nseconds(),
            ));
        }
    }
    while let Some(b) = th.try_pull() {
        out.push((
            b.pts().unwrap().nseconds(),
            b.duration().unwrap().nseconds(),
        ));
    }
    out
}

/// A segment that stops inside the last frame: the last cue ends at the stop, not at the end
/// of the frame or the next interval boundary.
#[test]
fn segment_stop_ends_the_last_cue() {
    init();
    let model = install("timing-stop", Fake::new(0));
    let el = cues_element(&model, &[("mode", "complete")]);
    let (mut h, mut th) = start_harnesses(&el, FRAME_CAPS);
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_stop(gst::ClockTime::from_mseconds(450));
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    for i in 0..5 {
        h.push(frame_at(i * SEC / 10, SEC / 10, 1)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(cues_until_eos(&mut th), vec![(0, 450_000_000)]);
}

/// What `concat` does at a file boundary: a new stream whose segment's base is where the first
/// file ended, here 1 ns before a sampling boundary (30 fps durations are truncated, as in MP4
/// files). The first frame of the second file is not sampled a second time for that boundary,
/// and no cue is shorter than a frame.
#[test]
fn file_boundary_samples_no_frame_twice() {
    init();
    let fake = Fake::new(0);
    let model = install("timing-concat", fake.clone());
    let el = cues_element(&model, &[("mode", "complete")]);
    let caps = "video/x-raw,format=RGB,width=4,height=2,framerate=30/1";
    let (mut h, mut th) = start_harnesses(&el, caps);
    let fd = 33_333_333;
    let pts = |i: u64| i * SEC / 30;
    // First file: 300 frames; the last one ends at 9.999999999 s.
    for i in 0..300 {
        h.push(frame_at(pts(i), fd, 1)).unwrap();
    }
    let end_of_first = pts(299) + fd;
    assert_eq!(end_of_first, 10 * SEC - 1);
    assert!(
        h.push_event(
            gst::event::StreamStart::builder("second-file")
                .group_id(gst::GroupId::next())
                .build()
        )
    );
    let mut second = gst::FormattedSegment::<gst::ClockTime>::new();
    second.set_base(gst::ClockTime::from_nseconds(end_of_first));
    assert!(h.push_event(gst::event::Segment::new(&second)));
    for i in 0..45 {
        h.push(frame_at(pts(i), fd, 2)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let cues = cues_until_eos(&mut th);
    assert!(
        cues.iter().all(|&(_, d)| d >= fd),
        "a cue shorter than a frame: {cues:?}"
    );
    // Samples at 0, 1, ..., 9 s in the first file, then at 10 and 11 s of running time: the
    // second file's frames 1 (10.033 s) and 31 (11.033 s). Its frame 0 (9.999999999 s) is not
    // sampled.
    assert_eq!(fake.calls.lock().unwrap().means.len(), 12, "{cues:?}");
    assert_eq!(cues.len(), 12, "{cues:?}");
    // The last cue of the first file ends with it.
    assert_eq!(cues[9], (9 * SEC, end_of_first - 9 * SEC));
    assert_eq!(
        cues[10..],
        [
            (pts(1), pts(31) - pts(1)),
            (pts(31), pts(44) + fd - pts(31))
        ]
    );
}

/// The real `concat` of two files: every sample once, cues back to back, none shorter than a
/// frame.
#[test]
fn concat_of_two_files() {
    init();
    let clip = clip("timing-concat-file", 30, 30);
    let model = install("timing-concat-file", Fake::new(0));
    let out = scratch("timing-concat-out").join("out.srt");
    let p = pipeline(&format!(
        "concat name=cc ! blip2caption name=c model={model} ! fakesink sync=false \
         c.text_src ! srtenc ! filesink location={out} \
         filesrc location={clip} ! decodebin ! cc. \
         filesrc location={clip} ! decodebin ! cc.",
        clip = clip.display(),
        out = out.display()
    ));
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    let rt: Vec<u64> = run
        .captions
        .iter()
        .map(|c| u64_field(c, "running-time"))
        .collect();
    assert_eq!(rt.len(), 2, "one sample per second of the 2 s: {rt:?}");
    assert_eq!(rt[0], 0);
    assert!((SEC..SEC + SEC / 30).contains(&rt[1]), "{rt:?}");
    let srt = std::fs::read_to_string(&out).unwrap();
    assert_eq!(srt.matches(" --> ").count(), 2, "{srt}");
}

/// `interval` changed while playing applies from the next frame, in both directions.
#[test]
fn interval_change_applies_from_the_next_frame() {
    init();
    let fake = Fake::new(0);
    let model = install("timing-interval", fake.clone());
    let el = cues_element(
        &model,
        &[("mode", "complete"), ("interval", "100000000000")],
    );
    let (mut h, mut th) = start_harnesses(&el, FRAME_CAPS);
    let push = |h: &mut gst_check::Harness, range: std::ops::Range<u64>| {
        for i in range {
            h.push(frame_at(i * SEC / 10, SEC / 10, i as u8)).unwrap();
        }
    };
    push(&mut h, 0..35);
    el.set_property("interval", SEC);
    push(&mut h, 35..45);
    el.set_property("interval", 10 * SEC);
    push(&mut h, 45..120);
    assert!(h.push_event(gst::event::Eos::new()));
    let ms = |v: u64| v * 1_000_000;
    assert_eq!(
        cues_until_eos(&mut th),
        vec![
            (0, ms(3500)),
            (ms(3500), ms(500)),
            (ms(4000), ms(6000)),
            (ms(10_000), ms(2000)),
        ]
    );
}
