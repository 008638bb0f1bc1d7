//! Events and queries: the sink pad's events (stream-start, caps, segment, gap, flushes, EOS),
//! the text pad's task, and the LATENCY query on the src pads.

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::{Blip2Caption, CAT, lock};

impl Blip2Caption {
    pub(super) fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        log_event(pad, &event);
        // Frames held for their captions go out before any event that follows them.
        if event.is_serialized()
            && let Err(e) = self.release_held(0)
        {
            gst::debug!(CAT, imp = self, "not releasing held frames: {:?}", e);
        }
        match event.view() {
            EventView::StreamStart(ev) => {
                // Both streams belong to one group; make one up if upstream did not.
                let (event, group_id) = match ev.group_id() {
                    Some(group_id) => (event.clone(), group_id),
                    None => {
                        let group_id = gst::GroupId::next();
                        let event = gst::event::StreamStart::builder(ev.stream_id())
                            .flags(ev.stream_flags())
                            .group_id(group_id)
                            .seqnum(event.seqnum())
                            .build();
                        (event, group_id)
                    }
                };
                let stream_id = self
                    .textpad
                    .create_stream_id(&*self.obj(), Some("text"))
                    .to_string();
                // The previous stream's last caption ends with it. Sampling goes on in running
                // time (a `concat` of files continues the timeline, so a frame right at the
                // boundary is not sampled twice).
                self.end_text();
                {
                    let mut state = lock(&self.state);
                    state.text_caps_sent = false;
                    state.text_layout_chosen = false;
                    // A failed caption ended the previous stream, not this one (concat,
                    // gapless playback).
                    state.failed = false;
                }
                let text_start = gst::event::StreamStart::builder(&stream_id)
                    .flags(gst::StreamFlags::SPARSE)
                    .group_id(group_id)
                    .build();
                self.text_queue.push_event(text_start);
                self.srcpad.push_event(event)
            }
            EventView::Caps(ev) => {
                let info = match gst_video::VideoInfo::from_caps(ev.caps()) {
                    Ok(info) => info,
                    Err(_) => {
                        gst::error!(CAT, obj = pad, "unusable caps {}", ev.caps());
                        return false;
                    }
                };
                {
                    let mut state = lock(&self.state);
                    state.video_info = Some(info);
                    state.to_rgb = None;
                    state.scene_meter.invalidate();
                }
                // Text caps go out early: matroskamux waits for caps on every pad.
                self.ensure_text_caps();
                self.srcpad.push_event(event)
            }
            EventView::Segment(ev) => {
                let segment = match ev.segment().clone().downcast::<gst::ClockTime>() {
                    Ok(segment) => segment,
                    Err(_) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ("Only TIME segments are supported")
                        );
                        return false;
                    }
                };
                // A new segment is a new timeline: the open caption ends where the last frame
                // of the old one did.
                self.end_text();
                {
                    let mut state = lock(&self.state);
                    state.segment = segment;
                    state.next_pts = None;
                }
                self.ensure_text_caps();
                self.text_queue.push_event(event.clone());
                self.srcpad.push_event(event)
            }
            EventView::Gap(ev) => {
                // Upstream has no video for a while: the text pad has nothing there either.
                let (start, duration) = ev.get();
                let items = lock(&self.state).text.gap(start, duration);
                self.push_text(items);
                self.srcpad.push_event(event)
            }
            EventView::FlushStart(_) => {
                // Wake a chain function waiting for the model (its load or a caption), so the
                // flush can take the stream lock.
                self.model.interrupt();
                self.text_queue.set_flushing();
                let _ = self.textpad.push_event(event.clone());
                let _ = self.textpad.pause_task();
                self.srcpad.push_event(event)
            }
            EventView::FlushStop(_) => {
                self.reset_after_flush();
                lock(&self.flow_combiner).reset();
                let _ = self.textpad.push_event(event.clone());
                self.text_queue.reset();
                self.start_text_task();
                self.srcpad.push_event(event)
            }
            EventView::Eos(_) => {
                // Nothing is lost: captions still being computed are waited for, and the last
                // one ends with the last frame.
                self.end_text();
                self.text_queue.push_event(event.clone());
                self.srcpad.push_event(event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Waits for every outstanding caption, then ends the text of this stream or segment at
    /// the end of the last frame that went out.
    fn end_text(&self) {
        match self.drain() {
            Ok(()) => (),
            // A failed caption has posted its ERROR already; another would only repeat it.
            Err(gst::FlowError::Error) if lock(&self.state).failed => {
                gst::debug!(CAT, imp = self, "not draining after a failed caption")
            }
            // Nobody else will report a fatal flow met while draining (there is no chain call
            // to return it from, and a downstream element such as an appsink whose callback
            // fails posts nothing), and downstream would wait for an EOS that cannot come.
            Err(e) if !matches!(e, gst::FlowError::Flushing | gst::FlowError::Eos) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Internal data stream error."),
                    ["streaming stopped while draining, reason {:?}", e]
                );
            }
            Err(e) => gst::debug!(CAT, imp = self, "not draining: {:?}", e),
        }
        let items = {
            let mut state = lock(&self.state);
            match state.last_frame_end.take() {
                Some(end) => state.text.end(end),
                None => Vec::new(),
            }
        };
        self.push_text(items);
    }

    pub(super) fn start_text_task(&self) {
        let pad = self.textpad.downgrade();
        let queue = self.text_queue.clone();
        let res = self.textpad.start_task(move || {
            if let Some(pad) = pad.upgrade() {
                queue.run_once(&pad);
            }
        });
        if let Err(e) = res {
            gst::error!(CAT, imp = self, "cannot start the text task: {e}");
        }
    }

    pub(super) fn text_activate(
        &self,
        pad: &gst::Pad,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if active {
            self.text_queue.reset();
            self.start_text_task();
        } else {
            self.text_queue.set_flushing();
            pad.stop_task()
                .map_err(|e| gst::loggable_error!(CAT, "cannot stop the text task: {e}"))?;
        }
        Ok(())
    }

    pub(super) fn reset_after_flush(&self) {
        if let Some(client) = self.client() {
            client.cancel();
            client.discard_ready();
        }
        self.model.resume();
        let mut state = lock(&self.state);
        state.pending.clear();
        // Frames held for their captions are dropped with them.
        state.held.clear();
        state.sampler.reset();
        state.scene_gate.reset();
        state.next_pts = None;
        state.last_frame_end = None;
        state.text.reset();
        state.failed = false;
    }

    pub(super) fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let mut upstream = gst::query::Latency::new();
            if !self.sinkpad.peer_query(&mut upstream) {
                return false;
            }
            let (live, min, max) = upstream.result();
            if live {
                let ours = self.latency();
                q.set(
                    true,
                    min.saturating_add(ours),
                    max.map(|m| m.saturating_add(ours)),
                );
                gst::debug!(CAT, obj = pad, "latency: upstream {min}, ours {ours}");
            } else {
                q.set(false, min, max);
            }
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }
}

/// One LOG line per sink event. A segment or gap is shown through its typed times (an unset one
/// as `--:--:--`): the event's structure would print an unset stop or duration as
/// 18446744073709551615.
fn log_event(pad: &gst::Pad, event: &gst::Event) {
    match event.view() {
        gst::EventView::Segment(s) => gst::log!(CAT, obj = pad, "segment {:?}", s.segment()),
        gst::EventView::Gap(g) => {
            let (pts, duration) = g.get();
            gst::log!(CAT, obj = pad, "gap at {pts} for {}", duration.display())
        }
        _ => gst::log!(CAT, obj = pad, "event {:?}", event),
    }
}
