//! Smarter sampling (issue 13): `scene-threshold` (caption on scene changes), `merge-repeats`
//! (one cue per distinct answer) and `prompts` (several questions per sample), through whole
//! pipelines with fake captioners and the tiny real model.

mod gst_common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gst::prelude::*;
use gst_common::*;
use gstblip2::engine;

const SEC: u64 = 1_000_000_000;
const W: usize = 64;
const H: usize = 48;
const FPS: u64 = 10;

/// A picture with flat areas, colour bars and a gradient; `seed` makes a different scene (other
/// bar order, brighter gradient), with a different mean too, so the fake captioners answer
/// differently.
fn picture(seed: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(W * H * 3);
    for y in 0..H {
        for x in 0..W {
            let band = ((x * 6 / W) as u32 + seed) % 6;
            let rgb = if y < H / 2 {
                [
                    [200, 180, 160],
                    [90, 140, 110],
                    [60, 70, 150],
                    [230, 220, 90],
                    [40, 40, 40],
                    [150, 80, 90],
                ][band as usize]
            } else {
                let g = (x as u32 * 150 / W as u32 + seed * 25).min(255) as u8;
                [g, g, g]
            };
            data.extend_from_slice(&rgb);
        }
    }
    data
}

/// `rgb` with every byte moved by up to ±`amp` (deterministic, different per `seed`).
fn with_noise(rgb: &[u8], amp: i32, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    rgb.iter()
        .map(|&v| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = ((state >> 33) % (2 * amp as u64 + 1)) as i32 - amp;
            (v as i32 + n).clamp(0, 255) as u8
        })
        .collect()
}

/// A non-live RGB 64x48 @ 10 fps pipeline fed from `frames` through appsrc into
/// `blip2caption name=c <props>`, video to fakesink and text to appsink `t`.
fn appsrc_pipeline(frames: Vec<Vec<u8>>, props: &str) -> gst::Pipeline {
    let p = pipeline(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},framerate={FPS}/1 \
         ! blip2caption name=c {props} ! fakesink sync=false c.text_src ! appsink name=t sync=false"
    ));
    let src = p
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    for (i, data) in frames.into_iter().enumerate() {
        let mut b = gst::Buffer::from_mut_slice(data);
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i as u64 * SEC / FPS));
            b.set_duration(gst::ClockTime::from_nseconds(SEC / FPS));
        }
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    p
}

fn field_u64(s: &gst::Structure, name: &str) -> u64 {
    u64_field(s, name)
}

/// (pts, duration, text) of the text buffers.
fn cues(buffers: &[gst::Buffer]) -> Vec<(u64, u64, String)> {
    buffers
        .iter()
        .map(|b| {
            (
                b.pts().unwrap().nseconds(),
                b.duration().unwrap().nseconds(),
                String::from_utf8(b.map_readable().unwrap().to_vec()).unwrap(),
            )
        })
        .collect()
}

fn stats(p: &gst::Pipeline) -> gst::Structure {
    p.by_name("c").unwrap().property::<gst::Structure>("stats")
}

#[test]
fn scene_threshold_samples_at_the_cuts_only() {
    init();
    let fake = Fake::new(0);
    let model = install("scene-cuts", fake.clone());
    // Three still scenes of 2 s each, with slight sensor noise on every frame.
    let frames: Vec<Vec<u8>> = (0..60)
        .map(|i| with_noise(&picture([0, 2, 4][i / 20]), 4, i as u64))
        .collect();
    for interval in ["0", "1000000000"] {
        let p = appsrc_pipeline(
            frames.clone(),
            &format!("model={model} scene-threshold=0.05 interval={interval}"),
        );
        let text = collect(&p, "t");
        let run = run_to_eos(&p, Duration::from_secs(30));
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        let times: Vec<u64> = run
            .captions
            .iter()
            .map(|c| field_u64(c, "running-time"))
            .collect();
        assert_eq!(times, vec![0, 2 * SEC, 4 * SEC], "interval {interval}");
        // Frames that are not sampled are not converted or captioned.
        assert_eq!(stats(&p).get::<u64>("samples-taken").unwrap(), 3);
        // A caption lasts until the next sample; the last one until the end of the stream.
        let got = cues(&text.lock().unwrap());
        let spans: Vec<(u64, u64)> = got.iter().map(|(p, d, _)| (*p, *d)).collect();
        assert_eq!(
            spans,
            vec![(0, 2 * SEC), (2 * SEC, 2 * SEC), (4 * SEC, 2 * SEC)]
        );
        for ((_, _, text), msg) in got.iter().zip(&run.captions) {
            assert_eq!(text, msg.get::<&str>("text").unwrap());
        }
    }
}

