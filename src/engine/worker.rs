//! One worker thread per loaded model. Elements talk to it through a [`Client`]: they submit
//! [`Request`]s and collect [`Outcome`]s from their own mailbox. Requests that are queued
//! together with the same generation parameters are captioned in one batch (prompts may
//! differ); the requests of one sample asked several prompts are submitted as a group, which
//! is never split across batches.

use std::collections::{HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{CaptionError, Captioner, Prepared};
use crate::model::{Caption, GenerationParams, RgbImage};
use crate::sync::{lock, wait};

/// Identifies one submitted request; unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// One image to caption.
#[derive(Clone, Debug)]
pub struct Request {
    /// The image as [`Client::prepare`] made it.
    pub input: Prepared,
    pub prompt: String,
    pub params: GenerationParams,
    /// Largest batch this request may be part of (the submitting element's `max-batch`).
    pub max_batch: usize,
    /// Retry transient backend failures (a remote server's 5xx, 429, timeouts, dropped
    /// connections) with backoff, as complete mode wants; realtime reports them at once.
    pub retry_transient: bool,
}

/// One request of a batch, as [`Captioner::caption_batch`] receives it.
pub struct BatchItem {
    /// What the backend's [`Captioner::prepare`] made of the image.
    pub input: Prepared,
    pub prompt: String,
    pub retry_transient: bool,
    /// Says when nobody waits for this answer any more.
    pub cancel: CancelToken,
}

/// Tells a backend that the request it works on was cancelled ([`Client::cancel`]: a flush, a
/// seek, a state change), so it can stop waiting and retrying.
#[derive(Clone)]
pub struct CancelToken {
    mailbox: Arc<Mailbox>,
    epoch: u64,
}

impl CancelToken {
    pub fn is_cancelled(&self) -> bool {
        self.mailbox.epoch.load(Ordering::Acquire) != self.epoch
    }

    /// A token that is never cancelled (for calling a backend outside the worker).
    pub fn never() -> Self {
        Self {
            mailbox: Arc::new(Mailbox::default()),
            epoch: 0,
        }
    }
}

/// The answer to one [`Request`].
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ticket: Ticket,
    pub prompt: String,
    /// The caption, or why there is none (a local model's failure goes to every request of
    /// its batch; a remote backend fails requests one by one).
    pub result: Result<Caption, CaptionError>,
    /// Wall-clock time of the `caption` call that produced it (the whole batch).
    pub inference_time: Duration,
    pub batch_size: usize,
    /// When the answer reached the mailbox (with the submission time: how late it is).
    pub answered_at: Instant,
}

/// Why [`Client::wait_for`] returned without an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// [`Client::interrupt`] was called (flush, state change).
    Interrupted,
    /// The ticket is neither queued, running nor done (cancelled, or already taken).
    Unknown,
}

struct Job {
    ticket: Ticket,
    /// Jobs submitted together ([`Client::submit_group`]) share the first one's ticket here;
    /// they sit next to each other in the queue and are batched together.
    group: Ticket,
    client: u64,
    request: Request,
    mailbox: Arc<Mailbox>,
    /// The mailbox's epoch at submission; the job is cancelled once it moves on.
    epoch: u64,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    shutdown: bool,
}

struct Shared {
    captioner: Arc<dyn Captioner>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct MailboxState {
    done: VecDeque<Outcome>,
    /// Submitted and not yet answered (queued or running).
    in_flight: HashSet<Ticket>,
    interrupted: bool,
}

#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    wake: Condvar,
    /// Bumped by [`Client::cancel`]: jobs submitted before are no longer wanted.
    epoch: AtomicU64,
}

static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A loaded model and its worker thread. Dropping the last `Arc<Engine>` stops the worker
/// after its current batch (without waiting for it, so state changes stay prompt) and frees the
/// model.
pub struct Engine {
    shared: Arc<Shared>,
    name: String,
}

