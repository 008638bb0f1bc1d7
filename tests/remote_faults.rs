//! The `openai` backend against servers that fail on a schedule: unreachable at start, 503
//! every k-th request, slow answers, cut connections, a wrong model name, garbage JSON, and
//! cancellation of requests in flight by seeks and NULL. Complete mode retries what is
//! transient and otherwise stops with an ERROR quoting the server; realtime mode drops and
//! counts, and the video goes on.

mod gst_common;
mod remote_server;

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_common::*;
use remote_server::{HttpRequest, Reply, Server, dead_url, failed_start};

const SEC: u64 = 1_000_000_000;

fn stats(p: &gst::Pipeline) -> gst::Structure {
    p.by_name("c").unwrap().property::<gst::Structure>("stats")
}

fn stat(s: &gst::Structure, name: &str) -> u64 {
    s.get::<u64>(name).unwrap()
}

/// `frames` frames at 10 fps, each one a sample, through `blip2caption backend=openai`.
/// One sample in flight: the schedules below count requests in order.
fn remote_pipeline(url: &str, frames: u32, live: bool, props: &str) -> gst::Pipeline {
    pipeline(&format!(
        "videotestsrc is-live={live} num-buffers={frames} \
         ! video/x-raw,width=16,height=16,framerate=10/1 \
         ! blip2caption name=c backend=openai server-url={url} model=served interval=0 \
           max-in-flight=1 {props} \
         ! appsink name=v sync=false wait-on-eos=false"
    ))
}

/// Answers like a healthy server, "caption <n>" for the n-th chat request, except where
/// `fault` says otherwise.
fn scheduled(
    fault: impl Fn(usize) -> Option<Reply> + Send + Sync + 'static,
) -> impl Fn(usize, &HttpRequest) -> Reply + Send + Sync + 'static {
    move |i, request| {
        if !request.is_chat() {
            return Reply::models(&["served"]);
        }
        fault(i).unwrap_or_else(|| Reply::caption(&format!("caption {i}"), &[7, 2]))
    }
}

fn texts(run: &Run) -> Vec<String> {
    run.captions
        .iter()
        .map(|c| c.get::<String>("text").unwrap())
        .collect()
}

/// Samples in realtime are all accounted for.
fn assert_counts_add_up(s: &gst::Structure) {
    assert_eq!(
        stat(s, "samples-taken"),
        stat(s, "captions-emitted") + stat(s, "samples-dropped") + stat(s, "inference-failures"),
        "{s}"
    );
}

#[test]
fn unreachable_server_is_an_error_in_complete_mode_and_a_warning_in_realtime() {
    init();
    let url = dead_url();
    let p = remote_pipeline(&url, 3, false, "mode=complete");
    let (errors, _) = failed_start(&p);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(&format!("{url}/models")), "{errors:?}");
    assert!(errors[0].contains("cannot connect"), "{errors:?}");
    assert!(errors[0].contains("property `server-url`"), "{errors:?}");

    let p = remote_pipeline(&url, 20, true, "mode=realtime");
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(video.lock().unwrap().len(), 20, "the video goes on");
    // One at start, one for the samples (the same failure is posted once).
    assert_eq!(run.warnings.len(), 2, "{run:?}");
    assert!(run.warnings.iter().all(|w| w.contains(&url)), "{run:?}");
    let s = stats(&p);
    assert_eq!(stat(&s, "captions-emitted"), 0);
    assert!(stat(&s, "inference-failures") >= 1, "{s}");
    assert_counts_add_up(&s);
}

