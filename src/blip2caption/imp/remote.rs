//! The backend properties (`backend`, `server-url`, `server-model`, `api-key`, image format,
//! timeouts, retries) and connecting to a server on NULL→READY.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::super::Mode;
use super::failure;
use super::properties::Settings;
use super::{Blip2Caption, CAT};
use crate::engine::openai::{self, ImageFormat, RemoteConfig};
use crate::engine::{CaptionError, RemoteError, redact_url};

const DEFAULT_SERVER_URL: &str = "http://localhost:8000/v1";
const DEFAULT_JPEG_QUALITY: u32 = 90;
const DEFAULT_CONNECT_TIMEOUT: u64 = 5_000_000_000;
const DEFAULT_REQUEST_TIMEOUT: u64 = 60_000_000_000;
const MAX_TIMEOUT: u64 = 24 * 3600 * 1_000_000_000;
const DEFAULT_RETRIES: u32 = 4;

/// Where captions are made.
#[derive(Debug, Default, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBlip2CaptionBackend")]
pub enum Backend {
    #[default]
    #[enum_value(
        name = "Local: the model runs in this process (candle)",
        nick = "local"
    )]
    Local,
    #[enum_value(
        name = "OpenAI: an OpenAI-compatible server (vLLM) at server-url",
        nick = "openai"
    )]
    OpenAi,
}

/// How frames are sent to a server.
#[derive(Debug, Default, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBlip2CaptionImageFormat")]
pub enum WireImage {
    #[default]
    #[enum_value(name = "PNG: lossless, the server sees the exact frame", nick = "png")]
    Png,
    #[enum_value(name = "JPEG at jpeg-quality: smaller requests", nick = "jpeg")]
    Jpeg,
}

#[derive(Clone)]
pub(super) struct RemoteSettings {
    pub(super) backend: Backend,
    server_url: String,
    server_model: String,
    /// Set through the write-only `api-key`; never logged or read back.
    api_key: Option<String>,
    image_format: WireImage,
    jpeg_quality: u32,
    connect_timeout: u64,
    request_timeout: u64,
    retries: u32,
}

impl std::fmt::Debug for RemoteSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSettings")
            .field("backend", &self.backend)
            .field("server_url", &redact_url(&self.server_url))
            .field("server_model", &self.server_model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("image_format", &self.image_format)
            .finish_non_exhaustive()
    }
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            server_url: DEFAULT_SERVER_URL.into(),
            server_model: String::new(),
            api_key: None,
            image_format: WireImage::Png,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retries: DEFAULT_RETRIES,
        }
    }
}

impl RemoteSettings {
    /// The client configuration; `model` stands in for an empty `server-model`, and
    /// `$OPENAI_API_KEY` for an unset `api-key`.
    fn config(&self, model: &str) -> RemoteConfig {
        let model = if self.server_model.is_empty() {
            model
        } else {
            &self.server_model
        };
        let api_key = self
            .api_key
            .clone()
            .or_else(|| std::env::var("OPENAI_API_KEY").ok())
            .filter(|k| !k.is_empty());
        RemoteConfig {
            server_url: self.server_url.trim().to_owned(),
            model: model.to_owned(),
            api_key,
            image_format: match self.image_format {
                WireImage::Png => ImageFormat::Png,
                WireImage::Jpeg => ImageFormat::Jpeg {
                    quality: self.jpeg_quality.clamp(1, 100) as u8,
                },
            },
            connect_timeout: Duration::from_nanos(self.connect_timeout),
            request_timeout: Duration::from_nanos(self.request_timeout),
            retries: self.retries,
        }
    }
}

