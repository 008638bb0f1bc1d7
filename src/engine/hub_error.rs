//! What can go wrong between a `model` string and a snapshot folder on disk, typed so the
//! element can pick a GError code and every message names the model.

use std::fmt;

/// Why a model could not be resolved to a snapshot folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveErrorKind {
    /// `model` is empty.
    Empty,
    /// `model` is a folder path (not a hub id) that does not exist.
    MissingFolder,
    /// The hub has no such repository, revision, or file (404, `X-Error-Code`).
    NotFound,
    /// The repository is gated or private and the token (or its absence) does not open it.
    Unauthorized,
    /// The repository exists but lacks a file a BLIP-2 snapshot needs.
    MissingFile,
    /// `HF_HUB_OFFLINE` is set and the model is not (completely) in the cache.
    NotCached,
    /// The hub could not be reached, or the connection failed during a download.
    Network,
    /// The disk holding the cache has no room for the download.
    DiskFull,
    /// The cache folder could not be written or read (permissions, broken links).
    Cache,
    /// The hub answered something unexpected (5xx, missing headers).
    Protocol,
}

/// A resolve failure; its text always names the model (and the file where one is concerned).
#[derive(Debug, Clone)]
pub struct ResolveError {
    pub kind: ResolveErrorKind,
    /// The `model` value as the user gave it.
    pub model: String,
    pub message: String,
}

impl ResolveError {
    pub fn new(kind: ResolveErrorKind, model: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            model: model.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn missing_folder(model: &str, path: &std::path::Path) -> Self {
        let hint = if model.contains('/') {
            ""
        } else {
            " (a Hugging Face id has the form org/name)"
        };
        Self::new(
            ResolveErrorKind::MissingFolder,
            model,
            format!("model folder {} does not exist{hint}", path.display()),
        )
    }

    /// An I/O failure while writing the cache: disk full is its own kind.
    pub(crate) fn io(model: &str, what: &str, path: &std::path::Path, e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            return Self::disk_full(model, path, None);
        }
        Self::new(
            ResolveErrorKind::Cache,
            model,
            format!("model `{model}`: cannot {what} {}: {e}", path.display()),
        )
    }

    pub(crate) fn disk_full(model: &str, path: &std::path::Path, need: Option<(u64, u64)>) -> Self {
        let numbers = match need {
            Some((need, free)) => format!(" (needs {}, {} free)", human(need), human(free)),
            None => String::new(),
        };
        Self::new(
            ResolveErrorKind::DiskFull,
            model,
            format!(
                "model `{model}`: no space left on the disk holding {}{numbers}; free some \
                 space or point HF_HUB_CACHE at a larger disk",
                path.display()
            ),
        )
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ResolveError {}

/// Either resolving the model or loading the resolved snapshot failed.
#[derive(Debug)]
pub enum LoadError {
    Resolve(ResolveError),
    Model(crate::model::Error),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Resolve(e) => e.fmt(f),
            LoadError::Model(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Resolve(e) => Some(e),
            LoadError::Model(e) => Some(e),
        }
    }
}

impl From<ResolveError> for LoadError {
    fn from(e: ResolveError) -> Self {
        LoadError::Resolve(e)
    }
}

impl From<crate::model::Error> for LoadError {
    fn from(e: crate::model::Error) -> Self {
        LoadError::Model(e)
    }
}

/// Bytes for people: "1.5 GB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
