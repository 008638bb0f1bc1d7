//! `max-in-flight`: several samples per element in flight. Complete mode holds frames until
//! their captions are back and lets them leave in order with their meta, upstream waiting only
//! when the window is full; the worker batches the window; EOS drains it, a flush drops it, caps
//! changes and seeks wait for it, NULL does not. Realtime keeps at most the window waiting.
//!
//! The model is a [`Gate`]: the test decides when each answer comes, so nothing depends on the
//! machine's speed.

mod gst_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gst_common::*;

const SEC: u64 = 1_000_000_000;

/// The PTS and meta text of every buffer the harness got, in order.
fn frames_out(h: &mut gst_check::Harness) -> Vec<(u64, Option<String>)> {
    std::iter::from_fn(|| h.try_pull())
        .map(|b| {
            let meta = gstblip2::meta_answers(&b)
                .first()
                .map(|a| a.get::<String>("text").unwrap());
            (b.pts().unwrap().nseconds(), meta)
        })
        .collect()
}

/// A window of four, batches of two: samples go to the model two at a time, upstream waits only
/// when four are in flight, and frames leave in order with their meta.
#[test]
fn frames_wait_in_the_window_and_leave_in_order_with_their_meta() {
    init();
    let gate = Gate::new();
    let model = install_captioner("window-order", gate.clone());
    let el = cues_element(
        &model,
        &[
            ("mode", "complete"),
            ("interval", "0"),
            ("max-in-flight", "4"),
            ("max-batch", "2"),
        ],
    );
    let (h, _th) = start_harnesses(&el, FRAME_CAPS);
    let h = Arc::new(Mutex::new(h));
    // Three samples taken, none answered: upstream does not wait.
    for i in 0..3 {
        let h = h.clone();
        let res = promptly("a push into a window with room", move || {
            h.lock().unwrap().push(frame(i, i as u8 * 10))
        });
        assert_eq!(res, Ok(gst::FlowSuccess::Ok));
    }
    // The first two went to the model together; nothing has left: every frame waits for its
    // caption.
    gate.wait_started(1);
    assert!(frames_out(&mut h.lock().unwrap()).is_empty());
    // The fourth fills the window: its push waits for the oldest caption.
    let pusher = {
        let h = h.clone();
        std::thread::spawn(move || {
            let mut h = h.lock().unwrap();
            let res = h.push(frame(3, 30));
            (res, frames_out(&mut h))
        })
    };
    gate.open(1);
    let (res, out) = pusher.join().unwrap();
    assert_eq!(res, Ok(gst::FlowSuccess::Ok));
    assert_eq!(
        out,
        vec![
            (0, Some("mean 0".to_owned())),
            (SEC / 10, Some("mean 10".to_owned()))
        ]
    );
    // EOS lets every frame out.
    gate.open(usize::MAX);
    let mut h = h.lock().unwrap();
    assert!(h.push_event(gst::event::Eos::new()));
    let out = frames_out(&mut h);
    let want: Vec<(u64, Option<String>)> = (2..4)
        .map(|i| (i * SEC / 10, Some(format!("mean {}", i * 10))))
        .collect();
    assert_eq!(out, want);
    assert_eq!(*gate.batches.lock().unwrap(), vec![2, 2]);
}

/// With a window of eight and batches of eight, a recorded stream goes to the model eight
/// samples at a time (the last ones at EOS).
#[test]
fn the_window_goes_to_the_model_in_full_batches() {
    init();
    let fake = Fake::new(0);
    let model = install("window-batches", fake.clone());
    let p = pipeline(&format!(
        "videotestsrc num-buffers=20 ! video/x-raw,format=RGB,width=8,height=8,framerate=10/1 \
         ! blip2caption model={model} mode=complete interval=0 max-in-flight=8 max-batch=8 \
         ! fakesink sync=false"
    ));
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(run.captions.len(), 20);
    assert_eq!(fake.calls.lock().unwrap().batches, vec![8, 8, 4]);
    let sizes: Vec<u32> = run
        .captions
        .iter()
        .map(|c| c.get::<u32>("batch-size").unwrap())
        .collect();
    assert_eq!(sizes, [vec![8; 16], vec![4; 4]].concat());
}

