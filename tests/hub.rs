//! Models by Hugging Face id, against a loopback stand-in for the hub (tests/hub_server):
//! download into the huggingface_hub cache layout, offline use, resume, one download for two
//! callers, and an error that names the model for each failure.

mod common;
mod hub_server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{image_path, model_dir, reference, scratch};
use gstblip2::engine::{HubSettings, LoadProgress, ResolveError, ResolveErrorKind, resolve_model};
use gstblip2::model::{Blip2, DTypeChoice, DeviceChoice, RgbImage};
use hub_server::{Fault, HubServer, Repo, TOKEN};

fn settings(server: &HubServer, cache: &Path) -> HubSettings {
    HubSettings {
        endpoint: server.endpoint(),
        cache_dir: Some(cache.to_path_buf()),
        token: None,
        offline: false,
        timeout: Duration::from_secs(5),
    }
}

/// The fixture snapshots under made-up ids.
fn hub() -> HubServer {
    let mut repos = HashMap::new();
    repos.insert(
        "tiny/opt".to_string(),
        Repo::from_folder(&model_dir("opt-tiny"), "opt"),
    );
    let mut sharded = Repo::from_folder(&model_dir("opt-tiny-sharded-f16"), "sharded");
    sharded.tags = vec!["v1".into()];
    repos.insert("tiny/opt-sharded".to_string(), sharded);
    repos.insert(
        "tiny/t5".to_string(),
        Repo::from_folder(&model_dir("t5-tiny"), "t5"),
    );
    let mut gated = Repo::from_folder(&model_dir("opt-tiny"), "gated");
    gated.gated = true;
    repos.insert("tiny/gated".to_string(), gated);
    HubServer::start(repos)
}

fn resolve(model: &str, s: &HubSettings) -> Result<PathBuf, ResolveError> {
    resolve_model(model, s, &mut |_| {})
}

fn tokens(dir: &Path) -> Vec<Vec<u32>> {
    let model = Blip2::load(dir, DeviceChoice::Cpu, DTypeChoice::F32, &mut |_| {}).unwrap();
    let images = [RgbImage::open(&image_path("chelsea.png")).unwrap()];
    let params = gstblip2::model::GenerationParams::default();
    model
        .caption(&images, "", &params)
        .unwrap()
        .into_iter()
        .map(|c| c.token_ids)
        .collect()
}

fn expect_err(model: &str, s: &HubSettings, kind: ResolveErrorKind, words: &[&str]) -> String {
    let err = resolve(model, s).expect_err(model);
    assert_eq!(err.kind, kind, "{model}: {err}");
    let base = model.split('@').next().unwrap();
    assert!(err.message.contains(base), "{err} should name {base}");
    for w in words {
        assert!(err.message.contains(w), "{err:?} should say {w:?}");
    }
    err.message
}

