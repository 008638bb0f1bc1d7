//! Captions a video file: writes an `.srt` (or `.vtt`) and an `.mkv` with a subtitle track.
//!
//! cargo run --release --example caption_file -- input.mp4 out.srt out.mkv [model] [interval-s]

use gst::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: {} INPUT OUT.srt|OUT.vtt OUT.mkv [MODEL] [INTERVAL_S]",
            args[0]
        );
        std::process::exit(2);
    }
    let (input, subs, mkv) = (&args[1], &args[2], &args[3]);
    let model = args
        .get(4)
        .map_or("Salesforce/blip2-opt-2.7b", String::as_str);
    let interval: f64 = args.get(5).map_or(Ok(1.0), |s| s.parse())?;

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
