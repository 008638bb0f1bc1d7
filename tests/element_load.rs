//! The model loads in the background: NULL→READY returns at once, Progress messages report the
//! load, realtime mode drops (and counts) samples until the model is there, complete mode's first
//! sample waits for it, a failed load is an ERROR naming the file and the property, NULL during
//! a load is safe, and elements sharing a model load it once.
//!
//! The load is held at a gate without any timing: the model folder is a copy of the tiny
//! fixture whose `config.json` is a named pipe, so the loader blocks reading it until the test
//! writes the real file into the pipe.

mod gst_common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use gst::prelude::*;
use gst_common::*;

/// A copy of the tiny model whose `config.json` is a named pipe.
fn gated_model(tag: &str) -> PathBuf {
    let dir = scratch(&format!("gated-{tag}"));
    for entry in std::fs::read_dir(model_dir("opt-tiny")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "config.json" {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("config.json"))
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// Writes `contents` into the gate (the loader is reading it); fails instead of hanging.
fn open_gate(dir: &Path, contents: &[u8]) {
    let path = dir.join("config.json");
    let contents = contents.to_vec();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let res = std::fs::write(&path, contents);
        let _ = tx.send(res);
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("nobody read the gate")
        .unwrap();
}

fn real_config() -> Vec<u8> {
    std::fs::read(model_dir("opt-tiny").join("config.json")).unwrap()
}

fn element_on_bus(model: &Path, props: &[(&str, &str)]) -> (gst::Element, gst::Bus) {
    init();
    let el = gst_common::element(model.to_str().unwrap(), props);
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    (el, bus)
}

/// Waits for the loader to post `reading config.json`: it is now blocked at the gate. Returns
/// the Progress types seen so far.
fn wait_at_gate(bus: &gst::Bus) -> Vec<gst::ProgressType> {
    let mut seen = vec![];
    loop {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Progress],
            )
            .expect("the load reports progress");
        let gst::MessageView::Progress(p) = msg.view() else {
            unreachable!()
        };
        let (kind, _, text) = p.get();
        seen.push(kind);
        if text.contains("config.json") {
            return seen;
        }
        assert_ne!(kind, gst::ProgressType::Error, "{text}");
    }
}

fn stat(el: &gst::Element, name: &str) -> u64 {
    el.property::<gst::Structure>("stats")
        .get::<u64>(name)
        .unwrap()
}

#[test]
fn ready_returns_at_once_and_progress_reports_the_load() {
    let dir = gated_model("ready");
    let (el, bus) = element_on_bus(&dir, &[]);
    let e = el.clone();
    let res = promptly("NULL→READY", move || e.set_state(gst::State::Ready));
    assert_eq!(res, Ok(gst::StateChangeSuccess::Success));
    let mut seen = wait_at_gate(&bus);
    open_gate(&dir, &real_config());
    seen.extend(wait_for_load(&bus));
    assert_eq!(seen.first(), Some(&gst::ProgressType::Start), "{seen:?}");
    assert_eq!(seen.last(), Some(&gst::ProgressType::Complete), "{seen:?}");
    assert!(
        seen.iter()
            .filter(|k| **k == gst::ProgressType::Continue)
            .count()
            >= 2,
        "loading stages are reported: {seen:?}"
    );
    el.set_state(gst::State::Null).unwrap();
}

