#!/usr/bin/env bash
# The CPU figures of docs/PERFORMANCE.md: SiT-B/4 on 32x32x4 latents, batch 8, fp32 student, SRA layers 3 -> 8,
# with a bf16 and an fp32 teacher, then the fp32 teacher with fused AdamW. Each run prints its JSON as the last line;
# the machine load (uptime) is logged before each run because the figures depend on it.
# Usage: benchmarks/cpu_sra_overhead.sh [OUT_DIR (runs/bench)] [STEPS (5)]   (about 10-20 minutes on an idle 2-core CPU)
set -euo pipefail
out=${1:-runs/bench}; steps=${2:-5}
mkdir -p "$out"
common=(--model SiT-B/4 --input-size 32 --in-channels 4 --batch-size 8 --block-out-s 3 --block-out-t 8
        --device cpu --warmup 1 --steps "$steps")
for variant in "teacher-bf16:--teacher-bf16 --adamw default" "teacher-fp32:--no-teacher-bf16 --adamw default" \
               "teacher-fp32-fused-adamw:--no-teacher-bf16 --adamw fused"; do
  name=${variant%%:*}; flags=${variant#*:}
  echo "== $name: $(uptime)" | tee -a "$out/uptime.log"
  # shellcheck disable=SC2086
  sra bench "${common[@]}" $flags | tee "$out/$name.log"
done
echo "== done: $(uptime)" | tee -a "$out/uptime.log"