#[test]
fn eos_drains_the_window_and_every_cue_ends_in_order() {
    init();
    let fake = Fake::new(0);
    let model = install("window-eos", fake.clone());
    let el = cues_element(
        &model,
        &[
            ("mode", "complete"),
            ("interval", "200000000"),
            ("max-in-flight", "8"),
        ],
    );
    let (mut h, mut th) = start_harnesses(&el, FRAME_CAPS);
    for i in 0..9 {
        h.push(frame(i, i as u8)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out = frames_out(&mut h);
    assert_eq!(out.len(), 9, "every frame left");
    let with_meta: Vec<u64> = out
        .iter()
        .filter(|(_, m)| m.is_some())
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(
        with_meta,
        vec![0, SEC / 5, 2 * SEC / 5, 3 * SEC / 5, 4 * SEC / 5]
    );
    let mut cues = vec![];
    while let Some(b) = th.try_pull() {
        cues.push((
            b.pts().unwrap().nseconds(),
            b.duration().unwrap().nseconds(),
        ));
    }
    // The text task may still be pushing: wait for its EOS.
    loop {
        let ev = th.pull_event().expect("EOS on text_src");
        while let Some(b) = th.try_pull() {
            cues.push((
                b.pts().unwrap().nseconds(),
                b.duration().unwrap().nseconds(),
            ));
        }
        if ev.type_() == gst::EventType::Eos {
            break;
        }
    }
    let ms = |v: u64| v * 1_000_000;
    assert_eq!(
        cues,
        vec![
            (0, ms(200)),
            (ms(200), ms(200)),
            (ms(400), ms(200)),
            (ms(600), ms(200)),
            (ms(800), ms(100)),
        ]
    );
}

#[test]
fn a_flush_drops_the_window() {
    init();
    let gate = Gate::new();
    let model = install_captioner("window-flush", gate.clone());
    let el = cues_element(
        &model,
        &[
            ("mode", "complete"),
            ("interval", "0"),
            ("max-in-flight", "8"),
            ("max-batch", "1"),
        ],
    );
    let bus = gst::Bus::new();
    let (mut h, _th) = start_harnesses(&el, FRAME_CAPS);
    el.set_bus(Some(&bus));
    for i in 0..3 {
        h.push(frame(i, 1)).unwrap();
    }
    gate.wait_started(1);
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    // The held frames are gone with their samples; what the model was doing is answered
    // nowhere.
    gate.open(usize::MAX);
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    for i in 10..13 {
        h.push(frame(i, 2)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out = frames_out(&mut h);
    let pts: Vec<u64> = out.iter().map(|(p, _)| *p).collect();
    assert_eq!(pts, vec![SEC, 11 * SEC / 10, 12 * SEC / 10]);
    assert!(out.iter().all(|(_, m)| m.as_deref() == Some("mean 2")));
    let captions: Vec<u64> = std::iter::from_fn(|| bus.pop())
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e
                .structure()
                .filter(|s| s.name() == "blip2-caption")
                .map(|s| s.get::<u64>("pts").unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(captions, vec![SEC, 11 * SEC / 10, 12 * SEC / 10]);
}

#[test]
fn a_caps_change_lets_the_window_out_first() {
    init();
    let fake = Fake::new(0);
    let model = install("window-caps", fake.clone());
    let el = cues_element(
        &model,
        &[
            ("mode", "complete"),
            ("interval", "0"),
            ("max-in-flight", "8"),
        ],
    );
    let (mut h, _th) = start_harnesses(&el, FRAME_CAPS);
    // What reaches downstream, in order: buffer sizes and caps widths.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let seen = seen.clone();
        h.sinkpad().unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => {
                        seen.lock().unwrap().push(format!("buffer {}", b.size()))
                    }
                    Some(gst::PadProbeData::Event(e)) => {
                        if let gst::EventView::Caps(c) = e.view() {
                            let w = c.caps().structure(0).unwrap().get::<i32>("width").unwrap();
                            seen.lock().unwrap().push(format!("caps {w}"));
                        }
                    }
                    _ => (),
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    for i in 0..2 {
        h.push(frame(i, 1)).unwrap();
    }
    h.set_src_caps_str("video/x-raw,format=RGB,width=8,height=4,framerate=10/1");
    for i in 2..4 {
        let mut b = gst::Buffer::from_mut_slice(vec![2u8; 8 * 4 * 3]);
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds(i * SEC / 10));
        h.push(b).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(
        *seen.lock().unwrap(),
        ["buffer 24", "buffer 24", "caps 8", "buffer 96", "buffer 96"]
    );
    assert_eq!(
        fake.calls.lock().unwrap().sizes,
        vec![(4, 2), (4, 2), (8, 4), (8, 4)]
    );
}

/// A flushing seek and stopping, with a full window, in a pipeline.
#[test]
fn seek_and_stop_with_samples_in_flight() {
    init();
    let model = install("window-seek", Fake::new(50));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=100 ! video/x-raw,width=8,height=8,framerate=10/1 \
         ! blip2caption name=c model={model} mode=complete interval=0 max-in-flight=8 \
         ! fakesink sync=false"
    ));
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    // Seek once captions flow (the window is full by then).
    let mut seen = 0;
    while seen < 3 {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Element],
            )
            .expect("captions");
        if msg.structure().is_some_and(|s| s.name() == "blip2-caption") {
            seen += 1;
        }
    }
    let q = p.clone();
    promptly("a flushing seek", move || {
        // Bounded: videotestsrc's num-buffers counts the frames before the seek too.
        q.seek(
            1.0,
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::SeekType::Set,
            gst::ClockTime::from_seconds(3),
            gst::SeekType::Set,
            gst::ClockTime::from_seconds(6),
        )
        .unwrap()
    });
    while bus.pop().is_some() {}
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    let pts: Vec<u64> = run.captions.iter().map(|c| u64_field(c, "pts")).collect();
    // Whatever was posted right after the seek may be old; from the first new one on, every
    // frame from the target, in order, none missing.
    let first = pts
        .iter()
        .position(|&p| p == 3 * SEC)
        .expect("the target frame");
    let want: Vec<u64> = (30..60).map(|i| i * SEC / 10).collect();
    assert_eq!(pts[first..], want[..]);

    // NULL with the window full (the model never answers) returns at once.
    let gate = Gate::new();
    let model = install_captioner("window-null", gate.clone());
    let p = pipeline(&format!(
        "videotestsrc ! video/x-raw,width=8,height=8,framerate=10/1 \
         ! blip2caption model={model} mode=complete interval=0 max-in-flight=8 \
         ! fakesink sync=false"
    ));
    p.set_state(gst::State::Playing).unwrap();
    gate.wait_started(1);
    let q = p.clone();
    promptly("PLAYING→NULL", move || q.set_state(gst::State::Null)).unwrap();
    gate.open(usize::MAX);
}

#[test]
fn realtime_keeps_at_most_the_window_waiting_and_counts_the_rest() {
    init();
    let gate = Gate::new();
    let model = install_captioner("window-realtime", gate.clone());
    let el = cues_element(
        &model,
        &[
            ("mode", "realtime"),
            ("interval", "0"),
            ("max-in-flight", "2"),
        ],
    );
    let (mut h, _th) = start_harnesses(&el, FRAME_CAPS);
    h.push(frame(0, 0)).unwrap();
    gate.wait_started(1);
    // Frame 0 is with the model; of 1..=5 only the newest two wait, the video never does.
    for i in 1..6 {
        h.push(frame(i, i as u8 * 10)).unwrap();
    }
    assert_eq!(frames_out(&mut h).len(), 6);
    let stats = el.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("samples-taken").unwrap(), 6);
    assert_eq!(stats.get::<u64>("samples-dropped").unwrap(), 3);
    gate.open(usize::MAX);
    assert!(h.push_event(gst::event::Eos::new()));
    let stats = el.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("captions-emitted").unwrap(), 3);
    // The two waiting samples were batched.
    assert_eq!(*gate.batches.lock().unwrap(), vec![1, 2]);
}

