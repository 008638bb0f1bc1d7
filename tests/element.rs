//! blip2caption behaviour with injected fake captioners (no model needed): sampling, text
//! timing, GAPs, modes, meta, messages, downstream elements, model sharing, errors.

mod gst_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_common::*;

const SEC: u64 = 1_000_000_000;

fn caption_pts(run: &Run) -> Vec<u64> {
    run.captions.iter().map(|s| u64_field(s, "pts")).collect()
}

/// Frames per second, interval, frames → the PTS of the captioned frames.
#[test]
fn sampling_count_and_pts_for_intervals_and_framerates() {
    init();
    let model = install("sampling", Fake::new(0));
    let cases: &[(i32, u64, u32, Vec<u64>)] = &[
        (25, SEC, 100, vec![0, SEC, 2 * SEC, 3 * SEC]),
        (30, SEC / 2, 45, vec![0, SEC / 2, SEC]),
        // 7 fps: frames at 0, 142.8 ms, ...; the first at or after 1 s is frame 7.
        (7, SEC, 15, vec![0, SEC, 2 * SEC]),
        // 4 fps, 300 ms: multiples 0, 300, 600, 900 → frames 0, 500, 750, 1000 ms.
        (4, 300_000_000, 5, vec![0, 500_000_000, 750_000_000, SEC]),
        (10, 0, 5, (0..5).map(|i| i * SEC / 10).collect()),
    ];
    for (fps, interval, frames, expected) in cases {
        let p = pipeline(&format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,format=RGB,width=32,height=24,framerate={fps}/1 \
             ! blip2caption name=c model={model} mode=complete interval={interval} ! appsink name=v sync=false \
             c.text_src ! appsink name=t sync=false"
        ));
        let video = collect(&p, "v");
        let text = collect(&p, "t");
        let run = run_to_eos(&p, Duration::from_secs(30));
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        assert_eq!(
            &caption_pts(&run),
            expected,
            "fps {fps} interval {interval}"
        );
        assert_eq!(
            video.lock().unwrap().len(),
            *frames as usize,
            "count in = count out"
        );

        // Text buffers: one per caption, PTS of the frame, duration = interval (or one frame).
        let text = text.lock().unwrap();
        let pts: Vec<u64> = text.iter().map(|b| b.pts().unwrap().nseconds()).collect();
        assert_eq!(&pts, expected);
        let frame = SEC / *fps as u64;
        for (i, b) in text.iter().enumerate() {
            let d = b
                .duration()
                .expect("every caption has a duration")
                .nseconds();
            if *interval == 0 {
                assert!(d.abs_diff(frame) <= 1, "{d}");
            } else if let Some(next) = text.get(i + 1) {
                // Each caption stays up until the next one.
                assert_eq!(pts[i] + d, next.pts().unwrap().nseconds(), "fps {fps}");
            }
            if interval % frame == 0 && *interval != 0 {
                assert_eq!(d, *interval);
            }
            let s = std::str::from_utf8(&b.map_readable().unwrap())
                .unwrap()
                .to_owned();
            assert!(s.starts_with("mean "), "{s}");
        }
    }
}

