#!/usr/bin/env bash
# The data-efficiency studies on the frozen design (docs/data_efficiency.md, "The frozen design"), in their
# pre-registered order. Two lanes share the seeds so that two processes (one thread each) use both cores:
#
#   bash scripts/with-env.sh bash scripts/studies.sh even &   # seeds 100, 102, 104, ...
#   bash scripts/with-env.sh bash scripts/studies.sh odd  &   # seeds 101, 103, 105, ...
#
# Every (seed, arm) result is a file that is skipped when present, so a lane that is stopped resumes where it was;
# commit docs/results/data_efficiency/ as files land. Tables: python -m tubemask.eval.designs (commands in the docs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
lane="${1:?usage: studies.sh even|odd}"
case "$lane" in
  even) confirm=(100 102 104 106 108); five=(100 102 104); three=(100 102) ;;
  odd) confirm=(101 103 105 107 109); five=(101 103); three=(101) ;;
  *) echo "studies.sh: lane must be even or odd, got '$lane'" >&2; exit 2 ;;
esac
R=docs/results/data_efficiency
study() { python recipes/data_efficiency.py --threads 1 "$@"; }
designs() { study --arms pretrained pretrained_probe --baselines-dir "$R/confirm" "$@"; }

# 1. Confirmatory run: every arm, seeds 100-109.
study --seeds "${confirm[@]}" --output-dir "$R/confirm"

# 2. Pool sweep, seeds 100-104.
for k in 5 20; do
  designs --seeds "${five[@]}" --data.pool-factor "$k" --output-dir "$R/pool-${k}x"
done

# 3. Domain shift against quantity, seeds 100-104: 5x the labelled set from another domain.
designs --seeds "${five[@]}" --data.pool-domain shifted --data.pool-factor 5 --output-dir "$R/pool-shifted-5x"

# 4. Masking mini-study, seeds 100-102 (tube 0.75 is the confirmatory folder; frame 0.9 = frame 0.75 on this grid).
for cell in tube-0.5 tube-0.9 random-0.5 random-0.75 random-0.9 frame-0.5 frame-0.75; do
  designs --seeds "${three[@]}" --pretrain.mask "${cell%-*}" --pretrain.mask-ratio "${cell#*-}" \
    --finetune.pretrained-lrs 0.002 0.004 --output-dir "$R/mask-$cell"
done

# 5. Methods after VideoMAE (issue 19), seeds 100-104, the same 2000 pretraining steps.
designs --seeds "${five[@]}" --pretrain.mask motion_aware --pretrain.mask-ratio 0.9 --pretrain.query-ratio 0.3 \
  --output-dir "$R/method-motion-aware"
designs --seeds "${five[@]}" --pretrain.mask motion_guided --output-dir "$R/method-motion-guided"
designs --seeds "${five[@]}" --pretrain.target hog --output-dir "$R/method-hog"
for seed in "${five[@]}"; do  # each seed's teacher is its own confirmatory encoder
  designs --seeds "$seed" --pretrain.target teacher --pretrain.teacher "$R/confirm/seed$seed/pretrained.pt" \
    --output-dir "$R/method-teacher"
done

# 6. Motion-aware at the same compute as tube 0.75 (issue 19): 2.43x the steps (4870), from the per-clip forward FLOPs
#    of benchmarks/common.forward_flops on this grid (18.3 vs 44.6 MFLOP); its warm-up stays 100 steps.
designs --seeds "${five[@]}" --pretrain.mask motion_aware --pretrain.mask-ratio 0.9 --pretrain.query-ratio 0.3 \
  --pretrain.steps 4870 --output-dir "$R/method-motion-aware-4870"
