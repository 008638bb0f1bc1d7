//! Reliability matrix (issue 5): properties, odd video, flow faults and engine faults, with
//! fake captioners (and the real tiny model where the fault is the model's). Broken model
//! folders are in `faults_model.rs`; the hour-long soak is `soak.rs`.

mod gst_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst_common::*;
use gstblip2::engine::Captioner;
use gstblip2::model::{self, Caption, DTypeChoice, DeviceChoice, GenerationParams, RgbImage};

const SEC: u64 = 1_000_000_000;

/// A frame of `info`'s size filled with `value`, at `pts_ns` (none when `None`).
fn frame_of(info: &gst_video::VideoInfo, pts_ns: Option<u64>, value: u8) -> gst::Buffer {
    let mut b = gst::Buffer::from_mut_slice(vec![value; info.size()]);
    b.get_mut()
        .unwrap()
        .set_pts(pts_ns.map(gst::ClockTime::from_nseconds));
    b
}

fn info(caps: &str) -> gst_video::VideoInfo {
    gst_video::VideoInfo::from_caps(&caps.parse::<gst::Caps>().unwrap()).unwrap()
}

/// Text buffers on the text harness as (pts, duration, text), after the text task caught up.
fn text_buffers(th: &mut gst_check::Harness, expected: usize) -> Vec<(u64, u64, String)> {
    let mut out = vec![];
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < expected && Instant::now() < deadline {
        match th.try_pull() {
            Some(b) => {
                let text = String::from_utf8(b.map_readable().unwrap().to_vec()).unwrap();
                out.push((
                    b.pts().unwrap().nseconds(),
                    b.duration().unwrap().nseconds(),
                    text,
                ));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    out
}

fn stats(el: &gst::Element) -> gst::Structure {
    el.property::<gst::Structure>("stats")
}

fn stat(s: &gst::Structure, name: &str) -> u64 {
    s.get::<u64>(name).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Out-of-range numbers are rejected by GObject using these param-spec bounds.
#[test]
fn param_specs_bound_every_number() {
    init();
    let el = element("/fake-models/none", &[]);
    let uint = |name: &str| {
        let p = el.find_property(name).unwrap();
        let p = p.downcast::<glib::ParamSpecUInt>().unwrap();
        (p.minimum(), p.maximum())
    };
    assert_eq!(uint("num-beams"), (1, 64));
    assert_eq!(uint("max-batch"), (1, 256));
    assert_eq!(uint("max-new-tokens"), (1, 1024));
    assert_eq!(uint("min-new-tokens"), (0, 1024));
    let p = el.find_property("repetition-penalty").unwrap();
    let p = p.downcast::<glib::ParamSpecDouble>().unwrap();
    assert_eq!((p.minimum(), p.maximum()), (0.01, 100.0));
    let p = el.find_property("latency").unwrap();
    let p = p.downcast::<glib::ParamSpecInt64>().unwrap();
    assert_eq!((p.minimum(), p.maximum()), (-1, i64::MAX));
}

/// gst-inspect says which properties are read only when the model is loaded: "changeable only
/// in NULL or READY state".
#[test]
fn model_device_and_dtype_are_flagged_mutable_ready() {
    init();
    let el = element("/fake-models/none", &[]);
    for name in ["model", "device", "dtype"] {
        let flags = el.find_property(name).unwrap().flags();
        assert!(
            flags.contains(gst::PARAM_FLAG_MUTABLE_READY),
            "{name}: {flags:?}"
        );
        assert!(
            !flags.contains(gst::PARAM_FLAG_MUTABLE_PLAYING),
            "{name}: {flags:?}"
        );
    }
}

/// Minimum, middle and maximum of every writable property, from its param spec (every value of
/// an enum; for strings, empty and a typical value).
fn values_to_try(pspec: &glib::ParamSpec, fixture: &str) -> Vec<glib::Value> {
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecUInt>() {
        let (lo, hi) = (p.minimum(), p.maximum());
        return vec![
            lo.to_value(),
            (lo + (hi - lo) / 2).to_value(),
            hi.to_value(),
        ];
    }
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecUInt64>() {
        let (lo, hi) = (p.minimum(), p.maximum());
        return vec![
            lo.to_value(),
            (lo + (hi - lo) / 2).to_value(),
            hi.to_value(),
        ];
    }
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecInt64>() {
        let (lo, hi) = (p.minimum(), p.maximum());
        return vec![lo.to_value(), (lo / 2 + hi / 2).to_value(), hi.to_value()];
    }
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecInt>() {
        let (lo, hi) = (p.minimum() as i64, p.maximum() as i64);
        return [lo, lo + (hi - lo) / 2, hi]
            .iter()
            .map(|v| (*v as i32).to_value())
            .collect();
    }
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecDouble>() {
        let (lo, hi) = (p.minimum(), p.maximum());
        return vec![lo.to_value(), ((lo + hi) / 2.0).to_value(), hi.to_value()];
    }
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecEnum>() {
        return p
            .enum_class()
            .values()
            .iter()
            .map(|v| v.to_value(&p.enum_class()))
            .collect();
    }
    if pspec.value_type() == glib::Type::BOOL {
        return vec![false.to_value(), true.to_value()];
    }
    if pspec.value_type() == gst::Array::static_type() {
        // `prompts`: none, two, and the most it takes (64).
        let prompts = |n: usize| {
            gst::Array::new((0..n).map(|i| format!("Question: {i}? Answer:"))).to_value()
        };
        return vec![prompts(0), prompts(2), prompts(64)];
    }
    if pspec.value_type() == glib::Type::STRING {
        let typical = match pspec.name() {
            "model" => fixture,
            "device" => "cuda:7",
            "server-url" => "http://127.0.0.1:9/v1",
            _ => "Question: what is shown? Answer:",
        };
        return vec!["".to_value(), typical.to_value()];
    }
    panic!("no values for {} ({})", pspec.name(), pspec.value_type());
}

/// Every property accepts every value of its advertised range at every state, and while
/// PLAYING the pipeline goes on: captions keep coming (frames, for an interval so large that no
/// further sample is due). `model`, `device`, `dtype`, `mode` and `text-mode` are stored for the
/// next start. `min-new-tokens` above `max-new-tokens` is capped, with a warning naming both.
#[test]
fn every_property_takes_its_minimum_middle_and_maximum_at_every_state() {
    init();
    let model = model_dir("opt-tiny").display().to_string();
    let p = pipeline(&format!(
        "videotestsrc pattern=ball ! video/x-raw,format=RGB,width=32,height=24,framerate=30/1 \
         ! blip2caption name=c model={model} device=cpu interval=0 ! fakesink sync=false \
         c.text_src ! fakesink sync=false async=false"
    ));
    let el = p.by_name("c").unwrap();
    let writable: Vec<glib::ParamSpec> = el
        .list_properties()
        .iter()
        .filter(|p| p.flags().contains(glib::ParamFlags::WRITABLE))
        .filter(|p| p.owner_type() == el.type_())
        .cloned()
        .collect();
    assert!(writable.len() >= 13, "{writable:?}");
    let readable = |p: &glib::ParamSpec| p.flags().contains(glib::ParamFlags::READABLE);
    // Write-only ones (`api-key`) go back to their empty value.
    let defaults: Vec<(String, glib::Value)> = writable
        .iter()
        .map(|p| {
            let v = if readable(p) {
                el.property_value(p.name())
            } else {
                None::<String>.to_value()
            };
            (p.name().to_owned(), v)
        })
        .collect();
    let restore = |name: &str| {
        let (_, v) = defaults.iter().find(|(n, _)| n == name).unwrap();
        el.set_property_from_value(name, v);
    };

    // Not playing: every value is taken and read back.
    for state in [gst::State::Null, gst::State::Ready, gst::State::Paused] {
        let _ = p.set_state(state);
        for pspec in &writable {
            for v in values_to_try(pspec, &model) {
                el.set_property_from_value(pspec.name(), &v);
                if !readable(pspec) {
                    continue;
                }
                let back = el.property_value(pspec.name());
                assert_eq!(
                    format!("{:?}", back),
                    format!("{:?}", v),
                    "{} at {state:?}",
                    pspec.name()
                );
            }
            restore(pspec.name());
        }
    }

    // Playing: after each value, the pipeline makes progress.
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut captions = 0usize;
    let mut warnings: Vec<String> = vec![];
    let mut pump = |what: &str, need_caption: bool| {
        let frames = stat(&stats(&el), "frames-seen");
        let want = captions + 2;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "{what}: the pipeline stopped");
            if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
                match msg.view() {
                    gst::MessageView::Error(e) => panic!("{what}: {} ({:?})", e.error(), e.debug()),
                    gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
                    gst::MessageView::Element(e)
                        if e.structure().is_some_and(|s| s.name() == "blip2-caption") =>
                    {
                        captions += 1
                    }
                    _ => (),
                }
            }
            let moved = stat(&stats(&el), "frames-seen") >= frames + 2;
            if moved && (!need_caption || captions >= want) {
                return;
            }
        }
    };
    pump("start", true);
    for pspec in &writable {
        for v in values_to_try(pspec, &model) {
            el.set_property_from_value(pspec.name(), &v);
            // Only an interval whose next boundary is out of reach stops the captions, and a
            // scene threshold (the ball barely changes the picture).
            let stops_captions = (pspec.name() == "interval" && v.get::<u64>().unwrap() > 0)
                || (pspec.name() == "scene-threshold" && v.get::<f64>().unwrap() > 0.0);
            pump(&format!("{} = {v:?}", pspec.name()), !stops_captions);
        }
        restore(pspec.name());
        pump(&format!("{} restored", pspec.name()), true);
    }
    p.set_state(gst::State::Null).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("min-new-tokens") && w.contains("max-new-tokens")),
        "{warnings:?}"
    );
}

