#!/usr/bin/env bash
# GPU benchmark, ours and transformers' side by side, in one run on the lent GPU machine.
#
# Here (no GPU):
#   source ../shared/cuda/toolkit.sh
#   cargo build --release --features cuda --example bench
#   mkdir -p devcarry && cp target/release/examples/bench devcarry/ && strip devcarry/bench
#   cargo run --release --example bench -- --print-config blip2-opt-2.7b > devcarry/blip2-opt-2.7b.json
#   cargo run --release --example bench -- --print-config blip2-flan-t5-xl > devcarry/blip2-flan-t5-xl.json
# There (device tool, carry devcarry):  bash scripts/gpu_bench.sh devcarry "$OUT"
# Each line of $OUT/bench.jsonl is one report; compare per_caption_ms / captions_per_s per batch.
set -uo pipefail
CARRY=${1:-devcarry}
OUT=${2:-${OUT:-/tmp/bench-out}}
BATCHES=${BATCHES:-1,8,32}
TOKENS=${TOKENS:-20}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
run() { echo ">> $*" >&2; timeout "${STEP_TIMEOUT:-170}" "$@" | tr -d '\n' >> "$OUT/bench.jsonl"; echo >> "$OUT/bench.jsonl"; }
for preset in blip2-opt-2.7b blip2-flan-t5-xl; do
  dtype=f16; hf_dtype=float16
  [ "$preset" = blip2-flan-t5-xl ] && dtype=bf16 && hf_dtype=bfloat16
  run "$CARRY/bench" --preset "$preset" --device cuda:0 --dtype "$dtype" --batch "$BATCHES" --new-tokens "$TOKENS" --runs 3
  run python3 scripts/bench_hf.py --config "$CARRY/$preset.json" --device cuda --dtype "$hf_dtype" \
      --batch "$BATCHES" --new-tokens "$TOKENS" --runs 3
done
cat "$OUT/bench.jsonl"