/// Live: the automatic latency covers how long a sample waits in the window for its answer
/// (here at least the 300 ms the gate holds the model), so downstream budgets for the frames
/// complete mode holds.
#[test]
fn automatic_latency_covers_the_wait_in_the_window() {
    init();
    let gate = Gate::new();
    let model = install_captioner("window-latency", gate.clone());
    let el = cues_element(
        &model,
        &[
            ("mode", "complete"),
            ("interval", "0"),
            ("max-in-flight", "3"),
            ("max-batch", "1"),
        ],
    );
    let (mut h, _th) = start_harnesses(&el, FRAME_CAPS);
    h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    for i in 0..2 {
        h.push(frame(i, 1)).unwrap();
    }
    gate.wait_started(1);
    // Hold the model for at least 300 ms (a lower bound, whatever the machine's load).
    std::thread::sleep(Duration::from_millis(300));
    gate.open(usize::MAX);
    assert!(h.push_event(gst::event::Eos::new()));
    let latency = h.query_latency().unwrap();
    assert!(
        latency >= gst::ClockTime::from_mseconds(310),
        "latency {latency}"
    );
}

/// `prompts` with a window: a batch of `max-batch` requests holds `max-batch` / 2 samples of
/// two prompts each, a sample's prompts stay together and in order, and every frame leaves in
/// order with its sample's answers.
#[test]
fn several_prompts_share_the_window_and_stay_together() {
    init();
    let recorder = Arc::new(Recorder::default());
    let model = "/fake-models/window-prompts";
    gstblip2::engine::register_captioner(model, recorder.clone());
    let el = cues_element(
        model,
        &[
            ("mode", "complete"),
            ("interval", "0"),
            ("max-in-flight", "8"),
            ("max-batch", "4"),
        ],
    );
    el.set_property("prompts", gst::Array::new(["a:", "b:"]));
    let (mut h, mut th) = start_harnesses(&el, FRAME_CAPS);
    for i in 0..5 {
        h.push(frame(i, i as u8)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let ab = |n: usize| -> Vec<String> {
        (0..n)
            .flat_map(|_| ["a:".to_owned(), "b:".to_owned()])
            .collect()
    };
    // Two samples a call (four requests), the fifth alone at EOS.
    assert_eq!(*recorder.calls.lock().unwrap(), vec![ab(2), ab(2), ab(1)]);
    let out = frames_out(&mut h);
    let pts: Vec<u64> = out.iter().map(|(p, _)| *p).collect();
    assert_eq!(pts, (0..5).map(|i| i * SEC / 10).collect::<Vec<_>>());
    while th.pull_event().unwrap().type_() != gst::EventType::Eos {}
    let texts: Vec<String> = std::iter::from_fn(|| th.try_pull())
        .map(|b| String::from_utf8(b.map_readable().unwrap().to_vec()).unwrap())
        .collect();
    let want: Vec<String> = (0..5).map(|i| format!("a:|{i}\nb:|{i}")).collect();
    assert_eq!(texts, want);
}