/// Per-frame text (what overlays and mp4mux get): each frame carries the caption of the last
/// scene change until the next one.
#[test]
fn scene_captions_show_until_the_next_change_on_per_frame_text() {
    init();
    let model = install("scene-per-frame", Fake::new(0));
    let frames: Vec<Vec<u8>> = (0..30).map(|i| picture([0, 2, 4][i / 10])).collect();
    let p = appsrc_pipeline(
        frames,
        &format!("model={model} scene-threshold=0.05 interval=0 text-mode=per-frame"),
    );
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.captions.len(), 3);
    let got = cues(&text.lock().unwrap());
    assert_eq!(got.len(), 30, "one text buffer per frame");
    for (i, (pts, duration, text)) in got.iter().enumerate() {
        assert_eq!((*pts, *duration), (i as u64 * SEC / FPS, SEC / FPS));
        let caption = run.captions[i / 10].get::<&str>("text").unwrap();
        assert_eq!(text, caption, "frame {i}");
    }
}

#[test]
fn slight_noise_on_a_still_gives_no_extra_samples() {
    init();
    let model = install("scene-noise", Fake::new(0));
    let still = picture(1);
    let frames: Vec<Vec<u8>> = (0..30).map(|i| with_noise(&still, 8, i)).collect();
    let p = appsrc_pipeline(
        frames,
        &format!("model={model} scene-threshold=0.02 interval=0"),
    );
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.captions.len(), 1);
    assert_eq!(field_u64(&run.captions[0], "pts"), 0);
    let got = cues(&text.lock().unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1), (0, 3 * SEC));
}

/// SRT text written by srtenc for a still image of 5 s captioned every second.
fn still_to_srt(merge: bool) -> (Run, String, Vec<(u64, u64, String)>) {
    let model = install(&format!("merge-{merge}"), Fake::new(0));
    let out = scratch(&format!("merge-{merge}")).join("out.srt");
    let p = pipeline(&format!(
        "videotestsrc pattern=solid-color foreground-color=0xff336699 num-buffers=125 \
         ! video/x-raw,format=I420,width=32,height=24,framerate=25/1 \
         ! blip2caption name=c model={model} interval=1000000000 merge-repeats={merge} \
         ! fakesink sync=false c.text_src ! tee name=tt \
         tt. ! queue ! srtenc ! filesink location={} tt. ! queue ! appsink name=t sync=false",
        out.display()
    ));
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let srt = std::fs::read_to_string(&out).unwrap();
    let got = cues(&text.lock().unwrap());
    (run, srt, got)
}

#[test]
fn merge_repeats_makes_one_cue_of_a_still() {
    init();
    let (run, srt, got) = still_to_srt(false);
    assert_eq!(run.captions.len(), 5);
    assert_eq!(got.len(), 5);
    assert_eq!(srt.matches(" --> ").count(), 5, "{srt}");

    let (run, srt, got) = still_to_srt(true);
    // Messages (and meta) still come for every sample.
    assert_eq!(run.captions.len(), 5);
    let text = run.captions[0].get::<&str>("text").unwrap().to_owned();
    assert_eq!(got, vec![(0, 5 * SEC, text.clone())]);
    assert_eq!(srt, format!("1\n00:00:00,000 --> 00:00:05,000\n{text}\n\n"));
}