#[test]
fn status_503_is_retried_in_complete_mode_and_counted_in_realtime() {
    init();
    // Every third request is refused as overloaded.
    let busy = |i: usize| (i % 3 == 2).then(|| Reply::error(503, "overloaded"));
    let server = Server::start(scheduled(busy));
    let p = remote_pipeline(&server.url(), 6, false, "mode=complete");
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty() && run.warnings.is_empty(), "{run:?}");
    // No caption lost: requests 2 and 5 were refused and asked again as 3 and 6.
    let want = [
        "caption 0",
        "caption 1",
        "caption 3",
        "caption 4",
        "caption 6",
        "caption 7",
    ];
    assert_eq!(texts(&run), want);
    assert_eq!(server.chats(), 8);

    let server = Server::start(scheduled(busy));
    let p = remote_pipeline(&server.url(), 30, true, "mode=realtime");
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(video.lock().unwrap().len(), 30);
    let s = stats(&p);
    let refused = (server.chats() + 1) / 3;
    assert!(refused >= 1, "{s}");
    assert_eq!(stat(&s, "inference-failures") as usize, refused, "{s}");
    assert_eq!(
        stat(&s, "captions-emitted") as usize,
        server.answered(),
        "{s}"
    );
    assert_eq!(run.captions.len(), server.answered());
    assert_counts_add_up(&s);
    // Each failure follows a caption, so each is posted (repeats are posted once per streak).
    assert_eq!(run.warnings.len(), refused, "{run:?}");
    assert!(
        run.warnings
            .iter()
            .all(|w| w.contains("HTTP 503: overloaded")),
        "{run:?}"
    );
}

#[test]
fn slow_answers_time_out_and_are_retried() {
    init();
    let slow = || {
        Reply::After(
            Duration::from_secs(2),
            Box::new(Reply::caption("late", &[])),
        )
    };
    let server = Server::start(scheduled(move |i| (i == 1).then(slow)));
    let props = "mode=complete request-timeout=300000000";
    let run = run_to_eos(
        &remote_pipeline(&server.url(), 3, false, props),
        Duration::from_secs(60),
    );
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(texts(&run), ["caption 0", "caption 2", "caption 3"]);

    // Always slow: after `retries` more attempts, an error that says what happened.
    let server = Server::start(scheduled(move |_| Some(slow())));
    let props = "mode=complete request-timeout=300000000 retries=1";
    let run = run_to_eos(
        &remote_pipeline(&server.url(), 3, false, props),
        Duration::from_secs(60),
    );
    assert_eq!(run.errors.len(), 1, "{run:?}");
    let e = &run.errors[0];
    assert!(
        e.contains("no answer within 0.3 s (after 2 attempts)"),
        "{e}"
    );
    assert!(
        e.contains(&format!("{}/chat/completions", server.url())),
        "{e}"
    );
    assert_eq!(server.chats(), 2);
}

#[test]
fn cut_connections_are_retried_in_complete_mode() {
    init();
    // Request 0: closed without a word; request 1: closed in the middle of the body.
    let partial =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"choi"
            .to_vec();
    let server = Server::start(scheduled(move |i| match i {
        0 => Some(Reply::Cut),
        1 => Some(Reply::Raw(partial.clone())),
        _ => None,
    }));
    let run = run_to_eos(
        &remote_pipeline(&server.url(), 2, false, "mode=complete"),
        Duration::from_secs(60),
    );
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(texts(&run), ["caption 2", "caption 3"]);

    let server = Server::start(scheduled(|_| Some(Reply::Cut)));
    let p = remote_pipeline(&server.url(), 2, false, "mode=complete retries=2");
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert_eq!(run.errors.len(), 1, "{run:?}");
    assert!(run.errors[0].contains("connection dropped"), "{run:?}");
    assert!(run.errors[0].contains("after 3 attempts"), "{run:?}");
    assert_eq!(server.chats(), 3);
}

#[test]
fn wrong_model_name_is_an_error_quoting_the_server() {
    init();
    // The start-up check sees that the server lists other models.
    let server = Server::start(scheduled(|_| None));
    let p = remote_pipeline(&server.url(), 3, true, "mode=realtime server-model=wrong");
    let (errors, _) = failed_start(&p);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("model `wrong` is not served here; the server has `served`"));
    assert!(errors[0].contains("property `server-model`"), "{errors:?}");
    assert_eq!(server.chats(), 0);

    // A server without a model listing: the first request's 404 stops realtime mode too,
    // since no later request can succeed.
    for mode in ["complete", "realtime"] {
        let server = Server::start(|_, request: &HttpRequest| {
            if request.is_chat() {
                let model = request.json()["model"].as_str().unwrap().to_owned();
                Reply::error(404, &format!("The model `{model}` does not exist."))
            } else {
                Reply::error(404, "Not Found")
            }
        });
        let p = remote_pipeline(
            &server.url(),
            10,
            mode == "realtime",
            &format!("mode={mode}"),
        );
        let run = run_to_eos(&p, Duration::from_secs(60));
        assert_eq!(run.errors.len(), 1, "{mode}: {run:?}");
        let e = &run.errors[0];
        assert!(
            e.contains("HTTP 404: The model `served` does not exist."),
            "{e}"
        );
        assert_eq!(server.chats(), 1, "4xx is not retried");
    }
}