/// The backend param specs, shown by gst-inspect after `model`.
pub(super) fn specs() -> Vec<glib::ParamSpec> {
    let d = RemoteSettings::default();
    vec![
        glib::ParamSpecEnum::builder_with_default("backend", d.backend)
            .nick("Backend")
            .blurb(
                "Where captions are made: local (the model runs here; device and dtype apply) \
                 or openai (requests to an OpenAI-compatible server such as vLLM at \
                 server-url). Used on NULL→READY",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("server-url")
            .nick("Server URL")
            .blurb(
                "backend=openai: base URL of the API; requests go to \
                 <server-url>/chat/completions. Used on NULL→READY",
            )
            .default_value(Some(DEFAULT_SERVER_URL))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("server-model")
            .nick("Server model")
            .blurb(
                "backend=openai: the served model name sent in each request; empty = the \
                 `model` property. Used on NULL→READY",
            )
            .default_value(Some(""))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("api-key")
            .nick("API key")
            .blurb(
                "backend=openai: sent as a bearer token; unset = $OPENAI_API_KEY. Write-only, \
                 never shown or logged. Used on NULL→READY",
            )
            .write_only()
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("image-format", d.image_format)
            .nick("Image format")
            .blurb("backend=openai: how sampled frames are sent. Used on NULL→READY")
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("jpeg-quality")
            .nick("JPEG quality")
            .blurb("backend=openai, image-format=jpeg: quality 1–100. Used on NULL→READY")
            .minimum(1)
            .maximum(100)
            .default_value(d.jpeg_quality)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("connect-timeout")
            .nick("Connect timeout")
            .blurb(
                "backend=openai: nanoseconds allowed to connect to the server. Used on \
                 NULL→READY",
            )
            .minimum(1_000_000)
            .maximum(MAX_TIMEOUT)
            .default_value(d.connect_timeout)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("request-timeout")
            .nick("Request timeout")
            .blurb(
                "backend=openai: nanoseconds allowed for one request and its answer (each \
                 attempt). Used on NULL→READY",
            )
            .minimum(1_000_000)
            .maximum(MAX_TIMEOUT)
            .default_value(d.request_timeout)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("retries")
            .nick("Retries")
            .blurb(
                "backend=openai, complete mode: further attempts after a transient failure \
                 (HTTP 5xx or 429, timeout, refused or dropped connection), waiting 0.25 s \
                 before the first and doubling up to 8 s (or the server's Retry-After); then \
                 an error. Realtime mode never retries: the sample is dropped and counted. \
                 Used on NULL→READY",
            )
            .maximum(20)
            .default_value(d.retries)
            .mutable_ready()
            .build(),
    ]
}

/// Names of the properties in [`specs`].
static NAMES: LazyLock<Vec<String>> =
    LazyLock::new(|| specs().iter().map(|p| p.name().to_owned()).collect());

pub(super) fn is_remote_property(name: &str) -> bool {
    NAMES.iter().any(|n| n == name)
}

pub(super) fn set(s: &mut RemoteSettings, name: &str, value: &glib::Value) {
    let string = || value.get::<Option<String>>().unwrap().unwrap_or_default();
    match name {
        "backend" => s.backend = value.get().unwrap(),
        "server-url" => s.server_url = string(),
        "server-model" => s.server_model = string(),
        "api-key" => s.api_key = value.get::<Option<String>>().unwrap(),
        "image-format" => s.image_format = value.get().unwrap(),
        "jpeg-quality" => s.jpeg_quality = value.get().unwrap(),
        "connect-timeout" => s.connect_timeout = value.get().unwrap(),
        "request-timeout" => s.request_timeout = value.get().unwrap(),
        "retries" => s.retries = value.get().unwrap(),
        other => unreachable!("not a backend property: {other}"),
    }
}

pub(super) fn get(s: &RemoteSettings, name: &str) -> glib::Value {
    match name {
        "backend" => s.backend.to_value(),
        "server-url" => s.server_url.to_value(),
        "server-model" => s.server_model.to_value(),
        // Write-only: GObject never asks; answer with nothing rather than the secret.
        "api-key" => None::<String>.to_value(),
        "image-format" => s.image_format.to_value(),
        "jpeg-quality" => s.jpeg_quality.to_value(),
        "connect-timeout" => s.connect_timeout.to_value(),
        "request-timeout" => s.request_timeout.to_value(),
        "retries" => s.retries.to_value(),
        other => unreachable!("not a backend property: {other}"),
    }
}

impl Blip2Caption {
    /// NULL→READY with `backend=openai`: check the server once, then share the worker of every
    /// element with the same server settings. An unreachable server fails the state change in
    /// complete mode; otherwise (realtime may start before the server does) it is a warning
    /// and each sample's request tells again. A server that refuses us (auth, unknown model)
    /// is an error in every mode: no later request can succeed.
    pub(super) fn connect_remote(&self, settings: &Settings) -> Result<(), gst::StateChangeError> {
        let config = settings.remote.config(&settings.model);
        let url = config.server_url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            let url = redact_url(url);
            gst::element_imp_error!(
                self,
                gst::ResourceError::Settings,
                ("Property `server-url` must be an http:// or https:// URL, not {url:?}")
            );
            return Err(gst::StateChangeError);
        }
        gst::info!(CAT, imp = self, "checking server {config:?}");
        if let Err(e) = openai::OpenAiCaptioner::new(config.clone()).probe() {
            let fatal = !e.kind.is_transient() || settings.mode == Mode::Complete;
            self.post_server_problem(e, settings, fatal);
            if fatal {
                return Err(gst::StateChangeError);
            }
        }
        let engine = openai::engine(&config);
        gst::info!(CAT, imp = self, "captions from {}", engine.name());
        self.model.set_ready(Arc::new(engine.client()));
        Ok(())
    }

    fn post_server_problem(&self, e: RemoteError, settings: &Settings, fatal: bool) {
        let error = CaptionError::Remote(e);
        let mut failure = failure::describe(&error, settings, &settings.prompt);
        failure.text = format!("Caption server not usable: {}", failure.text);
        self.post_failure(&failure, &error, fatal);
    }
}
