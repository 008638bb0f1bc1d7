//! State changes: loading (or sharing) the model on NULL→READY, waking waiters on PAUSED→READY,
//! resetting streaming state, freeing the model on READY→NULL.

use std::sync::Arc;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::properties::{dtype_choice, parse_device};
use super::remote::Backend;
use super::state::{State, Stats};
use super::{Blip2Caption, CAT, lock};
use crate::engine;

impl Blip2Caption {
    /// NULL→READY: resolve and load the model (or share an already loaded one).
    pub(super) fn load_model(&self) -> Result<(), gst::StateChangeError> {
        let settings = lock(&self.settings).clone();
        if settings.remote.backend == Backend::OpenAi {
            return self.connect_remote(&settings);
        }
        let obj = self.obj();
        let device = match parse_device(&settings.device) {
            Ok(d) => d,
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Settings,
                    ("Property `device`: {}", e)
                );
                return Err(gst::StateChangeError);
            }
        };
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
                for warning in engine.load_warnings() {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Settings,
                        ("Model `{}` (property `model`): {}", settings.model, warning)
                    );
                }
                *lock(&self.client) = Some(Arc::new(engine.client()));
                post(gst::ProgressType::Complete, "Model loaded");
                Ok(())
            }
            Err(e) => {
                post(
                    gst::ProgressType::Error,
                    &format!("Model loading failed: {e}"),
                );
                self.post_load_error(&settings.model, &e);
                Err(gst::StateChangeError)
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
            gst::StateChange::NullToReady => self.load_model()?,
            gst::StateChange::ReadyToPaused => {
                if let Some(client) = self.client() {
                    client.resume();
                }
                *lock(&self.state) = State::default();
                *lock(&self.stats) = Stats::default();
                lock(&self.flow_combiner).reset();
            }
            gst::StateChange::PausedToReady => {
                // Before the parent deactivates the pads: a chain function waiting for the
                // model holds the stream lock and must be woken first.
                if let Some(client) = self.client() {
                    client.interrupt();
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
            gst::StateChange::ReadyToNull => {
                // The last element using a model frees it.
                *lock(&self.client) = None;
            }
            gst::StateChange::NullToReady if res.is_err() => {
                *lock(&self.client) = None;
            }
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
