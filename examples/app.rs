//! An application reading blip2caption's results two ways: bus messages, and the
//! `Blip2CaptionMeta` on video buffers from an appsink.
//!
//! cargo run --release --example app -- [--model M] [--video FILE]

use clap::Parser;
use gst::prelude::*;

/// Read blip2caption's answers from bus messages and from the buffer meta.
#[derive(Parser)]
#[command(name = "app")]
struct Args {
    /// Snapshot folder, or Hugging Face id (org/name[@revision])
    #[arg(long, default_value = "Salesforce/blip2-opt-2.7b")]
    model: String,
    /// Video file to read; without it, 3 s of a test pattern
    #[arg(long)]
    video: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model, video } = Args::parse();
    let source = match video {
        Some(file) => format!("filesrc location=\"{file}\" ! decodebin ! videoconvert"),
        None => "videotestsrc num-buffers=90".to_string(),
    };

    gst::init()?;
    gstblip2::plugin_register_static()?;
    let desc = format!(
        "{source} ! blip2caption name=c model=\"{model}\" prompt=\"Question: what is shown? Answer:\" \
         ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .unwrap();
    let appsink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(|sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                // Every answer riding on this buffer (one per blip2caption element upstream).
                for s in gstblip2::meta_answers(buffer) {
                    println!(
                        "meta on frame {}: {:?} (frame {} analysed in {} ms)",
                        buffer.pts().display(),
                        s.get::<&str>("text").unwrap_or_default(),
                        gst::ClockTime::from_nseconds(s.get::<u64>("pts").unwrap_or_default()),
                        s.get::<u64>("inference-time").unwrap_or_default() / 1_000_000
                    );
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );

    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null)?;
                return Err(format!("{}: {:?}", e.error(), e.debug()).into());
            }
            gst::MessageView::Progress(p) => {
                let (kind, _code, text) = p.get();
                println!("progress {kind:?}: {text}");
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == gstblip2::MESSAGE_NAME) {
                    println!("message: {s}");
                }
            }
            _ => (),
        }
    }
    let stats = pipeline
        .by_name("c")
        .unwrap()
        .property::<gst::Structure>("stats");
    println!("stats: {stats}");
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
