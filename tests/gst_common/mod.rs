//! Shared test helpers: plugin registration and fake captioners injected through the engine's
//! test hook, so the element is exercised without a real model.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Once};
use std::thread::ThreadId;
use std::time::Duration;

use gst::prelude::*;
use gstblip2::engine::{self, Captioner};
use gstblip2::model::{self, Caption, GenerationParams, RgbImage};

// The fixture paths and the temp-dir helper, shared with the non-GStreamer tests.
#[path = "../common/mod.rs"]
pub mod common;
#[allow(unused_imports)] // each test binary uses some
pub use common::{Scratch, model_dir, output_text, scratch};

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstblip2::plugin_register_static().expect("registering the blip2 plugin");
    });
}

/// A `blip2caption` on `model` with `props` set from strings, as gst-launch sets them.
pub fn element(model: &str, props: &[(&str, &str)]) -> gst::Element {
    let mut b = gst::ElementFactory::make("blip2caption").property("model", model);
    for (k, v) in props {
        b = b.property_from_str(k, v);
    }
    b.build().unwrap()
}

/// A `blip2caption` on `model` in `text-mode=cues`, then `props` as in [`element`].
pub fn cues_element(model: &str, props: &[(&str, &str)]) -> gst::Element {
    let props: Vec<(&str, &str)> = std::iter::once(("text-mode", "cues"))
        .chain(props.iter().copied())
        .collect();
    element(model, &props)
}

/// The caps of [`frame`] and [`frame_at`]: 4x2 RGB at 10 fps.
pub const FRAME_CAPS: &str = "video/x-raw,format=RGB,width=4,height=2,framerate=10/1";

/// A [`FRAME_CAPS`] frame filled with `value`, at `pts` lasting `duration` (nanoseconds).
pub fn frame_at(pts: u64, duration: u64, value: u8) -> gst::Buffer {
    let mut b = gst::Buffer::from_mut_slice(vec![value; 4 * 2 * 3]);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts));
        b.set_duration(gst::ClockTime::from_nseconds(duration));
    }
    b
}

/// Frame `i` of a 10 fps [`FRAME_CAPS`] stream, filled with `value`.
pub fn frame(i: u64, value: u8) -> gst::Buffer {
    const SEC: u64 = 1_000_000_000;
    frame_at(i * SEC / 10, SEC / 10, value)
}

/// Runs `f` on another thread; fails (instead of hanging) if it takes more than 10 s.
pub fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} waited more than 10 s"))
}

/// The `device` property value for tests that run the real model: `GST_BLIP2_TEST_DEVICE`
/// (`cpu`, `cuda:N`), `cpu` when unset. scripts/gpu_check.sh sets `cuda:0`.
pub fn test_device() -> String {
    std::env::var("GST_BLIP2_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

/// What the fake saw, for assertions.
#[derive(Default)]
pub struct Calls {
    pub batches: Vec<usize>,
    pub prompts: Vec<String>,
    pub sizes: Vec<(usize, usize)>,
    pub means: Vec<u64>,
    pub threads: HashSet<ThreadId>,
}

/// Deterministic captioner: "<prompt>mean <m>" where m is the mean RGB byte of the image.
/// Optionally slow or failing.
pub struct Fake {
    pub delay: Duration,
    pub fail: bool,
    pub calls: Mutex<Calls>,
}

impl Fake {
    pub fn new(delay_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            delay: Duration::from_millis(delay_ms),
            fail: false,
            calls: Mutex::new(Calls::default()),
        })
    }

    pub fn failing() -> Arc<Self> {
        Arc::new(Self {
            delay: Duration::ZERO,
            fail: true,
            calls: Mutex::new(Calls::default()),
        })
    }

    pub fn text_for(prompt: &str, mean: u64) -> String {
        format!("{prompt}mean {mean}")
    }
}

/// The mean of an image's bytes (what [`Fake`] and the other fakes answer with).
pub fn mean(im: &RgbImage) -> u64 {
    im.data.iter().map(|&b| b as u64).sum::<u64>() / im.data.len() as u64
}

/// One caption per image, with `text` of that image (token ids `[1]`).
fn answer_each(
    images: &[RgbImage],
    text: impl FnMut(&RgbImage) -> String,
) -> engine::Result<Vec<Caption>> {
    Ok(images
        .iter()
        .map(text)
        .map(|text| Caption {
            token_ids: vec![1],
            text,
        })
        .collect())
}

impl Captioner for Fake {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        _params: &GenerationParams,
    ) -> engine::Result<Vec<Caption>> {
        std::thread::sleep(self.delay);
        let mut calls = self.calls.lock().unwrap();
        calls.batches.push(images.len());
        calls.threads.insert(std::thread::current().id());
        if self.fail {
            return Err(model::Error::Input("fake model failure".into()).into());
        }
        Ok(images
            .iter()
            .map(|im| {
                let mean = mean(im);
                calls.prompts.push(prompt.to_owned());
                calls.sizes.push((im.width, im.height));
                calls.means.push(mean);
                Caption {
                    token_ids: vec![1, 2],
                    text: Fake::text_for(prompt, mean),
                }
            })
            .collect())
    }
}

