#!/usr/bin/env bash
# Captions a short clip into an SRT and an MKV with a subtitle track.
#   scripts/demo.sh [MODEL] [INPUT_VIDEO]
# MODEL: a snapshot folder or a Hugging Face id (downloaded into the Hugging Face cache on first
# use, with progress; HF_HUB_OFFLINE=1 uses the cache only). Without it the bundled tiny test
# model is used: its captions are gibberish (random weights), it only shows the plumbing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for bin in gst-launch-1.0 gst-inspect-1.0 pkg-config; do command -v "$bin" >/dev/null || need+=("$bin"); done
pkg-config --exists gstreamer-video-1.0 2>/dev/null || need+=(dev)
gst-inspect-1.0 srtenc >/dev/null 2>&1 || need+=(bad)
gst-inspect-1.0 x264enc >/dev/null 2>&1 || need+=(ugly)
if ((${#need[@]})); then
  echo ">> installing GStreamer packages (missing: ${need[*]})"
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update
  $SUDO apt-get install -y libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav pkg-config
fi

MODEL="${1:-}"
if [ -z "$MODEL" ]; then
  MODEL="$PWD/tests/fixtures/models/opt-tiny"
  echo "################################################################################"
  echo "## NO MODEL GIVEN: using the bundled TINY TEST MODEL ($MODEL)."
  echo "## Its captions are meaningless. For real captions (downloads ~15 GB once):"
  echo "##   scripts/demo.sh Salesforce/blip2-opt-2.7b"
  echo "################################################################################"
fi

cargo build --release
TARGET="${CARGO_TARGET_DIR:-$PWD/target}/release"
export GST_PLUGIN_PATH="$TARGET${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
OUT="${OUT:-$PWD/demo-out}"
mkdir -p "$OUT"

if [ -n "${2:-}" ]; then
  SRC=(filesrc location="$2" ! decodebin ! videoconvert)
else
  SRC=(videotestsrc num-buffers=150 pattern=smpte ! video/x-raw,width=320,height=240,framerate=30/1)
fi

# gst-launch prints the element's Progress messages: the download (with percent) on first use.
gst-launch-1.0 -e "${SRC[@]}" ! blip2caption name=c model="$MODEL" interval=1000000000 \
  ! queue ! videoconvert ! x264enc ! m.video_0 \
  c.text_src ! tee name=t \
  t. ! queue ! srtenc ! filesink location="$OUT/demo.srt" \
  t. ! queue ! m.subtitle_0 \
  matroskamux name=m ! filesink location="$OUT/demo.mkv"

echo ">> $OUT/demo.srt:"
cat "$OUT/demo.srt"
echo ">> $OUT/demo.mkv written (play with: gst-play-1.0 $OUT/demo.mkv)"
