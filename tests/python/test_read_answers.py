#!/usr/bin/env python3
"""Runs examples/python/read_answers.py against a model (the tiny test model in CI) and checks
what Python sees: every answer of both elements through the bus and through
`buffer.get_custom_meta("Blip2CaptionMeta")`, with the fields and types docs/element.md lists.

    GST_PLUGIN_PATH=... /usr/bin/python3 tests/python/test_read_answers.py MODEL
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "examples", "python", "read_answers.py")
QUESTION = "Question: what colours are there? Answer:"
SECOND = 1_000_000_000
FIELDS = {
    "element": str, "prompt": str, "text": str, "pts": int, "running-time": int,
    "stream-time": int, "duration": int, "model": str, "tokens": int,
    "inference-time": int, "batch-size": int,
}


def main():
    model = sys.argv[1]
    out = subprocess.run(
        [sys.executable, EXAMPLE, "--model", model, "--seconds", "2"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise AssertionError(f"read_answers.py printed a line that is not one JSON answer: {line!r}") from err
    messages = [l for l in lines if l["from"] == "message"]
    metas = [l for l in lines if l["from"] == "meta"]

    for answer in messages + metas:
        for name, kind in FIELDS.items():
            assert isinstance(answer[name], kind), (name, answer)
        assert answer["model"] == model, answer
        assert 1 <= answer["tokens"] <= 20, answer  # max-new-tokens defaults to 20
        assert answer["inference-time"] > 0, answer
        assert answer["batch-size"] >= 1, answer
        # A plain segment from 0: running time and stream time are the PTS.
        assert answer["running-time"] == answer["pts"] == answer["stream-time"], answer
        assert answer["duration"] == SECOND, answer

    def key(a):
        return (a["element"], a["prompt"], a["pts"])

    expected = sorted(
        (element, prompt, pts)
        for element, prompt in (("captioner", ""), ("asker", QUESTION))
        for pts in (0, SECOND)
    )
    assert sorted(map(key, messages)) == expected, messages
    assert sorted(map(key, metas)) == expected, metas

    # complete mode: the meta is on the analysed frame, with both elements' answers, the
    # upstream element's first.
    for pts in (0, SECOND):
        on_frame = [m for m in metas if m["buffer-pts"] == pts]
        assert [m["element"] for m in on_frame] == ["captioner", "asker"], on_frame
    # The meta carries the same answer as the message.
    texts = {key(m): m["text"] for m in messages}
    assert all(texts[key(m)] == m["text"] for m in metas)
    print(f"read_answers.py: {len(messages)} messages and {len(metas)} meta answers as documented")


if __name__ == "__main__":
    main()
