//! HTTP to the server: timeouts, the retry loop with exponential backoff, and the mapping of
//! transport failures and statuses to [`RemoteErrorKind`].

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use super::RemoteConfig;
use super::wire;
use crate::engine::error::url_userinfo;
use crate::engine::{BatchItem, CaptionError, RemoteError, RemoteErrorKind, redact_url};
use crate::model::{Caption, GenerationParams};

/// Wait before the first retry; it doubles after each failed attempt.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest wait between attempts (also the cap on a server's `Retry-After`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// The HTTP client for `config`. Note for whoever bridges the `log` crate into GStreamer's
/// debug log: ureq's TRACE level is the wire, unredacted (the `Authorization` header and the
/// frames); keep ureq at DEBUG or below there.
pub fn agent(config: &RemoteConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(config.connect_timeout))
        .timeout_global(Some(config.request_timeout))
        // Statuses are answers to read (the server's message), not transport errors.
        .http_status_as_error(false)
        .user_agent(concat!("gst-blip2/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Captions one item, retrying transient failures with backoff when the item allows it.
pub fn caption_one(
    agent: &ureq::Agent,
    config: &RemoteConfig,
    item: BatchItem,
    params: &GenerationParams,
) -> Result<Caption, CaptionError> {
    let url = config.endpoint();
    // `OpenAiCaptioner::prepare` made the data URL.
    let image_url = item.input.get::<String>().ok_or_else(|| {
        CaptionError::Internal("the request's image was not prepared for the server".into())
    })?;
    let body = wire::request_body(&config.model, image_url, &item.prompt, params).to_string();
    drop(item.input);
    let attempts = if item.retry_transient {
        config.retries.saturating_add(1)
    } else {
        1
    };
    let mut backoff = BACKOFF_START;
    let mut attempt = 0;
    loop {
        if item.cancel.is_cancelled() {
            return Err(remote(&url, RemoteErrorKind::Cancelled, attempt));
        }
        attempt += 1;
        let (kind, retry_after) = match post(agent, config, &url, &body) {
            Ok(caption) => return Ok(caption),
            Err((kind, retry_after)) => (without_secrets(kind, config), retry_after),
        };
        if !kind.is_transient() || attempt >= attempts {
            return Err(remote(&url, kind, attempt));
        }
        let wait = retry_after.unwrap_or(backoff).min(BACKOFF_MAX);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if !sleep_unless_cancelled(wait, &item.cancel) {
            return Err(remote(&url, RemoteErrorKind::Cancelled, attempt));
        }
    }
}

fn remote(url: &str, kind: RemoteErrorKind, attempts: u32) -> CaptionError {
    CaptionError::Remote(RemoteError::new(url, kind, attempts))
}

/// Sleeps `wait` in short slices; false when cancelled meanwhile.
fn sleep_unless_cancelled(wait: Duration, cancel: &crate::engine::CancelToken) -> bool {
    let end = Instant::now() + wait;
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// One attempt. A failure comes with the server's `Retry-After`, when it sent one.
fn post(
    agent: &ureq::Agent,
    config: &RemoteConfig,
    url: &str,
    body: &str,
) -> Result<Caption, (RemoteErrorKind, Option<Duration>)> {
    let mut request = agent.post(url).content_type("application/json");
    if let Some(key) = &config.api_key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let mut response = request
        .send(body)
        .map_err(|e| (transport(e, config), None))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| (transport(e, config), None))?;
    if !(200..300).contains(&status) {
        let message = wire::error_message(&text);
        return Err((
            RemoteErrorKind::Status {
                code: status,
                message,
            },
            retry_after,
        ));
    }
    wire::parse_answer(&text).map_err(|kind| (kind, None))
}

/// `kind` with the API key and the credentials of `server-url` cut out of its text (the
/// server's words, mostly): a server or proxy may quote back the key it refused ("invalid key
/// sk-..."), and the key must never reach a message or log.
fn without_secrets(kind: RemoteErrorKind, config: &RemoteConfig) -> RemoteErrorKind {
    let userinfo = url_userinfo(&config.server_url);
    let password = userinfo.and_then(|u| u.split_once(':')).map(|(_, p)| p);
    let secrets = [config.api_key.as_deref(), userinfo, password];
    let clean = |mut text: String| {
        for secret in secrets.iter().flatten().filter(|s| !s.is_empty()) {
            text = text.replace(secret, "<redacted>");
        }
        text
    };
    match kind {
        RemoteErrorKind::Status { code, message } => RemoteErrorKind::Status {
            code,
            message: clean(message),
        },
        RemoteErrorKind::Malformed(m) => RemoteErrorKind::Malformed(clean(m)),
        RemoteErrorKind::Dropped(m) => RemoteErrorKind::Dropped(clean(m)),
        RemoteErrorKind::Connect(m) => RemoteErrorKind::Connect(clean(m)),
        other @ (RemoteErrorKind::Timeout(_) | RemoteErrorKind::Cancelled) => other,
    }
}

/// `GET {server-url}/models`: reachable, and is `config.model` among the served ones?
pub fn probe(agent: &ureq::Agent, config: &RemoteConfig) -> Result<(), RemoteError> {
    let url = format!("{}/models", config.base());
    let fail = |kind| RemoteError::new(&url, without_secrets(kind, config), 1);
    let mut request = agent
        .get(&url)
        .config()
        // A state change should not hang on a server that accepts and never answers.
        .timeout_global(Some(config.request_timeout.min(PROBE_TIMEOUT)))
        .build();
    if let Some(key) = &config.api_key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let mut response = request.call().map_err(|e| fail(transport(e, config)))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    match status {
        200..=299 => {}
        // No model listing here (a proxy, another server): the first request will tell.
        404 | 405 => return Ok(()),
        code => {
            return Err(fail(RemoteErrorKind::Status {
                code,
                message: wire::error_message(&text),
            }));
        }
    }
    let served: Vec<String> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("data")?.as_array().map(|models| {
                models
                    .iter()
                    .filter_map(|m| m.get("id")?.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    if served.is_empty() || served.contains(&config.model) {
        return Ok(());
    }
    Err(fail(RemoteErrorKind::Status {
        code: 404,
        message: format!(
            "model `{}` is not served here; the server has {}",
            config.model,
            served
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }))
}

/// Longest wait for the start-up check of the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn transport(e: ureq::Error, config: &RemoteConfig) -> RemoteErrorKind {
    match e {
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            RemoteErrorKind::Connect(format!(
                "no connection within {:.1} s",
                config.connect_timeout.as_secs_f64()
            ))
        }
        ureq::Error::Timeout(_) => RemoteErrorKind::Timeout(config.request_timeout),
        ureq::Error::HostNotFound => RemoteErrorKind::Connect("host not found".into()),
        ureq::Error::ConnectionFailed => RemoteErrorKind::Connect("connection failed".into()),
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused
            | ErrorKind::NotFound
            | ErrorKind::AddrNotAvailable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::HostUnreachable => RemoteErrorKind::Connect(io.to_string()),
            ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                RemoteErrorKind::Timeout(config.request_timeout)
            }
            _ => RemoteErrorKind::Dropped(io.to_string()),
        },
        ureq::Error::BodyExceedsLimit(limit) => {
            RemoteErrorKind::Malformed(format!("answer larger than {limit} bytes"))
        }
        ureq::Error::BadUri(uri) => {
            RemoteErrorKind::Connect(format!("invalid URL {}", redact_url(&uri)))
        }
        other => RemoteErrorKind::Dropped(other.to_string()),
    }
}
