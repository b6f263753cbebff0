#!/usr/bin/env bash
# The data-efficiency studies on the frozen design (docs/data_efficiency.md, "The frozen design"), as registered, in
# the order they run, as a queue that workers share. Start one worker per core (each runs one thread):
#
#   bash scripts/with-env.sh bash scripts/studies.sh &
#   bash scripts/with-env.sh bash scripts/studies.sh &
#
# The plan below is a list of jobs, one (study folder, seed) each. A worker takes the first job in the list whose
# result files are not all there and that no live worker holds, runs it, and goes on until the list is done. A claim
# is a file naming the worker's process id under $TUBEMASK_STUDY_CLAIMS (a lock makes taking one atomic), so a job
# whose worker was stopped is taken up by the next worker that reaches it, and the recipe itself skips every
# (seed, arm) whose file exists: a stopped study resumes where it was. Stop a worker with its process group
# (`kill -- -PGID`, or `setsid` it at the start) so that no recipe process outlives the worker that claimed its job.
# Commit docs/results/data_efficiency/ as files land. Tables: python -m tubemask.eval.designs (commands in the docs).
#
# A job whose recipe fails is marked failed (its claim file is kept as `NAME.failed`, holding the exit status) and the
# worker goes on with the next; delete the marker to let a worker try it again.
#
#   bash scripts/studies.sh --list       # the jobs in order, each marked done, claimed (by whom), failed or waiting
#   bash scripts/studies.sh --commands   # each job's recipe command, one per line (tests/test_studies.py parses them)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
R=docs/results/data_efficiency
claims="${TUBEMASK_STUDY_CLAIMS:-${TMPDIR:-/tmp}/tubemask-study-claims}"
all_arms="pretrained scratch pretrained_probe random_probe handmade"
design_arms="pretrained pretrained_probe"

# One job per line: study folder | seed | arms | further options ({seed} stands for the job's seed).
plan=()
add() {  # add FOLDER "SEEDS" "ARMS" OPTIONS...
  local folder="$1" seeds="$2" arms="$3" seed
  shift 3
  for seed in $seeds; do plan+=("$folder|$seed|$arms|$*"); done
}
designs() {  # designs FOLDER "SEEDS" OPTIONS...: the two pretraining arms, the rest taken from the confirmatory run
  local folder="$1" seeds="$2"
  shift 2
  add "$folder" "$seeds" "$design_arms" --baselines-dir "$R/confirm" "$@"
}
five="100 101 102 103 104"
three="100 101 102"

# 1. Confirmatory run: every arm, seeds 100-109.
add "$R/confirm" "100 101 102 103 104 105 106 107 108 109" "$all_arms"

# 2. Pool sweep, seeds 100-104.
for k in 5 20; do
  designs "$R/pool-${k}x" "$five" --data.pool-factor "$k"
done

# 3. Domain shift against quantity, seeds 100-104: 5x the labelled set from another domain.
designs "$R/pool-shifted-5x" "$five" --data.pool-domain shifted --data.pool-factor 5

# 4. Masking mini-study, seeds 100-102 (tube 0.75 is the confirmatory folder; frame 0.9 = frame 0.75 on this grid).
for cell in tube-0.5 tube-0.9 random-0.5 random-0.75 random-0.9 frame-0.5 frame-0.75; do
  designs "$R/mask-$cell" "$three" --pretrain.mask "${cell%-*}" --pretrain.mask-ratio "${cell#*-}" \
    --finetune.pretrained-lrs 0.002 0.004
done

# 5. Methods after VideoMAE (issue 19), seeds 100-104, the same 2000 pretraining steps. Motion-aware first; the other
#    three after steps 9 and 8 (below).
designs "$R/method-motion-aware" "$five" --pretrain.mask motion_aware --pretrain.mask-ratio 0.9 \
  --pretrain.query-ratio 0.3

# 9. EVEREST as its official pretraining code runs it (issue 19; registered 2026-12-05 after reading that code, with
#    only motion-aware seed 100 of step 5 in): the 19 most moving of the 64 cubes (EVEREST's 30%) are kept and split
#    at random between the encoder (7, mask ratio 0.9) and the decoder (12), where step 5 shows the encoder the 7
#    highest-ranked and decodes the next 19 (--pretrain.motion-visible random; 16.4 against 18.3 MFLOP per clip
#    forward, python benchmarks/study_flops.py).
designs "$R/method-motion-aware-random" "$five" --pretrain.mask motion_aware --pretrain.mask-ratio 0.9 \
  --pretrain.query-ratio 0.2 --pretrain.motion-visible random

# 8. Motion-aware selection at fine-tuning time (EVEREST; issue 19): each seed's confirmatory encoder fine-tuned over
#    its 60% most moving cubes (--finetune.motion-drop 0.4), in training and test, the pretrained arm only, against
#    the confirmatory fine-tuning of the same encoders over every cube. No --baselines-dir: its fine-tuning is not the
#    confirmatory arms'.
add "$R/finetune-motion-drop-0.4" "$five" "pretrained" --pretrained-dir "$R/confirm" --finetune.motion-drop 0.4

# 10. The same selection for the scratch arm (registered 2026-12-05 after step 8's result, to read it): is the gain of
#     fine-tuning on the most moving cubes a property of the pretrained encoders, or of dropping this task's static
#     background, which a model from scratch would gain too? Arm `scratch` only, its confirmatory lr grid, paired with
#     the confirmatory scratch arm of the same seeds. About 8 minutes per seed.
add "$R/finetune-motion-drop-0.4-scratch" "$five" "scratch" --finetune.motion-drop 0.4

