#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run): installs the system packages the
# build and the GStreamer tests need when they are missing, then format, lint and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# plugins-ugly: x264enc, for the mp4mux tests (mp4mux takes no raw or JPEG video).
packages=(pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base
          gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
          gstreamer1.0-x gstreamer1.0-tools)
# PyGObject and GStreamer's introspection data: examples/python runs against the installed plugin.
packages+=(python3-gi python3-gst-1.0 gir1.2-gstreamer-1.0)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# tests/hub.rs checks that Python's huggingface_hub finds the models the plugin downloads.
if ! python3 -c "import huggingface_hub" 2>/dev/null; then
  echo "== installing huggingface_hub (PyPI)"
  python3 -m pip install -q "huggingface_hub==2.4.0" \
    || python3 -m pip install -q --break-system-packages "huggingface_hub==2.4.0"
fi
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --release --locked --all-targets -- -D warnings
echo "== cargo test --release"
cargo test --release --locked
echo "== the plugin as GStreamer loads it: gst-inspect and a README pipeline (tiny model)"
cargo build --release --locked --lib
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/release"
scratch="$(mktemp -d)"
GST_PLUGIN_PATH="$target_dir" GST_REGISTRY="$scratch/registry.bin" gst-inspect-1.0 blip2caption > "$scratch/inspect.txt"
grep -q "text_src" "$scratch/inspect.txt"
grep -q "Blip2CaptionMeta" "$scratch/inspect.txt"  # the description names the meta and message
GST_PLUGIN_PATH="$target_dir" GST_REGISTRY="$scratch/registry.bin" gst-launch-1.0 -q \
  videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1 \
  ! blip2caption model="$PWD/tests/fixtures/models/opt-tiny" name=c ! fakesink \
  c.text_src ! srtenc ! filesink location="$scratch/out.srt"
cues=$(grep -c -- "-->" "$scratch/out.srt")
[ "$cues" = 2 ] || { echo "expected 2 SRT cues from 2 s of video, got $cues"; exit 1; }

echo "== cargo cinstall into a temporary prefix; GStreamer, Python and C load the plugin from there"
# cargo-c builds against the cargo library of its release; 0.10.24 is the newest that the
# pinned Rust (1.95) compiles. It is only on crates.io (no Debian package is new enough), so it
# is built from source once (14 CPU-minutes, then cached in ~/.cargo/bin). cinstall builds the
# plugin a second time, in target/x86_64-unknown-linux-gnu (cargo-c always names the target):
# about 10 CPU-minutes.
if ! cargo cinstall --version >/dev/null 2>&1; then
  cargo install --locked cargo-c --version "0.10.24+cargo-0.98.0"
fi
# The README's two commands: Debian's system layout staged under a destdir, and a prefix.
stage="$scratch/stage"
cargo cinstall --release --locked --library-type cdylib --prefix /usr \
  --libdir /usr/lib/x86_64-linux-gnu --destdir "$stage"
[ -f "$stage/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstblip2.so" ] \
  || { echo "cargo cinstall staged no plugin in Debian's plugin folder"; exit 1; }
prefix="$scratch/prefix"
cargo cinstall --release --locked --library-type cdylib --prefix "$prefix" --libdir "$prefix/lib"
installed="$prefix/lib/gstreamer-1.0/libgstblip2.so"
[ -f "$installed" ] || { echo "cargo cinstall did not install $installed"; exit 1; }
[ "$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --variable=libdir gstblip2)" = "$prefix/lib" ] \
  || { echo "no pkg-config file gstblip2.pc for the prefix"; exit 1; }
GST_PLUGIN_PATH="$prefix/lib/gstreamer-1.0" GST_REGISTRY="$scratch/installed.bin" \
  gst-inspect-1.0 blip2caption > "$scratch/installed.txt"
grep -q "Filename.*$installed" "$scratch/installed.txt" \
  || { echo "gst-inspect did not load the installed plugin:"; cat "$scratch/installed.txt"; exit 1; }
# Reading every answer from Python (Debian's PyGObject, so Debian's python3) and from C, two
# elements in series, from the installed plugin.
export GST_PLUGIN_PATH="$prefix/lib/gstreamer-1.0" GST_REGISTRY="$scratch/installed.bin"
/usr/bin/python3 tests/python/test_read_answers.py "$PWD/tests/fixtures/models/opt-tiny"
# shellcheck disable=SC2046
cc -Wall -Werror -o "$scratch/read_answers" examples/c/read_answers.c $(pkg-config --cflags --libs gstreamer-1.0)
"$scratch/read_answers" "$PWD/tests/fixtures/models/opt-tiny" > "$scratch/c.txt"
[ "$(grep -c '^captioner \[\] ' "$scratch/c.txt")" = 2 ] \
  && [ "$(grep -c '^asker \[Question: what colours are there? Answer:\] ' "$scratch/c.txt")" = 2 ] \
  || { echo "examples/c/read_answers.c: expected 2 answers from each element:"; cat "$scratch/c.txt"; exit 1; }
unset GST_PLUGIN_PATH GST_REGISTRY
rm -rf "$scratch"

echo "== benchmark smoke run (CPU, small preset)"
cargo run --release --locked --example bench -- --preset small-opt --batch 1,2 --new-tokens 4 --runs 1

# The CUDA variant is compiled (not run: no GPU here) when the CUDA toolkit script that sits
# beside the checkout is available; it installs nvcc from PyPI wheels. Type-checking needs no
# linking, so the toolkit's link flags are left out and the CPU build's artifacts are reused.
toolkit="$(cd .. && pwd)/shared/cuda/toolkit.sh"
if [ "${SKIP_CUDA_CHECK:-0}" = 1 ]; then
  echo "== CUDA compile check skipped (SKIP_CUDA_CHECK=1)"
elif [ -f "$toolkit" ]; then
  echo "== cargo check --features cuda (compile-only)"
  (
    saved_rustflags="${RUSTFLAGS-}"
    # shellcheck disable=SC1090
    source "$toolkit" >/dev/null
    export RUSTFLAGS="$saved_rustflags"
    cargo check --release --locked --features cuda --all-targets
  )
else
  echo "== CUDA compile check skipped: $toolkit not found"
fi
