//! The worker's unit tests: queueing, batching, cancelling and per-client mailboxes, with
//! captioners the tests hold at a gate.

use super::*;
use crate::engine::Result as ModelResult;
use std::sync::mpsc;

/// Captions each image with its first byte and the prompt; records batch sizes; can be
/// held at a gate so tests control when the worker finishes.
struct Gated {
    gate: Mutex<mpsc::Receiver<()>>,
    batches: Mutex<Vec<usize>>,
}

impl Captioner for Gated {
    fn caption(
        &self,
        images: &[RgbImage],
        prompt: &str,
        _params: &GenerationParams,
    ) -> ModelResult<Vec<Caption>> {
        self.batches.lock().unwrap().push(images.len());
        let _ = self.gate.lock().unwrap().recv();
        Ok(images
            .iter()
            .map(|im| Caption {
                token_ids: vec![],
                text: format!("{prompt}{}", im.data[0]),
            })
            .collect())
    }
}

fn gated() -> (Arc<Gated>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    (
        Arc::new(Gated {
            gate: Mutex::new(rx),
            batches: Mutex::new(vec![]),
        }),
        tx,
    )
}

fn req(byte: u8, prompt: &str) -> Request {
    Request {
        input: Prepared::new(RgbImage::new(1, 1, vec![byte, 0, 0]).unwrap()),
        prompt: prompt.into(),
        params: GenerationParams::default(),
        max_batch: 8,
        retry_transient: false,
    }
}

fn wait_until(cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(5), "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn pending_requests_are_batched_across_clients_and_prompts() {
    let (cap, gate) = gated();
    let engine = Engine::spawn(cap.clone(), "t");
    let (a, b) = (engine.client(), engine.client());
    let first = a.submit(req(1, ""));
    wait_until(|| cap.batches.lock().unwrap().len() == 1); // worker busy with `first`
    let ta = a.submit(req(2, ""));
    let tb = b.submit(req(3, ""));
    let tq = b.submit(req(4, "Question: what? Answer:"));
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    assert_eq!(a.wait_for(first).unwrap().result.unwrap().text, "1");
    assert_eq!(a.wait_for(ta).unwrap().result.unwrap().text, "2");
    let ob = b.wait_for(tb).unwrap();
    assert_eq!(ob.result.unwrap().text, "3");
    // One engine batch of three; this fake has no padded batching, so the default
    // `caption_each` calls it once per prompt.
    assert_eq!(ob.batch_size, 3);
    let oq = b.wait_for(tq).unwrap();
    assert_eq!(oq.result.unwrap().text, "Question: what? Answer:4");
    assert_eq!(oq.batch_size, 3);
    assert_eq!(*cap.batches.lock().unwrap(), vec![1, 2, 1]);
}

#[test]
fn max_batch_limits_batch_size() {
    let (cap, gate) = gated();
    let engine = Engine::spawn(cap.clone(), "t");
    let c = engine.client();
    let t0 = c.submit(req(0, ""));
    wait_until(|| cap.batches.lock().unwrap().len() == 1);
    let tickets: Vec<_> = (1..=5)
        .map(|i| {
            let mut r = req(i, "");
            r.max_batch = 2;
            c.submit(r)
        })
        .collect();
    for _ in 0..4 {
        gate.send(()).unwrap();
    }
    c.wait_for(t0).unwrap();
    for t in tickets {
        c.wait_for(t).unwrap();
    }
    assert_eq!(*cap.batches.lock().unwrap(), vec![1, 2, 2, 1]);
}

#[test]
fn replacing_drops_only_queued_requests() {
    let (cap, gate) = gated();
    let engine = Engine::spawn(cap.clone(), "t");
    let c = engine.client();
    let running = c.submit(req(1, ""));
    wait_until(|| cap.batches.lock().unwrap().len() == 1);
    let (queued, dropped) = c.submit_replacing(req(2, ""));
    assert!(dropped.is_empty());
    let (newest, dropped) = c.submit_replacing(req(3, ""));
    assert_eq!(dropped, vec![queued]);
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    assert_eq!(c.wait_for(running).unwrap().result.unwrap().text, "1");
    assert_eq!(c.wait_for(newest).unwrap().result.unwrap().text, "3");
    assert_eq!(c.wait_for(queued).unwrap_err(), WaitError::Unknown);
}