#[test]
fn merge_repeats_starts_a_new_cue_when_the_answer_changes() {
    init();
    let model = install("merge-change", Fake::new(0));
    // 1 s of scene A, 2 s of B, 1 s of A again; one sample per second.
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|i| picture(if (10..30).contains(&i) { 3 } else { 0 }))
        .collect();
    let p = appsrc_pipeline(frames, &format!("model={model} merge-repeats=true"));
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.captions.len(), 4);
    let texts: Vec<String> = run
        .captions
        .iter()
        .map(|c| c.get::<String>("text").unwrap())
        .collect();
    assert_ne!(texts[0], texts[1]);
    let spans: Vec<(u64, u64, String)> = cues(&text.lock().unwrap());
    assert_eq!(
        spans,
        vec![
            (0, SEC, texts[0].clone()),
            (SEC, 2 * SEC, texts[1].clone()),
            (3 * SEC, SEC, texts[3].clone()),
        ]
    );
}

/// A still of 5 s (10 fps, one sample per second) with `merge-repeats`, its text pad into
/// `consumer` (a gst-launch tail after `c.text_src`, with the video branch given by `video`).
fn merged_still_into(tag: &str, props: &str, video: &str, consumer: &str) -> Run {
    let model = install(&format!("merge-into-{tag}"), Fake::new(0));
    let p = pipeline(&format!(
        "videotestsrc pattern=solid-color foreground-color=0xff663399 num-buffers=50 \
         ! video/x-raw,format=I420,width=64,height=48,framerate=10/1 \
         ! blip2caption name=c model={model} interval=1000000000 merge-repeats=true {props} \
         {video} c.text_src ! {consumer}"
    ));
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{tag}: {:?}", run.errors);
    assert_eq!(run.captions.len(), 5, "{tag}: a message per sample");
    run
}

/// merge-repeats in both text layouts: with cues (what `auto` picks for srtenc, tested above)
/// webvttenc gets one 0-5 s cue; with per-frame text (what `auto` picks for muxers, whose
/// subtitle track must advance frame by frame or they hang) every frame carries the same
/// caption, so the track shows one caption from 0 to 5 s without a break, as without merging.
#[test]
fn merge_repeats_keeps_one_cue_in_both_text_modes() {
    init();
    let encoder = "! queue ! x264enc speed-preset=ultrafast tune=zerolatency ! m.video_0";

    let vtt = scratch("merge-vtt").join("out.vtt");
    let run = merged_still_into(
        "vtt",
        "text-mode=cues",
        "! fakesink sync=false",
        &format!("webvttenc ! filesink location={}", vtt.display()),
    );
    let text = run.captions[0].get::<String>("text").unwrap();
    let vtt = std::fs::read_to_string(&vtt).unwrap();
    assert_eq!(vtt.matches(" --> ").count(), 1, "{vtt}");
    assert!(
        vtt.contains(&format!("00:00:00.000 --> 00:00:05.000\n{text}\n")),
        "{vtt}"
    );

    for (tag, props, mux, demux) in [
        ("mp4-auto", "", "mp4mux", "qtdemux"),
        ("mp4-per-frame", "text-mode=per-frame", "mp4mux", "qtdemux"),
        ("mkv-auto", "", "matroskamux", "matroskademux"),
    ] {
        let file = scratch(&format!("merge-{tag}")).join("out");
        let run = merged_still_into(
            tag,
            props,
            encoder,
            &format!(
                "queue ! m.subtitle_0 {mux} name=m ! filesink location={}",
                file.display()
            ),
        );
        let text = run.captions[0].get::<String>("text").unwrap();
        let samples = demux_subtitles(demux, &file);
        assert_eq!(samples.len(), 50, "{tag}: one subtitle sample per frame");
        assert_eq!(
            merge_cues(&samples),
            vec![(0, 5 * SEC, text)],
            "{tag}: one caption shown without a break"
        );
    }
}

