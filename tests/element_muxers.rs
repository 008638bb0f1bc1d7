//! The text pad into every kind of consumer people use, with default queues: matroskamux,
//! mp4mux, qtmux (aggregator muxers, which once hung waiting for subtitle data), srtenc,
//! webvttenc and textoverlay; at 320×240 and 1080p I420 and with 4:4:4 10-bit frames; from a
//! file, from a live source, and from a live source stopped by an EOS event (gst-launch -e).
//!
//! Every run has a hard timeout: a hang fails the test. Frames are 10 fps, one caption every
//! 2 s, 4.5 s of video (so the last cue must end before the next interval boundary); the x264
//! encoder runs with `tune=zerolatency`, so the video branch holds no more than its default queue
//! (1 s, or 3 frames of 1080p), fewer frames than the 20 between two captions.

mod gst_common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_common::*;

const SEC: u64 = 1_000_000_000;
const FPS: u64 = 10;
const FRAMES: u64 = 45;
const INTERVAL: u64 = 2 * SEC;
/// Generous for a loaded 2-core machine; a hang is forever.
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
struct Size {
    format: &'static str,
    width: u32,
    height: u32,
}

const SIZES: [Size; 3] = [
    Size {
        format: "I420",
        width: 320,
        height: 240,
    },
    Size {
        format: "I420",
        width: 1920,
        height: 1080,
    },
    Size {
        format: "Y444_10LE",
        width: 640,
        height: 480,
    },
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    /// A JPEG-in-Matroska file through decodebin (as fast as the pipeline takes it).
    File,
    /// `videotestsrc is-live=true num-buffers=45`.
    Live,
    /// A live source without end, stopped with an EOS event after the second caption.
    LiveEos,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Consumer {
    Matroska,
    Mp4,
    QuickTime,
    Srt,
    WebVtt,
    Overlay,
}

/// The recorded file for `size` (made once per test process by a committed pipeline).
fn clip(size: Size) -> PathBuf {
    static CLIPS: OnceLock<Mutex<Vec<(u32, PathBuf)>>> = OnceLock::new();
    let clips = CLIPS.get_or_init(|| Mutex::new(vec![]));
    let mut clips = clips.lock().unwrap();
    if let Some((_, path)) = clips.iter().find(|(w, _)| *w == size.width) {
        return path.clone();
    }
    let path = scratch(&format!("clip-{}", size.width)).join("clip.mkv");
    let p = pipeline(&format!(
        "videotestsrc num-buffers={FRAMES} pattern=ball \
         ! video/x-raw,format=I420,width={},height={},framerate={FPS}/1 \
         ! jpegenc ! matroskamux ! filesink location={}",
        size.width,
        size.height,
        path.display()
    ));
    let run = run_to_eos(&p, TIMEOUT);
    assert!(run.errors.is_empty(), "{run:?}");
    clips.push((size.width, path.clone()));
    path
}

fn source_desc(source: Source, size: Size) -> String {
    let caps = format!(
        "video/x-raw,format={},width={},height={},framerate={FPS}/1",
        size.format, size.width, size.height
    );
    match source {
        Source::File => format!(
            "filesrc location={} ! decodebin ! videoconvert ! {caps}",
            clip(size).display()
        ),
        Source::Live => {
            format!("videotestsrc is-live=true num-buffers={FRAMES} pattern=ball ! {caps}")
        }
        Source::LiveEos => format!("videotestsrc is-live=true pattern=ball ! {caps}"),
    }
}

fn encoder() -> &'static str {
    "x264enc speed-preset=ultrafast tune=zerolatency"
}

/// What came out, read back: the cues and the number of video frames.
struct Output {
    cues: Vec<(u64, u64, String)>,
    frames: u64,
    /// The `pts` of every caption message.
    caption_pts: Vec<u64>,
    /// The first video frame's PTS.
    first_pts: u64,
}

