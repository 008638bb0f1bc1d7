#!/usr/bin/env python3
"""Reads blip2caption's answers from Python (PyGObject): the `blip2-caption` bus messages and
the `Blip2CaptionMeta` on video buffers, with two elements in series asking different prompts.

Needs Debian's python3-gi, python3-gst-1.0 and gir1.2-gstreamer-1.0 (run it with
/usr/bin/python3), and the plugin on GST_PLUGIN_PATH:

    export GST_PLUGIN_PATH=$PWD/target/release
    /usr/bin/python3 examples/python/read_answers.py --model Salesforce/blip2-opt-2.7b

Prints one JSON line per answer: {"from": "message" | "meta", "buffer-pts": ..., <the
answer's fields>}; the meta lines show every answer riding on a buffer, from both elements.
"""

import argparse
import json
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


# The handoff runs on the streaming thread and the bus loop on the main thread. print() writes
# the text and the newline separately, so two threads printing at once can share a line;
# one lock keeps every answer on its own line.
PRINT_LOCK = threading.Lock()


def emit(record):
    """Prints one answer as one JSON line."""
    with PRINT_LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def fields(structure):
    """A Gst.Structure as a dict (strings and integers, as blip2caption sends them)."""
    out = {}
    for i in range(structure.n_fields()):
        name = structure.nth_field_name(i)
        out[name] = structure.get_value(name)
    return out


def meta_answers(buffer):
    """Every answer on a buffer: one Blip2CaptionMeta whose `answers` array holds one
    structure per answer (per element and prompt)."""
    meta = buffer.get_custom_meta("Blip2CaptionMeta")
    if meta is None:
        return []
    return [fields(a) for a in meta.get_structure().get_value("answers")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="Salesforce/blip2-opt-2.7b",
                        help="snapshot folder or Hugging Face id")
    parser.add_argument("--seconds", type=int, default=2,
                        help="seconds of test video (one caption per second)")
    args = parser.parse_args()

    Gst.init(None)
    frames = 10 * args.seconds
    # Two elements in series: a caption, then a question about the same frames. complete mode:
    # each answer's meta is on the frame it describes.
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={frames} ! video/x-raw,width=320,height=240,framerate=10/1 "
        f"! blip2caption name=captioner model=\"{args.model}\" mode=complete "
        f"! blip2caption name=asker model=\"{args.model}\" mode=complete "
        f"prompt=\"Question: what colours are there? Answer:\" "
        f"! fakesink name=sink signal-handoffs=true "
        f"captioner.text_src ! fakesink asker.text_src ! fakesink"
    )

    def on_handoff(_sink, buffer, _pad):
        for answer in meta_answers(buffer):
            emit({"from": "meta", "buffer-pts": buffer.pts, **answer})

    pipeline.get_by_name("sink").connect("handoff", on_handoff)

    pipeline.set_state(Gst.State.PLAYING)
    bus = pipeline.get_bus()
    status = 0
    while True:
        msg = bus.timed_pop_filtered(
            Gst.CLOCK_TIME_NONE,
            Gst.MessageType.ELEMENT | Gst.MessageType.ERROR | Gst.MessageType.EOS,
        )
        if msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            print(f"error from {msg.src.get_name()}: {err.message}", file=sys.stderr)
            status = 1
            break
        if msg.type == Gst.MessageType.EOS:
            break
        s = msg.get_structure()
        if s is not None and s.get_name() == "blip2-caption":
            emit({"from": "message", **fields(s)})
    pipeline.set_state(Gst.State.NULL)
    return status


if __name__ == "__main__":
    sys.exit(main())
