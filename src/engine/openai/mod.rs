//! The `openai` backend: captions come from an OpenAI-compatible server (vLLM serves
//! `Blip2ForConditionalGeneration`) instead of a model loaded here. It is one more
//! [`Captioner`] behind the same worker, so sampling, batching, modes and outcomes stay the
//! element's; what differs is that each image of a batch is one HTTP request, sent concurrently,
//! retried on transient failures when the element asks for it, and abandoned when cancelled.
//!
//! Requests: `POST {server-url}/chat/completions` with one user message holding an `image_url`
//! part (a `data:` URL, PNG by default so the server decodes the exact RGB) and a `text` part
//! with the prompt. See `wire` for the body and `http` for timeouts and retries.

mod http;
mod wire;

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use super::{
    BatchItem, CancelToken, CaptionError, Captioner, Engine, Prepared, RemoteError,
    RemoteErrorKind, Result, redact_url,
};
use crate::model::{Caption, GenerationParams, RgbImage};
use crate::sync::lock;

pub use http::{BACKOFF_MAX, BACKOFF_START};
pub use wire::ImageFormat;

/// Where and how to reach the server. Equal configurations share one worker (and so batch
/// together), like elements sharing a local model.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RemoteConfig {
    /// Base URL of the API, e.g. `http://gpu-host:8000/v1` (a trailing `/` is ignored). A
    /// `user:password@` part is sent as basic auth and masked wherever the URL is shown.
    pub server_url: String,
    /// The served model name sent in each request.
    pub model: String,
    /// Sent as `Authorization: Bearer ...`; never printed (see the `Debug` impl).
    pub api_key: Option<String>,
    pub image_format: ImageFormat,
    /// Time allowed to open the TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request (connect, send, answer), per attempt.
    pub request_timeout: Duration,
    /// Further attempts after a transient failure, for requests that allow retries.
    pub retries: u32,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("server_url", &redact_url(&self.server_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("image_format", &self.image_format)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl RemoteConfig {
    fn base(&self) -> &str {
        self.server_url.trim_end_matches('/')
    }

    /// The chat completions endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base())
    }
}

/// Captions through an OpenAI-compatible chat completions API.
pub struct OpenAiCaptioner {
    config: Arc<RemoteConfig>,
    agent: ureq::Agent,
}

impl OpenAiCaptioner {
    pub fn new(config: RemoteConfig) -> Self {
        let agent = http::agent(&config);
        Self {
            config: Arc::new(config),
            agent,
        }
    }

    /// Checks once that the server answers and serves `model` (`GET {server-url}/models`).
    /// A server without that listing (404, 405) passes: only the first request can tell.
    pub fn probe(&self) -> std::result::Result<(), RemoteError> {
        http::probe(&self.agent, &self.config)
    }
}

impl Captioner for OpenAiCaptioner {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        params: &GenerationParams,
    ) -> Result<Vec<Caption>> {
        let items = images
            .iter()
            .map(|image| {
                Ok(BatchItem {
                    input: self.prepare(image.clone())?,
                    prompt: prompt.to_owned(),
                    retry_transient: true,
                    cancel: CancelToken::never(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.caption_batch(items, params).into_iter().collect()
    }

    /// The image as the request's `data:` URL (PNG or JPEG), encoded before the request
    /// reaches the worker.
    fn prepare(&self, image: RgbImage) -> Result<Prepared> {
        let url =
            wire::data_url(&image, self.config.image_format).map_err(CaptionError::InvalidInput)?;
        Ok(Prepared::new(url))
    }

    /// One request per item, all in flight at once; returns when every item is answered or
    /// cancelled (a cancelled request's thread stops at its next attempt or backoff and its
    /// answer is dropped).
    fn caption_batch(
        &self,
        items: Vec<BatchItem>,
        params: &GenerationParams,
    ) -> Vec<Result<Caption>> {
        let n = items.len();
        let (tx, rx) = mpsc::channel();
        let mut tokens = Vec::with_capacity(n);
        for (i, item) in items.into_iter().enumerate() {
            tokens.push(item.cancel.clone());
            let (agent, config, params, sender) = (
                self.agent.clone(),
                self.config.clone(),
                params.clone(),
                tx.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("blip2-remote".into())
                .spawn(move || {
                    let result = http::caption_one(&agent, &config, item, &params);
                    let _ = sender.send((i, result));
                });
            if let Err(e) = spawned {
                let _ = tx.send((
                    i,
                    Err(CaptionError::Internal(format!("no request thread: {e}"))),
                ));
            }
        }
        drop(tx);
        let mut results: Vec<Option<Result<Caption>>> = (0..n).map(|_| None).collect();
        let mut left = n;
        while left > 0 {
            match rx.recv_timeout(CANCEL_POLL) {
                Ok((i, result)) => {
                    results[i] = Some(result);
                    left -= 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let waiting = (0..n).filter(|&i| results[i].is_none());
                    if waiting.clone().all(|i| tokens[i].is_cancelled()) {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let endpoint = self.config.endpoint();
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(CaptionError::Remote(RemoteError::new(
                        &endpoint,
                        RemoteErrorKind::Cancelled,
                        0,
                    )))
                })
            })
            .collect()
    }
}

/// How often a batch waiting for its requests checks whether they were all cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(20);

type Slot = Arc<Mutex<Weak<Engine>>>;
static ENGINES: LazyLock<Mutex<HashMap<RemoteConfig, Slot>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The worker for `config`, shared by every element with the same configuration (so their
/// samples are batched into concurrent requests), started on first use.
pub fn engine(config: &RemoteConfig) -> Arc<Engine> {
    let slot = lock(&ENGINES).entry(config.clone()).or_default().clone();
    let mut slot = lock(&slot);
    if let Some(engine) = slot.upgrade() {
        return engine;
    }
    let name = format!("{} ({})", redact_url(&config.endpoint()), config.model);
    let engine = Engine::spawn(Arc::new(OpenAiCaptioner::new(config.clone())), &name);
    *slot = Arc::downgrade(&engine);
    engine
}
