//! Helpers for the crate's own unit tests.

use std::path::PathBuf;

/// A fresh, empty folder for files a test writes (unique per process and name).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gstblip2-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
