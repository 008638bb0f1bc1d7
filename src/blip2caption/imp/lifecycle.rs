//! State changes: loading (or sharing) the model in the background on NULL→READY, waking
//! waiters on PAUSED→READY, resetting streaming state, freeing the model on READY→NULL.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::properties::{Settings, dtype_choice, parse_device};
use super::remote::Backend;
use super::state::{State, Stats};
use super::{Blip2Caption, CAT, lock};
use crate::engine;

impl Blip2Caption {
    /// NULL→READY: checks the settings, then loads the model on its own thread so the state
    /// change returns at once (a multi-GB model takes long; a GUI or a live camera must not
    /// freeze meanwhile). Elements sharing a model wait for one load in the engine's cache.
    fn start_load(&self) -> Result<(), gst::StateChangeError> {
        let settings = lock(&self.settings).clone();
        *lock(&self.loaded_model) = settings.model.clone();
        if settings.remote.backend == Backend::OpenAi {
            // A server is checked with one bounded request (connect-timeout), here.
            let post = |t: gst::ProgressType, text: &str| self.post_progress(t, text);
            post(gst::ProgressType::Start, "Connecting to the caption server");
            let res = self.connect_remote(&settings);
            match res {
                Ok(()) => post(gst::ProgressType::Complete, "Caption server ready"),
                Err(_) => post(gst::ProgressType::Error, "Caption server not usable"),
            }
            return res;
        }
        if let Err(e) = parse_device(&settings.device) {
            gst::element_imp_error!(
                self,
                gst::LibraryError::Settings,
                ("Property `device`: {}", e)
            );
            return Err(gst::StateChangeError);
        }
        let generation = self.model.begin();
        let element = self.obj().clone();
        let spawned = std::thread::Builder::new()
            .name("blip2-load".into())
            .spawn(move || element.imp().load_guarded(&settings, generation));
        if let Err(e) = spawned {
            gst::element_imp_error!(
                self,
                gst::CoreError::Thread,
                ("Cannot start the model loading thread: {}", e)
            );
            self.model.clear();
            return Err(gst::StateChangeError);
        }
        Ok(())
    }

    /// The load thread's body. A panic anywhere below (candle, a tokenizer, a download) must
    /// not leave the slot in "loading": complete mode's streaming thread waits on it and would
    /// hang with no error. It becomes an ERROR naming the model, and the slot is released.
    fn load_guarded(&self, settings: &Settings, generation: u64) {
        let loaded = catch_unwind(AssertUnwindSafe(|| self.finish_load(settings, generation)));
        if let Err(panic) = loaded {
            let why = crate::sync::panic_message(&*panic);
            if !self.model.finish(generation, None) {
                return; // the element went to NULL meanwhile: nobody waits for this load
            }
            self.post_progress(gst::ProgressType::Error, "Model loading failed");
            gst::element_imp_error!(
                self,
                gst::LibraryError::Failed,
                (
                    "Internal error while loading model `{}` (property `model`): {}",
                    settings.model,
                    why
                )
            );
        }
    }

