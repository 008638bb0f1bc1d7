//! Text output details: pango-markup (escaped) for elements that take only markup, the
//! automatic latency, and the warning for `text-mode=cues` into a joining element. Muxers,
//! subtitle encoders and overlays are in `element_muxers.rs`.

mod gst_common;

use std::time::Duration;

use gst::prelude::*;
use gst_common::*;

#[test]
fn markup_only_downstream_gets_escaped_pango_markup() {
    init();
    let model = install("markup", Fake::new(0));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=10 ! video/x-raw,format=RGB,width=16,height=16,framerate=10/1 \
         ! blip2caption name=c model={model} prompt=\"<b>&\" ! fakesink \
         c.text_src ! text/x-raw,format=pango-markup ! appsink name=t sync=false"
    ));
    let texts = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let texts = texts.lock().unwrap();
    assert_eq!(texts.len(), 1);
    let map = texts[0].map_readable().unwrap();
    let text = std::str::from_utf8(&map).unwrap();
    // The fake echoes the prompt: "<b>&mean N" must arrive escaped.
    assert!(text.starts_with("&lt;b&gt;&amp;mean "), "{text:?}");
    // The bus message keeps the plain text.
    assert!(
        run.captions[0]
            .get::<&str>("text")
            .unwrap()
            .starts_with("<b>&mean ")
    );
}

/// Live with `latency=-1`: after the first inference the element announces a latency (the
/// slowest inference rounded up to 100 ms) with a LATENCY message, and answers queries with it.
#[test]
fn automatic_latency_follows_inference_time_and_is_announced() {
    init();
    let model = install("auto-latency", Fake::new(150));
    let p = pipeline(&format!(
        "videotestsrc is-live=true num-buffers=15 ! video/x-raw,format=RGB,width=16,height=16,framerate=30/1 \
         ! blip2caption name=c model={model} interval=200000000 ! fakesink"
    ));
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let element = p.by_name("c").unwrap();
    let mut announced = false;
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(10))
            .expect("pipeline ends");
        match msg.view() {
            gst::MessageView::Latency(_) if msg.src() == Some(element.upcast_ref()) => {
                announced = true
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    assert!(announced, "no LATENCY message from blip2caption");
    // 150 ms of inference rounds up to 200 ms, added to the live source's own latency (one
    // frame at 30 fps).
    let mut q = gst::query::Latency::new();
    assert!(element.static_pad("src").unwrap().query(&mut q));
    let (live, min, _) = q.result();
    assert!(live);
    assert_eq!(
        min,
        gst::ClockTime::from_nseconds(200_000_000 + 1_000_000_000 / 30)
    );
    p.set_state(gst::State::Null).unwrap();
}

/// `text-mode=cues` set by hand while text_src feeds an element that joins streams (here an
/// overlay through a queue) is one WARNING naming the property and that element; `auto` there,
/// and `cues` into a subtitle encoder, say nothing. The run still finishes (the overlay does
/// not wait for text).
#[test]
fn cues_into_a_joining_element_is_a_warning() {
    init();
    let model = install("cues-warning", Fake::new(0));
    let into_overlay = |text_mode: &str| {
        pipeline(&format!(
            "videotestsrc num-buffers=20 ! video/x-raw,width=64,height=48,framerate=10/1 \
             ! blip2caption name=c model={model} text-mode={text_mode} ! o.video_sink \
             textoverlay name=o wait-text=false ! fakesink sync=false \
             c.text_src ! queue ! o.text_sink"
        ))
    };
    let run = run_to_eos(&into_overlay("cues"), Duration::from_secs(30));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(run.warnings.len(), 1, "{run:?}");
    let w = &run.warnings[0];
    assert!(
        w.contains("property `text-mode` is `cues`") && w.contains("feeds o (textoverlay)"),
        "{w}"
    );
    assert_eq!(run.captions.len(), 2, "{run:?}");

    let run = run_to_eos(&into_overlay("auto"), Duration::from_secs(30));
    assert!(run.errors.is_empty() && run.warnings.is_empty(), "{run:?}");

    let srt = pipeline(&format!(
        "videotestsrc num-buffers=20 ! video/x-raw,width=64,height=48,framerate=10/1 \
         ! blip2caption name=c model={model} text-mode=cues ! fakesink sync=false \
         c.text_src ! srtenc ! fakesink sync=false"
    ));
    let run = run_to_eos(&srt, Duration::from_secs(30));
    assert!(run.errors.is_empty() && run.warnings.is_empty(), "{run:?}");
}
