//! Models by Hugging Face id: `org/name` (optionally `@revision`) is looked up in the shared
//! huggingface_hub cache and, when missing there, downloaded into it — only the files a BLIP-2
//! snapshot needs (configs, tokenizer, safetensors), never `.bin`/`.pt` duplicates.
//!
//! Settings come from the same environment variables as Python's huggingface_hub (see
//! [`HubSettings::from_env`]), so both share one copy of each model and one login.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::error::redact_url;
use super::hub_cache::{self, RepoCache};
use super::hub_error::{ResolveError, ResolveErrorKind as Kind, human};
use super::hub_http::{FileMeta, HubClient};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where models come from and go to.
#[derive(Clone)]
pub struct HubSettings {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`; `None` only without any of these (no home folder).
    pub cache_dir: Option<PathBuf>,
    /// `HF_TOKEN`, else the file `huggingface-cli login` writes (`HF_TOKEN_PATH`, default
    /// `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1` (or `TRANSFORMERS_OFFLINE=1`): never touch the network.
    pub offline: bool,
    /// `HF_HUB_DOWNLOAD_TIMEOUT` seconds (default 10, at most a day): the longest wait for a
    /// connection or for the next bytes of an answer.
    pub timeout: Duration,
}

/// Without the token, and without the credentials of a `user:password@` endpoint: settings
/// may be logged, secrets may not.
impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &redact_url(&self.endpoint))
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HubSettings {
    /// Reads the huggingface_hub environment variables, with Python's precedence.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let expand = |v: String| match (v.strip_prefix("~/"), var("HOME")) {
            (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => PathBuf::from(v),
        };
        let hf_home = var("HF_HOME").map(expand).or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("huggingface"))
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(expand)
                    .or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let truthy = |name: &str| {
            var(name)
                .is_some_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.to_uppercase().as_str()))
        };
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            cache_dir,
            token,
            offline: truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE"),
            timeout: download_timeout(var("HF_HUB_DOWNLOAD_TIMEOUT").as_deref()),
        }
    }
}

/// The longest `HF_HUB_DOWNLOAD_TIMEOUT` taken as it is: larger values (`inf`, `1e20`) mean
/// "wait as long as it takes" and become this, because `Duration::from_secs_f64` panics on
/// them and ureq panics adding a deadline past the end of `Instant`.
const MAX_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Seconds as huggingface_hub reads them (a float, default 10); not a positive number: the
/// default.
fn download_timeout(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(10), |s| {
            Duration::try_from_secs_f64(s).map_or(MAX_DOWNLOAD_TIMEOUT, |t| {
                t.clamp(Duration::from_millis(1), MAX_DOWNLOAD_TIMEOUT)
            })
        })
}

/// A model named by hub id: `org/name` or `org/name@revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubId {
    pub repo: String,
    /// Branch, tag or commit; `main` when not given.
    pub revision: String,
}

impl HubId {
    /// `Some` for strings shaped like a hub id: exactly one `/` between two non-empty names of
    /// letters, digits, `-`, `_`, `.` (not starting with `.`), and an optional `@revision`
    /// (a branch, tag or commit; it names the file `refs/<revision>`, so no `..` parts).
    pub fn parse(model: &str) -> Option<Self> {
        let (repo, revision) = match model.split_once('@') {
            Some((repo, rev)) if hub_cache::is_inside_path(rev) => (repo, rev),
            Some(_) => return None,
            None => (model, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let valid = |part: &str| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        (valid(org) && valid(name)).then(|| HubId {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

/// Progress while resolving and loading a model.
#[derive(Clone, Debug)]
pub enum LoadProgress {
    /// A stage, as text for people ("listing files of org/name", "loading tokenizer.json").
    Stage(String),
    /// Bytes downloaded so far.
    Download(DownloadProgress),
}

/// Download progress, per file and overall.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadProgress {
    /// The file being downloaded (path inside the repository).
    pub file: String,
    pub file_done: u64,
    pub file_total: u64,
    /// Over all files still to download in this run.
    pub done: u64,
    pub total: u64,
    /// 1-based number of this file among `file_count` files to download.
    pub file_number: usize,
    pub file_count: usize,
}

impl DownloadProgress {
    /// Overall percentage, 0..=100.
    pub fn percent(&self) -> u32 {
        self.done
            .saturating_mul(100)
            .checked_div(self.total)
            .map_or(100, |p| p.min(100) as u32)
    }
}

/// Lists the revision, picks the files, downloads what the cache lacks, links the snapshot and
/// finally writes `refs/<revision>`. Runs under the repository lock.
pub(crate) fn download_snapshot(
    model: &str,
    id: &HubId,
    repo: &RepoCache,
    settings: &HubSettings,
    progress: &mut dyn FnMut(&LoadProgress),
) -> Result<PathBuf, ResolveError> {
    let client = HubClient::new(
        &settings.endpoint,
        settings.token.clone(),
        settings.timeout,
        model,
        &id.repo,
    );
    progress(&LoadProgress::Stage(format!(
        "listing {model} on {}",
        client.shown_endpoint()
    )));
    let info = client.repo_info(&id.revision)?;
    let commit = info.sha.clone();
    let mut wanted = pick_files(model, &info.files)?;

    // The index names the shards: fetch it first (it is small), then add them.
    let mut metas: Vec<(String, FileMeta)> = Vec::new();
    // Bytes fetched before the total is known (the index), counted as done in the progress.
    let mut fetched_first = (0u64, 0usize);
    if wanted.iter().any(|f| f == hub_cache::WEIGHTS_INDEX) {
        let meta = client.file_meta(&commit, hub_cache::WEIGHTS_INDEX)?;
        if !repo.blob(&meta.etag).is_file() {
            fetched_first = (meta.size, 1);
        }
        fetch(
            model,
            &client,
            repo,
            &commit,
            hub_cache::WEIGHTS_INDEX,
            &meta,
            &mut |_| {},
        )?;
        let index_path = repo.snapshot(&commit).join(hub_cache::WEIGHTS_INDEX);
        let text = std::fs::read_to_string(&index_path)
            .map_err(|e| ResolveError::io(model, "read", &index_path, &e))?;
        let shards = hub_cache::shards_of_index(&text).ok_or_else(|| {
            ResolveError::new(
                Kind::MissingFile,
                model,
                format!(
                    "model `{model}`: {} has no weight_map",
                    hub_cache::WEIGHTS_INDEX
                ),
            )
        })?;
        if let Some(outside) = shards.iter().find(|s| !hub_cache::is_inside_path(s)) {
            return Err(ResolveError::new(
                Kind::Protocol,
                model,
                format!(
                    "model `{model}`: {} names the shard `{outside}`, a path outside the \
                     snapshot folder; refusing to write it",
                    hub_cache::WEIGHTS_INDEX
                ),
            ));
        }
        if let Some(absent) = shards.iter().find(|s| !info.files.contains(s)) {
            return Err(ResolveError::new(
                Kind::MissingFile,
                model,
                format!(
                    "model `{model}` has no file `{absent}`, which {} names",
                    hub_cache::WEIGHTS_INDEX
                ),
            ));
        }
        wanted.retain(|f| f != hub_cache::WEIGHTS_INDEX);
        wanted.extend(shards);
    }
    progress(&LoadProgress::Stage(format!(
        "checking {} files of {model}",
        wanted.len()
    )));
    for file in wanted {
        let meta = client.file_meta(&commit, &file)?;
        metas.push((file, meta));
    }

    // Only what the cache lacks counts towards the download (blobs are shared by revisions).
    let todo: Vec<&(String, FileMeta)> = metas
        .iter()
        .filter(|(_, meta)| !repo.blob(&meta.etag).is_file())
        .collect();
    let total: u64 = fetched_first.0 + todo.iter().map(|(_, m)| m.size).sum::<u64>();
    check_free_space(model, repo, total - fetched_first.0)?;
    let mut overall = DownloadProgress {
        total,
        done: fetched_first.0,
        file_number: fetched_first.1,
        file_count: fetched_first.1 + todo.len(),
        ..Default::default()
    };
    if !todo.is_empty() {
        progress(&LoadProgress::Stage(format!(
            "downloading {model} ({} in {} files)",
            human(total),
            overall.file_count
        )));
    }
    for (file, meta) in &metas {
        let downloading = todo.iter().any(|(f, _)| f == file);
        if !downloading {
            link(model, repo, &commit, file, meta)?;
            continue;
        }
        overall.file_number += 1;
        overall.file = file.clone();
        overall.file_total = meta.size;
        let base = overall.done;
        // The first and last report of each file always go out; between them, one per 100 ms.
        let mut last: Option<(Instant, u64)> = None;
        let mut report = |done: u64| {
            overall.file_done = done;
            overall.done = base + done;
            let due = match last {
                None => true,
                Some((_, posted)) if posted == done => false,
                Some((at, _)) => done == meta.size || at.elapsed() >= Duration::from_millis(100),
            };
            if due {
                last = Some((Instant::now(), done));
                progress(&LoadProgress::Download(overall.clone()));
            }
        };
        fetch(model, &client, repo, &commit, file, meta, &mut report)?;
        overall.done = base + meta.size;
        overall.file_done = 0;
    }
    repo.write_ref(&id.revision, &commit)
        .map_err(|e| ResolveError::io(model, "write the ref in", &repo.root, &e))?;
    let dir = repo.snapshot(&commit);
    let missing = hub_cache::missing_files(&dir);
    if !missing.is_empty() {
        return Err(ResolveError::new(
            Kind::Cache,
            model,
            format!(
                "model `{model}`: {} still lacks {} after downloading",
                dir.display(),
                missing.join(", ")
            ),
        ));
    }
    Ok(dir)
}

/// The files of `files` (a repository listing) that a BLIP-2 snapshot needs.
fn pick_files(model: &str, files: &[String]) -> Result<Vec<String>, ResolveError> {
    let has = |name: &str| files.iter().any(|f| f == name);
    for required in hub_cache::REQUIRED_FILES {
        if !has(required) {
            return Err(ResolveError::new(
                Kind::MissingFile,
                model,
                format!("model `{model}` has no `{required}`; is it a BLIP-2 model?"),
            ));
        }
    }
    let mut wanted: Vec<String> = hub_cache::REQUIRED_FILES
        .iter()
        .chain(hub_cache::OPTIONAL_FILES.iter())
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    if has(hub_cache::WEIGHTS_INDEX) {
        wanted.push(hub_cache::WEIGHTS_INDEX.to_string());
    } else if has(hub_cache::SINGLE_WEIGHTS) {
        wanted.push(hub_cache::SINGLE_WEIGHTS.to_string());
    } else {
        let only_pytorch = files
            .iter()
            .any(|f| f.ends_with(".bin") || f.ends_with(".pt"));
        return Err(ResolveError::new(
            Kind::MissingFile,
            model,
            format!(
                "model `{model}` has no safetensors weights ({} or {}){}",
                hub_cache::SINGLE_WEIGHTS,
                hub_cache::WEIGHTS_INDEX,
                if only_pytorch {
                    "; it has only PyTorch .bin/.pt weights, which this plugin does not read \
                     (save it with `save_pretrained(..., safe_serialization=True)`)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(wanted)
}

/// Puts one file into the cache: download into `blobs/<etag>.incomplete` (resuming what an
/// earlier run left), rename to `blobs/<etag>` once complete, link it into the snapshot.
fn fetch(
    model: &str,
    client: &HubClient,
    repo: &RepoCache,
    commit: &str,
    file: &str,
    meta: &FileMeta,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ResolveError> {
    let blob = repo.blob(&meta.etag);
    if !blob.is_file() {
        let blobs = blob.parent().expect("a blob has a folder");
        std::fs::create_dir_all(blobs).map_err(|e| ResolveError::io(model, "create", blobs, &e))?;
        let lock = repo
            .lock_blob(&meta.etag)
            .map_err(|e| ResolveError::io(model, "create the lock for", &blob, &e))?;
        lock.acquire()
            .map_err(|e| ResolveError::io(model, "lock", &blob, &e))?;
        if !blob.is_file() {
            let partial = repo.incomplete(&meta.etag);
            client.download(commit, file, meta, &partial, progress)?;
            std::fs::rename(&partial, &blob)
                .map_err(|e| ResolveError::io(model, "finish", &blob, &e))?;
        }
    }
    progress(meta.size);
    link(model, repo, commit, file, meta)
}

fn link(
    model: &str,
    repo: &RepoCache,
    commit: &str,
    file: &str,
    meta: &FileMeta,
) -> Result<(), ResolveError> {
    repo.link(commit, file, &meta.etag)
        .map_err(|e| ResolveError::io(model, "link", &repo.snapshot(commit).join(file), &e))
}

/// Refuses a download the disk cannot hold before starting it, rather than at 90 %.
fn check_free_space(model: &str, repo: &RepoCache, need: u64) -> Result<(), ResolveError> {
    if need == 0 {
        return Ok(());
    }
    let folder = repo.root.join("blobs");
    std::fs::create_dir_all(&folder).map_err(|e| ResolveError::io(model, "create", &folder, &e))?;
    // Bytes already in `.incomplete` files count as written.
    let partial: u64 = std::fs::read_dir(&folder)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .sum()
        })
        .unwrap_or(0);
    let Ok(stat) = rustix::fs::statvfs(&folder) else {
        return Ok(()); // no statistics: find out while writing
    };
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let need = need.saturating_sub(partial);
    if free < need {
        return Err(ResolveError::disk_full(model, &folder, Some((need, free))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_download_timeout_value_is_usable() {
        let secs = |v| download_timeout(Some(v)).as_secs_f64();
        assert_eq!(download_timeout(None), Duration::from_secs(10));
        assert_eq!(secs("2.5"), 2.5);
        assert_eq!(secs(" 30 "), 30.0);
        for default in ["", "soon", "0", "-5", "NaN"] {
            assert_eq!(secs(default), 10.0, "{default:?}");
        }
        // Used to panic (from_secs_f64) or to make ureq panic (deadline past Instant's end).
        for huge in ["inf", "1e20", "1e19", "86401"] {
            assert_eq!(secs(huge), 86400.0, "{huge:?}");
        }
        assert_eq!(secs("1e-12"), 0.001);
    }

    #[test]
    fn settings_debug_hides_the_token() {
        let settings = HubSettings {
            endpoint: "https://mirror-user:m1rr0r-pa55@hub.example".into(),
            cache_dir: Some("/cache".into()),
            token: Some("hf_t0ken5ecr3t".into()),
            offline: false,
            timeout: Duration::from_secs(10),
        };
        let shown = format!("{settings:?}");
        assert!(shown.contains("token: Some(\"<redacted>\")"), "{shown}");
        assert!(shown.contains("https://***@hub.example"), "{shown}");
        assert!(
            !shown.contains("5ecr3t") && !shown.contains("m1rr0r"),
            "{shown}"
        );
    }
}