#[test]
fn download_gives_the_fixture_tokens_in_the_hub_layout() {
    let server = hub();
    let cache = scratch("layout");
    for (id, fixture, seed) in [
        ("tiny/opt", "opt-tiny", "opt"),
        ("tiny/opt-sharded", "opt-tiny-sharded-f16", "sharded"),
    ] {
        let mut events = Vec::new();
        let dir = resolve_model(id, &settings(&server, &cache), &mut |p| {
            events.push(p.clone())
        })
        .unwrap();
        let repo = cache.join(format!("models--{}", id.replace('/', "--")));
        let commit = hub_server::hex40(seed);
        assert_eq!(dir, repo.join("snapshots").join(&commit));
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).unwrap(),
            commit
        );

        // Every fixture file, each a relative link to its blob; nothing else.
        let mut expected: Vec<String> = std::fs::read_dir(model_dir(fixture))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        expected.sort();
        let mut got: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        got.sort();
        assert_eq!(got, expected, "{id}: no .bin, no README");
        for name in &got {
            let link = std::fs::read_link(dir.join(name)).unwrap();
            assert!(
                link.starts_with("../../blobs"),
                "{name} -> {}",
                link.display()
            );
            assert_eq!(
                std::fs::read(dir.join(name)).unwrap(),
                std::fs::read(model_dir(fixture).join(name)).unwrap(),
                "{name}"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(repo.join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Progress: per-file and overall bytes, rising to 100 %.
        let downloads: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                LoadProgress::Download(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        let total: u64 = expected
            .iter()
            .map(|n| std::fs::metadata(model_dir(fixture).join(n)).unwrap().len())
            .sum();
        assert_eq!(downloads.last().unwrap().total, total);
        assert_eq!(downloads.last().unwrap().done, total);
        assert_eq!(downloads.last().unwrap().percent(), 100);
        assert!(downloads.windows(2).all(|w| w[0].done <= w[1].done));
        assert!(downloads.iter().all(|d| d.file_done <= d.file_total));
        assert_eq!(downloads.last().unwrap().file_count, expected.len());

        assert_eq!(tokens(&dir), tokens(&model_dir(fixture)), "{id}");
    }
    // The fixture's transformers reference, through the downloaded copy.
    let case = reference("opt-tiny")
        .cases
        .into_iter()
        .find(|c| c.name == "greedy_caption")
        .unwrap();
    let dir = resolve("tiny/opt", &settings(&server, &cache)).unwrap();
    let model = Blip2::load(&dir, DeviceChoice::Cpu, DTypeChoice::F32, &mut |_| {}).unwrap();
    let images: Vec<RgbImage> = case
        .images
        .iter()
        .map(|i| RgbImage::open(&image_path(i)).unwrap())
        .collect();
    let got = model.caption(&images, &case.prompt, &case.params).unwrap();
    let ids: Vec<Vec<u32>> = got.into_iter().map(|c| c.token_ids).collect();
    assert_eq!(ids, case.token_ids);
}

#[test]
fn python_huggingface_hub_finds_the_download() {
    let server = hub();
    let cache = scratch("python");
    let dir = resolve("tiny/t5", &settings(&server, &cache)).unwrap();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download
path = snapshot_download("tiny/t5")
config = hf_hub_download("tiny/t5", "config.json")
info = scan_cache_dir()
repo = [r for r in info.repos if r.repo_id == "tiny/t5"][0]
rev = list(repo.revisions)[0]
print(path)
print(config)
print(sorted(repo.refs), len(repo.revisions), rev.commit_hash, rev.nb_files, len(info.warnings))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HOME")
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/test.sh installs huggingface_hub)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python} with huggingface_hub (pip install huggingface_hub; scripts/test.sh does): {stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], dir.display().to_string());
    assert_eq!(lines[1], dir.join("config.json").display().to_string());
    let files = std::fs::read_dir(model_dir("t5-tiny")).unwrap().count();
    assert_eq!(
        lines[2],
        format!("['main'] 1 {} {files} 0", hub_server::hex40("t5"))
    );
}

#[test]
fn cached_models_load_offline_with_the_server_gone() {
    let mut server = hub();
    let cache = scratch("offline");
    let online = settings(&server, &cache);
    let first = resolve("tiny/opt-sharded@v1", &online).unwrap();
    let listings = server.log(|l| l.listings);
    // Cached: no request at all, even online.
    assert_eq!(resolve("tiny/opt-sharded@v1", &online).unwrap(), first);
    assert_eq!(server.log(|l| l.listings), listings);
    server.stop();
    let offline = HubSettings {
        offline: true,
        ..online.clone()
    };
    assert_eq!(resolve("tiny/opt-sharded@v1", &offline).unwrap(), first);
    assert_eq!(tokens(&first), tokens(&model_dir("opt-tiny-sharded-f16")));
    // Not cached: offline says so; online names the network and the alternatives.
    expect_err(
        "tiny/opt",
        &offline,
        ResolveErrorKind::NotCached,
        &["HF_HUB_OFFLINE", "models--tiny--opt"],
    );
    expect_err(
        "tiny/opt",
        &online,
        ResolveErrorKind::Network,
        &[
            "HF_HUB_OFFLINE=1",
            "local snapshot folder",
            &online.endpoint,
        ],
    );
}