/// Drains the text harness: (buffers, gap events). The text pad has its own task, so wait until
/// it has been quiet for 300 ms (a loaded CI machine may be slow to schedule it).
fn drain_text(th: &mut gst_check::Harness) -> (Vec<gst::Buffer>, Vec<(u64, u64)>) {
    let mut gaps = vec![];
    let mut bufs = vec![];
    let mut quiet_since = std::time::Instant::now();
    let deadline = quiet_since + Duration::from_secs(10);
    while quiet_since.elapsed() < Duration::from_millis(300) && std::time::Instant::now() < deadline
    {
        let mut got = false;
        while let Some(ev) = th.try_pull_event() {
            got = true;
            if let gst::EventView::Gap(g) = ev.view() {
                let (s, d) = g.get();
                gaps.push((s.nseconds(), d.map_or(0, |d| d.nseconds())));
            }
        }
        while let Some(b) = th.try_pull() {
            got = true;
            bufs.push(b);
        }
        if got {
            quiet_since = std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (bufs, gaps)
}

/// The text stream: its own sparse stream-start in the video's group, utf8 caps, and before the
/// first cue is known only a zero-length GAP at its start (so text sinks preroll without being
/// told anything that is not known yet).
#[test]
fn text_stream_before_the_first_cue() {
    init();
    let fake = Fake::new(300);
    let model = install("gaps", fake);
    let el = element(&model, &[("mode", "realtime")]);
    let (mut h, mut th) = start_harnesses(&el, FRAME_CAPS);
    for i in 0..3 {
        h.push(frame(i, 10)).unwrap();
    }
    assert_eq!(h.buffers_received(), 3, "video never waits for the model");
    let (bufs, gaps) = drain_text(&mut th);
    assert!(bufs.is_empty(), "no caption yet");
    assert!(!gaps.is_empty());
    assert!(gaps.iter().all(|&g| g == (0, 0)), "{gaps:?}");
    // Text stream: own stream-start with the sparse flag, text caps.
    let caps = th.sinkpad().unwrap().current_caps().unwrap();
    assert_eq!(
        caps.structure(0).unwrap().get::<&str>("format").unwrap(),
        "utf8"
    );
    let ss = th
        .sinkpad()
        .unwrap()
        .sticky_event::<gst::event::StreamStart>(0)
        .unwrap();
    assert!(ss.stream_flags().contains(gst::StreamFlags::SPARSE));
    let video_ss = h
        .sinkpad()
        .unwrap()
        .sticky_event::<gst::event::StreamStart>(0)
        .unwrap();
    assert_ne!(ss.stream_id(), video_ss.stream_id());
    assert_eq!(ss.group_id(), video_ss.group_id());
    // At EOS the caption in flight comes out with its frame's time, lasting to the end of the
    // last frame.
    assert!(h.push_event(gst::event::Eos::new()));
    let (bufs, _) = drain_text(&mut th);
    assert_eq!(bufs.len(), 1);
    assert_eq!(bufs[0].pts().unwrap().nseconds(), 0);
    assert_eq!(bufs[0].duration().unwrap().nseconds(), 3 * SEC / 10);
}

/// Realtime: the caption's meta rides on the first frame that leaves after the caption is
/// ready (its `pts` names the analysed frame); the cue keeps the analysed frame's time.
#[test]
fn realtime_caption_meta_rides_on_a_later_frame() {
    init();
    let fake = Fake::new(150);
    let model = install("realtime-meta", fake.clone());
    let el = element(&model, &[("mode", "realtime"), ("interval", "10000000000")]);
    let (mut h, mut th) = start_harnesses(&el, FRAME_CAPS);
    h.push(frame(0, 50)).unwrap();
    let first = h.pull().unwrap();
    let name = gstblip2::META_NAME;
    assert!(gst::meta::CustomMeta::from_buffer(&first, name).is_err());
    // Frames keep coming until one carries the meta (however slow the machine is).
    let mut i = 1;
    let meta_frame = loop {
        assert!(i < 2000, "no meta after {i} frames");
        h.push(frame(i, 50)).unwrap();
        let b = h.pull().unwrap();
        if gst::meta::CustomMeta::from_buffer(&b, name).is_ok() {
            break b;
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    };
    let answers = gstblip2::meta_answers(&meta_frame);
    assert_eq!(answers.len(), 1);
    let s = &answers[0];
    assert_eq!(s.get::<&str>("text").unwrap(), "mean 50");
    assert_eq!(
        s.get::<u64>("pts").unwrap(),
        0,
        "pts names the analysed frame"
    );
    assert!(s.get::<u64>("inference-time").unwrap() >= 150_000_000);
    assert!(h.push_event(gst::event::Eos::new()));
    let (bufs, _) = drain_text(&mut th);
    assert_eq!(bufs.len(), 1);
    assert_eq!(bufs[0].pts().unwrap().nseconds(), 0);
    assert_eq!(
        bufs[0].duration().unwrap().nseconds(),
        (i + 1) * SEC / 10,
        "until the end of the last frame"
    );
}

#[test]
fn complete_mode_meta_is_on_the_analysed_frame() {
    init();
    let model = install("complete-meta", Fake::new(50));
    // A window of one: each frame leaves as soon as its own caption is back.
    let el = element(
        &model,
        &[
            ("mode", "complete"),
            ("interval", "200000000"),
            ("max-in-flight", "1"),
        ],
    );
    let (mut h, _th) = start_harnesses(&el, FRAME_CAPS);
    for i in 0..4 {
        h.push(frame(i, 7 * i as u8)).unwrap();
    }
    let with_meta: Vec<bool> = (0..4)
        .map(|_| {
            let b = h.pull().unwrap();
            gst::meta::CustomMeta::from_buffer(&b, gstblip2::META_NAME).is_ok()
        })
        .collect();
    assert_eq!(with_meta, vec![true, false, true, false]);
}

#[test]
fn prompt_change_while_playing_takes_effect() {
    init();
    let fake = Fake::new(0);
    let model = install("prompt", fake.clone());
    let el = element(&model, &[("mode", "complete"), ("interval", "0")]);
    let (mut h, mut th) = start_harnesses(&el, FRAME_CAPS);
    h.push(frame(0, 1)).unwrap();
    el.set_property("prompt", "Question: what colour? Answer:");
    h.push(frame(1, 1)).unwrap();
    assert!(h.push_event(gst::event::Eos::new()));
    let (bufs, _) = drain_text(&mut th);
    let texts: Vec<String> = bufs
        .iter()
        .map(|b| String::from_utf8(b.map_readable().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        texts,
        vec!["mean 1", "Question: what colour? Answer:mean 1"]
    );
    assert_eq!(
        fake.calls.lock().unwrap().prompts[1],
        "Question: what colour? Answer:"
    );
}

#[test]
fn latency_query_adds_configured_latency_when_live() {
    init();
    let model = install("latency", Fake::new(0));
    let el = element(&model, &[("latency", "700000000")]);
    let (mut h, _th) = start_harnesses(&el, FRAME_CAPS);
    h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    let latency = h.query_latency().unwrap();
    assert_eq!(latency, gst::ClockTime::from_mseconds(710));
}

#[test]
fn textoverlay_with_wait_text_does_not_stall() {
    init();
    for (mode, delay) in [("complete", 20), ("realtime", 400)] {
        let model = install(&format!("overlay-{mode}"), Fake::new(delay));
        let p = pipeline(&format!(
            "videotestsrc num-buffers=50 ! video/x-raw,format=I420,width=64,height=48,framerate=25/1 \
             ! blip2caption name=c model={model} mode={mode} interval=400000000 \
             ! textoverlay name=o wait-text=true ! appsink name=v sync=false \
             c.text_src ! o.text_sink"
        ));
        let video = collect(&p, "v");
        let run = run_to_eos(&p, Duration::from_secs(30));
        assert!(run.errors.is_empty(), "{mode}: {:?}", run.errors);
        assert_eq!(video.lock().unwrap().len(), 50, "{mode}");
        assert!(!run.captions.is_empty(), "{mode}");
    }
}

#[test]
fn unlinked_text_pad_does_not_stop_video() {
    init();
    let model = install("unlinked", Fake::new(0));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=16,height=16,framerate=30/1 \
         ! blip2caption model={model} interval=100000000 ! appsink name=v sync=false"
    ));
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(video.lock().unwrap().len(), 30);
    assert_eq!(run.captions.len(), 10);
}

/// Reads a subtitle file back with subparse: the cues it finds.
fn subparse(path: &std::path::Path) -> Vec<(u64, String)> {
    subparse_buffers(path)
        .iter()
        .map(|b| {
            let text = String::from_utf8(b.map_readable().unwrap().to_vec()).unwrap();
            (b.pts().unwrap().nseconds(), text)
        })
        .collect()
}

#[test]
fn srtenc_and_webvttenc_output_parses() {
    init();
    let model = install("subtitles", Fake::new(0));
    let dir = scratch("subs");
    for (enc, ext) in [("srtenc", "srt"), ("webvttenc", "vtt")] {
        let out = dir.join(format!("out.{ext}"));
        let p = pipeline(&format!(
            "videotestsrc num-buffers=75 pattern=black ! video/x-raw,format=NV12,width=32,height=32,framerate=25/1 \
             ! blip2caption name=c model={model} ! fakesink sync=false \
             c.text_src ! {enc} ! filesink location={}",
            out.display()
        ));
        let run = run_to_eos(&p, Duration::from_secs(20));
        assert!(run.errors.is_empty(), "{enc}: {:?}", run.errors);
        let file = std::fs::read_to_string(&out).unwrap();
        if ext == "srt" {
            assert!(file.contains("00:00:00,000 --> 00:00:01,000"), "{file}");
            assert!(file.contains("00:00:02,000 --> 00:00:03,000"), "{file}");
        } else {
            assert!(file.starts_with("WEBVTT"), "{file}");
            assert!(file.contains("00:00:01.000 --> 00:00:02.000"), "{file}");
        }
        let cues = subparse(&out);
        let pts: Vec<u64> = cues.iter().map(|c| c.0).collect();
        assert_eq!(pts, vec![0, SEC, 2 * SEC], "{enc}: {cues:?}");
        // Black NV12 → RGB is all zeros (limited-range black maps to 0).
        assert!(cues.iter().all(|c| c.1.trim() == "mean 0"), "{cues:?}");
    }
}

#[test]
fn matroskamux_file_has_subtitle_track() {
    init();
    let model = install_captioner("mkv", Arc::new(Counting::default()));
    let out = scratch("mkv").join("out.mkv");
    let p = pipeline(&format!(
        "videotestsrc num-buffers=50 ! video/x-raw,format=I420,width=32,height=32,framerate=25/1 \
         ! blip2caption name=c model={model} ! queue ! m.video_0 \
         c.text_src ! queue ! m.subtitle_0 matroskamux name=m ! filesink location={}",
        out.display()
    ));
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{:?}", run.errors);

    // Demux it again: a text track with the two captions, each lasting until the next sample
    // or the end of the stream (per-frame blocks, since matroskamux joins several streams).
    let cues = merge_cues(&demux_subtitles("matroskademux", &out));
    let want = vec![(0, SEC, "#1".to_owned()), (SEC, 2 * SEC, "#2".to_owned())];
    assert_eq!(cues, want);
}

#[test]
fn complete_mode_captions_every_sample_and_eos_waits_for_the_last() {
    init();
    let fake = Fake::new(100);
    let model = install("complete-all", fake.clone());
    let p = pipeline(&format!(
        "videotestsrc num-buffers=50 ! video/x-raw,format=BGRx,width=32,height=32,framerate=25/1 \
         ! blip2caption name=c model={model} interval=200000000 ! appsink name=v sync=false \
         c.text_src ! appsink name=t sync=false"
    ));
    let video = collect(&p, "v");
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(
        run.captions.len(),
        10,
        "not live: auto = complete, nothing dropped"
    );
    assert_eq!(text.lock().unwrap().len(), 10);
    assert_eq!(video.lock().unwrap().len(), 50);
    let c = p.by_name("c").unwrap();
    let stats = c.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("samples-dropped").unwrap(), 0);
}

#[test]
fn realtime_mode_never_blocks_video_and_counts_drops() {
    init();
    let fake = Fake::new(300);
    let model = install("realtime-slow", fake.clone());
    let p = pipeline(&format!(
        "videotestsrc is-live=true num-buffers=60 ! video/x-raw,format=YUY2,width=64,height=48,framerate=30/1 \
         ! blip2caption name=c model={model} interval=0 max-in-flight=1 ! appsink name=v sync=true \
         c.text_src ! fakesink sync=false"
    ));
    let video = collect(&p, "v");
    let start = Instant::now();
    let run = run_to_eos(&p, Duration::from_secs(30));
    let took = start.elapsed();
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(video.lock().unwrap().len(), 60, "count in = count out");
    // 60 frames at 30 fps take 2 s; a model at 300 ms per frame would take 18 s if it blocked.
    assert!(took < Duration::from_millis(4500), "took {took:?}");
    let c = p.by_name("c").unwrap();
    let stats = c.property::<gst::Structure>("stats");
    let dropped = stats.get::<u64>("samples-dropped").unwrap();
    let taken = stats.get::<u64>("samples-taken").unwrap();
    assert_eq!(taken, 60);
    assert!(dropped >= 40, "dropped {dropped}");
    assert!(!run.captions.is_empty());
    // Every inference takes the fake's 300 ms.
    let max = stats.get::<u64>("max-inference-time").unwrap();
    let mean = stats.get::<u64>("mean-inference-time").unwrap();
    assert!(max >= 300_000_000 && max >= mean, "max {max} mean {mean}");
    assert_eq!(stats.get::<u64>("frames-seen").unwrap(), 60);
}

#[test]
fn common_raw_formats_are_converted_to_rgb_for_the_model() {
    init();
    for format in [
        "RGB", "RGBA", "BGRx", "BGRA", "xRGB", "I420", "NV12", "YUY2", "GRAY8",
    ] {
        let fake = Fake::new(0);
        let model = install(&format!("format-{format}"), fake.clone());
        let p = pipeline(&format!(
            "videotestsrc num-buffers=10 pattern=white ! video/x-raw,format={format},width=30,height=22,framerate=10/1 \
             ! blip2caption model={model} interval=500000000 ! appsink name=v sync=false"
        ));
        let video = collect(&p, "v");
        let run = run_to_eos(&p, Duration::from_secs(20));
        assert!(run.errors.is_empty(), "{format}: {:?}", run.errors);
        assert_eq!(video.lock().unwrap().len(), 10, "{format}");
        let calls = fake.calls.lock().unwrap();
        assert_eq!(calls.sizes, vec![(30, 22); 2], "{format}");
        assert!(
            calls.means.iter().all(|&m| m >= 230),
            "{format}: white → {:?}",
            calls.means
        );
    }
}

#[test]
fn elements_share_one_model_and_batch() {
    init();
    let fake = Fake::new(30);
    let model = install("shared", fake.clone());
    let p = pipeline(&format!(
        "videotestsrc num-buffers=20 ! video/x-raw,width=32,height=32,framerate=10/1 \
         ! blip2caption name=a model={model} interval=0 max-in-flight=1 ! fakesink sync=false \
         videotestsrc num-buffers=20 pattern=black ! video/x-raw,width=32,height=32,framerate=10/1 \
         ! blip2caption name=b model={model} interval=0 max-in-flight=1 ! fakesink sync=false \
         videotestsrc num-buffers=20 pattern=white ! video/x-raw,width=32,height=32,framerate=10/1 \
         ! blip2caption name=c model={model} interval=0 max-in-flight=1 ! fakesink sync=false"
    ));
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.captions.len(), 60);
    let calls = fake.calls.lock().unwrap();
    assert_eq!(calls.threads.len(), 1, "one worker serves all elements");
    // With a window of one, complete mode waits for each caption, so two elements alone would
    // take turns; with three, the two that wait while the worker serves the third meet in one
    // batch.
    assert!(calls.batches.contains(&2), "{:?}", calls.batches);
    assert_eq!(calls.batches.iter().sum::<usize>(), 60);
}

