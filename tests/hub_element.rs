//! `blip2caption model=org/name` with an empty cache: downloads from a loopback stand-in for the
//! hub, posts Progress messages with percentages, captions like the fixture folder; two elements
//! starting together download once; a missing folder is RESOURCE/NOT_FOUND.
//!
//! The hub settings come from the environment (as for users), so each download test runs its
//! element half in a child process (this binary, one ignored test) with the variables set from
//! the start, instead of changing the environment of a running multi-threaded test.

mod gst_common;
mod hub_server;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use gst::prelude::*;
use gst_common::{init, model_dir, output_text, pipeline, scratch};
use hub_server::{Fault, HubServer, Repo};

const CHILD: &str = "GST_BLIP2_HUB_CHILD";

fn server() -> HubServer {
    let mut repos = HashMap::new();
    repos.insert(
        "tiny/opt".to_string(),
        Repo::from_folder(&model_dir("opt-tiny"), "opt"),
    );
    HubServer::start(repos)
}

/// Runs the ignored test `name` of this binary with the hub pointed at `server` and an empty
/// cache, and fails with its output if it fails.
fn run_child(name: &str, server: &HubServer) {
    let cache = scratch(&format!("hub-element-{name}"));
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("HF_ENDPOINT", server.endpoint())
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_DOWNLOAD_TIMEOUT", "5")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("TRANSFORMERS_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HOME")
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{name}:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
}

/// Not run directly: the child half of the tests above (it needs their environment).
fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

#[derive(Default, Debug)]
struct Seen {
    captions: Vec<String>,
    /// (code, percent) of every Progress message.
    progress: Vec<(String, Option<i32>)>,
    errors: Vec<gst::glib::Error>,
}

fn caption_pipeline(model: &str) -> gst::Pipeline {
    pipeline(&format!(
        "videotestsrc num-buffers=20 pattern=smpte ! video/x-raw,width=64,height=48,framerate=10/1 \
         ! blip2caption model={model} name=c ! fakesink c.text_src ! fakesink"
    ))
}

/// Plays to EOS (the state change may fail: then the bus holds the error) and collects.
fn play(p: &gst::Pipeline) -> Seen {
    let _ = p.set_state(gst::State::Playing);
    let bus = p.bus().unwrap();
    let mut seen = Seen::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                seen.errors.push(e.error());
                break;
            }
            gst::MessageView::Progress(m) => {
                let (_, code, _) = m.get();
                let percent = m.structure().and_then(|s| s.get::<i32>("percent").ok());
                seen.progress.push((code.to_string(), percent));
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "blip2-caption") {
                    seen.captions.push(s.get::<String>("text").unwrap());
                }
            }
            _ => (),
        }
    }
    p.set_state(gst::State::Null).unwrap();
    seen
}

#[test]
fn model_by_id_downloads_with_progress_and_captions() {
    let server = server();
    run_child("child_downloads_with_progress_and_captions", &server);
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert_eq!(server.gets(file), 1, "{file}");
    }
    assert_eq!(server.gets("pytorch_model.bin"), 0);
}

#[test]
#[ignore = "child half of model_by_id_downloads_with_progress_and_captions"]
fn child_downloads_with_progress_and_captions() {
    if !is_child() {
        return;
    }
    init();
    let seen = play(&caption_pipeline("tiny/opt"));
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    let download: Vec<i32> = seen
        .progress
        .iter()
        .filter(|(code, _)| code == "download")
        .map(|(_, p)| p.expect("download progress carries a percent"))
        .collect();
    assert!(!download.is_empty(), "{:?}", seen.progress);
    assert!(download.windows(2).all(|w| w[0] <= w[1]), "{download:?}");
    assert_eq!(*download.last().unwrap(), 100);
    assert!(seen.progress.iter().any(|(code, _)| code == "load"));

    let reference = play(&caption_pipeline(model_dir("opt-tiny").to_str().unwrap()));
    assert!(!reference.captions.is_empty());
    assert_eq!(seen.captions, reference.captions);

    // The second time the model comes from the cache: no download progress.
    let again = play(&caption_pipeline("tiny/opt"));
    assert!(again.progress.iter().all(|(code, _)| code != "download"));
    assert_eq!(again.captions, reference.captions);

    // An id the hub does not know: NOT_FOUND, naming it and how to log in for private ones.
    let unknown = play(&caption_pipeline("tiny/nope"));
    let err = &unknown.errors[0];
    assert!(err.matches(gst::ResourceError::NotFound), "{err:?}");
    assert!(err.message().contains("tiny/nope"), "{err}");
    assert!(err.message().contains("login"), "{err}");
}

#[test]
fn two_elements_starting_together_download_once() {
    let server = server();
    server.fault("model.safetensors", Fault::Slow(Duration::from_millis(30)));
    run_child("child_two_elements_start_together", &server);
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert_eq!(server.gets(file), 1, "{file}");
    }
}

#[test]
#[ignore = "child half of two_elements_starting_together_download_once"]
fn child_two_elements_start_together() {
    if !is_child() {
        return;
    }
    init();
    let runs: Vec<Seen> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| play(&caption_pipeline("tiny/opt"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for seen in &runs {
        assert!(seen.errors.is_empty(), "{:?}", seen.errors);
        assert!(!seen.captions.is_empty());
    }
    assert_eq!(runs[0].captions, runs[1].captions);
    // One element downloaded (with progress), the other waited for it.
    let downloading = runs
        .iter()
        .filter(|s| s.progress.iter().any(|(code, _)| code == "download"))
        .count();
    assert_eq!(downloading, 1, "{runs:?}");
}

#[test]
fn missing_folder_is_resource_not_found_without_a_download_hint() {
    init();
    let dir = std::env::temp_dir().join("gstblip2-no-such-model-folder");
    let seen = play(&caption_pipeline(dir.to_str().unwrap()));
    let err = &seen.errors[0];
    assert!(err.matches(gst::ResourceError::NotFound), "{err:?}");
    assert!(err.message().contains(dir.to_str().unwrap()), "{err}");
    assert!(err.message().contains("does not exist"), "{err}");
    assert!(!err.message().contains("download"), "{err}");
    assert!(!err.message().contains("huggingface-cli"), "{err}");
}