# 5, continued: motion-guided masking, HOG targets and teacher targets, amended on 2026-12-05 before any of their runs
#    after each piece was checked against its authors' official code (as step 9 came from EVEREST's); the steps keep
#    their registered numbers, the list is in the order the jobs run.
# Motion-guided: MGMAE's masking (a soft visibility map of the middle slot's random draw, carried both ways by bilinear
# warps, top-k per slot), where the first version carried a binary mask from the first slot along whole-cell flows.
designs "$R/method-motion-guided" "$five" --pretrain.mask motion_guided
# HOG: MaskFeat's official HOGLayerC (cells of 8 pixels, here one per cube: 27 values; no Gaussian; its bins), where the
# first version took 4-pixel cells with a Gaussian window (108 values).
designs "$R/method-hog" "$five" --pretrain.target hog
# Each seed's teacher is its own confirmatory encoder. Amended 2026-12-05 (before any run) to MVD's official target, the
# last block before the final norm, not normalised (TeacherTarget's defaults since), and its smooth L1 loss.
designs "$R/method-teacher" "$five" --pretrain.target teacher --pretrain.teacher "$R/confirm/seed{seed}/pretrained.pt" \
  --pretrain.loss smooth_l1

# 6. Motion-aware at the same compute as tube 0.75 (issue 19): 2.43x the steps (4870), from the per-clip forward FLOPs
#    of benchmarks/common.forward_flops on this grid (18.3 vs 44.6 MFLOP; python benchmarks/study_flops.py); its
#    warm-up stays 100 steps.
designs "$R/method-motion-aware-4870" "$five" --pretrain.mask motion_aware --pretrain.mask-ratio 0.9 \
  --pretrain.query-ratio 0.3 --pretrain.steps 4870

# 7. Tube 0.75 with pixel targets at the teacher design's compute (issue 19; registered 2026-12-05, before any method
#    result): its 2000 steps each cost a student step and a teacher forward (244.3 MFLOP per clip against 133.7) and
#    the teacher is itself 2000 tube steps, 5655 tube steps in all (python benchmarks/study_flops.py).
designs "$R/tube-5655" "$five" --pretrain.steps 5655

done_job() {  # done_job FOLDER SEED "ARMS": every arm's result file is there
  local arm
  for arm in $3; do [ -f "$1/seed$2/$arm.json" ] || return 1; done
}
claim_file() { echo "$claims/$(echo "$1" | tr '/' '_')-seed$2"; }
holder() {  # the live process holding a claim, or nothing
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

job_state() {  # job_state JOB: done, claimed by PID, failed (with its exit status) or waiting
  local folder seed arms options file pid
  IFS='|' read -r folder seed arms options <<<"$1"
  file="$(claim_file "$folder" "$seed")"
  if done_job "$folder" "$seed" "$arms"; then echo "done"
  elif pid="$(holder "$file")" && [ -n "$pid" ]; then echo "claimed by $pid"
  elif [ -f "$file.failed" ]; then echo "failed (exit status $(cat "$file.failed"); see the worker's log)"
  else echo "waiting"; fi
}

command_of() {  # the recipe's command line for one job
  local folder seed arms options
  IFS='|' read -r folder seed arms options <<<"$1"
  echo "python recipes/data_efficiency.py --threads 1 --seeds $seed --arms $arms --output-dir $folder" \
    "${options//\{seed\}/$seed}"
}

mkdir -p "$claims"
if [ "${1:-}" = "--list" ]; then
  for job in "${plan[@]}"; do
    IFS='|' read -r folder seed arms options <<<"$job"
    echo "$folder seed $seed: $(job_state "$job")"
  done
  exit 0
elif [ "${1:-}" = "--commands" ]; then
  for job in "${plan[@]}"; do command_of "$job"; done
  exit 0
elif [ $# -gt 0 ]; then
  echo "studies.sh: takes no arguments but --list or --commands, got '$*' (start one worker per core instead)" >&2
  exit 2
fi

take_job() {  # print the next job this worker now holds, or nothing when none is left
  exec 8>"$claims/.lock"
  flock 8
  local job folder seed arms options
  for job in "${plan[@]}"; do
    [ "$(job_state "$job")" = waiting ] || continue
    IFS='|' read -r folder seed arms options <<<"$job"
    echo $$ >"$(claim_file "$folder" "$seed")"
    echo "$job"
    break
  done
  exec 8>&-
}

# The worker's loop is one braced block ending in `exit`: bash reads a script as it runs it, by offset, so a worker
# still reading this file would take an edit made in place mid-run for its next lines; it reads the whole block first.
{
  failed=0
  while job="$(take_job)" && [ -n "$job" ]; do
    IFS='|' read -r folder seed arms options <<<"$job"
    file="$(claim_file "$folder" "$seed")"
    echo "[studies $$] $(date +%H:%M:%S) $folder seed $seed"
    status=0
    # shellcheck disable=SC2046  # the command is a word list (no option holds a space)
    $(command_of "$job") || status=$?
    if [ "$status" = 0 ] && ! done_job "$folder" "$seed" "$arms"; then status="ended without its result files"; fi
    if [ "$status" != 0 ]; then
      echo "[studies $$] $(date +%H:%M:%S) $folder seed $seed FAILED: $status; going on with the next job" >&2
      echo "$status" >"$file.failed"
      failed=$((failed + 1))
    fi
    rm -f "$file"
  done
  echo "[studies $$] $(date +%H:%M:%S) every job is done, failed or held by another worker; $failed failed here"
  exit "$((failed > 0))"
}