#[test]
fn a_bounded_submission_keeps_the_newest_waiting_requests() {
    let (cap, gate) = gated();
    let engine = Engine::spawn(cap.clone(), "t");
    let c = engine.client();
    let running = c.submit(req(1, ""));
    wait_until(|| cap.batches.lock().unwrap().len() == 1);
    let waiting: Vec<Ticket> = (2..=4)
        .map(|i| {
            let (t, dropped) = c.submit_group_bounded(vec![req(i, "")], 3);
            assert!(dropped.is_empty());
            t[0]
        })
        .collect();
    // A fourth waiting request pushes out the oldest waiting one, not the running one.
    let (newest, dropped) = c.submit_group_bounded(vec![req(5, "")], 3);
    assert_eq!(dropped, vec![waiting[0]]);
    let newest = newest[0];
    for _ in 0..2 {
        gate.send(()).unwrap();
    }
    assert_eq!(c.wait_for(running).unwrap().result.unwrap().text, "1");
    // The three still waiting went to the model in one batch.
    for (t, want) in [(waiting[1], "3"), (waiting[2], "4"), (newest, "5")] {
        let o = c.wait_for(t).unwrap();
        assert_eq!(o.result.unwrap().text, want);
        assert_eq!(o.batch_size, 3);
    }
    assert_eq!(*cap.batches.lock().unwrap(), vec![1, 3]);
}

/// Records the prompts and cancel tokens of every `caption_batch` call; held at a gate
/// like [`Gated`].
struct GatedCalls {
    gate: Mutex<mpsc::Receiver<()>>,
    calls: Mutex<Vec<Vec<String>>>,
    cancels: Mutex<Vec<CancelToken>>,
}

impl Captioner for GatedCalls {
    fn caption(&self, _: &[RgbImage], _: &str, _: &GenerationParams) -> ModelResult<Vec<Caption>> {
        unreachable!("caption_batch is overridden")
    }

    fn caption_batch(
        &self,
        items: Vec<BatchItem>,
        _params: &GenerationParams,
    ) -> Vec<ModelResult<Caption>> {
        self.calls
            .lock()
            .unwrap()
            .push(items.iter().map(|i| i.prompt.clone()).collect());
        self.cancels
            .lock()
            .unwrap()
            .extend(items.iter().map(|i| i.cancel.clone()));
        let _ = self.gate.lock().unwrap().recv();
        items
            .iter()
            .map(|i| {
                Ok(Caption {
                    token_ids: vec![],
                    text: format!("{}{}", i.prompt, i.input.image().unwrap().data[0]),
                })
            })
            .collect()
    }
}

fn gated_calls() -> (Arc<GatedCalls>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    let cap = Arc::new(GatedCalls {
        gate: Mutex::new(rx),
        calls: Mutex::new(vec![]),
        cancels: Mutex::new(vec![]),
    });
    (cap, tx)
}

fn group(byte: u8, prompts: &[&str], max_batch: usize) -> Vec<Request> {
    prompts
        .iter()
        .map(|p| Request {
            max_batch,
            ..req(byte, p)
        })
        .collect()
}

#[test]
fn groups_submitted_together_are_batched_and_never_split() {
    let (cap, gate) = gated_calls();
    let engine = Engine::spawn(cap.clone(), "t");
    let c = engine.client();
    let running = c.submit(req(1, ""));
    wait_until(|| cap.calls.lock().unwrap().len() == 1);
    // Three samples of two prompts each, batches of up to four requests: the first two
    // samples go together, the third alone (its group is not split to fill the batch).
    let groups = (2..=4).map(|i| group(i, &["a", "b"], 4)).collect();
    let tickets = c.submit_groups(groups);
    assert_eq!(tickets.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    assert_eq!(c.wait_for(running).unwrap().result.unwrap().text, "1");
    for (group, byte) in tickets.iter().zip(2..) {
        for (&t, prompt) in group.iter().zip(["a", "b"]) {
            let o = c.wait_for(t).unwrap();
            assert_eq!(o.result.unwrap().text, format!("{prompt}{byte}"));
        }
    }
    let sizes: Vec<usize> = cap.calls.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1, 4, 2]);
}

#[test]
fn a_group_goes_to_the_model_in_one_call_even_past_max_batch() {
    let (cap, gate) = gated_calls();
    let engine = Engine::spawn(cap.clone(), "t");
    let c = engine.client();
    let busy = c.submit(req(0, "busy"));
    wait_until(|| cap.calls.lock().unwrap().len() == 1);
    let (tickets, replaced) = c.submit_group(group(7, &["a", "b", "c"], 2), false);
    assert!(replaced.is_empty());
    let after = c.submit(Request {
        max_batch: 2,
        ..req(8, "d")
    });
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    c.wait_for(busy).unwrap();
    let texts: Vec<String> = tickets
        .iter()
        .map(|&t| {
            let o = c.wait_for(t).unwrap();
            assert_eq!(o.batch_size, 3);
            o.result.unwrap().text
        })
        .collect();
    assert_eq!(texts, vec!["a7", "b7", "c7"]);
    assert_eq!(c.wait_for(after).unwrap().result.unwrap().text, "d8");
    assert_eq!(
        *cap.calls.lock().unwrap(),
        vec![vec!["busy"], vec!["a", "b", "c"], vec!["d"]]
    );
}

