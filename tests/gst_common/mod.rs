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

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstblip2::plugin_register_static().expect("registering the blip2 plugin");
    });
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
                let mean = im.data.iter().map(|&b| b as u64).sum::<u64>() / im.data.len() as u64;
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

/// Caption messages and errors/warnings collected from a pipeline run.
#[derive(Default, Debug)]
pub struct Run {
    pub captions: Vec<gst::Structure>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Plays `pipeline` to EOS (or error, or `timeout`) and collects the bus messages.
pub fn run_to_eos(pipeline: &gst::Pipeline, timeout: Duration) -> Run {
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut run = Run::default();
    let deadline = std::time::Instant::now() + timeout;
    loop {
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

/// A fresh, empty folder for files a test writes (unique per process and name).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("blip2-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
