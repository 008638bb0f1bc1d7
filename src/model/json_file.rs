//! Reading the JSON files of a snapshot (`config.json`, `generation_config.json`, processor and
//! tokenizer settings, the weight index): one place for the error messages, which name the file
//! and, for a value of the wrong type, the key.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::{Error, Result};

/// Parses `path` into `T`; a missing file is an I/O error naming it.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_json_text(&text, path)
}

/// [`read_json`], with a missing file as `None`.
pub(crate) fn read_json_if_present<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    from_json_text(&text, path).map(Some)
}

/// Parses JSON text into `T`; `path` names it in errors.
pub(crate) fn from_json_text<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })?;
    from_json_value(value, path, "")
}

/// Converts a parsed JSON value into `T`. A value of the wrong type is an error naming the file
/// and the key (`prefix` first, e.g. `"text_config."`).
pub(crate) fn from_json_value<T: DeserializeOwned>(
    value: serde_json::Value,
    path: &Path,
    prefix: &str,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let message = match key.as_str() {
            "." => format!("{prefix}: {}", e.inner()),
            _ => format!("{prefix}{key}: {}", e.inner()),
        };
        Error::Config {
            path: path.to_path_buf(),
            message: message.trim_start_matches(": ").to_string(),
        }
    })
}
