//! What `text_src` feeds: `text-mode=auto` picks the per-frame layout when the text reaches an
//! element that joins it with other streams.
//!
//! Such an element has several sink pads (muxers, overlays, compositors, selectors). It needs
//! the text to advance with the video: an aggregator muxer (qtmux/mp4mux) only moves a subtitle
//! track on real buffers and holds the video meanwhile, an overlay with `wait-text` holds each
//! frame until text covers it. An element with one sink pad (queue, tee, srtenc, webvttenc, a
//! sink) does not care when the text comes, so it gets whole cues; the walk goes on through its
//! source pads.

use gst::prelude::*;

/// Deeper than any real chain between `text_src` and its consumer; stops cycles.
const MAX_DEPTH: usize = 32;

/// The first element with more than one sink pad that text pushed on `pad` reaches, if any.
pub fn join_downstream(pad: &gst::Pad) -> Option<gst::Element> {
    visit(&pad.peer()?, 0)
}

fn visit(sink: &gst::Pad, depth: usize) -> Option<gst::Element> {
    if depth > MAX_DEPTH {
        return None;
    }
    // Out of a bin: the inner side of a source ghost pad; go on from the ghost pad's peer.
    if let Some(ghost) = sink
        .parent()
        .and_then(|p| p.downcast::<gst::GhostPad>().ok())
    {
        return visit(&ghost.peer()?, depth + 1);
    }
    // Into a bin: a sink ghost pad leads to its target.
    if let Some(ghost) = sink.downcast_ref::<gst::GhostPad>() {
        return visit(&ghost.target()?, depth + 1);
    }
    let element = sink.parent_element()?;
    if element.sink_pads().len() > 1 {
        return Some(element);
    }
    element
        .src_pads()
        .iter()
        .find_map(|src| visit(&src.peer()?, depth + 1))
}
