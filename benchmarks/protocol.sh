#!/usr/bin/env bash
# The whole comparison protocol of docs/experiments.md on one world, from nothing, on the two cores of a laptop:
#   1. build the world (WORLD_SEED, default size);
#   2. the warm start and its plateau check: configs/tiny.yaml at 4,500 and 6,750 SFT steps side by side, dev EM on
#      all 400 dev questions every 1,500 steps (the 4,500-step policy is the start);
#   3. the learning-rate sweep {1e-5, 2e-5, 5e-5, 1e-4} of Search-R1, StepSearch and SLATE, seed 0;
#   4. every arm at its picked rate (the SLATE variants at SLATE's), seeds 0-2, then continued SFT for the RL arms'
#      mean wall-clock of each seed; the report OUT/compare.md, compare.json and compare_curves.png.
# Every stage resumes where it stopped (finished rows and checkpoints are kept), so the script can be re-run.
#
#   bash benchmarks/protocol.sh 7 results/protocol_world7      # about 7 hours on a 2-core CPU
#
# Environment: PYTHON (default .venv/bin/python), SFT_STEPS (4500), TOKENS (600000 per RL arm), TEST_QUESTIONS
# (800), DEV_QUESTIONS (400: the plateau check and the sweep's pick), RL_OVERRIDES (dotted overrides for every RL
# arm, e.g. "trainer.questions_per_step=4"). A smoke run of every stage in minutes:
#   SFT_STEPS=20 TOKENS=2000 TEST_QUESTIONS=20 DEV_QUESTIONS=20 RL_OVERRIDES=trainer.questions_per_step=4 \
#     bash benchmarks/protocol.sh 7 /tmp/protocol
set -euo pipefail
cd "$(dirname "$0")/.."
WORLD_SEED=${1:?usage: protocol.sh WORLD_SEED OUT}
OUT=${2:?usage: protocol.sh WORLD_SEED OUT}
PY=${PYTHON:-.venv/bin/python}
SFT_STEPS=${SFT_STEPS:-4500}
TOKENS=${TOKENS:-600000}
TEST_QUESTIONS=${TEST_QUESTIONS:-800}
DEV_QUESTIONS=${DEV_QUESTIONS:-400}
export OMP_NUM_THREADS=1  # two one-thread jobs side by side beat one two-thread job at this model size
mkdir -p "$OUT"
WORLD=$OUT/world
[ -f "$WORLD/corpus.jsonl" ] || "$(dirname "$PY")/slate" world build --out "$WORLD" --seed "$WORLD_SEED" --size default

# 2. the start and its plateau pair (+50% steps)
LONGER=$((SFT_STEPS * 3 / 2))
sft() {  # sft STEPS: one SFT run with its dev curve, unless its policy is there
  [ -f "$OUT/sft_$1/policy/config.json" ] || $PY benchmarks/sft_curve.py --out "$OUT/sft_$1" --dev-questions "$DEV_QUESTIONS" \
    --eval-every $((SFT_STEPS / 3)) "world.dir=$WORLD" "world.seed=$WORLD_SEED" "sft.max_steps=$1" > "$OUT/sft_$1.log" 2>&1
}
sft "$SFT_STEPS" & sft "$LONGER" & wait
START=$OUT/sft_$SFT_STEPS/policy

C=("$PY" benchmarks/compare.py --sft "$START" --world "$WORLD" --out "$OUT" --token-budget "$TOKENS"
   --test-questions "$TEST_QUESTIONS" --final-dev-questions "$DEV_QUESTIONS")
read -r -a EXTRA <<< "${RL_OVERRIDES:-}"
O=(-- trainer.bf16_autocast=false "${EXTRA[@]}")
# 3. the sweep, seed 0, split over the two cores
{ "${C[@]}" --seeds 0 --arms searchr1 --sweep 1e-5 2e-5 5e-5 1e-4 "${O[@]}"
  "${C[@]}" --seeds 0 --arms stepsearch --sweep 1e-5 2e-5 "${O[@]}"; } > "$OUT/sweep_a.log" 2>&1 &
{ "${C[@]}" --seeds 0 --arms slate --sweep 1e-5 2e-5 5e-5 1e-4 "${O[@]}"
  "${C[@]}" --seeds 0 --arms stepsearch --sweep 5e-5 1e-4 "${O[@]}"; } > "$OUT/sweep_b.log" 2>&1 &
wait
# 4. three seeds of every arm at its picked rate (the sweep's seed-0 run at that rate is reused), then the control
"${C[@]}" --seeds 0 1 2 --lr-from-sweep --arms searchr1 stepsearch slate_full slate_noise0.1 "${O[@]}" \
  > "$OUT/arms_a.log" 2>&1 &
"${C[@]}" --seeds 0 1 2 --lr-from-sweep --arms slate slate_em slate_noise0.3 "${O[@]}" \
  > "$OUT/arms_b.log" 2>&1 &
wait
"${C[@]}" --seeds 0 1 --arms continued_sft "${O[@]}" > "$OUT/control_a.log" 2>&1 &
"${C[@]}" --seeds 2 --arms continued_sft "${O[@]}" > "$OUT/control_b.log" 2>&1 &
wait
"${C[@]}" --seeds 0 1 2 --arms continued_sft "${O[@]}"  # every row is there: this only writes the report
