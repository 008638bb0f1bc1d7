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
    /// Bad arguments from the caller (image size, generation parameters, device).
    Input(String),
    /// A failure inside the forward pass.
    Candle(candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Config { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Weights { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Tokenizer { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Input(message) => write!(f, "{message}"),
            Error::Candle(e) => write!(f, "inference failed: {e}"),
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
