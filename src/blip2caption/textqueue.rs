//! The text pad's own streaming thread. Captions, GAPs and text events are queued here and a
//! pad task pushes them, so the video thread never blocks on the text branch: a text sink
//! waiting for preroll, or `textoverlay` holding a caption until the video reaches its end,
//! would otherwise deadlock the one thread that feeds both.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use gst::prelude::*;

use crate::sync::{lock, wait};

#[derive(Debug)]
pub enum Item {
    Event(gst::Event),
    Buffer(gst::Buffer),
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Item>,
    flushing: bool,
    /// Last flow return of a text push, combined into the video flow by the element.
    flow: Option<Result<gst::FlowSuccess, gst::FlowError>>,
}

#[derive(Default)]
pub struct TextQueue {
    inner: Mutex<Inner>,
    wake: Condvar,
}

impl TextQueue {
    pub fn push_event(&self, event: gst::Event) {
        self.push(Item::Event(event));
    }

    pub fn push_buffer(&self, buffer: gst::Buffer) {
        self.push(Item::Buffer(buffer));
    }

    /// Queues a GAP, merged into the previous one when they touch: with one GAP per video
    /// frame, a text branch that is slow to start (preroll) keeps the queue at one item.
    pub fn push_gap(&self, start: gst::ClockTime, duration: gst::ClockTime) {
        let mut inner = lock(&self.inner);
        if inner.flushing {
            return;
        }
        if let Some(Item::Event(last)) = inner.items.back()
            && let gst::EventView::Gap(g) = last.view()
        {
            let (s, d) = g.get();
            if let Some(d) = d
                && s + d == start
            {
                let merged = gst::event::Gap::builder(s).duration(d + duration).build();
                *inner.items.back_mut().expect("checked above") = Item::Event(merged);
                return;
            }
        }
        inner.items.push_back(Item::Event(
            gst::event::Gap::builder(start).duration(duration).build(),
        ));
        drop(inner);
        self.wake.notify_all();
    }

    fn push(&self, item: Item) {
        let mut inner = lock(&self.inner);
        if inner.flushing {
            return;
        }
        inner.items.push_back(item);
        drop(inner);
        self.wake.notify_all();
    }

    /// Flush-start / deactivation: drop everything and wake the task so it can pause.
    pub fn set_flushing(&self) {
        let mut inner = lock(&self.inner);
        inner.flushing = true;
        inner.items.clear();
        drop(inner);
        self.wake.notify_all();
    }

    /// Flush-stop / activation.
    pub fn reset(&self) {
        let mut inner = lock(&self.inner);
        inner.flushing = false;
        inner.items.clear();
        inner.flow = None;
    }

    pub fn flow(&self) -> Option<Result<gst::FlowSuccess, gst::FlowError>> {
        lock(&self.inner).flow
    }

    /// One iteration of the pad task: wait for an item and push it.
    pub fn run_once(&self, pad: &gst::Pad) {
        let item = {
            let mut inner = lock(&self.inner);
            loop {
                if inner.flushing {
                    drop(inner);
                    let _ = pad.pause_task();
                    return;
                }
                if let Some(item) = inner.items.pop_front() {
                    break item;
                }
                inner = wait(&self.wake, inner);
            }
        };
        let flow = match item {
            Item::Buffer(buffer) => pad.push(buffer),
            Item::Event(event) => {
                let is_eos = event.type_() == gst::EventType::Eos;
                pad.push_event(event);
                if is_eos {
                    Err(gst::FlowError::Eos)
                } else {
                    return;
                }
            }
        };
        lock(&self.inner).flow = Some(flow);
        // Like any streaming task: stop on flushing, EOS or a fatal downstream error (the video
        // thread reports it); an unlinked text pad is fine and keeps going.
        if matches!(flow, Err(e) if e != gst::FlowError::NotLinked) {
            let _ = pad.pause_task();
        }
    }
}
