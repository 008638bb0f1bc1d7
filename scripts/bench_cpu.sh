#!/usr/bin/env bash
# CPU comparison with PyTorch in one run (docs/benchmarks.md, "CPU"): the same random-weight
# model (preset mid-opt unless PRESET is set) through examples/bench (ours, f32 and dtype q8_0)
# and scripts/bench_hf.py (transformers, eager, f32), alternating ROUNDS times so that all see
# the same machine load, then the median per-caption time of each and the ratios to PyTorch.
#
#   scripts/bench_cpu.sh [ROUNDS]          # default 3; BATCH=1,8 NEW_TOKENS=20 RUNS=3
#   CARGO_FEATURES=mkl scripts/mkl_env.sh scripts/bench_cpu.sh   # ours built with Intel MKL
#
# PyTorch comes from a virtual environment ($VENV, default .venv-bench) with the pinned versions
# of scripts/requirements-fixtures.txt, created on first use from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PRESET=${PRESET:-mid-opt}
BATCH=${BATCH:-1,8}
NEW_TOKENS=${NEW_TOKENS:-20}
RUNS=${RUNS:-3}
VENV=${VENV:-.venv-bench}

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV with torch + transformers (scripts/requirements-fixtures.txt)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r scripts/requirements-fixtures.txt
fi

features=()
[ -n "${CARGO_FEATURES:-}" ] && features=(--features "$CARGO_FEATURES")
cargo build -q --release --example bench "${features[@]}"
target=${CARGO_TARGET_DIR:-target}
bench="$target/release/examples/bench"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bench" --print-config "$PRESET" > "$out/config.json"
for round in $(seq "$ROUNDS"); do
    echo "== round $round/$ROUNDS (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$bench" --preset "$PRESET" --batch "$BATCH" --new-tokens "$NEW_TOKENS" --runs "$RUNS" \
        --device cpu --dtype f32 > "$out/ours.$round.json"
    "$bench" --preset "$PRESET" --batch "$BATCH" --new-tokens "$NEW_TOKENS" --runs "$RUNS" \
        --device cpu --dtype q8_0 > "$out/q8.$round.json"
    "$VENV/bin/python" scripts/bench_hf.py --config "$out/config.json" --batch "$BATCH" \
        --new-tokens "$NEW_TOKENS" --runs "$RUNS" > "$out/torch.$round.json"
done

python3 - "$out" "$ROUNDS" "$PRESET" <<'EOF'
import json, statistics, sys, platform
out, rounds, preset = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(kind):
    return [json.load(open(f"{out}/{kind}.{r}.json")) for r in range(1, rounds + 1)]
ours, q8, torch = load("ours"), load("q8"), load("torch")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"CPU: {cpu}; threads: {torch[0]['threads']}; preset {preset}; {ours[0]['new_tokens']} new tokens;"
      f" {rounds} rounds, median of per-round medians")
print(f"ours: {ours[0]['implementation']}; PyTorch: {torch[0]['implementation']}")
print("| batch | ours f32 ms/caption | ours q8_0 ms/caption | PyTorch f32 ms/caption | f32 / PyTorch | q8_0 / PyTorch "
      "| image encoding ms/batch: ours f32 / q8_0 / PyTorch | decoding ms/batch: ours f32 / q8_0 |")
print("|---|---|---|---|---|---|---|---|")
for i, r in enumerate(ours[0]["results"]):
    b = r["batch"]
    med = lambda runs, key: statistics.median(x["results"][i][key] for x in runs)
    o, q, t = med(ours, "per_caption_ms"), med(q8, "per_caption_ms"), med(torch, "per_caption_ms")
    ov, qv, tv = med(ours, "vision_ms"), med(q8, "vision_ms"), med(torch, "vision_ms")
    og, qg = med(ours, "generate_ms"), med(q8, "generate_ms")
    print(f"| {b} | {o:.0f} | {q:.0f} | {t:.0f} | {o / t:.2f} | {q / t:.2f} | {ov:.0f} / {qv:.0f} / {tv:.0f} | {og:.0f} / {qg:.0f} |")
EOF