/// Registers `fake` under a unique made-up model path and returns the path.
pub fn install(name: &str, fake: Arc<Fake>) -> String {
    let path = format!("/fake-models/{name}");
    engine::register_captioner(&path, fake);
    path
}

/// Registers any captioner under a unique made-up model path and returns the path.
pub fn install_captioner(name: &str, captioner: Arc<dyn Captioner>) -> String {
    let path = format!("/fake-models/{name}");
    engine::register_captioner(&path, captioner);
    path
}

/// Caption messages and errors/warnings collected from a pipeline run.
#[derive(Default, Debug)]
pub struct Run {
    pub captions: Vec<gst::Structure>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Plays `pipeline` to EOS (or error, or `timeout`) and collects the bus messages. The models
/// of its blip2caption elements are loaded (READY) before it plays: the load runs in the
/// background, and realtime mode would drop the first samples of a fast source meanwhile.
pub fn run_to_eos(pipeline: &gst::Pipeline, timeout: Duration) -> Run {
    let bus = pipeline.bus().unwrap();
    // (A pipeline a test has started itself is left as it is.)
    let mut loading: HashSet<String> = HashSet::new();
    if pipeline.current_state() == gst::State::Null {
        loading = pipeline
            .iterate_recurse()
            .into_iter()
            .flatten()
            .filter(|e| e.factory().is_some_and(|f| f.name() == "blip2caption"))
            .map(|e| e.name().to_string())
            .collect();
        pipeline.set_state(gst::State::Ready).unwrap();
    }
    let mut run = Run::default();
    let deadline = std::time::Instant::now() + timeout;
    let mut playing = false;
    loop {
        if !playing && loading.is_empty() {
            pipeline.set_state(gst::State::Playing).unwrap();
            playing = true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "pipeline did not finish in {timeout:?}: {run:?}"
        );
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                run.errors.push(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            gst::MessageView::Warning(w) => run.warnings.push(w.error().to_string()),
            gst::MessageView::Progress(p)
                if matches!(
                    p.get().0,
                    gst::ProgressType::Complete | gst::ProgressType::Error
                ) =>
            {
                if let Some(src) = msg.src() {
                    loading.remove(src.name().as_str());
                }
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "blip2-caption") {
                    run.captions.push(s.to_owned());
                }
            }
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    run
}

/// Collects every buffer an appsink receives.
pub fn collect(pipeline: &gst::Pipeline, name: &str) -> Arc<Mutex<Vec<gst::Buffer>>> {
    let sink = pipeline
        .by_name(name)
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                store.lock().unwrap().push(sample.buffer_owned().unwrap());
                Ok(gst::FlowSuccess::Ok)
            })
            .new_preroll(|_| Ok(gst::FlowSuccess::Ok))
            .build(),
    );
    got
}

pub fn pipeline(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("{desc}: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap()
}

pub fn u64_field(s: &gst::StructureRef, name: &str) -> u64 {
    s.get::<u64>(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The buffers subparse reads back from the subtitle file `path` (SRT, WebVTT).
pub fn subparse_buffers(path: &std::path::Path) -> Vec<gst::Buffer> {
    let p = pipeline(&format!(
        "filesrc location={} ! subparse ! appsink name=t sync=false",
        path.display()
    ));
    let bufs = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    std::mem::take(&mut *bufs.lock().unwrap())
}

/// Demuxes `path` with `demuxer` (e.g. matroskademux, qtdemux) and returns the buffers of its
/// first subtitle stream.
pub fn demux_subtitles(demuxer: &str, path: &std::path::Path) -> Vec<gst::Buffer> {
    let p = pipeline(&format!(
        "filesrc location={} ! {demuxer} name=d d.subtitle_0 ! queue ! appsink name=t sync=false \
         d.video_0 ! queue ! fakesink sync=false",
        path.display()
    ));
    let texts = collect(&p, "t");
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    std::mem::take(&mut *texts.lock().unwrap())
}

/// Waits (up to 30 s) until an element posting on `bus` has finished loading its model: the load
/// runs in the background after NULL→READY, and realtime mode drops samples until it is done.
/// Returns the Progress types seen, ending with Complete or Error.
pub fn wait_for_load(bus: &gst::Bus) -> Vec<gst::ProgressType> {
    let mut seen = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "model load did not finish: {seen:?}");
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[gst::MessageType::Progress],
        ) else {
            continue;
        };
        if let gst::MessageView::Progress(p) = msg.view() {
            let kind = p.get().0;
            seen.push(kind);
            if matches!(kind, gst::ProgressType::Complete | gst::ProgressType::Error) {
                return seen;
            }
        }
    }
}