#[test]
fn garbage_answers_are_clear_errors() {
    init();
    for (body, says) in [
        ("<html>proxy error</html>", "malformed answer: not JSON"),
        (r#"{"choices": []}"#, "malformed answer: no choices[0]"),
        (
            r#"{"choices": [{"message": {}}]}"#,
            "choices[0].message.content is missing",
        ),
    ] {
        let server = Server::start(scheduled(move |_| Some(Reply::Json(200, body.into()))));
        let run = run_to_eos(
            &remote_pipeline(&server.url(), 3, false, "mode=complete"),
            Duration::from_secs(60),
        );
        assert_eq!(run.errors.len(), 1, "{body}: {run:?}");
        assert!(run.errors[0].contains(says), "{body}: {run:?}");
    }
    // Realtime: warned once, counted, the video goes on; good answers still come through.
    let server = Server::start(scheduled(|i| {
        (i % 2 == 0).then(|| Reply::Json(200, "not json".into()))
    }));
    let p = remote_pipeline(&server.url(), 20, true, "mode=realtime");
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(60));
    assert!(run.errors.is_empty(), "{run:?}");
    assert_eq!(video.lock().unwrap().len(), 20);
    let s = stats(&p);
    assert!(
        stat(&s, "inference-failures") >= 1 && stat(&s, "captions-emitted") >= 1,
        "{s}"
    );
    assert_counts_add_up(&s);
}

/// A flushing seek while a request is in flight: the answer for the old position never comes
/// out, and the pipeline goes on without waiting for it.
#[test]
fn seek_cancels_the_request_in_flight() {
    init();
    // The first request takes 5 s; the rest are quick.
    let server = Server::start(scheduled(|i| {
        (i == 0).then(|| {
            Reply::After(
                Duration::from_secs(5),
                Box::new(Reply::caption("stale", &[])),
            )
        })
    }));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=40 ! video/x-raw,width=8,height=8,framerate=10/1 \
         ! blip2caption name=c backend=openai server-url={} model=served mode=complete interval=0 \
         ! fakesink sync=false",
        server.url()
    ));
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let start = Instant::now();
    while server.chats() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    // To 3 s, stopping at 4 s: ten frames after the seek.
    p.seek(
        1.0,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::SeekType::Set,
        gst::ClockTime::from_seconds(3),
        gst::SeekType::Set,
        gst::ClockTime::from_seconds(4),
    )
    .unwrap();
    while bus.pop().is_some() {}
    let run = run_to_eos(&p, Duration::from_secs(30));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "waited for the stale answer"
    );
    assert!(run.errors.is_empty(), "{run:?}");
    assert!(!texts(&run).contains(&"stale".to_owned()), "{run:?}");
    let pts: Vec<u64> = run.captions.iter().map(|c| u64_field(c, "pts")).collect();
    // Every frame from the target to the stop, in order, none missing.
    let want: Vec<u64> = (30..40).map(|i| i * SEC / 10).collect();
    assert_eq!(pts, want);
}

/// PLAYING→NULL while retrying: the state change returns at once and no further attempt is
/// made.
#[test]
fn null_stops_retrying() {
    init();
    let server = Server::start(scheduled(|_| Some(Reply::error(503, "overloaded"))));
    let p = remote_pipeline(&server.url(), 5, false, "mode=complete retries=10");
    p.set_state(gst::State::Playing).unwrap();
    let start = Instant::now();
    while server.chats() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    let stopping = Instant::now();
    p.set_state(gst::State::Null).unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
    let asked = server.chats();
    // Without cancellation the next attempts would come 0.5, 1 and 2 s later.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(server.chats(), asked);
}