#[test]
fn interrupted_download_resumes_on_the_next_run() {
    let server = hub();
    let cache = scratch("resume");
    let s = settings(&server, &cache);
    let weights = std::fs::read(model_dir("opt-tiny").join("model.safetensors")).unwrap();
    let half = weights.len() / 2;
    server.fault("model.safetensors", Fault::CutAfter(half));
    expect_err(
        "tiny/opt",
        &s,
        ResolveErrorKind::Network,
        &["model.safetensors"],
    );

    let repo = cache.join("models--tiny--opt");
    let blobs: Vec<PathBuf> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let partial: Vec<&PathBuf> = blobs
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert_eq!(partial.len(), 1, "{blobs:?}");
    assert_eq!(std::fs::metadata(partial[0]).unwrap().len(), half as u64);
    assert!(
        !repo.join("refs/main").exists(),
        "no ref before the snapshot is whole"
    );
    let offline = HubSettings {
        offline: true,
        ..s.clone()
    };
    expect_err("tiny/opt", &offline, ResolveErrorKind::NotCached, &[]);

    let dir = resolve("tiny/opt", &s).unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    let ranges = server.log(|l| l.ranges.clone());
    assert_eq!(
        ranges,
        vec![("model.safetensors".to_string(), format!("bytes={half}-"))]
    );
    assert!(!partial[0].exists());
    assert_eq!(tokens(&dir), tokens(&model_dir("opt-tiny")));
}

#[test]
fn two_callers_at_once_download_each_file_once() {
    let server = hub();
    let cache = scratch("together");
    server.fault("model.safetensors", Fault::Slow(Duration::from_millis(30)));
    let s = settings(&server, &cache);
    let waits = std::sync::atomic::AtomicUsize::new(0);
    let dirs: Vec<PathBuf> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    resolve_model("tiny/opt", &s, &mut |p| {
                        if matches!(p, LoadProgress::Stage(t) if t.starts_with("waiting")) {
                            waits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    })
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(dirs[0], dirs[1]);
    assert_eq!(waits.into_inner(), 1, "one caller waited for the other");
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert_eq!(server.gets(file), 1, "{file}");
    }
}

#[test]
fn hub_errors_name_the_model_and_what_to_do() {
    let server = hub();
    let cache = scratch("errors");
    let s = settings(&server, &cache);
    let with_token = HubSettings {
        token: Some(TOKEN.into()),
        ..s.clone()
    };
    expect_err(
        "tiny/nope",
        &s,
        ResolveErrorKind::NotFound,
        &["not found", "login"],
    );
    expect_err(
        "tiny/nope",
        &with_token,
        ResolveErrorKind::NotFound,
        &["not found"],
    );
    expect_err(
        "tiny/opt@v9",
        &s,
        ResolveErrorKind::NotFound,
        &["revision `v9`"],
    );
    expect_err(
        "tiny/gated",
        &s,
        ResolveErrorKind::Unauthorized,
        &["gated", "huggingface-cli login", "HF_TOKEN"],
    );
    let dir = resolve("tiny/gated", &with_token).unwrap();
    assert!(dir.join("model.safetensors").is_file());
    // The token goes to the hub, never to the storage host a redirect points at.
    let storage: Vec<_> = server.log(|l| {
        l.auth
            .iter()
            .filter(|(path, _)| path.starts_with("/cdn/"))
            .cloned()
            .collect()
    });
    assert!(!storage.is_empty());
    assert!(
        storage.iter().all(|(_, auth)| auth.is_none()),
        "{storage:?}"
    );
    server.fault("tokenizer.json", Fault::Gone);
    expect_err(
        "tiny/t5",
        &s,
        ResolveErrorKind::MissingFile,
        &["tokenizer.json"],
    );
    server.clear_faults();
}

#[test]
fn repositories_without_what_blip2_needs_are_refused() {
    let mut repos = HashMap::new();
    let mut no_tokenizer = Repo::from_folder(&model_dir("opt-tiny"), "a");
    no_tokenizer.files.remove("tokenizer.json");
    repos.insert("bad/no-tokenizer".to_string(), no_tokenizer);
    let mut only_bin = Repo::from_folder(&model_dir("opt-tiny"), "b");
    only_bin.files.remove("model.safetensors");
    repos.insert("bad/only-bin".to_string(), only_bin);
    let mut lost_shard = Repo::from_folder(&model_dir("opt-tiny-sharded-f16"), "c");
    lost_shard.files.remove("model-00004-of-00006.safetensors");
    repos.insert("bad/lost-shard".to_string(), lost_shard);
    let server = HubServer::start(repos);
    let s = settings(&server, &scratch("refused"));
    expect_err(
        "bad/no-tokenizer",
        &s,
        ResolveErrorKind::MissingFile,
        &["tokenizer.json"],
    );
    expect_err(
        "bad/only-bin",
        &s,
        ResolveErrorKind::MissingFile,
        &["safetensors", ".bin"],
    );
    expect_err(
        "bad/lost-shard",
        &s,
        ResolveErrorKind::MissingFile,
        &["model-00004-of-00006.safetensors"],
    );
    assert_eq!(server.gets("pytorch_model.bin"), 0);
}