fn run_case(source: Source, consumer: Consumer, size: Size) -> Output {
    init();
    let tag = format!("{source:?}-{consumer:?}-{}", size.width);
    let model = install_captioner(&format!("mux-{tag}"), Arc::new(Counting::default()));
    let dir = scratch(&format!("mux-{tag}"));
    let element = format!("blip2caption name=c model={model} interval={INTERVAL}");
    let src = source_desc(source, size);
    let (tail, file) = match consumer {
        Consumer::Matroska | Consumer::Mp4 | Consumer::QuickTime => {
            let (mux, ext) = match consumer {
                Consumer::Matroska => ("matroskamux", "mkv"),
                Consumer::Mp4 => ("mp4mux", "mp4"),
                _ => ("qtmux", "mov"),
            };
            let out = dir.join(format!("out.{ext}"));
            (
                format!(
                    "! queue ! {} ! m.video_0 c.text_src ! queue ! m.subtitle_0 \
                     {mux} name=m ! filesink location={}",
                    encoder(),
                    out.display()
                ),
                Some(out),
            )
        }
        Consumer::Srt | Consumer::WebVtt => {
            let (enc, ext) = match consumer {
                Consumer::Srt => ("srtenc", "srt"),
                _ => ("webvttenc", "vtt"),
            };
            let out = dir.join(format!("out.{ext}"));
            (
                format!(
                    "! appsink name=v sync=false c.text_src ! {enc} ! filesink location={}",
                    out.display()
                ),
                Some(out),
            )
        }
        Consumer::Overlay => (
            "! videoconvert ! textoverlay name=o ! appsink name=v sync=false c.text_src ! o.text_sink"
                .to_string(),
            None,
        ),
    };
    let p = pipeline(&format!("{src} ! {element} {tail}"));
    let video = p.by_name("v").map(|_| collect(&p, "v"));
    let overlay_texts = if consumer == Consumer::Overlay {
        Some(overlay_texts(&p))
    } else {
        None
    };
    let run = run_bounded(&p, source, &tag);
    assert!(run.errors.is_empty(), "{tag}: {run:?}");

    let frames_out = video.map(|v| v.lock().unwrap().len() as u64);
    let (cues, frames) = match (consumer, file) {
        (Consumer::Srt | Consumer::WebVtt, Some(file)) => (subparse(&file), frames_out.unwrap()),
        (Consumer::Overlay, _) => (
            merge_cues(&overlay_texts.unwrap().lock().unwrap()),
            frames_out.unwrap(),
        ),
        (_, Some(file)) => {
            let demuxer = if consumer == Consumer::Matroska {
                "matroskademux"
            } else {
                "qtdemux"
            };
            let (texts, frames) = demux(demuxer, &file);
            (merge_cues(&texts), frames)
        }
        _ => unreachable!(),
    };
    let caption_pts: Vec<u64> = run.captions.iter().map(|c| u64_field(c, "pts")).collect();
    Output {
        cues,
        frames,
        first_pts: caption_pts.first().copied().unwrap_or(u64::MAX),
        caption_pts,
    }
}

/// Plays to EOS with a hard timeout. `LiveEos` sources get an EOS event after the second
/// caption. A hang shuts the pipeline down (on another thread, in case that hangs too) and
/// fails.
fn run_bounded(p: &gst::Pipeline, source: Source, tag: &str) -> Run {
    let bus = p.bus().unwrap();
    // Live sources start at once: let the model load first (realtime mode drops samples
    // until it is there, a documented behaviour tested elsewhere).
    p.set_state(gst::State::Ready).unwrap();
    wait_for_load(&bus);
    p.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut run = Run::default();
    let mut eos_sent = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let p = p.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = p.set_state(gst::State::Null);
                let _ = tx.send(());
            });
            let stopped = rx.recv_timeout(Duration::from_secs(10)).is_ok();
            panic!("{tag}: HANG, no EOS in {TIMEOUT:?} (stopped: {stopped}); {run:?}");
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                run.errors.push(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "blip2-caption") {
                    run.captions.push(s.to_owned());
                    if source == Source::LiveEos && run.captions.len() == 2 && !eos_sent {
                        eos_sent = p.send_event(gst::event::Eos::new());
                        assert!(eos_sent, "{tag}: EOS event refused");
                    }
                }
            }
            _ => (),
        }
    }
    p.set_state(gst::State::Null).unwrap();
    run
}

/// Every text buffer textoverlay receives.
fn overlay_texts(p: &gst::Pipeline) -> Arc<Mutex<Vec<gst::Buffer>>> {
    let got = Arc::new(Mutex::new(vec![]));
    let store = got.clone();
    p.by_name("o")
        .unwrap()
        .static_pad("text_sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                store.lock().unwrap().push(b.clone());
            }
            gst::PadProbeReturn::Ok
        });
    got
}

/// Cues of a subtitle file, read back with subparse: (pts, end, text).
fn subparse(path: &std::path::Path) -> Vec<(u64, u64, String)> {
    merge_cues(&subparse_buffers(path))
}

/// The subtitle buffers and the number of video frames of a muxed file.
fn demux(demuxer: &str, path: &std::path::Path) -> (Vec<gst::Buffer>, u64) {
    let p = pipeline(&format!(
        "filesrc location={} ! {demuxer} name=d d.subtitle_0 ! queue ! appsink name=t sync=false \
         d.video_0 ! queue ! appsink name=v sync=false",
        path.display()
    ));
    let texts = collect(&p, "t");
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(
        run.errors.is_empty(),
        "{}: {:?}",
        path.display(),
        run.errors
    );
    let texts = std::mem::take(&mut *texts.lock().unwrap());
    let frames = video.lock().unwrap().len() as u64;
    (texts, frames)
}

