//! Live captions over video: camera (or `videotestsrc is-live=true`) → blip2caption →
//! textoverlay → display, or fakesink when there is no display.
//!
//! cargo run --release --example live -- [--model M] [--camera]

use clap::Parser;
use gst::prelude::*;

/// Live captions burnt into the picture.
#[derive(Parser)]
#[command(name = "live")]
struct Args {
    /// Snapshot folder, or Hugging Face id (org/name[@revision])
    #[arg(long, default_value = "Salesforce/blip2-opt-2.7b")]
    model: String,
    /// Capture from the camera (v4l2src) instead of a live test pattern
    #[arg(long)]
    camera: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model, camera } = Args::parse();

    gst::init()?;
    gstblip2::plugin_register_static()?;
    let src = if camera {
        "v4l2src"
    } else {
        "videotestsrc is-live=true pattern=ball"
    };
    let headless =
        std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none();
    let sink = if headless {
        "fakesink"
    } else {
        "autovideosink"
    };
    // Live source: realtime mode, the video never waits; captions appear when ready.
    let desc = format!(
        "{src} ! videoconvert ! video/x-raw,width=640,height=480 ! \
         blip2caption name=c model=\"{model}\" interval=2000000000 ! \
         textoverlay name=o wait-text=true valignment=bottom ! videoconvert ! {sink} \
         c.text_src ! o.text_sink"
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .unwrap();
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null)?;
                return Err(format!("{}: {:?}", e.error(), e.debug()).into());
            }
            gst::MessageView::Latency(_) => {
                // blip2caption raised its latency (automatic mode): redistribute it.
                let _ = pipeline.recalculate_latency();
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == gstblip2::MESSAGE_NAME) {
                    println!("{}", s.get::<&str>("text")?);
                }
            }
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