    /// The load thread: loads, then hands the model to the element unless the element went to
    /// NULL meanwhile (then the model is dropped here, which frees it unless another element
    /// uses it).
    fn finish_load(&self, settings: &Settings, generation: u64) {
        let Some(engine) = self.load_model(settings, generation) else {
            self.model.finish(generation, None);
            return;
        };
        let warnings = engine.load_warnings();
        let client = Arc::new(engine.client());
        drop(engine);
        if !self.model.finish(generation, Some(client)) {
            gst::debug!(CAT, imp = self, "model load {generation} no longer wanted");
            self.post_progress(
                gst::ProgressType::Canceled,
                "Model loaded after the element stopped; released",
            );
            return;
        }
        for warning in warnings {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("Model `{}` (property `model`): {}", settings.model, warning)
            );
        }
        self.post_progress(gst::ProgressType::Complete, "Model loaded");
    }

    fn post_progress(&self, t: gst::ProgressType, text: &str) {
        let obj = self.obj();
        let _ = obj.post_message(
            gst::message::Progress::builder(t, "load", text)
                .src(&*obj)
                .build(),
        );
    }

    /// Resolves and loads the model (or shares an already loaded one), reporting progress.
    /// Runs on the load thread. Errors name the file and the property.
    fn load_model(&self, settings: &Settings, generation: u64) -> Option<Arc<engine::Engine>> {
        let obj = self.obj();
        let device = parse_device(&settings.device).ok()?;
        let post = |t: gst::ProgressType, text: &str| {
            let _ = obj.post_message(
                gst::message::Progress::builder(t, "load", text)
                    .src(&*obj)
                    .build(),
            );
        };
        post(
            gst::ProgressType::Start,
            &format!("Loading BLIP-2 model {}", settings.model),
        );
        let mut progress = |p: &engine::LoadProgress| match p {
            engine::LoadProgress::Stage(text) => post(gst::ProgressType::Continue, text),
            engine::LoadProgress::Download(d) => {
                let _ = obj.post_message(download_progress(&*obj, d));
            }
        };
        match engine::get_or_load_with(
            &settings.model,
            device,
            dtype_choice(settings.dtype),
            &mut progress,
        ) {
            Ok(engine) => {
                gst::info!(CAT, imp = self, "model {} ready", engine.name());
                Some(engine)
            }
            Err(e) => {
                if !self.model.is_current(generation) {
                    // Nobody waits for this model any more: no error to report.
                    post(
                        gst::ProgressType::Canceled,
                        "Model loading no longer needed",
                    );
                    return None;
                }
                post(
                    gst::ProgressType::Error,
                    &format!("Model loading failed: {e}"),
                );
                self.post_load_error(&settings.model, &e);
                None
            }
        }
    }

    fn post_load_error(&self, model: &str, e: &engine::LoadError) {
        use engine::ResolveErrorKind as Kind;
        let resolve = match e {
            engine::LoadError::Resolve(r) => r,
            engine::LoadError::Model(m) => {
                // A device that is not there is the `device` property's fault, not the model's.
                if let crate::model::Error::Device(_) = m {
                    gst::element_imp_error!(
                        self,
                        gst::LibraryError::Settings,
                        (
                            "Failed to load model `{}` (property `device`): {}",
                            model,
                            m
                        )
                    );
                } else {
                    if let Some(bt) = m.backtrace() {
                        gst::debug!(CAT, imp = self, "backtrace of `{m}`:\n{bt}");
                    }
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::OpenRead,
                        ("Failed to load model `{}` (property `model`): {}", model, m)
                    );
                }
                return;
            }
        };
        let code = match resolve.kind {
            Kind::MissingFolder | Kind::NotFound | Kind::NotCached | Kind::MissingFile => {
                gst::ResourceError::NotFound
            }
            Kind::Unauthorized => gst::ResourceError::NotAuthorized,
            Kind::DiskFull => gst::ResourceError::NoSpaceLeft,
            Kind::Empty => gst::ResourceError::Settings,
            Kind::Network | Kind::Protocol => gst::ResourceError::Read,
            Kind::Cache => gst::ResourceError::Write,
        };
        gst::element_imp_error!(
            self,
            code,
            (
                "Failed to load model `{}` (property `model`): {}",
                model,
                resolve
            )
        );
    }

    pub(super) fn change_state_impl(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::debug!(CAT, imp = self, "{:?}", transition);
        match transition {
            gst::StateChange::NullToReady => self.start_load()?,
            gst::StateChange::ReadyToPaused => {
                self.model.resume();
                *lock(&self.state) = State::default();
                *lock(&self.stats) = Stats::default();
                lock(&self.flow_combiner).reset();
            }
            gst::StateChange::PausedToReady => {
                // Before the parent deactivates the pads: a chain function waiting for the
                // model (its load or a caption) holds the stream lock and must be woken first.
                self.model.interrupt();
                if let Some(client) = self.client() {
                    client.cancel();
                }
            }
            _ => (),
        }
        let res = self.parent_change_state(transition);
        match transition {
            gst::StateChange::PausedToReady => {
                let mut state = lock(&self.state);
                let info = state.video_info.take();
                *state = State {
                    video_info: info,
                    ..State::default()
                };
            }
            // The last element using a model frees it; a load still running is dropped when
            // it ends.
            gst::StateChange::ReadyToNull => self.model.clear(),
            gst::StateChange::NullToReady if res.is_err() => self.model.clear(),
            _ => (),
        }
        res
    }
}

/// A Progress message for download bytes: `percent` (overall, 0-100; the field GStreamer's own
/// progress messages carry) plus the byte counts, so applications can draw their own bar.
fn download_progress(src: &impl IsA<gst::Object>, d: &engine::DownloadProgress) -> gst::Message {
    let text = format!(
        "Downloading {} ({}/{}): {} %",
        d.file,
        d.file_number,
        d.file_count,
        d.percent()
    );
    gst::message::Progress::builder(gst::ProgressType::Continue, "download", &text)
        .other_field("percent", d.percent() as i32)
        .other_field("file", d.file.as_str())
        .other_field("file-bytes", d.file_done)
        .other_field("file-total", d.file_total)
        .other_field("bytes", d.done)
        .other_field("total", d.total)
        .src(src)
        .build()
}