/// What every case must show: all frames out, one caption per interval boundary, and one cue
/// per caption, in order, from the sampled frame until the next sample or the end of the last
/// frame.
fn check(source: Source, consumer: Consumer, size: Size, out: &Output) {
    let tag = format!("{source:?} {consumer:?} {size:?}");
    let frame = SEC / FPS;
    if source != Source::LiveEos {
        assert_eq!(out.frames, FRAMES, "{tag}: frames");
    } else {
        // Stopped after the second caption: at least the frames up to its sample, the first
        // frame at or after INTERVAL, counted from the first frame (which a loaded machine
        // stamps well after 0).
        let up_to_second_sample = INTERVAL.saturating_sub(out.first_pts).div_ceil(frame) + 1;
        assert!(
            out.frames >= up_to_second_sample,
            "{tag}: {} frames, first at {}, want {up_to_second_sample}",
            out.frames,
            out.first_pts
        );
    }
    // A live source stamps frames with the clock: the first one is a little after 0 (later on a
    // loaded machine).
    let first = out.first_pts;
    assert!(first < INTERVAL / 2, "{tag}: first frame at {first}");
    let stream_end = first + out.frames * frame;
    // The first frame at or after each multiple of the interval (running time = PTS here).
    let mut starts = vec![first];
    let mut k = 1;
    while let Some(s) = (0..out.frames)
        .map(|i| first + i * frame)
        .find(|&t| t >= k * INTERVAL)
    {
        starts.push(s);
        k += 1;
    }
    assert_eq!(out.caption_pts, starts, "{tag}: sampled frames");
    // An MP4/QuickTime file's timeline starts at its first frame.
    let (starts, stream_end) = if matches!(consumer, Consumer::Mp4 | Consumer::QuickTime) {
        let starts: Vec<u64> = starts.iter().map(|s| s - first).collect();
        (starts, stream_end - first)
    } else {
        (starts, stream_end)
    };
    // Muxers store times in their own timescales (tx3g: 1/1000 s here): allow a millisecond.
    let close = |a: u64, b: u64| a.abs_diff(b) <= 1_000_000;
    // Live sources run in realtime mode, where per-frame text (muxers, overlays) shows a
    // caption from the first frame that leaves after it is ready: at least one frame after its
    // sample. Cues (subtitle files) keep the sampled frame's time.
    let per_frame_live =
        source != Source::File && !matches!(consumer, Consumer::Srt | Consumer::WebVtt);
    let starts_ok = |got: u64, want: u64| {
        if per_frame_live {
            got + 1_000_000 >= want + frame && got <= want + 5 * frame
        } else {
            close(got, want)
        }
    };
    let ok = out.cues.len() == starts.len()
        && out
            .cues
            .iter()
            .zip(&starts)
            .enumerate()
            .all(|(k, (g, &w))| starts_ok(g.0, w) && g.2 == format!("#{}", k + 1))
        // Each cue lasts until the next one starts, the last until the end of the last frame.
        // (Realtime per-frame text shows a caption for the interval from when it shows; when
        // the next one is late the frames in between carry none.)
        && out.cues.windows(2).all(|c| {
            close(c[0].1, c[1].0) || (per_frame_live && c[0].1 < c[1].0 && c[1].0 - c[0].1 <= 4 * frame)
        })
        && out.cues.last().is_some_and(|c| close(c.1, stream_end));
    assert!(
        ok,
        "{tag}: cues {:?}, sampled {starts:?}, end {stream_end}",
        out.cues
    );
}

fn all_sizes(source: Source, consumer: Consumer) {
    for size in SIZES {
        let out = run_case(source, consumer, size);
        check(source, consumer, size, &out);
    }
}

#[test]
fn file_into_matroskamux() {
    all_sizes(Source::File, Consumer::Matroska);
}

#[test]
fn file_into_mp4mux() {
    all_sizes(Source::File, Consumer::Mp4);
}

#[test]
fn file_into_qtmux() {
    all_sizes(Source::File, Consumer::QuickTime);
}

#[test]
fn file_into_srtenc() {
    all_sizes(Source::File, Consumer::Srt);
}

#[test]
fn file_into_webvttenc() {
    all_sizes(Source::File, Consumer::WebVtt);
}

#[test]
fn file_into_textoverlay() {
    all_sizes(Source::File, Consumer::Overlay);
}

#[test]
fn live_into_matroskamux() {
    all_sizes(Source::Live, Consumer::Matroska);
}

#[test]
fn live_into_mp4mux() {
    all_sizes(Source::Live, Consumer::Mp4);
}

#[test]
fn live_into_qtmux() {
    all_sizes(Source::Live, Consumer::QuickTime);
}

#[test]
fn live_into_srtenc() {
    all_sizes(Source::Live, Consumer::Srt);
}

#[test]
fn live_into_webvttenc() {
    all_sizes(Source::Live, Consumer::WebVtt);
}

#[test]
fn live_into_textoverlay() {
    all_sizes(Source::Live, Consumer::Overlay);
}

#[test]
fn live_eos_into_matroskamux() {
    all_sizes(Source::LiveEos, Consumer::Matroska);
}

#[test]
fn live_eos_into_mp4mux() {
    all_sizes(Source::LiveEos, Consumer::Mp4);
}

#[test]
fn live_eos_into_qtmux() {
    all_sizes(Source::LiveEos, Consumer::QuickTime);
}

#[test]
fn live_eos_into_srtenc() {
    all_sizes(Source::LiveEos, Consumer::Srt);
}

#[test]
fn live_eos_into_webvttenc() {
    all_sizes(Source::LiveEos, Consumer::WebVtt);
}

#[test]
fn live_eos_into_textoverlay() {
    all_sizes(Source::LiveEos, Consumer::Overlay);
}
