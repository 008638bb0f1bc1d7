//! Text output for consumers that take only pango-markup (escaped).

mod gst_common;

use std::time::Duration;

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
