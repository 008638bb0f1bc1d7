//! One place that turns a failed caption into a GStreamer message: the text (naming the
//! property to change where a setting causes it), the GError domain and code, and what goes to
//! the debug log only (backtraces).

use gst::subclass::prelude::*;

use super::properties::Settings;
use super::{Blip2Caption, CAT};
use crate::engine::{CaptionError, RemoteErrorKind};

/// A GError domain and code for a failure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Code {
    Library(gst::LibraryError),
    Resource(gst::ResourceError),
    Stream(gst::StreamError),
}

/// What the element posts about one failed sample.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Failure {
    pub(super) code: Code,
    pub(super) text: String,
}

/// Message and code for `error`, which happened with `settings` and `prompt`.
pub(super) fn describe(error: &CaptionError, settings: &Settings, prompt: &str) -> Failure {
    use gst::{LibraryError as L, ResourceError as R, StreamError as S};
    let (code, text) = match error {
        CaptionError::TooLong {
            prompt_positions,
            max_positions,
        } => {
            // The last new token is never fed back, so it needs no position.
            let room = (max_positions + 1).saturating_sub(*prompt_positions);
            let blame = if prompt_positions > max_positions {
                let property = if settings.sampling.prompts.is_empty() {
                    "prompt"
                } else {
                    "prompts"
                };
                format!(
                    "the prompt (property `{property}`, {} characters) is too long for this \
                     model",
                    prompt.chars().count()
                )
            } else if settings.min_new_tokens as usize > room {
                format!(
                    "property `min-new-tokens` ({}) asks for more tokens than fit; at most {room} \
                     with this prompt",
                    settings.min_new_tokens
                )
            } else {
                format!(
                    "lower property `max-new-tokens` ({}) to at most {room} with this prompt",
                    settings.max_new_tokens
                )
            };
            (Code::Library(L::Settings), format!("{error}: {blame}"))
        }
        CaptionError::InvalidInput(_) => (Code::Library(L::Settings), error.to_string()),
        CaptionError::Model { .. } | CaptionError::Internal(_) => {
            (Code::Library(L::Failed), error.to_string())
        }
        CaptionError::Remote(remote) => {
            let code = match &remote.kind {
                RemoteErrorKind::Connect(_) => R::OpenReadWrite,
                RemoteErrorKind::Timeout(_) | RemoteErrorKind::Dropped(_) => R::Read,
                RemoteErrorKind::Status {
                    code: 401 | 403, ..
                } => R::NotAuthorized,
                RemoteErrorKind::Status { code: 404, .. } => R::NotFound,
                RemoteErrorKind::Status { code, .. } if *code == 429 || *code >= 500 => R::Busy,
                RemoteErrorKind::Status { .. } => R::Settings,
                RemoteErrorKind::Malformed(_) => return failure(Code::Stream(S::Decode), error),
                RemoteErrorKind::Cancelled => R::Read,
            };
            let hint = match &remote.kind {
                RemoteErrorKind::Connect(_) => " (property `server-url`)",
                RemoteErrorKind::Status {
                    code: 401 | 403, ..
                } => " (property `api-key`)",
                RemoteErrorKind::Status { code: 404, .. } => {
                    " (property `server-model`, or `model` when that is empty)"
                }
                _ => "",
            };
            (Code::Resource(code), format!("{error}{hint}"))
        }
    };
    Failure { code, text }
}

/// Failures that no later sample can escape (a server refusing the request: wrong model name,
/// bad key, bad request), so realtime mode stops too instead of warning once and going on.
pub(super) fn never_recovers(error: &CaptionError) -> bool {
    matches!(error, CaptionError::Remote(r) if matches!(
        r.kind,
        RemoteErrorKind::Status { code, .. } if (400..500).contains(&code) && code != 429
    ))
}

fn failure(code: Code, error: &CaptionError) -> Failure {
    Failure {
        code,
        text: error.to_string(),
    }
}

