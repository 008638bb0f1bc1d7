#!/usr/bin/env bash
# The GPU check (issue 8): the test suite on CUDA and the benchmark, in one call of the device
# tool (at most 8 minutes). Nothing is built on the GPU machine: it has no cargo and no
# GStreamer, so everything is built and packed here first.
#
# Here (no GPU needed):
#   scripts/gpu_check.sh pack
#     Sources the CUDA toolkit script (default ../shared/cuda/toolkit.sh beside the checkout;
#     CUDA_TOOLKIT_SH overrides), builds the CUDA test binaries (lib, parity, device) and the
#     bench example into target-cuda/ (CUDA_TARGET_DIR overrides; a clean build takes about
#     30 minutes on 2 cores), strips and packs them into devcarry/gpu-check.tar.xz, downloads
#     the GStreamer runtime .debs into devcarry/debs/, checks with readelf that every library
#     the binaries need is carried or comes with the GPU machine's CUDA and base system, and
#     checks that devcarry/ fits the device tool's 64 MiB. (The CUDA binaries cannot start
#     here: they need the driver's libcuda.so.1.)
# There (device tool: carry ["devcarry"], timeout_s 480):
#   bash scripts/gpu_check.sh run
#     Runs the packed tests with GST_BLIP2_TEST_DEVICE=cuda:0, then the bench (blip2-opt-2.7b
#     f16 and blip2-flan-t5-xl bf16, batch 1/8/32, 20 new tokens, 3 runs); with time left,
#     transformers' half-precision tokens on the fixtures (compared by the CUDA-only parity test
#     half_precision_matches_transformers_on_this_device, skipped in the first pass because it
#     needs them) and transformers' bench beside ours. Prints one JSON object last (also
#     $OUT/gpu-check.json): the GPU, the bench reports and "cuda_tests": {"passed", "failed"}.
#     Commit it unedited as docs/benchmarks/<gpu>-<date>.json.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
carry="$root/devcarry"
TESTS=(lib parity device)
# Needs transformers' tokens from this GPU (scripts/half_reference.py), so it runs last.
HALF_TEST=half_precision_matches_transformers_on_this_device
PRESETS=("blip2-opt-2.7b f16 float16" "blip2-flan-t5-xl bf16 bfloat16")

pack() {
  set -e
  local toolkit=${CUDA_TOOLKIT_SH:-$root/../shared/cuda/toolkit.sh}
  [ -f "$toolkit" ] || { echo "gpu_check: no CUDA toolkit script at $toolkit (set CUDA_TOOLKIT_SH)" >&2; exit 1; }
  cd "$root"
  # The toolkit's -L flags are not needed (LIBRARY_PATH finds the stubs) and would change
  # RUSTFLAGS, which rebuilds every dependency; keep the caller's.
  local saved_rustflags="${RUSTFLAGS-}"
  # shellcheck disable=SC1090
  source "$toolkit" >/dev/null
  export RUSTFLAGS="$saved_rustflags"
  export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$root/target-cuda}
  local args=(--release --locked --features cuda --message-format=json-render-diagnostics)
  local json
  json=$(mktemp)
  nice -n 10 cargo test "${args[@]}" --no-run --lib --test parity --test device >"$json"
  nice -n 10 cargo build "${args[@]}" --example bench >>"$json"
  rm -rf "$carry" && mkdir -p "$carry/stage/bin" "$carry/debs"
  python3 - "$json" "$carry/stage/bin" <<'EOF'
import json, shutil, sys
names = {"gst-plugin-blip2": "lib", "gstblip2": "lib", "parity": "parity", "device": "device", "bench": "bench"}
found = {}
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        name = names.get(m["target"]["name"])
        if name:
            found[name] = m["executable"]
for name, exe in sorted(found.items()):
    shutil.copy(exe, f"{sys.argv[2]}/{name}")