const Q: &str = "Question: how many people are there? Answer:";

#[test]
fn prompts_answer_every_sample_in_one_call_with_one_message_per_prompt() {
    init();
    let recorder = Arc::new(Recorder::default());
    let model = "/fake-models/prompts-recorder";
    engine::register_captioner(model, recorder.clone());
    let p = pipeline(&format!(
        "videotestsrc num-buffers=20 ! video/x-raw,format=RGB,width=32,height=24,framerate=10/1 \
         ! blip2caption name=c model={model} prompt=unused max-in-flight=1 \
           prompts=\"<\\\"\\\", \\\"{Q}\\\">\" ! appsink name=v sync=false \
         c.text_src ! appsink name=t sync=false"
    ));
    let video = collect(&p, "v");
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);

    // One model call per sample (one sample in flight), with both prompts in order.
    let calls = recorder.calls.lock().unwrap().clone();
    assert_eq!(calls, vec![vec![String::new(), Q.to_owned()]; 2]);

    // One message per prompt, each naming it, in prompt order.
    assert_eq!(run.captions.len(), 4);
    for (i, m) in run.captions.iter().enumerate() {
        let prompt = if i % 2 == 0 { "" } else { Q };
        assert_eq!(m.get::<&str>("prompt").unwrap(), prompt);
        assert!(
            m.get::<&str>("text")
                .unwrap()
                .starts_with(&format!("{prompt}|"))
        );
        assert_eq!(field_u64(m, "pts"), (i as u64 / 2) * SEC);
    }

    // One text buffer per sample, the answers one per line in the order of `prompts`.
    let got = cues(&text.lock().unwrap());
    assert_eq!(got.len(), 2);
    for (i, (pts, _, text)) in got.iter().enumerate() {
        assert_eq!(*pts, i as u64 * SEC);
        let expected = format!(
            "{}\n{}",
            run.captions[2 * i].get::<&str>("text").unwrap(),
            run.captions[2 * i + 1].get::<&str>("text").unwrap()
        );
        assert_eq!(text, &expected);
    }

    // The meta carries one answer per prompt, each naming its prompt.
    let video = video.lock().unwrap();
    let meta = gst::meta::CustomMeta::from_buffer(&video[0], gstblip2::META_NAME).unwrap();
    let answers = meta.structure().get::<gst::Array>("answers").unwrap();
    let answers: Vec<(String, String)> = answers
        .iter()
        .map(|v| {
            let s = v.get::<gst::Structure>().unwrap();
            (
                s.get::<String>("prompt").unwrap(),
                s.get::<String>("text").unwrap(),
            )
        })
        .collect();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].0, "");
    assert_eq!(answers[1].0, Q);
    assert_eq!(answers[0].1, run.captions[0].get::<String>("text").unwrap());
    assert_eq!(answers[1].1, run.captions[1].get::<String>("text").unwrap());
}

/// Realtime mode (video never waits): every sample still gets all its answers, together.
#[test]
fn prompts_in_realtime_mode() {
    init();
    let model = install("prompts-realtime", Fake::new(0));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=32,height=24,framerate=10/1 \
         ! blip2caption name=c model={model} mode=realtime prompts=\"<\\\"a:\\\", \\\"b:\\\">\" \
         ! fakesink sync=false c.text_src ! appsink name=t sync=false"
    ));
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let stats = stats(&p);
    let taken = stats.get::<u64>("samples-taken").unwrap();
    let dropped = stats.get::<u64>("samples-dropped").unwrap();
    assert_eq!(taken, 3);
    // Answers come in pairs, "a:" then "b:", for the same frame.
    assert_eq!(run.captions.len() as u64, 2 * (taken - dropped));
    for pair in run.captions.chunks(2) {
        assert_eq!(pair[0].get::<&str>("prompt").unwrap(), "a:");
        assert_eq!(pair[1].get::<&str>("prompt").unwrap(), "b:");
        assert_eq!(field_u64(&pair[0], "pts"), field_u64(&pair[1], "pts"));
    }
    for (_, _, t) in cues(&text.lock().unwrap()) {
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t:?}");
        assert!(lines[0].starts_with("a:mean ") && lines[1].starts_with("b:mean "));
    }
}