/// Harnesses on `el`: video in/out, and its text pad. They start the element (NULL→PLAYING);
/// this returns once its model is loaded. `el` keeps the bus used for that.
pub fn start_harnesses(el: &gst::Element, caps: &str) -> (gst_check::Harness, gst_check::Harness) {
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let mut h = gst_check::Harness::with_element(el, Some("sink"), Some("src"));
    let th = gst_check::Harness::with_element(el, None, Some("text_src"));
    h.set_src_caps_str(caps);
    wait_for_load(&bus);
    (h, th)
}

/// Text buffers as (pts, end, text), with runs of touching buffers of one text (per-frame
/// layout, or a muxer's samples) merged into one cue, and empty ones left out.
pub fn merge_cues(buffers: &[gst::Buffer]) -> Vec<(u64, u64, String)> {
    let mut cues: Vec<(u64, u64, String)> = vec![];
    for b in buffers {
        let map = b.map_readable().unwrap();
        let text = String::from_utf8_lossy(&map)
            .trim_end_matches('\0')
            .trim()
            .to_string();
        let pts = b.pts().unwrap().nseconds();
        let end = pts + b.duration().map_or(0, |d| d.nseconds());
        if text.is_empty() {
            continue;
        }
        match cues.last_mut() {
            // Muxers round sample times: "touching" allows a microsecond.
            Some(last) if last.2 == text && pts.abs_diff(last.1) <= 1_000 => last.1 = end,
            _ => cues.push((pts, end, text)),
        }
    }
    cues
}

/// Records the prompts of every model call; answers "<prompt>|<mean of the image's bytes>"
/// (the frame's fill value for the flat frames of [`frame`]).
#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<Vec<String>>>,
}

impl Captioner for Recorder {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> engine::Result<Vec<Caption>> {
        let prompts = vec![prompt; images.len()];
        self.caption_each(images, &prompts, params)
    }

    fn caption_each(
        &self,
        images: &[RgbImage],
        prompts: &[&str],
        _params: &GenerationParams,
    ) -> engine::Result<Vec<Caption>> {
        self.calls
            .lock()
            .unwrap()
            .push(prompts.iter().map(|p| p.to_string()).collect());
        Ok(images
            .iter()
            .zip(prompts)
            .map(|(im, p)| Caption {
                token_ids: vec![],
                text: format!("{p}|{}", mean(im)),
            })
            .collect())
    }
}

/// A captioner that answers `text` for every image (to test what the element does with odd
/// answers).
pub struct Says(pub String);

impl Captioner for Says {
    fn caption(
        &self,
        images: &[RgbImage],
        _prompt: &str,
        _params: &GenerationParams,
    ) -> engine::Result<Vec<Caption>> {
        answer_each(images, |_| self.0.clone())
    }
}

/// A captioner that numbers its answers in call order ("#1", "#2", ...), so consecutive
/// captions always differ (static test patterns give equal means).
#[derive(Default)]
pub struct Counting {
    pub calls: std::sync::atomic::AtomicU64,
}

impl Captioner for Counting {
    fn caption(
        &self,
        images: &[RgbImage],
        _prompt: &str,
        _params: &GenerationParams,
    ) -> engine::Result<Vec<Caption>> {
        answer_each(images, |_| {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            format!("#{n}")
        })
    }
}

/// A captioner held at a gate: each model call records its batch size, then waits for a permit
/// ([`Gate::open`]); tests decide exactly when answers come. Answers "mean N" like [`Fake`].
#[derive(Default)]
pub struct Gate {
    permits: Mutex<usize>,
    opened: std::sync::Condvar,
    pub batches: Mutex<Vec<usize>>,
    started: std::sync::Condvar,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Lets `n` more model calls finish (`usize::MAX`: all from now on).
    pub fn open(&self, n: usize) {
        let mut p = self.permits.lock().unwrap();
        *p = p.saturating_add(n);
        self.opened.notify_all();
    }

    /// Waits (up to 30 s) until `n` model calls have started.
    pub fn wait_started(&self, n: usize) {
        let batches = self.batches.lock().unwrap();
        let (batches, timeout) = self
            .started
            .wait_timeout_while(batches, Duration::from_secs(30), |b| b.len() < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{n} model calls did not start: {batches:?}"
        );
    }
}

impl Captioner for Gate {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        _params: &GenerationParams,
    ) -> engine::Result<Vec<Caption>> {
        self.batches.lock().unwrap().push(images.len());
        self.started.notify_all();
        let mut p = self.permits.lock().unwrap();
        while *p == 0 {
            p = self.opened.wait(p).unwrap();
        }
        *p -= 1;
        drop(p);
        answer_each(images, |im| Fake::text_for(prompt, mean(im)))
    }
}