/// The load runs in the background: NULL→READY succeeds at once, and the failure is a
/// Progress error plus an ERROR naming the path and the property.
#[test]
fn bad_model_is_an_error_naming_path_and_property() {
    init();
    let p =
        pipeline("videotestsrc num-buffers=1 ! blip2caption model=/no/such/blip2-model ! fakesink");
    assert_eq!(
        p.set_state(gst::State::Ready),
        Ok(gst::StateChangeSuccess::Success)
    );
    let bus = p.bus().unwrap();
    let progress = wait_for_load(&bus);
    assert_eq!(
        progress,
        vec![gst::ProgressType::Start, gst::ProgressType::Error]
    );
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let error = e.error().to_string();
    assert!(error.contains("/no/such/blip2-model"), "{error}");
    assert!(error.contains("property `model`"), "{error}");
    // The pipeline stops at its first sample instead of waiting for a model that never comes.
    let run = run_to_eos(&p, Duration::from_secs(10));
    assert_eq!(run.errors.len(), 1, "{run:?}");
    p.set_state(gst::State::Null).unwrap();
}

#[test]
fn bad_device_names_the_property() {
    init();
    let model = install("bad-device", Fake::new(0));
    let el = gst::ElementFactory::make("blip2caption")
        .property("model", &model)
        .property("device", "gpu7")
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    assert!(el.set_state(gst::State::Ready).is_err());
    let err = bus
        .iter()
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
        .unwrap();
    assert!(err.contains("device") && err.contains("gpu7"), "{err}");
}