#[test]
fn groups_join_a_batch_whole_or_not_at_all() {
    let (cap, gate) = gated_calls();
    let engine = Engine::spawn(cap.clone(), "t");
    let (x, y) = (engine.client(), engine.client());
    let busy = x.submit(req(0, "busy"));
    wait_until(|| cap.calls.lock().unwrap().len() == 1);
    // max-batch 3: "s" then the group of three would make four, so the group waits and
    // "t" (queued after it) joins "s"; the group then goes alone.
    x.submit(Request {
        max_batch: 3,
        ..req(1, "s")
    });
    y.submit_group(group(2, &["g1", "g2", "g3"], 3), false);
    x.submit(Request {
        max_batch: 3,
        ..req(3, "t")
    });
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    x.wait_for(busy).unwrap();
    wait_until(|| x.in_flight() == 0 && y.in_flight() == 0);
    assert_eq!(
        *cap.calls.lock().unwrap(),
        vec![vec!["busy"], vec!["s", "t"], vec!["g1", "g2", "g3"]]
    );
}

#[test]
fn replacing_removes_a_queued_group_whole() {
    let (cap, gate) = gated_calls();
    let engine = Engine::spawn(cap.clone(), "t");
    let c = engine.client();
    let busy = c.submit(req(0, "busy"));
    wait_until(|| cap.calls.lock().unwrap().len() == 1);
    let (old, _) = c.submit_group(group(1, &["a", "b"], 8), true);
    let (new, replaced) = c.submit_group(group(2, &["a", "b"], 8), true);
    assert_eq!(replaced, old);
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    c.wait_for(busy).unwrap();
    assert_eq!(c.wait_for(new[1]).unwrap().result.unwrap().text, "b2");
    assert_eq!(c.wait_for(old[0]).unwrap_err(), WaitError::Unknown);
    assert!(c.submit_group(vec![], false).0.is_empty());
}

#[test]
fn interrupt_wakes_a_waiter() {
    let (cap, gate) = gated();
    let engine = Engine::spawn(cap, "t");
    let c = Arc::new(engine.client());
    let t = c.submit(req(1, ""));
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || c.wait_for(t))
    };
    std::thread::sleep(Duration::from_millis(50));
    c.interrupt();
    assert_eq!(waiter.join().unwrap().unwrap_err(), WaitError::Interrupted);
    c.resume();
    gate.send(()).unwrap();
    assert!(c.wait_for(t).is_ok());
}

#[test]
fn cancel_reaches_running_requests_and_drops_their_outcome() {
    let (cap, gate) = gated_calls();
    let engine = Engine::spawn(cap.clone(), "t");
    let c = engine.client();
    let running = c.submit(req(1, ""));
    wait_until(|| cap.calls.lock().unwrap().len() == 1);
    let queued = c.submit(req(2, ""));
    let token = cap.cancels.lock().unwrap()[0].clone();
    assert!(!token.is_cancelled());
    assert_eq!(c.cancel(), vec![queued]);
    assert!(token.is_cancelled());
    assert_eq!(c.wait_for(running).unwrap_err(), WaitError::Unknown);
    gate.send(()).unwrap();
    // A request submitted after the cancel is answered; the cancelled one never is.
    let after = c.submit(req(3, ""));
    gate.send(()).unwrap();
    assert_eq!(c.wait_for(after).unwrap().result.unwrap().text, "3");
    assert!(c.take_ready().is_empty());
}

struct Panics;
impl Captioner for Panics {
    fn caption(&self, _: &[RgbImage], _: &str, _: &GenerationParams) -> ModelResult<Vec<Caption>> {
        panic!("boom")
    }
}

#[test]
fn a_panicking_model_becomes_an_error_and_the_worker_survives() {
    let engine = Engine::spawn(Arc::new(Panics), "t");
    let c = engine.client();
    for _ in 0..2 {
        let t = c.submit(req(1, ""));
        let err = c.wait_for(t).unwrap().result.unwrap_err();
        assert!(
            matches!(&err, CaptionError::Internal(m) if m.contains("boom")),
            "{err}"
        );
    }
}