impl Engine {
    /// Starts a worker thread around `captioner`.
    pub fn spawn(captioner: Arc<dyn Captioner>, name: &str) -> Arc<Engine> {
        let shared = Arc::new(Shared {
            captioner,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("blip2-worker".into())
            .spawn(move || run(worker))
            .expect("spawning the BLIP-2 worker thread");
        Arc::new(Engine {
            shared,
            name: name.to_owned(),
        })
    }

    /// A new client with its own mailbox; one per element.
    pub fn client(self: &Arc<Self>) -> Client {
        Client {
            engine: self.clone(),
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            mailbox: Arc::new(Mailbox::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the model's loader worked around; see [`Captioner::load_warnings`].
    pub fn load_warnings(&self) -> Vec<String> {
        self.shared.captioner.load_warnings()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.wake.notify_all();
    }
}

/// One element's connection to an [`Engine`].
pub struct Client {
    engine: Arc<Engine>,
    id: u64,
    mailbox: Arc<Mailbox>,
}

impl Client {
    /// The backend's per-image preparation ([`Captioner::prepare`]), on the calling thread: an
    /// element calls it on its streaming thread, so it overlaps the worker's inference.
    pub fn prepare(&self, image: RgbImage) -> Result<Prepared, CaptionError> {
        self.engine.shared.captioner.prepare(image)
    }

    /// Queues `request` behind everything already queued.
    pub fn submit(&self, request: Request) -> Ticket {
        self.enqueue(vec![vec![request]], None).0[0][0]
    }

    /// Queues several groups (as [`Client::submit_group`] makes them) behind everything already
    /// queued, all under one lock: the worker sees them together and batches them (up to
    /// `max_batch`, never splitting a group). Returns each group's tickets, in order.
    pub fn submit_groups(&self, groups: Vec<Vec<Request>>) -> Vec<Vec<Ticket>> {
        self.enqueue(groups, None).0
    }

    /// Queues `request`, removing this client's requests that the worker has not started yet
    /// (realtime: only the newest sample matters). Returns the new ticket and the replaced ones.
    pub fn submit_replacing(&self, request: Request) -> (Ticket, Vec<Ticket>) {
        let (tickets, replaced) = self.submit_group_bounded(vec![request], 1);
        (tickets[0], replaced)
    }

    /// Queues the requests of one sample (one frame asked several prompts) as a group: they go
    /// to the model together in one call, whatever `max_batch` says, and are never split
    /// across calls; `replace` works as in [`Client::submit_replacing`] and a later replacing
    /// submission removes the whole group while it is queued. Returns the tickets in the order
    /// of `requests`, and the replaced ones.
    pub fn submit_group(
        &self,
        requests: Vec<Request>,
        replace: bool,
    ) -> (Vec<Ticket>, Vec<Ticket>) {
        match replace {
            true => self.submit_group_bounded(requests, 1),
            false => (self.submit_groups(vec![requests]).remove(0), Vec::new()),
        }
    }

    /// Queues one group, then removes this client's oldest groups that the worker has not
    /// started yet while more than `max_waiting` of them wait (realtime with a window of
    /// samples: only the newest ones matter). Returns the new tickets and the removed ones.
    pub fn submit_group_bounded(
        &self,
        requests: Vec<Request>,
        max_waiting: usize,
    ) -> (Vec<Ticket>, Vec<Ticket>) {
        let (mut tickets, replaced) = self.enqueue(vec![requests], Some(max_waiting.max(1)));
        (tickets.remove(0), replaced)
    }

    /// Queues `groups` under one lock (the worker never sees part of a group); with
    /// `max_waiting`, this client's oldest waiting groups are removed first until, with the new
    /// ones, at most that many wait.
    fn enqueue(
        &self,
        groups: Vec<Vec<Request>>,
        max_waiting: Option<usize>,
    ) -> (Vec<Vec<Ticket>>, Vec<Ticket>) {
        let tickets: Vec<Vec<Ticket>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|_| Ticket(NEXT_TICKET.fetch_add(1, Ordering::Relaxed)))
                    .collect()
            })
            .collect();
        let new_groups = tickets.iter().filter(|t| !t.is_empty()).count();
        if new_groups == 0 {
            return (tickets, Vec::new());
        }
        let mut replaced = Vec::new();
        {
            let mut queue = lock(&self.engine.shared.queue);
            if let Some(max) = max_waiting {
                replaced =
                    remove_oldest_groups(&mut queue, self.id, max.saturating_sub(new_groups));
            }
            // Register before the worker can see the jobs, so `wait_for` never misses them.
            let mut mb = lock(&self.mailbox.state);
            for t in &replaced {
                mb.in_flight.remove(t);
            }
            mb.in_flight.extend(tickets.iter().flatten().copied());
            let epoch = self.mailbox.epoch.load(Ordering::Acquire);
            drop(mb);
            for (group_tickets, requests) in tickets.iter().zip(groups) {
                let Some(&group) = group_tickets.first() else {
                    continue;
                };
                for (&ticket, request) in group_tickets.iter().zip(requests) {
                    queue.jobs.push_back(Job {
                        ticket,
                        group,
                        client: self.id,
                        request,
                        mailbox: self.mailbox.clone(),
                        epoch,
                    });
                }
            }
        }
        self.engine.shared.wake.notify_all();
        (tickets, replaced)
    }

    /// Cancels every request of this client, queued or running: running ones are told through
    /// their [`CancelToken`] and their outcome is dropped. Returns the queued tickets removed.
    pub fn cancel(&self) -> Vec<Ticket> {
        let mut queue = lock(&self.engine.shared.queue);
        let removed = remove_client_jobs(&mut queue, self.id);
        let mut mb = lock(&self.mailbox.state);
        self.mailbox.epoch.fetch_add(1, Ordering::AcqRel);
        mb.in_flight.clear();
        drop(mb);
        self.mailbox.wake.notify_all();
        removed
    }

    /// Outcomes that are ready, oldest first.
    pub fn take_ready(&self) -> Vec<Outcome> {
        lock(&self.mailbox.state).done.drain(..).collect()
    }

    /// The outcome for `ticket` if it is ready (other outcomes stay in the mailbox).
    pub fn try_take(&self, ticket: Ticket) -> Option<Outcome> {
        let mut mb = lock(&self.mailbox.state);
        let pos = mb.done.iter().position(|o| o.ticket == ticket)?;
        mb.done.remove(pos)
    }

    /// Drops ready outcomes (after a flush they describe frames nobody wants any more).
    pub fn discard_ready(&self) {
        lock(&self.mailbox.state).done.clear();
    }

    /// Requests submitted and not answered yet.
    pub fn in_flight(&self) -> usize {
        lock(&self.mailbox.state).in_flight.len()
    }

    /// Blocks until the outcome for `ticket` is ready and returns it (other outcomes stay in the
    /// mailbox), or until [`Client::interrupt`].
    pub fn wait_for(&self, ticket: Ticket) -> Result<Outcome, WaitError> {
        let mut mb = lock(&self.mailbox.state);
        loop {
            if let Some(pos) = mb.done.iter().position(|o| o.ticket == ticket) {
                return Ok(mb.done.remove(pos).expect("position is in range"));
            }
            if mb.interrupted {
                return Err(WaitError::Interrupted);
            }
            if !mb.in_flight.contains(&ticket) {
                return Err(WaitError::Unknown);
            }
            mb = wait(&self.mailbox.wake, mb);
        }
    }

    /// Wakes up and refuses every [`Client::wait_for`] until [`Client::resume`] (flush-start,
    /// PAUSED→READY).
    pub fn interrupt(&self) {
        lock(&self.mailbox.state).interrupted = true;
        self.mailbox.wake.notify_all();
    }

    pub fn resume(&self) {
        lock(&self.mailbox.state).interrupted = false;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Removes `client`'s oldest queued groups until at most `keep` of them are left.
fn remove_oldest_groups(queue: &mut Queue, client: u64, keep: usize) -> Vec<Ticket> {
    let mut groups: Vec<Ticket> = Vec::new();
    for job in queue.jobs.iter().filter(|j| j.client == client) {
        if groups.last() != Some(&job.group) {
            groups.push(job.group);
        }
    }
    let drop_groups: HashSet<Ticket> = groups
        .iter()
        .take(groups.len().saturating_sub(keep))
        .copied()
        .collect();
    let mut removed = Vec::new();
    queue.jobs.retain(|job| {
        let gone = job.client == client && drop_groups.contains(&job.group);
        if gone {
            removed.push(job.ticket);
        }
        !gone
    });
    removed
}

fn remove_client_jobs(queue: &mut Queue, client: u64) -> Vec<Ticket> {
    let mut removed = Vec::new();
    queue.jobs.retain(|job| {
        let mine = job.client == client;
        if mine {
            removed.push(job.ticket);
        }
        !mine
    });
    removed
}

/// The worker loop: take the oldest job plus every queued job that can share its `caption`
/// call, run it, deliver the outcomes.
fn run(shared: Arc<Shared>) {
    loop {
        let batch = {
            let mut queue = lock(&shared.queue);
            loop {
                if queue.shutdown {
                    return;
                }
                if !queue.jobs.is_empty() {
                    break;
                }
                queue = wait(&shared.wake, queue);
            }
            take_batch(&mut queue)
        };
        caption_batch(&*shared.captioner, batch);
    }
}

fn take_batch(queue: &mut Queue) -> Vec<Job> {
    let mut batch = take_group(queue, 0);
    // A group larger than `max_batch` still goes in one call.
    let limit = batch[0].request.max_batch.max(1).max(batch.len());
    let mut i = 0;
    while batch.len() < limit && i < queue.jobs.len() {
        let size = group_len(queue, i);
        let job = &queue.jobs[i];
        // Prompts may differ: the model pads them into one batch. A group joins whole or not
        // at all, within every member's own limit.
        let fits = job.request.params == batch[0].request.params
            && batch.len() + size <= limit
            && job.request.max_batch.max(1) >= batch.len() + size;
        if fits {
            batch.extend(take_group(queue, i));
        } else {
            i += size;
        }
    }
    batch
}

/// The number of jobs in the group that starts at `i` (they are contiguous).
fn group_len(queue: &Queue, i: usize) -> usize {
    let group = queue.jobs[i].group;
    queue
        .jobs
        .iter()
        .skip(i)
        .take_while(|j| j.group == group)
        .count()
}

fn take_group(queue: &mut Queue, i: usize) -> Vec<Job> {
    let n = group_len(queue, i);
    queue.jobs.drain(i..i + n).collect()
}

/// One DEBUG line per model call: its size, time and tokens (and the first failure).
fn log_batch(results: &[Result<Caption, CaptionError>], took: Duration) {
    let tokens: usize = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|c| c.token_ids.len())
        .sum();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let ms = took.as_secs_f64() * 1e3;
    match results.iter().find_map(|r| r.as_ref().err()) {
        None => log::debug!("batch of {}: {ms:.1} ms, {tokens} tokens", results.len()),
        Some(e) => log::debug!(
            "batch of {}: {ms:.1} ms, {tokens} tokens, {failed} failed: {e}",
            results.len()
        ),
    }
}

fn caption_batch(captioner: &dyn Captioner, batch: Vec<Job>) {
    let items: Vec<BatchItem> = batch
        .iter()
        .map(|job| BatchItem {
            input: job.request.input.clone(),
            prompt: job.request.prompt.clone(),
            retry_transient: job.request.retry_transient,
            cancel: CancelToken {
                mailbox: job.mailbox.clone(),
                epoch: job.epoch,
            },
        })
        .collect();
    let params = batch[0].request.params.clone();

    let start = Instant::now();
    // A panicking model must not kill the worker (every element waiting on it would hang).
    let result = catch_unwind(AssertUnwindSafe(|| captioner.caption_batch(items, &params)));
    let inference_time = start.elapsed();
    let n = batch.len();
    let results: Vec<Result<Caption, CaptionError>> = match result {
        Ok(results) if results.len() == n => results,
        Ok(results) => {
            let msg = format!(
                "backend returned {} answers for {n} requests",
                results.len()
            );
            vec![Err(CaptionError::Internal(msg)); n]
        }
        Err(panic) => {
            let msg = crate::sync::panic_message(&*panic);
            vec![Err(CaptionError::Internal(format!("model panicked: {msg}"))); n]
        }
    };

    log_batch(&results, inference_time);

    // Each client sees all of its answers from this call at once (one lock per mailbox): a
    // client that finds the first answer of a batch must find the rest too, or it takes the
    // gap for a late answer (complete mode then hands its next samples over early, in a
    // batch of one).
    let answered_at = Instant::now();
    type Answered = (Job, Result<Caption, CaptionError>);
    let mut by_mailbox: Vec<(Arc<Mailbox>, Vec<Answered>)> = Vec::new();
    for (job, result) in batch.into_iter().zip(results) {
        match by_mailbox
            .iter_mut()
            .find(|(mailbox, _)| Arc::ptr_eq(mailbox, &job.mailbox))
        {
            Some((_, jobs)) => jobs.push((job, result)),
            None => by_mailbox.push((job.mailbox.clone(), vec![(job, result)])),
        }
    }
    for (mailbox, jobs) in by_mailbox {
        let mut mb = lock(&mailbox.state);
        for (job, result) in jobs {
            // A request cancelled while it ran is answered nowhere.
            if mb.in_flight.remove(&job.ticket) {
                mb.done.push_back(Outcome {
                    ticket: job.ticket,
                    prompt: job.request.prompt,
                    result,
                    inference_time,
                    batch_size: n,
                    answered_at,
                });
            }
        }
        drop(mb);
        mailbox.wake.notify_all();
    }
}

#[cfg(test)]
mod tests;