#[test]
fn failing_model_is_an_error_in_complete_and_a_warning_in_realtime() {
    init();
    let model = install("failing", Fake::failing());
    let p = pipeline(&format!(
        "videotestsrc num-buffers=10 ! blip2caption model={model} mode=complete ! fakesink sync=false"
    ));
    let run = run_to_eos(&p, Duration::from_secs(10));
    assert_eq!(run.errors.len(), 1);
    assert!(
        run.errors[0].contains("fake model failure"),
        "{:?}",
        run.errors
    );

    let p = pipeline(&format!(
        "videotestsrc num-buffers=10 ! blip2caption model={model} mode=realtime interval=0 ! appsink name=v sync=false"
    ));
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(10));
    assert!(run.errors.is_empty());
    assert!(!run.warnings.is_empty());
    assert_eq!(video.lock().unwrap().len(), 10);
}

#[test]
fn stopping_while_the_model_is_busy_returns_promptly() {
    init();
    let model = install("busy", Fake::new(5000));
    let p = pipeline(&format!(
        "videotestsrc ! video/x-raw,width=32,height=32 ! blip2caption model={model} mode=complete \
         ! fakesink sync=false"
    ));
    p.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    p.set_state(gst::State::Null).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn flushing_seek_while_the_model_is_busy_does_not_deadlock() {
    init();
    let model = install("seek", Fake::new(500));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=100 ! video/x-raw,width=32,height=32,framerate=25/1 \
         ! blip2caption model={model} mode=complete interval=0 ! fakesink sync=false"
    ));
    p.set_state(gst::State::Paused).unwrap();
    let _ = p.state(gst::ClockTime::from_seconds(5));
    let start = Instant::now();
    p.seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::from_seconds(2))
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    p.set_state(gst::State::Null).unwrap();
}

