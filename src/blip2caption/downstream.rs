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

/// Whether text pushed on `pad` reaches an element with more than one sink pad.
pub fn reaches_a_join(pad: &gst::Pad) -> bool {
    pad.peer().is_some_and(|peer| visit(&peer, 0))
}

fn visit(sink: &gst::Pad, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    // Out of a bin: the inner side of a source ghost pad; go on from the ghost pad's peer.
    if let Some(ghost) = sink
        .parent()
        .and_then(|p| p.downcast::<gst::GhostPad>().ok())
    {
        return ghost.peer().is_some_and(|peer| visit(&peer, depth + 1));
    }
    // Into a bin: a sink ghost pad leads to its target.
    if let Some(ghost) = sink.downcast_ref::<gst::GhostPad>() {
        return ghost.target().is_some_and(|t| visit(&t, depth + 1));
    }
    let Some(element) = sink.parent_element() else {
        return false;
    };
    if element.sink_pads().len() > 1 {
        return true;
    }
    element
        .src_pads()
        .iter()
        .any(|src| src.peer().is_some_and(|peer| visit(&peer, depth + 1)))
}