/// Per-frame text (muxers, overlays) with several prompts: every frame carries its sample's
/// answers, one per line in prompt order, until the next sample.
#[test]
fn prompts_on_per_frame_text() {
    init();
    let model = install("prompts-per-frame", Fake::new(0));
    let frames: Vec<Vec<u8>> = (0..20).map(|i| picture([0, 3][i / 10])).collect();
    let p = appsrc_pipeline(
        frames,
        &format!(
            "model={model} text-mode=per-frame interval=1000000000 \
             prompts=\"<\\\"a:\\\", \\\"b:\\\">\""
        ),
    );
    let text = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.captions.len(), 4, "two samples, two prompts each");
    let got = cues(&text.lock().unwrap());
    assert_eq!(got.len(), 20, "one text buffer per frame");
    for (i, (pts, duration, text)) in got.iter().enumerate() {
        assert_eq!((*pts, *duration), (i as u64 * SEC / FPS, SEC / FPS));
        let sample = i / 10;
        let a = run.captions[2 * sample].get::<&str>("text").unwrap();
        let b = run.captions[2 * sample + 1].get::<&str>("text").unwrap();
        assert!(
            a.starts_with("a:mean ") && b.starts_with("b:mean "),
            "{a} {b}"
        );
        assert_eq!(text, &format!("{a}\n{b}"), "frame {i}");
    }
    assert_ne!(got[0].2, got[10].2, "the second scene answers differently");
}

#[test]
fn prompts_property_from_gst_launch_and_back() {
    init();
    let model = install("prompts-parse", Fake::new(0));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=1 ! blip2caption name=c model={model} \
         prompts=\"<\\\"\\\", \\\"{Q}\\\">\" ! fakesink"
    ));
    let c = p.by_name("c").unwrap();
    let prompts = c.property::<gst::Array>("prompts");
    let prompts: Vec<String> = prompts.iter().map(|v| v.get::<String>().unwrap()).collect();
    assert_eq!(prompts, vec![String::new(), Q.to_owned()]);
    // Unset by default: `prompt` is used.
    let fresh = gst::ElementFactory::make("blip2caption").build().unwrap();
    assert!(fresh.property::<gst::Array>("prompts").is_empty());
    let pspec = fresh.find_property("prompts").unwrap();
    assert!(pspec.blurb().unwrap().contains("prompt"));

    // More than 64 is refused with a warning naming the property; the old prompts stay.
    let bus = p.bus().unwrap();
    c.set_property("prompts", gst::Array::new((0..65).map(|i| format!("q{i}"))));
    let back: Vec<String> = c
        .property::<gst::Array>("prompts")
        .iter()
        .map(|v| v.get::<String>().unwrap())
        .collect();
    assert_eq!(back, vec![String::new(), Q.to_owned()]);
    let warning = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(5),
            &[gst::MessageType::Warning],
        )
        .expect("a warning");
    let gst::MessageView::Warning(w) = warning.view() else {
        unreachable!()
    };
    let text = w.error().to_string();
    assert!(
        text.contains("property `prompts`") && text.contains("65"),
        "{text}"
    );
}

