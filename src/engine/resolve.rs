//! `model` → snapshot folder. A folder is taken as it is (and a missing one is a missing
//! folder, never a download); a Hugging Face id (`org/name[@revision]`) is looked up in the
//! huggingface_hub cache and downloaded into it when missing, unless offline.

use std::path::{Path, PathBuf};

use super::hub::{HubId, HubSettings, LoadProgress, download_snapshot};
use super::hub_cache::{self, RepoCache};
use super::hub_error::{ResolveError, ResolveErrorKind as Kind};

/// Resolves `model` to a snapshot folder: a folder is taken as it is; a hub id is looked up in
/// the cache and downloaded when missing (unless offline). `progress` hears each stage and the
/// download bytes (at most every 100 ms per file, plus each file's start and end).
pub fn resolve_model(
    model: &str,
    settings: &HubSettings,
    progress: &mut dyn FnMut(&LoadProgress),
) -> Result<PathBuf, ResolveError> {
    if model.is_empty() {
        return Err(ResolveError::new(
            Kind::Empty,
            model,
            "no model given (property `model` is empty)",
        ));
    }
    let path = Path::new(model);
    if path.is_dir() || super::cache::is_injected(path) {
        return Ok(path.to_path_buf());
    }
    let Some(id) = HubId::parse(model) else {
        return Err(ResolveError::missing_folder(model, path));
    };
    let Some(cache_dir) = &settings.cache_dir else {
        return Err(ResolveError::new(
            Kind::Cache,
            model,
            format!("model `{model}`: no hub cache folder (set HF_HUB_CACHE or HF_HOME)"),
        ));
    };
    let repo = RepoCache::new(cache_dir, &id.repo);
    let default_branch = id.revision == "main";
    if let Some(dir) = repo.complete_snapshot(&id.revision, default_branch) {
        return Ok(dir);
    }
    if settings.offline {
        return Err(not_cached(model, &id, &repo));
    }
    let lock = repo
        .lock_repo()
        .map_err(|e| ResolveError::io(model, "create the lock in", cache_dir, &e))?;
    if !lock
        .try_acquire()
        .map_err(|e| ResolveError::io(model, "lock", &repo.root, &e))?
    {
        progress(&LoadProgress::Stage(format!(
            "waiting for another download of {model} to finish"
        )));
        lock.acquire()
            .map_err(|e| ResolveError::io(model, "lock", &repo.root, &e))?;
    }
    // Whoever held the lock may have just completed it.
    if let Some(dir) = repo.complete_snapshot(&id.revision, default_branch) {
        return Ok(dir);
    }
    download_snapshot(model, &id, &repo, settings, progress)
}