#[test]
fn realtime_drops_and_counts_samples_until_the_model_is_ready() {
    let dir = gated_model("realtime");
    let (el, bus) = element_on_bus(&dir, &[("mode", "realtime"), ("interval", "0")]);
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    let _th = gst_check::Harness::with_element(&el, None, Some("text_src"));
    h.set_src_caps_str(FRAME_CAPS);
    wait_at_gate(&bus);
    // The video flows from the first frame while the model loads.
    for i in 0..5 {
        h.push(frame(i, 100)).unwrap();
        assert!(h.pull().is_ok());
    }
    assert_eq!(stat(&el, "samples-taken"), 5);
    assert_eq!(stat(&el, "samples-dropped"), 5);
    open_gate(&dir, &real_config());
    wait_for_load(&bus);
    // Now samples reach the model (however long it takes, frames keep coming).
    let mut i = 5;
    while stat(&el, "captions-emitted") == 0 {
        assert!(i < 5000, "no caption after the load");
        h.push(frame(i, 100)).unwrap();
        h.pull().unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = el.property::<gst::Structure>("stats");
    let get = |n: &str| s.get::<u64>(n).unwrap();
    assert_eq!(get("frames-seen"), i);
    assert!(get("samples-dropped") >= 5);
}

#[test]
fn complete_mode_waits_for_the_model_for_its_first_sample() {
    let dir = gated_model("complete");
    let (el, bus) = element_on_bus(&dir, &[("mode", "complete"), ("max-in-flight", "1")]);
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    let _th = gst_check::Harness::with_element(&el, None, Some("text_src"));
    h.set_src_caps_str(FRAME_CAPS);
    wait_at_gate(&bus);
    // The first frame arrives while the model is loading: its push waits for the model.
    let (tx, rx) = mpsc::channel();
    let pusher = std::thread::spawn(move || {
        let res = h.push(frame(0, 100));
        let out = h.pull().ok();
        let _ = tx.send(());
        (res, out)
    });
    open_gate(&dir, &real_config());
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the frame came out once the model was loaded");
    let (res, out) = pusher.join().unwrap();
    assert_eq!(res, Ok(gst::FlowSuccess::Ok));
    let out = out.expect("the frame went out");
    // It was captioned, not dropped.
    assert!(gst::meta::CustomMeta::from_buffer(&out, gstblip2::META_NAME).is_ok());
    assert_eq!(stat(&el, "captions-emitted"), 1);
    assert_eq!(stat(&el, "samples-dropped"), 0);
}

#[test]
fn failed_load_is_an_error_naming_the_file_and_the_property() {
    let dir = gated_model("broken");
    let (el, bus) = element_on_bus(&dir, &[("mode", "complete")]);
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str(FRAME_CAPS);
    wait_at_gate(&bus);
    open_gate(&dir, b"{ not json");
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = e.error().to_string();
    assert!(
        text.contains(&dir.join("config.json").display().to_string()),
        "{text}"
    );
    assert!(text.contains("property `model`"), "{text}");
    // Complete mode does not wait forever for a model that will not come.
    assert_eq!(h.push(frame(0, 100)), Err(gst::FlowError::Error));
}

#[test]
fn null_during_a_load_neither_crashes_nor_keeps_the_model() {
    let dir = gated_model("null");
    let (el, bus) = element_on_bus(&dir, &[]);
    el.set_state(gst::State::Ready).unwrap();
    wait_at_gate(&bus);
    let e = el.clone();
    promptly("READY→NULL", move || e.set_state(gst::State::Null)).unwrap();
    // The load finishes in the background and is dropped; it says so.
    open_gate(&dir, &real_config());
    loop {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Progress],
            )
            .expect("the dropped load says so");
        let gst::MessageView::Progress(p) = msg.view() else {
            unreachable!()
        };
        let kind = p.get().0;
        assert!(
            !matches!(kind, gst::ProgressType::Complete | gst::ProgressType::Error),
            "{kind:?}"
        );
        if kind == gst::ProgressType::Canceled {
            break;
        }
    }
    // Nothing kept the model: loading it again reads the folder again (it would be shared,
    // without reading, if the dropped load had leaked it).
    el.set_state(gst::State::Ready).unwrap();
    wait_at_gate(&bus);
    open_gate(&dir, &real_config());
    assert_eq!(
        wait_for_load(&bus).last(),
        Some(&gst::ProgressType::Complete)
    );
    el.set_state(gst::State::Null).unwrap();
}

#[test]
fn elements_sharing_a_model_load_it_once() {
    let dir = gated_model("shared");
    let (a, bus) = element_on_bus(&dir, &[]);
    let (b, _) = element_on_bus(&dir, &[]);
    b.set_bus(Some(&bus));
    a.set_state(gst::State::Ready).unwrap();
    b.set_state(gst::State::Ready).unwrap();
    // Whichever gets to the model first reads it; the other waits for that load.
    wait_at_gate(&bus);
    // One write: a second load would wait at the gate forever and never complete.
    open_gate(&dir, &real_config());
    let mut completed = 0;
    while completed < 2 {
        let seen = wait_for_load(&bus);
        assert_eq!(seen.last(), Some(&gst::ProgressType::Complete), "{seen:?}");
        completed += 1;
    }
    for el in [&a, &b] {
        el.set_state(gst::State::Null).unwrap();
    }
    // Both caption with it: the shared engine was freed at NULL, so a pipeline of two loads it
    // once more, again with one read.
    let model = dir.display().to_string();
    let p = pipeline(&format!(
        "videotestsrc num-buffers=2 ! video/x-raw,width=16,height=16,framerate=1/1 \
         ! blip2caption model={model} ! fakesink sync=false \
         videotestsrc num-buffers=2 ! video/x-raw,width=16,height=16,framerate=1/1 \
         ! blip2caption model={model} ! fakesink sync=false"
    ));
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Ready).unwrap();
    wait_at_gate(&bus);
    open_gate(&dir, &real_config());
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(run.captions.len(), 4);
}
