//! Model id → snapshot folder, the way `huggingface_hub` lays out its local cache:
//! `<hub>/models--<org>--<name>/snapshots/<rev>`, `<rev>` named by `refs/main`.

use std::path::{Path, PathBuf};

use crate::model::{Error, Result};

/// The hub cache folders to search, in `huggingface_hub`'s order of precedence:
/// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_hub_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(home).join("hub")];
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => vec![PathBuf::from(home).join(".cache/huggingface/hub")],
        None => Vec::new(),
    }
}

/// Resolves `model` (a folder, or an id such as `Salesforce/blip2-opt-2.7b`) against the
/// default hub cache folders.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    resolve_model_in(model, &default_hub_dirs())
}

/// Resolves `model` against explicit hub cache folders (testable without touching the
/// environment). The error lists every place that was tried.
pub fn resolve_model_in(model: &str, hub_dirs: &[PathBuf]) -> Result<PathBuf> {
    if model.is_empty() {
        return Err(Error::Input(
            "no model given (property `model` is empty)".into(),
        ));
    }
    let as_path = Path::new(model);
    if super::cache::is_injected(as_path) || as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }

    let mut tried = vec![format!("folder {}", as_path.display())];
    // Hub ids have exactly one '/', no leading '/' or '.', e.g. "Salesforce/blip2-opt-2.7b".
    let looks_like_id = !model.starts_with(['/', '.', '~'])
        && model.split('/').count() == 2
        && model.split('/').all(|part| !part.is_empty());
    if looks_like_id {
        let repo_folder = format!("models--{}", model.replace('/', "--"));
        for hub in hub_dirs {
            let repo = hub.join(&repo_folder);
            match snapshot_in(&repo) {
                Some(dir) => return Ok(dir),
                None => tried.push(format!("{}/snapshots/<refs/main>", repo.display())),
            }
        }
    }
    Err(Error::Input(format!(
        "model `{model}` not found; tried {}. Download it with `huggingface-cli download {model}` \
         or give the path of a snapshot folder",
        tried.join(", ")
    )))
}

/// `refs/main` names the snapshot; without it (or when it points nowhere) take the only or the
/// most recently modified snapshot.
fn snapshot_in(repo: &Path) -> Option<PathBuf> {
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if !rev.trim().is_empty() && dir.is_dir() {
            return Some(dir);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .max_by_key(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .map(|entry| entry.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("blip2-resolve-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn folder_is_taken_as_is() {
        let dir = scratch("folder");
        let got = resolve_model_in(dir.to_str().unwrap(), &[]).unwrap();
        assert_eq!(got, dir);
    }

    #[test]
    fn id_follows_refs_main() {
        let hub = scratch("refs");
        let repo = hub.join("models--Salesforce--blip2-opt-2.7b");
        std::fs::create_dir_all(repo.join("snapshots/aaa")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/bbb")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "aaa\n").unwrap();
        let got =
            resolve_model_in("Salesforce/blip2-opt-2.7b", std::slice::from_ref(&hub)).unwrap();
        assert_eq!(got, repo.join("snapshots/aaa"));
    }

    #[test]
    fn id_without_refs_takes_only_snapshot() {
        let hub = scratch("norefs");
        let repo = hub.join("models--org--m");
        std::fs::create_dir_all(repo.join("snapshots/ccc")).unwrap();
        let got = resolve_model_in("org/m", &[PathBuf::from("/nonexistent"), hub]).unwrap();
        assert_eq!(got, repo.join("snapshots/ccc"));
    }

    #[test]
    fn missing_model_names_what_was_tried() {
        let hub = scratch("missing");
        let err = resolve_model_in("org/absent", std::slice::from_ref(&hub))
            .unwrap_err()
            .to_string();
        assert!(err.contains("org/absent"), "{err}");
        assert!(err.contains("models--org--absent"), "{err}");
        assert!(err.contains(hub.to_str().unwrap()), "{err}");
    }
}
