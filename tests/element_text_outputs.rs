//! Text output into the other consumers people use: the tx3g subtitle track of qtmux (the
//! QuickTime sibling of mp4mux; mp4mux takes no JPEG video, and x264enc is not in CI's plugin
//! set), and pango-markup (escaped) for elements that take only markup.

mod gst_common;

use std::time::Duration;

use gst_common::*;

const SEC: u64 = 1_000_000_000;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("blip2-text-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Aggregator muxers want data on every pad before they let video through; between captions the
/// element tells them with zero-length GAPs, or qtmux would hold the video (and the element) until
/// a caption that needs that very video.

#[test]
fn qtmux_file_has_a_tx3g_subtitle_track_with_every_caption() {
    init();
    let model = install("mp4", Fake::new(0));
    let out = scratch("mp4").join("out.mov");
    let p = pipeline(&format!(
        "videotestsrc num-buffers=75 ! video/x-raw,format=I420,width=32,height=32,framerate=25/1 \
         ! blip2caption name=c model={model} ! queue ! jpegenc ! m.video_0 \
         c.text_src ! queue ! m.subtitle_0 qtmux name=m ! filesink location={}",
        out.display()
    ));
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.captions.len(), 3);

    let p = pipeline(&format!(
        "filesrc location={} ! qtdemux name=d d.subtitle_0 ! queue ! appsink name=t sync=false \
         d.video_0 ! queue ! fakesink sync=false",
        out.display()
    ));
    let texts = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let texts = texts.lock().unwrap();
    // qtdemux turns tx3g back into plain text; empty samples fill the gaps between cues.
    let cues: Vec<(u64, u64, String)> = texts
        .iter()
        .filter_map(|b| {
            let map = b.map_readable().unwrap();
            let text = String::from_utf8_lossy(&map)
                .trim_end_matches('\0')
                .to_string();
            (!text.is_empty()).then(|| {
                (
                    b.pts().unwrap().nseconds(),
                    b.duration().unwrap().nseconds(),
                    text,
                )
            })
        })
        .collect();
    assert_eq!(cues.len(), 3, "{cues:?}");
    for (i, (pts, duration, text)) in cues.iter().enumerate() {
        assert_eq!(*pts, i as u64 * SEC);
        assert_eq!(*duration, SEC, "a cue lasts until the next sample");
        assert!(text.starts_with("mean "), "{text:?}");
    }
}

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