fn not_cached(model: &str, id: &HubId, repo: &RepoCache) -> ResolveError {
    let partial = repo
        .commit_for(&id.revision)
        .map(|commit| repo.snapshot(&commit))
        .filter(|dir| dir.is_dir());
    let message = match partial {
        Some(dir) => format!(
            "model `{model}` is only partly downloaded in {} (missing {}) and HF_HUB_OFFLINE \
             forbids downloading the rest; run once with network access",
            dir.display(),
            hub_cache::missing_files(&dir).join(", ")
        ),
        None => format!(
            "model `{model}` is not in the hub cache (looked in {}) and HF_HUB_OFFLINE forbids \
             downloading it; unset HF_HUB_OFFLINE, or give the path of a snapshot folder",
            repo.root.display()
        ),
    };
    ResolveError::new(Kind::NotCached, model, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch;
    use std::time::Duration;

    /// Offline settings on `cache`: these tests never reach a network.
    fn offline(cache: &Path) -> HubSettings {
        HubSettings {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: Some(cache.to_path_buf()),
            token: None,
            offline: true,
            timeout: Duration::from_secs(1),
        }
    }

    fn resolve(model: &str, cache: &Path) -> Result<PathBuf, ResolveError> {
        resolve_model(model, &offline(cache), &mut |_| {})
    }

    /// A snapshot folder holding the files loading needs (contents do not matter here).
    fn complete(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
    }

    #[test]
    fn folder_is_taken_as_is() {
        let dir = scratch("folder");
        assert_eq!(resolve(dir.to_str().unwrap(), &dir).unwrap(), dir);
    }

    #[test]
    fn missing_folder_is_not_a_download() {
        let cache = scratch("missing-folder");
        for model in ["/no/such/blip2", "./blip2-opt", "blip2-opt"] {
            let err = resolve(model, &cache).unwrap_err();
            assert_eq!(err.kind, Kind::MissingFolder, "{model}");
            assert!(err.message.contains("does not exist"), "{err}");
            assert!(!err.message.contains("download"), "{err}");
        }
    }

    #[test]
    fn id_follows_refs_main_to_a_complete_snapshot() {
        let hub = scratch("refs");
        let repo = hub.join("models--Salesforce--blip2-opt-2.7b");
        complete(&repo.join("snapshots/aaa"));
        complete(&repo.join("snapshots/bbb"));
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "aaa\n").unwrap();
        let got = resolve("Salesforce/blip2-opt-2.7b", &hub).unwrap();
        assert_eq!(got, repo.join("snapshots/aaa"));
    }

    #[test]
    fn revision_names_a_ref_or_a_commit() {
        let hub = scratch("revision");
        let repo = hub.join("models--org--m");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        complete(&repo.join("snapshots").join(commit));
        complete(&repo.join("snapshots/tagged"));
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/v1"), "tagged").unwrap();
        assert_eq!(
            resolve("org/m@v1", &hub).unwrap(),
            repo.join("snapshots/tagged")
        );
        let by_commit = format!("org/m@{commit}");
        assert_eq!(
            resolve(&by_commit, &hub).unwrap(),
            repo.join("snapshots").join(commit)
        );
        let err = resolve("org/m@v2", &hub).unwrap_err();
        assert_eq!(err.kind, Kind::NotCached);
    }

    #[test]
    fn id_without_refs_takes_a_complete_snapshot() {
        let hub = scratch("norefs");
        let repo = hub.join("models--org--m");
        complete(&repo.join("snapshots/ccc"));
        std::fs::create_dir_all(repo.join("snapshots/partial")).unwrap();
        assert_eq!(resolve("org/m", &hub).unwrap(), repo.join("snapshots/ccc"));
    }

    #[test]
    fn offline_and_absent_names_the_model_and_the_cache() {
        let hub = scratch("absent");
        let err = resolve("org/absent", &hub).unwrap_err();
        assert_eq!(err.kind, Kind::NotCached);
        assert!(err.message.contains("org/absent"), "{err}");
        assert!(err.message.contains("models--org--absent"), "{err}");
        assert!(err.message.contains("HF_HUB_OFFLINE"), "{err}");
    }

    #[test]
    fn offline_and_partial_names_what_is_missing() {
        let hub = scratch("partial");
        let repo = hub.join("models--org--half");
        let snap = repo.join("snapshots/abc");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::write(snap.join("tokenizer.json"), "{}").unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc").unwrap();
        let err = resolve("org/half", &hub).unwrap_err();
        assert_eq!(err.kind, Kind::NotCached);
        assert!(err.message.contains("partly downloaded"), "{err}");
        assert!(err.message.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn hub_ids_are_told_from_paths() {
        let id = HubId::parse("Salesforce/blip2-opt-2.7b").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("Salesforce/blip2-opt-2.7b", "main")
        );
        let id = HubId::parse("org/m@refs/pr/1").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("org/m", "refs/pr/1")
        );
        for path in [
            "/abs/path",
            "a/b/c",
            "./x/y",
            "../x",
            "x",
            "org/.hidden",
            "org/m@",
            "org/m@../../escape",
            "org/m@refs/../../escape",
            "org/m@/abs",
            "a b/c",
        ] {
            assert!(HubId::parse(path).is_none(), "{path}");
        }
    }
}
