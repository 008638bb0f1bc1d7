use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while loading or running BLIP-2. Variants that concern a file
/// carry its path so callers (the element, the examples) can name it.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read (missing, permission, ...).
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or holds an invalid value.
    Config { path: PathBuf, message: String },
    /// Weights: missing shard, corrupt safetensors, missing tensor, wrong shape.
    Weights { path: PathBuf, message: String },
    /// tokenizer.json missing or invalid, or a prompt that cannot be encoded.
    Tokenizer { path: PathBuf, message: String },
    /// The requested device is not in this build or not on this machine.
    Device(String),
    /// The sequence outgrows the language model's learned positions (OPT's
    /// `max_position_embeddings`): the prompt alone when `prompt_positions > max_positions`,
    /// otherwise the generated tokens after it.
    TooLong {
        /// Image query positions plus the longest prompt's tokens.
        prompt_positions: usize,
        max_positions: usize,
    },
    /// Bad arguments from the caller (image size, generation parameters).
    Input(String),
    /// A failure inside the forward pass.
    Candle(candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The backtrace candle captured for this error (with `RUST_BACKTRACE=1`), for debug logs.
    /// It is never part of the message.
    pub fn backtrace(&self) -> Option<String> {
        match self {
            Error::Candle(e) => candle_backtrace(e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Config { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Weights { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Tokenizer { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Device(message) => write!(f, "{message}"),
            Error::TooLong {
                prompt_positions,
                max_positions,
            } if prompt_positions > max_positions => write!(
                f,
                "the prompt needs {prompt_positions} positions (image queries and prompt \
                 tokens) but the language model has {max_positions} (max_position_embeddings)"
            ),
            Error::TooLong {
                prompt_positions,
                max_positions,
            } => write!(
                f,
                "the prompt takes {prompt_positions} of the language model's {max_positions} \
                 positions (max_position_embeddings), leaving room for {} new tokens",
                max_positions + 1 - prompt_positions
            ),
            Error::Input(message) => write!(f, "{message}"),
            Error::Candle(e) => write!(f, "inference failed: {}", candle_message(e)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Candle(e) => Some(e),
            _ => None,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}

/// A candle error's text without the backtrace that candle appends when `RUST_BACKTRACE` is set
/// (a message for users; the backtrace goes to the debug log through [`Error::backtrace`]).
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}\n{}", candle_message(inner)),
        E::WithPath { inner, path } => format!("path: {path:?} {}", candle_message(inner)),
        other => other.to_string(),
    }
}

fn candle_backtrace(e: &candle_core::Error) -> Option<String> {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { backtrace, .. } => Some(backtrace.to_string()),
        E::Context { inner, .. } | E::WithPath { inner, .. } => candle_backtrace(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_backtrace(inner: candle_core::Error) -> candle_core::Error {
        candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        }
    }

    #[test]
    fn messages_never_carry_a_backtrace() {
        let e = with_backtrace(candle_core::Error::Msg("CUDA_ERROR_OUT_OF_MEMORY".into()));
        let full = e.to_string();
        assert!(
            full.lines().count() > 1,
            "candle appends the backtrace: {full}"
        );
        let err = Error::Candle(e.context("decoding step"));
        assert_eq!(
            err.to_string(),
            "inference failed: decoding step\nCUDA_ERROR_OUT_OF_MEMORY"
        );
        let bt = err
            .backtrace()
            .expect("the backtrace is kept for the debug log");
        assert!(!bt.is_empty() && !err.to_string().contains(&bt));
    }

    #[test]
    fn too_long_says_which_part_overflows() {
        let prompt = Error::TooLong {
            prompt_positions: 70,
            max_positions: 64,
        };
        assert!(prompt.to_string().contains("the prompt needs 70 positions"));
        let generation = Error::TooLong {
            prompt_positions: 33,
            max_positions: 64,
        };
        assert!(
            // The last new token is never fed back, so it needs no position.
            generation.to_string().contains("room for 32 new tokens"),
            "{generation}"
        );
    }
}
