//! Complete mode's window (`max-in-flight`): frames wait in the element until the answers of
//! their sample are back and leave in order; samples go to the model a chunk at a time, and
//! upstream waits only when the window is full.

use gst::subclass::prelude::*;

use super::state::HeldSample;
use super::{Blip2Caption, CAT, lock};
use crate::engine::{Request, WaitError};

/// Memory a complete-mode window may hold in frames, per sample of `max-in-flight`: beyond it
/// upstream waits even with fewer samples in flight (long intervals hold many frames between
/// samples). 1080p I420 frames are 3.1 MB, so about 10 of them per sample.
pub(super) const HELD_BYTES_PER_SAMPLE: usize = 32 << 20;

/// Whether upstream must wait: `window` samples in flight, or too many bytes of frames held.
/// (`window` 0: always, to drain.)
fn window_full(window: usize, in_flight: usize, held_bytes: usize) -> bool {
    in_flight >= window || held_bytes > window.saturating_mul(HELD_BYTES_PER_SAMPLE)
}

/// What the oldest held frame waits for.
enum Front {
    /// Nothing (no sample, or every answer back): it may leave.
    Ready,
    /// Its sample is prepared but not with the model yet.
    Unsent,
    /// This answer.
    Answer(crate::engine::Ticket),
}

impl Blip2Caption {
    /// Hands the held samples not yet with the model to it, all at once, when there are at
    /// least `chunk` of them (0: any). Submitting one at a time would let the idle worker take
    /// the first alone while the streaming thread prepares the rest, and on a CPU a batch of
    /// one costs almost as much as a batch of eight.
    pub(super) fn submit_held(&self, chunk: usize) -> Result<(), gst::FlowError> {
        let groups: Vec<Vec<Request>> = {
            let mut state = lock(&self.state);
            let unsent = state
                .held
                .iter()
                .filter(|h| h.sample.as_ref().is_some_and(|s| s.unsent.is_some()))
                .count();
            if unsent == 0 || unsent < chunk {
                return Ok(());
            }
            state
                .held
                .iter_mut()
                .filter_map(|h| h.sample.as_mut()?.unsent.take())
                .collect()
        };
        let client = self.client().ok_or(gst::FlowError::Flushing)?;
        let n = groups.len();
        let mut tickets = client.submit_groups(groups).into_iter();
        {
            // Only this (streaming) thread changes `held`: the samples just taken are the ones
            // handed over without tickets, in the same order.
            let mut state = lock(&self.state);
            for held in state.held.iter_mut() {
                if let Some(s) = held.sample.as_mut().filter(|s| !s.asked.handed()) {
                    s.asked.handed_over(tickets.next().unwrap_or_default());
                }
            }
        }
        gst::log!(CAT, imp = self, "{n} sample(s) handed to the model");
        lock(&self.stats).samples_taken += n as u64;
        Ok(())
    }

    /// Lets held frames leave in order: each sampled frame once its answers are back (with
    /// their meta), the frames after it behind it. Blocks for the oldest sample's answers while
    /// the window is full: `window` or more samples in flight, or more than `window` × 32 MiB
    /// of frames held (0: until every frame has left). Samples still waiting to be handed to
    /// the model go before it blocks.
    pub(super) fn release_held(&self, window: usize) -> Result<gst::FlowSuccess, gst::FlowError> {
        if lock(&self.state).failed {
            return Err(gst::FlowError::Error);
        }
        let mut flow = Ok(gst::FlowSuccess::Ok);
        loop {
            // Collect what is back for the oldest frame's sample; wait only when the window is
            // full.
            let complete = loop {
                let (front, full) = {
                    let state = lock(&self.state);
                    let Some(front) = state.held.front() else {
                        return flow;
                    };
                    let in_flight = state.held.iter().filter(|h| h.sample.is_some()).count();
                    let bytes: usize = state.held.iter().map(|h| h.buffer.size()).sum();
                    let front = match &front.sample {
                        None => Front::Ready,
                        Some(HeldSample {
                            unsent: Some(_), ..
                        }) => Front::Unsent,
                        Some(s) => s.asked.missing().map_or(Front::Ready, Front::Answer),
                    };
                    (front, window_full(window, in_flight, bytes))
                };
                let ticket = match front {
                    Front::Ready => break true,
                    Front::Unsent if !full => return flow,
                    Front::Unsent => {
                        // About to wait: what is prepared goes to the model first.
                        self.submit_held(0)?;
                        continue;
                    }
                    Front::Answer(ticket) => ticket,
                };
                let client = self.client().ok_or(gst::FlowError::Flushing)?;
                let outcome = match client.try_take(ticket) {
                    Some(outcome) => outcome,
                    None if !full => return flow,
                    None => {
                        self.submit_held(0)?;
                        match client.wait_for(ticket) {
                            Ok(outcome) => outcome,
                            Err(WaitError::Interrupted) => {
                                gst::debug!(
                                    CAT,
                                    imp = self,
                                    "flushing while waiting for the model"
                                );
                                return Err(gst::FlowError::Flushing);
                            }
                            // Cancelled under us (stopping): no caption, no cue.
                            Err(WaitError::Unknown) => break false,
                        }
                    }
                };
                let mut state = lock(&self.state);
                if let Some(s) = state.held.front_mut().and_then(|h| h.sample.as_mut()) {
                    let _ = s.asked.file(outcome);
                }
            };
            let Some(mut held) = lock(&self.state).held.pop_front() else {
                return flow;
            };
            if let Some(s) = held.sample.take() {
                match s.asked.answers() {
                    Ok((sample, outcomes)) if complete => {
                        self.emit(&sample, outcomes, Some(&mut held.buffer), false, None)?
                    }
                    Ok((sample, _)) | Err(sample) => self.resolve_lost(&sample),
                }
            }
            flow = self.send_frame(held.buffer, held.times);
            flow?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{HELD_BYTES_PER_SAMPLE, window_full};

    #[test]
    fn the_window_is_full_by_samples_or_by_bytes() {
        assert!(!window_full(8, 7, 0));
        assert!(window_full(8, 8, 0));
        // 1080p I420 frames: 3 110 400 bytes. With a 10 s interval at 30 fps one sample holds
        // 300 frames; the window stops upstream at 8 × 32 MiB.
        let frame = 3_110_400;
        assert!(!window_full(8, 1, 86 * frame));
        assert!(window_full(8, 1, 87 * frame));
        assert!(window_full(0, 0, 0));
        assert_eq!(HELD_BYTES_PER_SAMPLE, 32 << 20);
    }
}
