//! Load: four realtime elements on four live 30 fps sources share one loopback server (this
//! project's engine on the tiny fixture model) for 30 s. Every sample is accounted for
//! (captioned, dropped while the server was busy, or failed), every answer the server gave
//! reaches its element, and the process's memory stays flat. Prints the numbers
//! (`--nocapture`).

mod gst_common;
mod remote_server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_common::common;
use gst_common::*;
use gstblip2::engine;
use gstblip2::model::{DTypeChoice, DeviceChoice};
use remote_server::{Server, engine_handler};

const ELEMENTS: usize = 4;
const FPS: u64 = 30;
const SECONDS: u64 = 30;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn four_realtime_elements_on_one_server_for_30_seconds() {
    init();
    let model = engine::load_blip2(
        &common::model_dir("opt-tiny"),
        DeviceChoice::Cpu,
        DTypeChoice::F32,
        &mut |_| {},
    )
    .unwrap();
    let server = Server::start(engine_handler(model, "blip2-tiny", None));
    let branches: String = (0..ELEMENTS)
        .map(|i| {
            format!(
                "videotestsrc is-live=true num-buffers={} pattern={} \
                 ! video/x-raw,width=64,height=48,framerate={FPS}/1 \
                 ! blip2caption name=c{i} backend=openai server-url={} model=blip2-tiny \
                   mode=realtime interval=0 ! fakesink sync=false ",
                FPS * SECONDS,
                ["ball", "smpte", "snow", "pinwheel"][i],
                server.url()
            )
        })
        .collect();
    let p = pipeline(&branches);

    // RSS once a second while the pipeline runs.
    let samples = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, done) = (samples.clone(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                samples
                    .lock()
                    .unwrap()
                    .push((start.elapsed().as_secs_f64(), rss_bytes()));
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let start = Instant::now();
    let run = run_to_eos(&p, Duration::from_secs(SECONDS + 60));
    let wall = start.elapsed();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    assert!(run.errors.is_empty(), "{:?}", run.errors);

    let mut captions_total = 0;
    let mut failures_total = 0;
    for i in 0..ELEMENTS {
        let s = p
            .by_name(&format!("c{i}"))
            .unwrap()
            .property::<gst::Structure>("stats");
        let get = |name: &str| s.get::<u64>(name).unwrap();
        println!(
            "c{i}: frames {} samples {} captions {} dropped {} failed {} mean inference {:.1} ms",
            get("frames-seen"),
            get("samples-taken"),
            get("captions-emitted"),
            get("samples-dropped"),
            get("inference-failures"),
            get("mean-inference-time") as f64 / 1e6
        );
        assert_eq!(get("frames-seen"), FPS * SECONDS, "{s}");
        assert_eq!(
            get("samples-taken"),
            FPS * SECONDS,
            "interval=0 samples every frame: {s}"
        );
        assert_eq!(
            get("samples-taken"),
            get("captions-emitted") + get("samples-dropped") + get("inference-failures"),
            "{s}"
        );
        assert!(get("captions-emitted") > 0, "{s}");
        captions_total += get("captions-emitted") as usize;
        failures_total += get("inference-failures") as usize;
    }
    assert_eq!(failures_total, 0, "a healthy loopback server fails nothing");
    assert_eq!(run.captions.len(), captions_total);
    // Every request the server answered came back as a caption (realtime drains at EOS).
    assert_eq!(server.answered(), captions_total);
    assert_eq!(server.chats(), captions_total);

    // Memory: the last 10 s against the 10 s after warm-up (5–15 s).
    let rss = samples.lock().unwrap().clone();
    let mean = |from: f64, to: f64| {
        let v: Vec<u64> = rss
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|&(_, b)| b)
            .collect();
        assert!(!v.is_empty(), "no RSS samples in {from}..{to} s: {rss:?}");
        v.iter().sum::<u64>() as f64 / v.len() as f64 / 1048576.0
    };
    let early = mean(5.0, 15.0);
    let late = mean(SECONDS as f64 - 10.0, SECONDS as f64);
    let peak = rss.iter().map(|&(_, b)| b).max().unwrap() as f64 / 1048576.0;
    println!(
        "{ELEMENTS} elements x {FPS} fps x {SECONDS} s in {:.1} s: {captions_total} captions \
         ({:.1}/s), RSS {early:.1} MiB (5-15 s) -> {late:.1} MiB (last 10 s), peak {peak:.1} MiB",
        wall.as_secs_f64(),
        captions_total as f64 / wall.as_secs_f64()
    );
    let series: Vec<String> = rss
        .iter()
        .map(|&(_, b)| format!("{:.0}", b as f64 / 1048576.0))
        .collect();
    println!("RSS per second (MiB): {}", series.join(" "));
    assert!(late - early < 8.0, "RSS grew {early:.1} -> {late:.1} MiB");
}
