//! Why a caption could not be made, typed so the element picks its message, GError domain and
//! the property to blame from the kind of failure instead of from text.

use std::fmt;
use std::time::Duration;

use crate::model;

pub type Result<T> = std::result::Result<T, CaptionError>;

/// A failed caption: from the local model or from a remote server.
#[derive(Clone, Debug)]
pub enum CaptionError {
    /// Prompt and generated tokens outgrow the language model's positions.
    TooLong {
        prompt_positions: usize,
        max_positions: usize,
    },
    /// Generation parameters or an input the backend refuses (a setting, not a fault).
    InvalidInput(String),
    /// The model failed while running (out of memory, device error, ...). `backtrace` is for
    /// the debug log only.
    Model {
        message: String,
        backtrace: Option<String>,
    },
    /// A backend broke its contract (panicked, wrong number of captions).
    Internal(String),
    /// The serving engine behind `backend=openai`.
    Remote(RemoteError),
}

/// A request to an OpenAI-compatible server that failed (after its retries, if any).
#[derive(Clone, Debug)]
pub struct RemoteError {
    /// The endpoint, for example `http://gpu-host:8000/v1/chat/completions`, without
    /// credentials (see [`redact_url`]).
    pub url: String,
    pub kind: RemoteErrorKind,
    /// Attempts made, retries included.
    pub attempts: u32,
}

impl RemoteError {
    /// A failure of a request to `url`; credentials in `url` are masked here, so no message
    /// or log line made from the error can show them.
    pub fn new(url: &str, kind: RemoteErrorKind, attempts: u32) -> Self {
        Self {
            url: redact_url(url),
            kind,
            attempts,
        }
    }
}

/// `url` with the `user:password@` part (if any) replaced by `***@`. ureq sends that part as
/// HTTP basic auth (a proxy in front of vLLM, a private hub mirror), so it is a secret like
/// `api-key` and must not reach messages or logs.
pub fn redact_url(url: &str) -> String {
    match userinfo_range(url) {
        // `end` is the `@`, which stays.
        Some(range) => format!("{}***{}", &url[..range.start], &url[range.end..]),
        None => url.to_owned(),
    }
}

/// The `user:password` before the `@` of `url`'s authority, if it has one.
pub(crate) fn url_userinfo(url: &str) -> Option<&str> {
    userinfo_range(url).map(|range| &url[range])
}

fn userinfo_range(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority.rfind('@').map(|at| start..start + at)
}

#[derive(Clone, Debug, PartialEq)]
pub enum RemoteErrorKind {
    /// No connection (refused, unknown host, unreachable network).
    Connect(String),
    /// No complete answer within the request timeout.
    Timeout(Duration),
    /// The connection broke before the whole answer arrived.
    Dropped(String),
    /// An HTTP error status; `message` is the server's own (`error.message` of its JSON body,
    /// else the body's start).
    Status { code: u16, message: String },
    /// The body is not a chat completion with `choices[0].message.content`.
    Malformed(String),
    /// Cancelled before an answer came (flush, seek, state change).
    Cancelled,
}

impl RemoteErrorKind {
    /// Failures a later attempt may not meet: an overloaded or restarting server (5xx, 429), a
    /// dropped connection, a timeout, a refused connection.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Timeout(_) | Self::Dropped(_) => true,
            Self::Status { code, .. } => *code == 429 || *code >= 500,
            Self::Malformed(_) | Self::Cancelled => false,
        }
    }
}

impl fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Timeout(t) => write!(f, "no answer within {:.1} s", t.as_secs_f64()),
            Self::Dropped(e) => write!(f, "connection dropped: {e}"),
            Self::Status { code, message } => write!(f, "HTTP {code}: {message}"),
            Self::Malformed(e) => write!(f, "malformed answer: {e}"),
            Self::Cancelled => write!(f, "cancelled"),
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.kind)?;
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        Ok(())
    }
}

impl fmt::Display for CaptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong {
                prompt_positions,
                max_positions,
            } => model::Error::TooLong {
                prompt_positions: *prompt_positions,
                max_positions: *max_positions,
            }
            .fmt(f),
            Self::InvalidInput(m) | Self::Internal(m) => write!(f, "{m}"),
            Self::Model { message, .. } => write!(f, "{message}"),
            Self::Remote(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CaptionError {}

impl From<model::Error> for CaptionError {
    fn from(e: model::Error) -> Self {
        match e {
            model::Error::TooLong {
                prompt_positions,
                max_positions,
            } => Self::TooLong {
                prompt_positions,
                max_positions,
            },
            model::Error::Input(m) => Self::InvalidInput(m),
            other => Self::Model {
                message: other.to_string(),
                backtrace: other.backtrace(),
            },
        }
    }
}

impl From<RemoteError> for CaptionError {
    fn from(e: RemoteError) -> Self {
        Self::Remote(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked() {
        for (url, shown) in [
            (
                "http://user:s3cret@proxy:8000/v1",
                "http://***@proxy:8000/v1",
            ),
            (
                "https://tok3n@hub.example/x?a=b@c",
                "https://***@hub.example/x?a=b@c",
            ),
            ("http://a:b@c@host", "http://***@host"),
            ("http://host:8000/v1/x@y", "http://host:8000/v1/x@y"),
            ("http://host:8000/v1", "http://host:8000/v1"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let e = RemoteError::new(
            "http://user:s3cret@proxy/v1/models",
            RemoteErrorKind::Cancelled,
            1,
        );
        assert!(!format!("{e} {e:?}").contains("s3cret"), "{e:?}");
    }
}