impl Blip2Caption {
    /// Posts `failure` as an ERROR (`fatal`) or a WARNING; `error`'s backtrace, if any, goes to
    /// the debug log and never into the message.
    pub(super) fn post_failure(&self, failure: &Failure, error: &CaptionError, fatal: bool) {
        if let CaptionError::Model {
            backtrace: Some(bt),
            ..
        } = error
        {
            gst::debug!(CAT, imp = self, "backtrace of `{}`:\n{bt}", failure.text);
        }
        match failure.code {
            Code::Library(c) => self.post_message_of(c, &failure.text, fatal),
            Code::Resource(c) => self.post_message_of(c, &failure.text, fatal),
            Code::Stream(c) => self.post_message_of(c, &failure.text, fatal),
        }
    }

    fn post_message_of<T: gst::MessageErrorDomain>(&self, code: T, text: &str, fatal: bool) {
        if fatal {
            gst::element_imp_error!(self, code, ("{}", text));
        } else {
            gst::element_imp_warning!(self, code, ("{}", text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RemoteError;
    use gst::{LibraryError as L, ResourceError as R};
    use std::time::Duration;

    fn remote(kind: RemoteErrorKind) -> CaptionError {
        CaptionError::Remote(RemoteError {
            url: "http://127.0.0.1:9/v1/chat/completions".into(),
            kind,
            attempts: 3,
        })
    }

    fn status(code: u16) -> CaptionError {
        remote(RemoteErrorKind::Status {
            code,
            message: "server says no".into(),
        })
    }

    #[test]
    fn codes_and_properties_follow_the_error_kind() {
        let s = Settings::default();
        let too_long = |p| CaptionError::TooLong {
            prompt_positions: p,
            max_positions: 64,
        };
        let d = describe(&too_long(70), &s, "a b c");
        assert_eq!(d.code, Code::Library(L::Settings));
        assert!(
            d.text.contains("property `prompt`, 5 characters"),
            "{}",
            d.text
        );
        let d = describe(&too_long(60), &s, "");
        assert!(d.text.contains("property `max-new-tokens`"), "{}", d.text);
        let many = Settings {
            min_new_tokens: 10,
            ..Settings::default()
        };
        let d = describe(&too_long(60), &many, "");
        assert!(
            d.text.contains("property `min-new-tokens` (10)"),
            "{}",
            d.text
        );
        assert!(d.text.contains("at most 5"), "{}", d.text);

        let model = CaptionError::Model {
            message: "inference failed: out of memory".into(),
            backtrace: Some("0: frame".into()),
        };
        let d = describe(&model, &s, "");
        assert_eq!(d.code, Code::Library(L::Failed));
        assert_eq!(d.text, "inference failed: out of memory");

        let cases = [
            (
                remote(RemoteErrorKind::Connect("refused".into())),
                Code::Resource(R::OpenReadWrite),
            ),
            (
                remote(RemoteErrorKind::Timeout(Duration::from_secs(2))),
                Code::Resource(R::Read),
            ),
            (status(401), Code::Resource(R::NotAuthorized)),
            (status(404), Code::Resource(R::NotFound)),
            (status(429), Code::Resource(R::Busy)),
            (status(503), Code::Resource(R::Busy)),
            (status(400), Code::Resource(R::Settings)),
            (
                remote(RemoteErrorKind::Malformed("not JSON".into())),
                Code::Stream(gst::StreamError::Decode),
            ),
        ];
        for (e, code) in cases {
            let d = describe(&e, &s, "");
            assert_eq!(d.code, code, "{e}");
            assert!(
                d.text
                    .starts_with("http://127.0.0.1:9/v1/chat/completions: "),
                "{}",
                d.text
            );
            assert!(d.text.contains("after 3 attempts"), "{}", d.text);
        }
        let d = describe(&status(404), &s, "");
        assert!(d.text.contains("HTTP 404: server says no"), "{}", d.text);
        assert!(d.text.contains("property `server-model`"), "{}", d.text);
    }
}