#[test]
fn unreachable_hub_and_stalled_downloads_fail_in_time() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cache = scratch("unreachable");
    let s = HubSettings {
        endpoint,
        cache_dir: Some(cache.clone()),
        token: None,
        offline: false,
        timeout: Duration::from_secs(1),
    };
    expect_err(
        "tiny/opt",
        &s,
        ResolveErrorKind::Network,
        &["HF_HUB_OFFLINE=1", "local snapshot folder"],
    );

    let server = hub();
    server.fault("model.safetensors", Fault::Stall(1000));
    let s = HubSettings {
        timeout: Duration::from_secs(1),
        ..settings(&server, &cache)
    };
    let t = Instant::now();
    expect_err(
        "tiny/opt",
        &s,
        ResolveErrorKind::Network,
        &["model.safetensors"],
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn a_full_disk_is_reported_before_and_during_the_download() {
    let server = hub();
    let cache = scratch("full");
    let s = settings(&server, &cache);
    // Before: more than any disk holds.
    server.fault("model.safetensors", Fault::ClaimSize(1 << 60));
    expect_err(
        "tiny/opt",
        &s,
        ResolveErrorKind::DiskFull,
        &["no space left", "needs"],
    );
    server.clear_faults();
    // During: the partial file is /dev/full, where every write fails with ENOSPC.
    let weights = std::fs::read(model_dir("opt-tiny").join("model.safetensors")).unwrap();
    let blobs = cache.join("models--tiny--opt/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let etag = format!(
        "{:016x}{:08x}",
        weights.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        }),
        weights.len()
    );
    std::os::unix::fs::symlink("/dev/full", blobs.join(format!("{etag}.incomplete"))).unwrap();
    expect_err(
        "tiny/opt",
        &s,
        ResolveErrorKind::DiskFull,
        &["no space left", "HF_HUB_CACHE"],
    );
}

/// A hub (or a mirror) whose answers name paths that climb out of the cache: a shard
/// `../../../../escape.safetensors` in the weights index, a commit `../../../escaped`. The
/// download stops with an error naming the path, and nothing is written outside the cache.
#[test]
fn paths_from_the_hub_stay_inside_the_cache() {
    let outside = "../../../../escape.safetensors";
    let mut escape = Repo::from_folder(&model_dir("opt-tiny-sharded-f16"), "escape");
    let shard = "model-00004-of-00006.safetensors";
    let index = &escape.files["model.safetensors.index.json"].bytes;
    let mut index: serde_json::Value = serde_json::from_slice(index).unwrap();
    for target in index["weight_map"].as_object_mut().unwrap().values_mut() {
        if target == shard {
            *target = outside.into();
        }
    }
    escape.add(
        "model.safetensors.index.json",
        index.to_string().into_bytes(),
    );
    let bytes = escape.files[shard].bytes.to_vec();
    escape.add(outside, bytes);
    let mut bad_commit = Repo::from_folder(&model_dir("opt-tiny"), "bad-commit");
    bad_commit.commit = "../../../escaped".into();
    let mut repos = HashMap::new();
    repos.insert("bad/escape".to_string(), escape);
    repos.insert("bad/commit".to_string(), bad_commit);
    let server = HubServer::start(repos);
    // snapshots/<commit>/../../../.. is the folder above the cache.
    let above = scratch("outside");
    let s = settings(&server, &above.join("cache"));

    expect_err(
        "bad/escape",
        &s,
        ResolveErrorKind::Protocol,
        &[outside, "outside the snapshot folder"],
    );
    assert_eq!(server.gets(outside), 0);
    expect_err(
        "bad/commit",
        &s,
        ResolveErrorKind::Protocol,
        &["../../../escaped", "not a folder name"],
    );
    let mut written: Vec<String> = std::fs::read_dir(&above)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    written.sort();
    assert_eq!(written, ["cache"], "only the cache folder is written");
}