/// A prompt of `prompts` that is too long for the model fails naming `prompts`.
#[test]
fn too_long_prompt_in_prompts_names_the_property() {
    init();
    let model = fixtures().join("models/opt-tiny");
    let p = pipeline(&format!(
        "videotestsrc num-buffers=2 ! video/x-raw,width=16,height=16,framerate=1/1 \
         ! blip2caption name=c model={} device=cpu mode=complete ! fakesink sync=false",
        model.display()
    ));
    let long = "a ".repeat(600);
    p.by_name("c")
        .unwrap()
        .set_property("prompts", gst::Array::new(["", long.as_str()]));
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert_eq!(run.errors.len(), 1, "{run:?}");
    assert!(
        run.errors[0].contains("property `prompts`"),
        "{}",
        run.errors[0]
    );
    assert!(run.captions.is_empty());
}

#[test]
fn prompts_change_while_playing_applies_from_the_next_sample() {
    init();
    let fake = Fake::new(0);
    let model = install("prompts-change", fake.clone());
    let el = gst::ElementFactory::make("blip2caption")
        .property("model", &model)
        .property_from_str("mode", "complete")
        .property_from_str("interval", "0")
        // One sample in flight: the model's calls come in sample order.
        .property_from_str("max-in-flight", "1")
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    let mut th = gst_check::Harness::with_element(&el, None, Some("text_src"));
    h.set_src_caps_str("video/x-raw,format=RGB,width=4,height=2,framerate=10/1");
    let frame = |i: u64| {
        let mut b = gst::Buffer::from_mut_slice(vec![1u8; 4 * 2 * 3]);
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i * SEC / 10));
            b.set_duration(gst::ClockTime::from_nseconds(SEC / 10));
        }
        b
    };
    h.push(frame(0)).unwrap();
    el.set_property("prompts", gst::Array::new(["a:", "b:"]));
    h.push(frame(1)).unwrap();
    el.set_property("prompts", gst::Array::new(Vec::<String>::new()));
    h.push(frame(2)).unwrap();
    h.push_event(gst::event::Eos::new());
    // Buffers and events queue apart in the harness: once EOS is out, every text buffer is in.
    while th.pull_event().unwrap().type_() != gst::EventType::Eos {}
    let mut texts = vec![];
    while let Some(b) = th.try_pull() {
        texts.push(String::from_utf8(b.map_readable().unwrap().to_vec()).unwrap());
    }
    assert_eq!(texts, vec!["mean 1", "a:mean 1\nb:mean 1", "mean 1"]);
    let prompts = fake.calls.lock().unwrap().prompts.clone();
    assert_eq!(prompts, vec!["", "a:", "b:", ""]);
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// With the tiny real model: each answer of a two-prompt element equals what a single-prompt
/// element gives for that prompt on the same frames.
#[test]
fn each_answer_equals_a_single_prompt_elements_answer() {
    init();
    let model = fixtures().join("models/opt-tiny");
    let image = fixtures().join("images/chelsea.png");
    let answers = |props: &str| -> Vec<(String, String)> {
        let p = pipeline(&format!(
            "filesrc location={} ! pngdec ! imagefreeze num-buffers=2 ! video/x-raw,framerate=1/1 \
             ! blip2caption model={} device=cpu dtype=f32 {props} ! fakesink sync=false",
            image.display(),
            model.display()
        ));
        let run = run_to_eos(&p, Duration::from_secs(300));
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        run.captions
            .iter()
            .map(|c| {
                (
                    c.get::<String>("prompt").unwrap(),
                    c.get::<String>("text").unwrap(),
                )
            })
            .collect()
    };
    let caption = answers("");
    let question = answers(&format!("prompt=\"{Q}\""));
    let both = answers(&format!("prompts=\"<\\\"\\\", \\\"{Q}\\\">\""));
    assert_eq!(caption.len(), 2);
    assert_eq!(question.len(), 2);
    assert_eq!(
        both,
        vec![
            caption[0].clone(),
            question[0].clone(),
            caption[1].clone(),
            question[1].clone()
        ]
    );
    assert_ne!(
        caption[0].1, question[0].1,
        "the prompts must give different answers"
    );
}
