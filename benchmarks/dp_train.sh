#!/usr/bin/env bash
# The differential-privacy measurement on brain-t1 at 64²: one DP model (DP-SGD on D, training/gan/dp.py) and a
# non-DP twin with the same recipe (the one DP mode uses: no R1, no spectral or batch norm, no ADA) and the same
# CPU budget (DP_CPU_MINUTES, 120 by default); then, for both, the evaluation (FID, held-out FID beside the real
# floor), the membership-inference audit (privacy.json) and the downstream study (TSTR on the slice level). Both
# models stay in the run folder; the DP model is copied to weights/ only if its samples are recognisable anatomy.
#
# The noise multiplier is chosen so that the planned steps spend exactly ε; the steps are planned from a timed
# 40-step DP run on this machine (steps per CPU-second x the budget), so that the budget and the CPU time end
# together; --max-cpu-minutes stops the run in any case, and config.json records the ε actually spent.
#
# Usage: bash benchmarks/dp_train.sh   Settings by environment: DP_EPSILON (10), DP_DELTA (1e-5, below 1/698
# training slices), DP_CPU_MINUTES (120), DP_THREADS (2), DP_ARCH (dcgan), DP_RUNS (runs/dp-brain-t1).
set -euo pipefail
cd "$(dirname "$0")/.."
eps=${DP_EPSILON:-10}
delta=${DP_DELTA:-1e-5}
minutes=${DP_CPU_MINUTES:-120}
threads=${DP_THREADS:-2}
arch=${DP_ARCH:-dcgan}
runs=${DP_RUNS:-runs/dp-brain-t1}
recipe=(--dataset brain-t1 --size 64 --arch "$arch" --no-spectral-norm --no-d-batchnorm --r1 0 --ada-target 0
        --threads "$threads" --fid-every 0)
[[ -e $runs ]] && { echo "error: $runs exists; set DP_RUNS to a new folder" >&2; exit 2; }

# 1. throughput of a DP step on this machine (the run is thrown away)
python -m training.train "${recipe[@]}" --dp-epsilon "$eps" --dp-delta "$delta" --steps 40 --log-every 40 \
    --out "$runs/timing" --export "$runs/timing/model"
steps=$(python - "$runs/timing/metrics.jsonl" "$minutes" <<'EOF'
import json, sys
last = [json.loads(line) for line in open(sys.argv[1]) if '"cpu_s"' in line][-1]
print(int(last["step"] / last["cpu_s"] * float(sys.argv[2]) * 60))
EOF
)
echo "planned steps for $minutes CPU-minutes: $steps"

# 2. the DP model and its non-DP twin, same recipe, same steps, same CPU budget
python -m training.train "${recipe[@]}" --dp-epsilon "$eps" --dp-delta "$delta" --steps "$steps" \
    --max-cpu-minutes "$minutes" --out "$runs/dp" --export "$runs/dp/model" --model-id brain-t1-dp-64
python -m training.train "${recipe[@]}" --steps "$steps" --max-cpu-minutes "$minutes" --out "$runs/twin" \
    --export "$runs/twin/model" --model-id brain-t1-dp-twin-64

# 3. quality, membership, usefulness of both
for arm in dp twin; do
  python -m training.evaluate "$runs/$arm/model" --dataset brain-t1
  python -m training.audit "$runs/$arm/model"
  python -m training.downstream "$runs/$arm/model" --task level --classifier cnn --out "$runs/$arm/downstream"
done