missing = {"lib", "parity", "device", "bench"} - set(found)
sys.exit(f"gpu_check: no executable for {sorted(missing)}" if missing else 0)
EOF
  rm -f "$json"
  strip "$carry"/stage/bin/*
  git -C "$root" rev-parse HEAD >"$carry/stage/commit.txt" 2>/dev/null || echo unknown >"$carry/stage/commit.txt"
  # One solid archive: the binaries share most of their bytes (candle's PTX, the model code).
  tar -C "$carry/stage" -cf - . | xz -9e -T1 --lzma2=dict=192MiB >"$carry/gpu-check.tar.xz"
  (cd "$carry/debs" && apt-get download libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 \
     gstreamer1.0-plugins-base liborc-0.4-0 libglib2.0-0 libunwind8 libdw1 libelf1 >/dev/null)
  check_libraries
  rm -rf "$carry/stage"
  local size
  size=$(du -sb "$carry" | cut -f1)
  echo "gpu_check: devcarry/ is $((size / 1024 / 1024)) MiB ($size bytes):"
  ls -l "$carry" "$carry/debs" | sed 's/^/  /'
  [ "$size" -le $((64 * 1024 * 1024)) ] || { echo "gpu_check: devcarry/ exceeds 64 MiB" >&2; exit 1; }
  echo "gpu_check: ready; run: bash scripts/gpu_check.sh run  (device tool, carry [\"devcarry\"])"
}

# Every NEEDED entry of the binaries, of the shared libraries in the .debs and of the GStreamer
# plugins the tests load (appsrc: app, fakesink: coreelements) and the plugin scanner must be
# carried or be one the GPU machine provides: the CUDA libraries (driver and toolkit) or its base
# system. The other plugins of gstreamer1.0-plugins-base (ogg, vorbis, ...) may lack libraries
# there; GStreamer then skips them with a warning, and no test uses them.
check_libraries() {
  local tree
  tree=$(mktemp -d)
  for f in "$carry"/debs/*.deb; do dpkg -x "$f" "$tree"; done
  local provided
  provided=" $(echo libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 \
    libnvrtc.so.13 libc.so.6 libm.so.6 libgcc_s.so.1 libstdc++.so.6 ld-linux-x86-64.so.2 \
    libpthread.so.0 libdl.so.2 librt.so.1 libz.so.1 libffi.so.8 libpcre2-8.so.0 libmount.so.1 \
    libselinux.so.1 liblzma.so.5 libzstd.so.1 libbz2.so.1.0) "
  local bad=0
  echo "gpu_check: libraries the binaries need (readelf -d):"
  for bin in "$carry"/stage/bin/*; do
    echo "  $(basename "$bin"): $(readelf -d "$bin" | awk '/NEEDED/ {gsub(/[][]/, "", $5); printf "%s ", $5}')"
  done
  local used=()
  for name in libgstapp.so libgstcoreelements.so gst-plugin-scanner; do
    local file
    file=$(find "$tree" -name "$name" -type f -print -quit)
    [ -n "$file" ] || { echo "gpu_check: $name is not in the carried .debs" >&2; bad=1; continue; }
    used+=("$file")
  done
  local needed
  needed=$( { readelf -d "$carry"/stage/bin/* "${used[@]}" 2>/dev/null
              find "$tree" -name '*.so*' -type f -not -path '*/gstreamer-1.0/*' -exec readelf -d {} + 2>/dev/null
            } | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}' | sort -u)
  for lib in $needed; do
    if [[ "$provided" == *" $lib "* ]] || [ -n "$(find "$tree" -name "$lib" -print -quit)" ]; then
      continue
    fi
    echo "gpu_check: $lib is needed but neither carried nor provided by the GPU machine" >&2
    bad=1
  done
  rm -rf "$tree"
  [ "$bad" = 0 ] || exit 1
  echo "gpu_check: every needed library is carried or provided"
}

run() {
  local start out work json
  start=$(date +%s)
  out=${OUT:-/tmp/gpu-check-out}
  work=/tmp/gpu-check
  mkdir -p "$out" "$work"
  left() { echo $((460 - ($(date +%s) - start))); }
  # A step's time limit: `want` seconds, or what is left of the 460 s, at least 5.
  limit() { local l; l=$(($(left) - 10)); [ "$l" -lt "$1" ] || l=$1; [ "$l" -gt 5 ] || l=5; echo "$l"; }
  export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
  local gpu
  gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
  echo "== $gpu"
  # Python's lzma, not xz(1), which the GPU machine may lack.
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
    "$carry/gpu-check.tar.xz" "$work"
  mkdir -p /tmp/gst && for f in "$carry"/debs/*.deb; do dpkg -x "$f" /tmp/gst; done
  local L=/tmp/gst/usr/lib/x86_64-linux-gnu
  export LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH GST_PLUGIN_SYSTEM_PATH=$L/gstreamer-1.0 \
    GST_PLUGIN_SCANNER=$L/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner GST_REGISTRY=/tmp/gstreg.bin
  # The tests find the fixtures in this checkout, and run the model on the GPU.
  export CARGO_MANIFEST_DIR=$root GST_BLIP2_TEST_DEVICE=cuda:0

  for t in "${TESTS[@]}"; do
    echo "== tests: $t"
    timeout "$(limit 100)" "$work/bin/$t" --skip "$HALF_TEST" >"$out/test-$t.log" 2>&1
    echo "   exit $? ($(grep -h '^test result' "$out/test-$t.log" | tail -1))"
    grep -E '^test .* FAILED$|panicked' "$out/test-$t.log" | head -20
  done
  for p in "${PRESETS[@]}"; do
    set -- $p
    echo "== bench $1 $2 ($(left) s left)"
    timeout "$(limit 150)" "$work/bin/bench" --preset "$1" --device cuda:0 --dtype "$2" --batch 1,8,32 \
      --new-tokens 20 --runs 3 >"$out/bench-$1.json" 2>"$out/bench-$1.err"
    echo "   exit $?"; tail -3 "$out/bench-$1.err"
  done
  if [ "$(left)" -gt 90 ]; then
    echo "== transformers half-precision tokens on the fixtures ($(left) s left)"
    if timeout 80 python3 "$root/scripts/half_reference.py" --out "$out/half_reference.json" \
        >"$out/half_reference.log" 2>&1; then
      GST_BLIP2_HALF_REFERENCE="$out/half_reference.json" timeout 60 "$work/bin/parity" --exact \
        "$HALF_TEST" >"$out/test-half.log" 2>&1
      echo "   exit $? ($(grep -h '^test result' "$out/test-half.log" | tail -1))"
    else
      echo "   half_reference.py failed:"; tail -5 "$out/half_reference.log"
    fi
  fi
  for p in "${PRESETS[@]}"; do
    set -- $p
    if [ "$(left)" -gt 100 ]; then
      echo "== transformers bench $1 $3 ($(left) s left)"
      # The preset as transformers JSON; made there, as the CUDA build needs libcuda.so.1 to start.
      "$work/bin/bench" --print-config "$1" >"$work/preset-$1.json"
      timeout $(($(left) - 10)) python3 "$root/scripts/bench_hf.py" --config "$work/preset-$1.json" \
        --device cuda --dtype "$3" --batch 1,8,32 --new-tokens 20 --runs 3 \
        >"$out/bench-hf-$1.json" 2>"$out/bench-hf-$1.err"
      echo "   exit $?"
    fi
  done

  python3 - "$out" "$gpu" "$(cat "$work/commit.txt")" <<'EOF' | tee "$out/gpu-check.json"
import datetime, glob, json, os, re, sys
out, gpu, commit = sys.argv[1:4]
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None
tests, passed, failed = {}, 0, 0
for log in sorted(glob.glob(f"{out}/test-*.log")):
    name = os.path.basename(log)[5:-4]
    m = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", open(log, errors="replace").read())
    p, f = (int(m[-1][0]), int(m[-1][1])) if m else (0, 1)  # no result line: it crashed
    tests[name] = {"passed": p, "failed": f, "completed": bool(m)}
    passed, failed = passed + p, failed + f
report = {
    "gpu": gpu,
    "date": datetime.date.today().isoformat(),
    "commit": commit,
    "cuda_tests": {"passed": passed, "failed": failed},
    "tests": tests,
    "bench": [load(p) for p in sorted(glob.glob(f"{out}/bench-blip2-*.json"))],
    "transformers": [load(p) for p in sorted(glob.glob(f"{out}/bench-hf-*.json"))],
}
print(json.dumps(report, indent=1))
EOF
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: scripts/gpu_check.sh pack|run" >&2; exit 2 ;;
esac
