//! Captions a video file: writes an `.srt` (or `.vtt`) and an `.mkv` with a subtitle track.
//!
//! cargo run --release --example caption_file -- input.mp4 out.srt out.mkv [--model M] [--interval S]

use clap::Parser;
use gst::prelude::*;

/// Caption a video file into subtitles and an MKV with a subtitle track.
#[derive(Parser)]
#[command(name = "caption_file")]
struct Args {
    /// Video file to caption
    input: String,
    /// Subtitle file to write: WebVTT when it ends in .vtt, else SRT
    subtitles: String,
    /// Matroska file to write: the video (H.264) and the captions as a subtitle track
    mkv: String,
    /// Snapshot folder, or Hugging Face id (org/name[@revision])
    #[arg(long, default_value = "Salesforce/blip2-opt-2.7b")]
    model: String,
    /// Seconds between captions
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (input, subs, mkv, model) = (&args.input, &args.subtitles, &args.mkv, &args.model);
    if !(args.interval.is_finite() && args.interval >= 0.0) {
        return Err(format!("--interval {}: not a number of seconds", args.interval).into());
    }
    let interval = args.interval;

    gst::init()?;
    gstblip2::plugin_register_static()?;
    let enc = if subs.ends_with(".vtt") {
        "webvttenc"
    } else {
        "srtenc"
    };
    // Offline: not live, so blip2caption runs in complete mode and every interval gets a caption.
    // The text is teed to the subtitle encoder and the muxer; queues decouple the branches.
    let desc = format!(
        "filesrc location=\"{input}\" ! decodebin ! videoconvert ! \
         blip2caption name=c model=\"{model}\" interval={} ! queue ! x264enc ! m.video_0 \
         c.text_src ! tee name=t \
         t. ! queue ! {enc} ! filesink location=\"{subs}\" \
         t. ! queue ! m.subtitle_0 \
         matroskamux name=m ! filesink location=\"{mkv}\"",
        (interval * 1e9) as u64
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
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == gstblip2::MESSAGE_NAME) {
                    let pts = gst::ClockTime::from_nseconds(s.get::<u64>("pts")?);
                    println!("{pts}: {}", s.get::<&str>("text")?);
                }
            }
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null)?;
    println!("wrote {subs} and {mkv}");
    Ok(())
}
