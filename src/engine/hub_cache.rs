//! The huggingface_hub cache layout, so Python and this plugin share one copy of a model:
//!
//! ```text
//! <cache>/models--<org>--<name>/blobs/<etag>            file contents, named by ETag
//! <cache>/models--<org>--<name>/blobs/<etag>.incomplete  a download in progress (resumable)
//! <cache>/models--<org>--<name>/snapshots/<commit>/<file> relative symlinks to the blobs
//! <cache>/models--<org>--<name>/refs/<revision>          the commit a branch or tag names
//! <cache>/.locks/models--<org>--<name>/<etag>.lock       the per-blob lock Python also takes
//! ```
//!
//! A blob is renamed into place only once it is complete, and a ref is written only once its
//! snapshot is complete, so nothing half-downloaded ever looks finished.

use std::fs::File;
use std::path::{Path, PathBuf};

/// The files of a snapshot that loading cannot do without; weights are checked separately.
pub const REQUIRED_FILES: [&str; 2] = ["config.json", "tokenizer.json"];
/// Downloaded when the repository has them; the loader reads them when present.
pub const OPTIONAL_FILES: [&str; 6] = [
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
];
pub const SINGLE_WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// One model repository inside a hub cache folder.
#[derive(Clone, Debug)]
pub struct RepoCache {
    /// `<cache>/models--org--name`
    pub root: PathBuf,
    /// `<cache>/.locks/models--org--name`
    locks: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo_id: &str) -> Self {
        let folder = format!("models--{}", repo_id.replace('/', "--"));
        Self {
            root: cache_dir.join(&folder),
            locks: cache_dir.join(".locks").join(folder),
        }
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        self.root.join("refs").join(revision)
    }

    /// The commit `revision` names in the cache: the revision itself when it is a commit hash,
    /// else `refs/<revision>`.
    pub fn commit_for(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let commit = std::fs::read_to_string(self.ref_path(revision)).ok()?;
        let commit = commit.trim();
        (!commit.is_empty()).then(|| commit.to_string())
    }

    /// A complete snapshot for `revision`, if the cache has one. Without a ref for the default
    /// branch, the most recently written complete snapshot is taken (caches made by hand or by
    /// tools that do not write refs).
    pub fn complete_snapshot(&self, revision: &str, default_branch: bool) -> Option<PathBuf> {
        if let Some(commit) = self.commit_for(revision) {
            let dir = self.snapshot(&commit);
            return missing_files(&dir).is_empty().then_some(dir);
        }
        if !default_branch {
            return None;
        }
        std::fs::read_dir(self.root.join("snapshots"))
            .ok()?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .filter(|dir| dir.is_dir() && missing_files(dir).is_empty())
            .max_by_key(|dir| dir.metadata().and_then(|m| m.modified()).ok())
    }

    /// Records that `revision` is `commit`, atomically (write then rename) as Python does.
    pub fn write_ref(&self, revision: &str, commit: &str) -> std::io::Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(revision);
        std::fs::create_dir_all(path.parent().expect("a ref has a parent"))?;
        let tmp = path.with_file_name(format!(
            "{}.{}.tmp",
            path.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        std::fs::write(&tmp, commit)?;
        std::fs::rename(&tmp, &path)
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative link.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> std::io::Result<()> {
        if !is_inside_path(file) || !is_inside_path(commit) || commit.contains('/') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{file}` at commit `{commit}` is not a path inside the snapshot"),
            ));
        }
        let pointer = self.snapshot(commit).join(file);
        std::fs::create_dir_all(pointer.parent().expect("a snapshot file has a parent"))?;
        // snapshots/<commit>/a/b.json → ../../../blobs/<etag>: one `..` per folder below the repo.
        let depth = 2 + file.matches('/').count();
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        match std::fs::symlink_metadata(&pointer) {
            Ok(_) if pointer.exists() => return Ok(()),
            Ok(_) => std::fs::remove_file(&pointer)?, // a dangling link from an older blob
            Err(_) => {}
        }
        make_link(&target, &self.blob(etag), &pointer)
    }

    /// An exclusive lock on the whole repository while it is listed and downloaded, so two
    /// elements or processes asking for the same model download it once: the second waits and
    /// then finds the snapshot complete. Blocks; the lock goes when the returned file closes.
    pub fn lock_repo(&self) -> std::io::Result<Lock> {
        self.lock_file("gst-blip2-snapshot.lock")
    }

    /// The per-blob lock at the path huggingface_hub uses, so a Python download of the same
    /// file at the same time waits for ours (and ours for it).
    pub fn lock_blob(&self, etag: &str) -> std::io::Result<Lock> {
        self.lock_file(&format!("{etag}.lock"))
    }

    fn lock_file(&self, name: &str) -> std::io::Result<Lock> {
        std::fs::create_dir_all(&self.locks)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.locks.join(name))?;
        Ok(Lock(file))
    }
}

/// A lock file, not yet locked (`acquire`) or held (dropping it releases the lock).
pub struct Lock(File);

impl Lock {
    /// Takes the lock without waiting; `false` when someone else holds it.
    pub fn try_acquire(&self) -> std::io::Result<bool> {
        match self.0.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn acquire(&self) -> std::io::Result<()> {
        self.0.lock()
    }
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, pointer)
}

/// Without symlinks, Python copies the blob into the snapshot; so do we.
#[cfg(not(unix))]
fn make_link(_target: &Path, blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, pointer).map(|_| ())
}

/// Whether `path`, a file or revision name as the hub gives it (`a/b.json`, `refs/pr/1`),
/// stays below the folder it is joined to: relative, `/`-separated, without empty, `.` or `..`
/// parts. The hub's answers (the index's shard names, the commit) become paths in the cache;
/// one that climbs out would be written outside it (huggingface_hub refuses such paths too).
pub fn is_inside_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The files a snapshot folder lacks for loading: required files, and the weights (a single
/// `model.safetensors`, or an index and every shard it names). Links count only when their
/// blob is there.
pub fn missing_files(dir: &Path) -> Vec<String> {
    let mut missing: Vec<String> = REQUIRED_FILES
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if dir.join(SINGLE_WEIGHTS).is_file() {
        return missing;
    }
    match std::fs::read_to_string(dir.join(WEIGHTS_INDEX)) {
        // An unreadable index is the loader's to report, with its own message.
        Ok(text) => {
            if let Some(shards) = shards_of_index(&text) {
                missing.extend(shards.into_iter().filter(|s| !dir.join(s).is_file()));
            }
        }
        Err(_) => missing.push(SINGLE_WEIGHTS.to_string()),
    }
    missing
}

/// The shard files a `model.safetensors.index.json` names, sorted and deduplicated.
pub fn shards_of_index(text: &str) -> Option<Vec<String>> {
    let index: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut shards: Vec<String> = index
        .get("weight_map")?
        .as_object()?
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    shards.sort();
    shards.dedup();
    Some(shards)
}