/// Bus messages carry the documented fields.
#[test]
fn caption_message_fields() {
    init();
    let model = install("message", Fake::new(0));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=3 pattern=white ! video/x-raw,format=RGB,width=8,height=8,framerate=1/1 \
         ! blip2caption name=c model={model} prompt=Hi ! fakesink sync=false"
    ));
    let run = run_to_eos(&p, Duration::from_secs(10));
    assert_eq!(run.captions.len(), 3);
    let s = &run.captions[1];
    assert_eq!(s.get::<&str>("text").unwrap(), "Himean 255");
    assert_eq!(s.get::<&str>("prompt").unwrap(), "Hi");
    assert_eq!(u64_field(s, "pts"), SEC);
    assert_eq!(u64_field(s, "running-time"), SEC);
    assert_eq!(u64_field(s, "duration"), SEC);
    let _ = u64_field(s, "inference-time");
    // Which element and model answered, at which position in the stream, with how much work.
    assert_eq!(s.get::<&str>("element").unwrap(), "c");
    assert_eq!(s.get::<&str>("model").unwrap(), model);
    assert_eq!(u64_field(s, "stream-time"), SEC);
    assert_eq!(s.get::<u32>("tokens").unwrap(), 2);
    // The three samples of this short file went to the model together (`max-in-flight` 8).
    assert_eq!(s.get::<u32>("batch-size").unwrap(), 3);
}
