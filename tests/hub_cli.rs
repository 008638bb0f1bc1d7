//! `caption --model org/name` against a loopback stand-in for the hub: two processes at once
//! download each file once and print the fixture's tokens; a second run works offline with
//! the server gone.

mod common;
mod hub_server;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use common::{example_bin, fixtures, scratch};
use hub_server::{Fault, HubServer, Repo};

fn caption(model: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(example_bin("caption"));
    cmd.args(["--model", model, "--device", "cpu", "--image"])
        .arg(fixtures().join("images/chelsea.png"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_HOME")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("TRANSFORMERS_OFFLINE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn token_ids(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    line["token_ids"].clone()
}

#[test]
fn two_processes_download_once_then_offline_works() {
    let mut repos = HashMap::new();
    repos.insert(
        "tiny/opt".to_string(),
        Repo::from_folder(&fixtures().join("models/opt-tiny"), "opt"),
    );
    let mut server = HubServer::start(repos);
    server.fault("model.safetensors", Fault::Slow(Duration::from_millis(30)));
    let cache = scratch("cache");
    let endpoint = server.endpoint();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
    ];

    let children: Vec<_> = (0..2)
        .map(|_| {
            caption("tiny/opt", &env)
                .arg("--json")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let reference = caption(fixtures().join("models/opt-tiny").to_str().unwrap(), &[])
        .arg("--json")
        .output()
        .unwrap();
    for out in &outs {
        assert_eq!(token_ids(out), token_ids(&reference));
    }
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert_eq!(server.gets(file), 1, "{file}");
    }

    // Without --json, progress goes to stderr (one line per file when it is not a terminal).
    server.stop();
    let offline = [env[0], env[1], ("HF_HUB_OFFLINE", "1")];
    let out = caption("tiny/opt", &offline).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("chelsea.png: "), "{stdout}");

    let cache2 = cache.join("other");
    let fresh = [env[0], ("HF_HUB_CACHE", cache2.to_str().unwrap())];
    let out = caption("tiny/opt", &fresh).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tiny/opt"), "{stderr}");
    assert!(stderr.contains("HF_HUB_OFFLINE=1"), "{stderr}");
}

#[test]
fn download_progress_is_reported_per_file() {
    let mut repos = HashMap::new();
    repos.insert(
        "tiny/t5".to_string(),
        Repo::from_folder(&fixtures().join("models/t5-tiny"), "t5"),
    );
    let server = HubServer::start(repos);
    let cache = scratch("cache-p");
    let endpoint = server.endpoint();
    let out = caption(
        "tiny/t5",
        &[
            ("HF_ENDPOINT", endpoint.as_str()),
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let files = std::fs::read_dir(fixtures().join("models/t5-tiny"))
        .unwrap()
        .count();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[download]"))
        .collect();
    assert_eq!(lines.len(), files, "{stderr}");
    assert!(
        lines.iter().any(|l| l.contains("model.safetensors")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{files} files")), "{stderr}");
}