/// `min-new-tokens` above `max-new-tokens`: answers stop at `max-new-tokens` and one warning
/// names both; set the other way round (in either order) there is no warning.
#[test]
fn min_new_tokens_above_max_is_capped_with_a_warning() {
    init();
    let model = model_dir("opt-tiny").display().to_string();
    let run = |props: &str| {
        let p = pipeline(&format!(
            "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=32,height=24,framerate=1/1 \
             ! blip2caption model={model} device=cpu {props} ! fakesink sync=false"
        ));
        let run = run_to_eos(&p, Duration::from_secs(60));
        assert!(run.errors.is_empty(), "{run:?}");
        run
    };
    let r = run("min-new-tokens=30 max-new-tokens=4");
    let conflict: Vec<&String> = r
        .warnings
        .iter()
        .filter(|w| w.contains("min-new-tokens (30)") && w.contains("max-new-tokens (4)"))
        .collect();
    assert_eq!(conflict.len(), 1, "{:?}", r.warnings);
    assert_eq!(r.captions.len(), 3);
    let r = run("min-new-tokens=6 max-new-tokens=8");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

/// Control characters (C0 other than newline and tab) never reach subtitles, messages or meta.
#[test]
fn control_characters_are_removed_from_answers() {
    init();
    let model = install_captioner(
        "faults-control",
        Arc::new(Says("\u{1}a\u{0}b\u{7}c\u{1b}[31m\nd\te\r\u{8}f".into())),
    );
    let p = pipeline(
        &format!(
            "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=8,height=8,framerate=1/1 \
         ! blip2caption model={model} text-mode=cues ! appsink name=v sync=false \
         c.text_src ! appsink name=t sync=false"
        )
        .replace("blip2caption model", "blip2caption name=c model"),
    );
    let video = collect(&p, "v");
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{run:?}");
    let clean = "abc[31m\nd\tef";
    assert_eq!(run.captions.len(), 2);
    for c in &run.captions {
        assert_eq!(c.get::<&str>("text").unwrap(), clean);
    }
    let text = text.lock().unwrap();
    assert_eq!(text.len(), 2);
    for b in text.iter() {
        assert_eq!(&*b.map_readable().unwrap(), clean.as_bytes());
    }
    let video = video.lock().unwrap();
    let answers = gstblip2::meta_answers(&video[0]);
    assert_eq!(answers[0].get::<&str>("text").unwrap(), clean);
}

/// Empty, unicode/emoji and 10 kB prompts reach the model unchanged and come back in the text.
#[test]
fn odd_prompts_reach_the_model_unchanged() {
    init();
    let fake = Fake::new(0);
    let model = install("faults-prompts", fake.clone());
    let long = "Frage: 🦀 ".repeat(1000);
    let prompts = [
        String::new(),
        "Question: qu'y a-t-il là ? 中文 \u{200b}🎞️👍 Answer:".to_owned(),
        long,
    ];
    let caps = "video/x-raw,format=RGB,width=4,height=2,framerate=1/1";
    let vi = info(caps);
    let el = element(&model, &[("mode", "complete"), ("max-in-flight", "1")]);
    let (mut h, mut th) = start_harnesses(&el, caps);
    for (i, p) in prompts.iter().enumerate() {
        el.set_property("prompt", p);
        h.push(frame_of(&vi, Some(i as u64 * SEC), 10)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let got = text_buffers(&mut th, 3);
    let texts: Vec<_> = got.iter().map(|(_, _, t)| t.clone()).collect();
    let want: Vec<_> = prompts
        .iter()
        .map(|p| Fake::text_for(p, 10).trim().to_owned())
        .collect();
    assert_eq!(texts, want);
    assert_eq!(fake.calls.lock().unwrap().prompts, prompts.to_vec());
}

/// A prompt longer than OPT's positions: an error naming `prompt` in complete mode; in
/// realtime one warning (not one per sample) and every frame still passes.
#[test]
fn too_long_prompt_names_the_property() {
    init();
    let model = model_dir("opt-tiny");
    let long = "a ".repeat(600);
    let p = pipeline(&format!(
        "videotestsrc num-buffers=3 ! video/x-raw,width=16,height=16,framerate=1/1 \
         ! blip2caption name=c model={} device=cpu mode=complete ! fakesink sync=false",
        model.display()
    ));
    p.by_name("c").unwrap().set_property("prompt", &long);
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert_eq!(run.errors.len(), 1, "{run:?}");
    let e = &run.errors[0];
    assert!(
        e.contains("max_position_embeddings") && e.contains("property `prompt`"),
        "{e}"
    );
    assert!(run.captions.is_empty());

    let p = pipeline(&format!(
        "videotestsrc num-buffers=10 ! video/x-raw,width=16,height=16,framerate=1/1 \
         ! blip2caption name=c model={} device=cpu mode=realtime ! appsink name=v sync=false",
        model.display()
    ));
    p.by_name("c").unwrap().set_property("prompt", &long);
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(run.warnings.len(), 1, "{run:?}");
    assert!(run.warnings[0].contains("property `prompt`"), "{run:?}");
    assert_eq!(video.lock().unwrap().len(), 10);
    let s = stats(&p.by_name("c").unwrap());
    assert!(stat(&s, "inference-failures") >= 1);
    assert_eq!(stat(&s, "captions-emitted"), 0);
}

/// Generation that would outgrow the 64 positions of the tiny OPT is capped at what they hold
/// (4 image queries + BOS take 5; the last new token needs none): any `max-new-tokens` and
/// `min-new-tokens` in range gives the longest answer there is, and the pipeline goes on.
#[test]
fn new_tokens_beyond_the_positions_are_capped() {
    init();
    let model = model_dir("opt-tiny");
    for extra in [
        "max-new-tokens=100 min-new-tokens=100",
        "max-new-tokens=1024 min-new-tokens=60",
    ] {
        let p = pipeline(&format!(
            "videotestsrc num-buffers=2 ! video/x-raw,width=16,height=16,framerate=1/1 \
             ! blip2caption name=c model={} device=cpu mode=complete {extra} ! fakesink sync=false",
            model.display()
        ));
        let run = run_to_eos(&p, Duration::from_secs(60));
        assert!(run.errors.is_empty(), "{extra}: {run:?}");
        assert_eq!(run.captions.len(), 2, "{extra}: {run:?}");
    }
}

/// Requests of several elements share batches: a prompt too long for the model fails alone,
/// the other requests of its batch are answered (one element's prompt must not fail another's).
#[test]
fn a_prompt_too_long_fails_alone_in_a_shared_batch() {
    init();
    let blip2 = gstblip2::engine::load_blip2(
        &model_dir("opt-tiny"),
        DeviceChoice::Cpu,
        DTypeChoice::F32,
        &mut |_| {},
    )
    .unwrap();
    let long = "a ".repeat(600);
    let image = RgbImage::new(8, 8, vec![90; 8 * 8 * 3]).unwrap();
    let items = ["", long.as_str(), "Question: what? Answer:"]
        .iter()
        .map(|p| gstblip2::engine::BatchItem {
            input: blip2.prepare(image.clone()).unwrap(),
            prompt: p.to_string(),
            retry_transient: false,
            cancel: gstblip2::engine::CancelToken::never(),
        })
        .collect();
    let results = blip2.caption_batch(items, &GenerationParams::default());
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(
            results[1],
            Err(gstblip2::engine::CaptionError::TooLong { .. })
        ),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    // Each answer is the one it gets alone.
    let alone = blip2
        .caption(&[image], "", &GenerationParams::default())
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().token_ids, alone[0].token_ids);
}

/// `model` changed while PLAYING is applied at the next NULL→READY (documented).
#[test]
fn model_change_while_playing_applies_at_next_ready() {
    init();
    let a = Fake::new(0);
    let b = Fake::new(0);
    let ma = install("faults-model-a", a.clone());
    let mb = install("faults-model-b", b.clone());
    let p = pipeline(&format!(
        "videotestsrc num-buffers=3 ! video/x-raw,width=8,height=8,framerate=1/1 \
         ! blip2caption name=c model={ma} ! fakesink sync=false"
    ));
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Paused).unwrap();
    p.by_name("c").unwrap().set_property("model", &mb);
    let run = run_to_eos(&p, Duration::from_secs(10));
    // (Frames captioned by each model, whatever the batching.)
    let images = |f: &Arc<Fake>| f.calls.lock().unwrap().means.len();
    assert_eq!(run.captions.len(), 3);
    assert_eq!(images(&a), 3);
    assert_eq!(images(&b), 0);
    while bus.pop().is_some() {}
    let run = run_to_eos(&p, Duration::from_secs(10));
    assert_eq!(run.captions.len(), 3);
    assert_eq!(images(&a), 3);
    assert_eq!(images(&b), 3);
}

// ---------------------------------------------------------------------------------------------
// Video

/// Every format the sink template accepts is converted for the model (16×8 frames).
#[test]
fn every_accepted_raw_format_is_captioned() {
    init();
    let fake = Fake::new(0);
    let model = install("faults-formats", fake.clone());
    let mut failed = vec![];
    let mut n = 0;
    for format in gst_video::VideoFormat::iter_raw() {
        let caps = format!(
            "video/x-raw,format={},width=16,height=8,framerate=1/1",
            format.to_str()
        );
        let Ok(vi) = caps
            .parse::<gst::Caps>()
            .map_err(|_| ())
            .and_then(|c| gst_video::VideoInfo::from_caps(&c).map_err(|_| ()))
        else {
            continue;
        };
        let el = element(&model, &[("mode", "complete"), ("max-in-flight", "1")]);
        let (mut h, _th) = start_harnesses(&el, &caps);
        let before = fake.calls.lock().unwrap().sizes.len();
        let res = h.push(frame_of(&vi, Some(0), 128));
        let after = fake.calls.lock().unwrap().sizes.clone();
        if res.is_err() || after.len() != before + 1 || after[before] != (16, 8) {
            failed.push(format!("{}: {res:?}", format.to_str()));
        }
        n += 1;
    }
    assert!(n > 50, "only {n} formats tried");
    assert!(failed.is_empty(), "{failed:?}");
}

/// Tiny, odd and 4K frames, renegotiated mid-stream, all reach the model at their size.
#[test]
fn extreme_sizes_and_mid_stream_renegotiation() {
    init();
    let fake = Fake::new(0);
    let model = install("faults-sizes", fake.clone());
    let el = element(
        &model,
        &[
            ("mode", "complete"),
            ("interval", "0"),
            ("max-in-flight", "1"),
        ],
    );
    let sizes = [
        ("RGB", 1, 1),
        ("I420", 2, 3),
        ("NV12", 7, 5),
        ("BGRx", 33, 17),
        ("I420", 4096, 2160),
        ("RGB", 1, 1),
    ];
    let first = "video/x-raw,format=RGB,width=1,height=1,framerate=25/1";
    let (mut h, mut th) = start_harnesses(&el, first);
    for (i, (f, w, hgt)) in sizes.iter().enumerate() {
        let caps = format!("video/x-raw,format={f},width={w},height={hgt},framerate=25/1");
        h.set_src_caps_str(&caps);
        let out_caps = h.sinkpad().unwrap().current_caps().unwrap();
        let vi = info(&caps);
        h.push(frame_of(&vi, Some(i as u64 * SEC / 25), 200))
            .unwrap();
        // The video caps pass through to downstream unchanged.
        let s = out_caps.structure(0).unwrap();
        assert_eq!(
            (
                s.get::<i32>("width").unwrap(),
                s.get::<i32>("height").unwrap()
            ),
            (*w, *hgt)
        );
    }
    let want: Vec<(usize, usize)> = sizes
        .iter()
        .map(|&(_, w, h)| (w as usize, h as usize))
        .collect();
    assert_eq!(fake.calls.lock().unwrap().sizes, want);
    // Each cue goes out when the next sample is taken; the last one at EOS.
    assert_eq!(text_buffers(&mut th, 5).len(), 5);
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(text_buffers(&mut th, 1).len(), 1);
    // Downstream saw the last caps.
    assert_eq!(
        h.sinkpad()
            .unwrap()
            .current_caps()
            .unwrap()
            .structure(0)
            .unwrap()
            .get::<i32>("width")
            .unwrap(),
        1
    );
}

/// Buffers without PTS are placed in arrival order (each right after the previous frame).
#[test]
fn buffers_without_pts_are_sampled_in_arrival_order() {
    init();
    let model = install("faults-nopts", Fake::new(0));
    let caps = "video/x-raw,format=RGB,width=4,height=2,framerate=10/1";
    let vi = info(caps);
    let el = element(&model, &[("mode", "complete"), ("max-in-flight", "1")]);
    let (mut h, mut th) = start_harnesses(&el, caps);
    for i in 0..25 {
        h.push(frame_of(&vi, None, i as u8)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let got = text_buffers(&mut th, 3);
    let times: Vec<_> = got.iter().map(|(p, d, _)| (*p, *d)).collect();
    // The last cue ends with the 25th frame.
    assert_eq!(times, vec![(0, SEC), (SEC, SEC), (2 * SEC, SEC / 2)]);
    let texts: Vec<_> = got.iter().map(|(_, _, t)| t.as_str()).collect();
    assert_eq!(texts, vec!["mean 0", "mean 10", "mean 20"]);
    // The video itself passes untouched (still without PTS).
    assert_eq!(h.pull().unwrap().pts(), None);
}

/// A discontinuity (a jump forward) samples the first frame after the jump.
#[test]
fn discontinuity_samples_the_first_frame_after_the_jump() {
    init();
    let model = install("faults-discont", Fake::new(0));
    let caps = "video/x-raw,format=RGB,width=4,height=2,framerate=10/1";
    let vi = info(caps);
    let el = element(&model, &[("mode", "complete"), ("max-in-flight", "1")]);
    let (mut h, mut th) = start_harnesses(&el, caps);
    for i in 0..5 {
        h.push(frame_of(&vi, Some(i * SEC / 10), 1)).unwrap();
    }
    for i in 0..5 {
        let mut b = frame_of(&vi, Some(10 * SEC + 350_000_000 + i * SEC / 10), 2);
        if i == 0 {
            b.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
        }
        h.push(b).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let got = text_buffers(&mut th, 2);
    let pts: Vec<_> = got.iter().map(|(p, _, t)| (*p, t.as_str())).collect();
    assert_eq!(pts, vec![(0, "mean 1"), (10 * SEC + 350_000_000, "mean 2")]);
}

/// A BYTES segment is refused with an error message saying why.
#[test]
fn non_time_segment_is_a_clear_error() {
    init();
    let model = install("faults-bytes", Fake::new(0));
    let el = element(&model, &[]);
    let (mut h, _th) = start_harnesses(
        &el,
        "video/x-raw,format=RGB,width=4,height=2,framerate=10/1",
    );
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let seg = gst::FormattedSegment::<gst::format::Bytes>::new();
    // A refused sticky event still "succeeds" on the harness pad; the element's answer is the
    // error message and the next buffer's flow.
    h.push_event(gst::event::Segment::new(&seg));
    let err = bus
        .iter()
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
        .expect("an error message");
    assert!(err.contains("Only TIME segments"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Flow

/// After a flushing seek with a caption in flight, no caption of the old position comes out:
/// every caption posted after the seek belongs to a frame at or after the seek target.
#[test]
fn flushing_seek_leaves_no_stale_caption() {
    init();
    for mode in ["complete", "realtime"] {
        let model = install(&format!("faults-seek-{mode}"), Fake::new(50));
        let p = pipeline(&format!(
            "videotestsrc num-buffers=60 ! video/x-raw,width=8,height=8,framerate=10/1 \
             ! identity sleep-time=10000 ! blip2caption name=c model={model} mode={mode} interval=0 ! fakesink sync=false"
        ));
        let bus = p.bus().unwrap();
        p.set_state(gst::State::Playing).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        p.seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::ClockTime::from_seconds(3),
        )
        .unwrap();
        // Whatever was posted before the seek returned may be old.
        while bus.pop().is_some() {}
        let run = run_to_eos(&p, Duration::from_secs(20));
        assert!(run.errors.is_empty(), "{mode}: {run:?}");
        let pts: Vec<u64> = run.captions.iter().map(|c| u64_field(c, "pts")).collect();
        let c = p.by_name("c").unwrap();
        assert!(!pts.is_empty(), "{mode}: {run:?} {}", stats(&c));
        assert!(pts.iter().all(|&p| p >= 3 * SEC), "{mode}: {pts:?}");
        if mode == "complete" {
            // Every frame from the target on, in order, none missing.
            let want: Vec<u64> = (0..pts.len() as u64)
                .map(|i| 3 * SEC + i * SEC / 10)
                .collect();
            assert_eq!(pts, want);
        }
    }
}

/// Realtime mode at EOS: the caption still being computed comes out before EOS on text_src.
#[test]
fn realtime_eos_waits_for_the_caption_in_flight() {
    init();
    let model = install("faults-rt-eos", Fake::new(300));
    let caps = "video/x-raw,format=RGB,width=4,height=2,framerate=10/1";
    let vi = info(caps);
    let el = element(&model, &[("mode", "realtime")]);
    let (mut h, mut th) = start_harnesses(&el, caps);
    let mut f = frame_of(&vi, Some(0), 77);
    f.get_mut()
        .unwrap()
        .set_duration(gst::ClockTime::from_mseconds(100));
    h.push(f).unwrap();
    let start = Instant::now();
    assert!(h.push_event(gst::event::Eos::new()));
    assert!(start.elapsed() >= Duration::from_millis(200));
    let got = text_buffers(&mut th, 1);
    // The cue keeps its frame's time and ends with the stream (the end of that frame).
    assert_eq!(got, vec![(0, SEC / 10, "mean 77".to_owned())]);
    // The text pad's own task pushes EOS after the caption: wait for it (pull_event blocks).
    let eos = std::iter::from_fn(|| th.pull_event().ok()).any(|e| e.type_() == gst::EventType::Eos);
    assert!(eos, "EOS follows the caption on text_src");
}

/// PLAYING→NULL in realtime mode with a forward pass in flight returns within a second.
#[test]
fn realtime_stop_while_busy_returns_within_a_second() {
    init();
    let model = install("faults-rt-stop", Fake::new(3000));
    let p = pipeline(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=16,height=16,framerate=30/1 \
         ! blip2caption model={model} interval=0 ! fakesink"
    ));
    p.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    p.set_state(gst::State::Null).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

/// 100 NULL↔PLAYING cycles: no deadlock, the model is freed each time (only the test and the
/// registration hold the fake afterwards), and a final run still captions every sample.
#[test]
fn hundred_null_playing_cycles() {
    init();
    let fake = Fake::new(5);
    let model = install("faults-cycles", fake.clone());
    let p = pipeline(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=16,height=16,framerate=30/1 \
         ! blip2caption model={model} interval=0 ! fakesink"
    ));
    let start = Instant::now();
    for _ in 0..100 {
        p.set_state(gst::State::Playing).unwrap();
        let _ = p.state(gst::ClockTime::from_mseconds(200));
        p.set_state(gst::State::Null).unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(&fake) > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(Arc::strong_count(&fake), 2, "model not freed after NULL");

    let p = pipeline(&format!(
        "videotestsrc num-buffers=4 ! video/x-raw,width=16,height=16,framerate=1/1 \
         ! blip2caption model={model} ! fakesink sync=false"
    ));
    let run = run_to_eos(&p, Duration::from_secs(10));
    assert_eq!(run.captions.len(), 4);
}

/// A text branch that returns errors stops the pipeline with an error (like any downstream
/// error), it does not hang.
#[test]
fn text_src_downstream_error_is_an_error_not_a_hang() {
    init();
    let model = install("faults-text-error", Fake::new(0));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=30 ! video/x-raw,width=8,height=8,framerate=5/1 \
         ! blip2caption name=c model={model} ! fakesink sync=false c.text_src ! appsink name=t sync=false"
    ));
    let sink = p
        .by_name("t")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |_| {
                s2.fetch_add(1, Ordering::SeqCst);
                Err(gst::FlowError::Error)
            })
            .build(),
    );
    let run = run_to_eos(&p, Duration::from_secs(10));
    assert_eq!(run.errors.len(), 1, "{run:?}");
    assert!(run.errors[0].contains("error"), "{run:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

/// Eight elements share one model concurrently: every sample of every branch is captioned by
/// one worker thread.
#[test]
fn eight_elements_share_one_model() {
    init();
    let fake = Fake::new(20);
    let model = install("faults-eight", fake.clone());
    let mut desc =
        "videotestsrc num-buffers=5 ! video/x-raw,width=8,height=8,framerate=1/1 ! tee name=t"
            .to_owned();
    for i in 0..8 {
        desc += &format!(
            " t. ! queue ! blip2caption name=c{i} model={model} mode=complete ! fakesink sync=false"
        );
    }
    let p = pipeline(&desc);
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(run.captions.len(), 40);
    let calls = fake.calls.lock().unwrap();
    assert_eq!(calls.batches.iter().sum::<usize>(), 40);
    assert_eq!(calls.threads.len(), 1);
    for i in 0..8 {
        let s = stats(&p.by_name(&format!("c{i}")).unwrap());
        assert_eq!(stat(&s, "captions-emitted"), 5, "c{i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Engine faults

/// The real tiny model behind a hook that makes chosen forward passes fail (as a GPU out of
/// memory would).
struct Flaky {
    inner: Arc<dyn Captioner>,
    calls: AtomicUsize,
    fail: Box<dyn Fn(usize) -> bool + Send + Sync>,
    log: Mutex<Vec<bool>>,
}

impl Captioner for Flaky {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> gstblip2::engine::Result<Vec<Caption>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = (self.fail)(n);
        self.log.lock().unwrap().push(fail);
        if fail {
            // As candle reports it with RUST_BACKTRACE=1: the backtrace rides on the error.
            let oom = candle_core::Error::WithBacktrace {
                inner: Box::new(candle_core::Error::Msg(
                    "CUDA_ERROR_OUT_OF_MEMORY (injected)".into(),
                )),
                backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
            };
            return Err(model::Error::Candle(oom).into());
        }
        self.inner.caption(images, prompt, params)
    }
}

fn flaky(name: &str, fail: impl Fn(usize) -> bool + Send + Sync + 'static) -> (String, Arc<Flaky>) {
    let inner = gstblip2::engine::load_blip2(
        &model_dir("opt-tiny"),
        DeviceChoice::Cpu,
        DTypeChoice::F32,
        &mut |_| {},
    )
    .unwrap();
    let f = Arc::new(Flaky {
        inner,
        calls: AtomicUsize::new(0),
        fail: Box::new(fail),
        log: Mutex::new(vec![]),
    });
    let path = format!("/fake-models/{name}");
    gstblip2::engine::register_captioner(&path, f.clone());
    (path, f)
}

/// Realtime: failed forward passes give one warning (repeats are not re-posted), are counted,
/// and the worker goes on captioning; samples = captions + drops + failures.
#[test]
fn inference_errors_do_not_wedge_the_worker_in_realtime() {
    init();
    let (model, f) = flaky("faults-flaky-rt", |n| n < 3);
    let p = pipeline(&format!(
        // Live at 100 fps for 0.8 s, so the model is called many times whatever the machine's
        // load (an unsynced burst may end before a fourth call).
        "videotestsrc is-live=true num-buffers=80 ! video/x-raw,width=32,height=32,framerate=100/1 \
         ! blip2caption name=c model={model} mode=realtime interval=10000000 ! appsink name=v sync=false"
    ));
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(run.warnings.len(), 1, "{run:?}");
    assert!(
        run.warnings[0].contains("CUDA_ERROR_OUT_OF_MEMORY"),
        "{run:?}"
    );
    // The injected error carries a backtrace; it stays in the debug log.
    assert!(!run.warnings[0].contains('\n'), "{run:?}");
    assert_eq!(run.warnings[0].lines().count(), 1, "{run:?}");
    assert_eq!(video.lock().unwrap().len(), 80);
    let s = stats(&p.by_name("c").unwrap());
    let failures = f.log.lock().unwrap().iter().filter(|&&x| x).count() as u64;
    assert_eq!(failures, 3);
    assert_eq!(stat(&s, "inference-failures"), 3);
    assert!(stat(&s, "captions-emitted") >= 1, "{s}");
    assert_eq!(run.captions.len() as u64, stat(&s, "captions-emitted"));
    assert_eq!(
        stat(&s, "samples-taken"),
        stat(&s, "captions-emitted") + stat(&s, "samples-dropped") + 3,
        "{s}"
    );
    assert_eq!(stat(&s, "samples-taken"), 80);
}

/// Complete mode: a failed forward pass is an error (a caption was promised), and after a
/// restart the same shared worker captions again.
#[test]
fn inference_error_in_complete_mode_is_an_error_and_the_worker_recovers() {
    init();
    let (model, _f) = flaky("faults-flaky-complete", |n| n == 1);
    let desc = format!(
        "videotestsrc num-buffers=3 ! video/x-raw,width=32,height=32,framerate=1/1 \
         ! blip2caption model={model} mode=complete max-in-flight=1 ! fakesink sync=false"
    );
    let run = run_to_eos(&pipeline(&desc), Duration::from_secs(60));
    assert_eq!(run.errors.len(), 1, "{run:?}");
    assert!(
        run.errors[0].contains("frame at 0:00:01.000000000"),
        "{run:?}"
    );
    assert_eq!(run.captions.len(), 1);
    let run = run_to_eos(&pipeline(&desc), Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(run.captions.len(), 3);
}

/// Complete mode with samples in flight: a caption that fails while EOS drains the window is
/// one ERROR from the element (the failure, naming the frame), not that and a second, generic
/// "streaming stopped" one. The model answers after the source has sent EOS, so the failure is
/// met in the drain (no chain call returns it, so the source posts nothing).
#[test]
fn failure_while_draining_at_eos_is_one_error() {
    init();
    let slow_failure = Arc::new(Fake {
        delay: Duration::from_millis(1500),
        fail: true,
        calls: Mutex::default(),
    });
    let model = install("faults-drain-failure", slow_failure);
    let p = pipeline(&format!(
        "videotestsrc name=src num-buffers=3 ! video/x-raw,width=32,height=32,framerate=1/1 \
         ! blip2caption name=c model={model} mode=complete max-in-flight=8 ! fakesink sync=false"
    ));
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut errors: Vec<(String, String)> = vec![];
    // Up to the first ERROR, then two more seconds for any that follows it.
    let mut deadline = Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            break;
        };
        match msg.view() {
            gst::MessageView::Error(e) => {
                let from = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                errors.push((from, e.error().to_string()));
                if errors.len() == 1 {
                    deadline = Instant::now() + Duration::from_secs(2);
                }
            }
            // The end without an error: the failure was lost (asserted below).
            gst::MessageView::Eos(_) if errors.is_empty() => break,
            _ => (),
        }
    }
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (from, text) = &errors[0];
    assert_eq!(from, "c", "{errors:?}");
    assert!(
        text.contains("frame at 0:00:00.000000000") && text.contains("fake model failure"),
        "{text}"
    );
}
