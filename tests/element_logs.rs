//! What `GST_DEBUG` shows a user: each sample with its running time, each answer with its
//! inference time, batch size and tokens, and (in the engine's own `blip2engine` category,
//! bridged from the `log` crate) each load stage with its time and each model call; no unset
//! time or offset printed as 18446744073709551615. gst-launch-1.0 runs the plugin as a user
//! would, from this build's folder, in a child process so `GST_DEBUG` is set from its start.

mod gst_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use gst_common::{model_dir, output_text, scratch};

/// This build's plugin, alone in a folder of `dir` for `GST_PLUGIN_PATH`: cargo builds it beside
/// the test binary, in `deps/` (where everything else is not a plugin).
fn plugin_dir(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let built = exe.with_file_name(format!("libgstblip2{}", std::env::consts::DLL_SUFFIX));
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(&built, plugins.join(built.file_name().unwrap())).unwrap();
    plugins
}

/// Ten frames at 5 fps (two seconds), sampled each second: samples at 0 s and 1 s.
fn debug_log_of_a_run() -> String {
    let dir = scratch("logs");
    let log = dir.join("gst.log");
    let model = model_dir("opt-tiny");
    let out = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=10", "!"])
        .arg("video/x-raw,format=RGB,width=16,height=16,framerate=5/1")
        .args([
            "!",
            "blip2caption",
            "name=cap",
            "mode=complete",
            // One sample at a time: one model call per sample.
            "max-in-flight=1",
            "max-new-tokens=4",
        ])
        .arg(format!("model={}", model.display()))
        .args(["!", "fakesink"])
        .env("GST_PLUGIN_PATH", plugin_dir(&dir))
        .env("GST_REGISTRY", dir.join("registry.bin"))
        .env("GST_DEBUG", "blip2caption:6,blip2engine:6")
        .env("GST_DEBUG_FILE", &log)
        .env("GST_DEBUG_NO_COLOR", "1")
        .output()
        .expect("gst-launch-1.0 runs");
    assert!(out.status.success(), "{}", output_text(&out));
    std::fs::read_to_string(&log).unwrap()
}

/// The messages of `category`'s lines. A line is `time pid thread LEVEL category
/// file:line:function:<object> message`, the object left out for the engine's lines, and a
/// function name may hold spaces (`<impl ...>`).
fn messages<'a>(log: &'a str, category: &str) -> Vec<&'a str> {
    log.lines()
        .filter_map(|l| l.split_once(&format!(" {category} ")))
        .filter_map(|(_, rest)| match rest.split_once(":<cap") {
            Some((_, object_on)) => object_on.split_once("> ").map(|(_, m)| m),
            None => rest.split_once(": ").map(|(_, m)| m),
        })
        .collect()
}

#[test]
fn debug_log_shows_samples_answers_batches_and_load_stages() {
    let log = debug_log_of_a_run();
    let element = messages(&log, "blip2caption");
    let engine = messages(&log, "blip2engine");

    let samples: Vec<_> = element
        .iter()
        .filter(|m| m.starts_with("sample at"))
        .collect();
    assert_eq!(
        samples,
        [
            &"sample at 0:00:00.000000000 (running time 0:00:00.000000000)",
            &"sample at 0:00:01.000000000 (running time 0:00:01.000000000)"
        ],
        "{log}"
    );
    let answers: Vec<_> = element
        .iter()
        .filter(|m| m.starts_with("answer for"))
        .collect();
    assert_eq!(answers.len(), 2, "{log}");
    for (answer, at) in answers.iter().zip(["0:00:00.0", "0:00:01.0"]) {
        assert!(answer.starts_with(&format!("answer for {at}")), "{answer}");
        assert!(answer.contains(" tokens, inference "), "{answer}");
        assert!(answer.ends_with("in a batch of 1"), "{answer}");
    }

    // Every stage of the load, each with the time it took, then the total.
    for stage in [
        "reading config.json",
        "loading tokenizer.json",
        "loading vision encoder weights",
        "loading Q-Former weights",
        "loading language model weights",
    ] {
        let line = format!("{}: {stage}: ", model_dir("opt-tiny").display());
        assert!(
            engine
                .iter()
                .any(|m| m.starts_with(&line) && m.ends_with(" ms")),
            "no `{line}... ms` in {engine:#?}"
        );
    }
    assert!(
        engine.iter().any(|m| m.contains(": ready in ")),
        "{engine:#?}"
    );
    let batches = engine
        .iter()
        .filter(|m| m.starts_with("batch of 1: "))
        .count();
    assert_eq!(batches, 2, "{engine:#?}");

    assert!(
        !log.contains(&u64::MAX.to_string()),
        "an unset value as a number: {log}"
    );
}
