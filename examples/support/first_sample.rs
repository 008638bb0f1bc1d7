//! Shared by the benchmark examples through `#[path]`; not an example itself (Cargo only builds
//! `examples/*.rs` and `examples/*/main.rs`).

use gst::prelude::*;

/// The first sample that `source` (a gst-launch description without its sink) produces,
/// pulled through an appsink; the pipeline is stopped again before this returns.
pub fn first_sample(source: &str) -> gst::Sample {
    let p = gst::parse::launch(&format!("{source} ! appsink name=s"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = p.by_name("s").unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let sample = sink
        .emit_by_name::<Option<gst::Sample>>("pull-sample", &[])
        .expect("a frame");
    p.set_state(gst::State::Null).unwrap();
    sample
}
