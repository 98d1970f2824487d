#!/usr/bin/env bash
# Issue 21 on SIMMC fashion: teachers, students and the distillation table, by the documented commands.
#
#   bash scripts/distill_simmc.sh [RUNS]        (RUNS defaults to runs/distill_simmc; finished steps are skipped)
#
# 1. import SIMMC 1.0 fashion train and dev; split dev in halves by dialog: dev_select (early stopping,
#    calibration, certified thresholds, teacher choice) and dev_report (read only by `irp evaluate` and the table);
# 2. teachers on fashion train: minilm-l6 seeds $SEEDS (the first is the `irp train` defaults' baseline) and
#    mpnet-base for $MPNET_EPOCHS epochs, validated every half epoch (`make backbones`; MPNET_EPOCHS=0 skips it).
#    mpnet-base joins the teachers only if it raises their ensemble's dev_select AP (scripts/ensemble_gain.py);
# 3. students minilm-l6 and minilm-l3, `irp distill` from the teachers (T 2, alpha 0.5: the defaults) with
#    $STUDENT_FLAGS (the weight average: dev_select AP 0.8514 against 0.8495 for the baseline's seed); the
#    minilm-l3 student for $L3_EPOCHS epochs (dev_select AP 0.826 after 5 against 0.823 after 3, still rising);
# 4. bench/distill_simmc.py: the table on dev_report, the plot, and the issue's bar, into $TABLE.{json,md,png}.
# Measured wall on 2 cores: 13-20 min per minilm-l6 teacher, 57 min for mpnet-base's 2 epochs, 13-14 min per
# minilm-l6 student (plus 8 min the first time mpnet-base scores train), 11 min for the 5-epoch minilm-l3 student.
# One heavy step at a time (a flock).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/distill_simmc}
SEEDS=${SEEDS:-"13 1 2"}
MPNET_EPOCHS=${MPNET_EPOCHS:-2}
STUDENT_FLAGS=${STUDENT_FLAGS:---ema 0.999}
L3_EPOCHS=${L3_EPOCHS:-5}
TABLE=${TABLE:-bench/results/distill_simmc}  # the table: TABLE.json, .md, .png
TABLE_FLAGS=${TABLE_FLAGS:-}  # more bench/distill_simmc.py flags, e.g. --no-cost
SHARED=${IRP_SHARED_DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
IRP="$PY -m irp.cli"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
heavy() { flock /tmp/irp-heavy.lock nice -n 5 "$@"; }
step() { echo "$(date -u +%H:%M:%S) $*"; }
mkdir -p "$RUNS"

[ -f "$RUNS/train.jsonl" ] || $IRP import simmc "$SHARED/simmc1_fashion/image_intent_train.jsonl" --out "$RUNS/train.jsonl"
[ -f "$RUNS/dev.jsonl" ] || $IRP import simmc "$SHARED/simmc1_fashion/image_intent_dev.jsonl" --out "$RUNS/dev.jsonl"
[ -f "$RUNS/dev_report.jsonl" ] || $IRP split "$RUNS/dev.jsonl" --fraction 0.5 --seed 0 \
  --out-first "$RUNS/dev_select.jsonl" --out-second "$RUNS/dev_report.jsonl"

train() {  # NAME [irp train flags...]
  local name=$1; shift
  if [ ! -f "$RUNS/$name/metrics.json" ]; then
    step "train $name"
    heavy $IRP train --train "$RUNS/train.jsonl" --valid "$RUNS/dev_select.jsonl" --out "$RUNS/$name" "$@" \
      > "$RUNS/$name.log" 2>&1
  fi
}
teachers=() names=()  # --teacher flags, and the teachers' folder names
for seed in $SEEDS; do train "t$seed" --seed "$seed"; teachers+=(--teacher "$RUNS/t$seed"); names+=("t$seed"); done
baseline=${names[0]}
if [ "$MPNET_EPOCHS" -gt 0 ]; then
  train mpnet --backbone mpnet-base --epochs "$MPNET_EPOCHS" --eval-every 331 --seed 13  # 331: half an epoch
  if $PY scripts/ensemble_gain.py --data "$RUNS/dev_select.jsonl" --candidate "$RUNS/mpnet" "${names[@]/#/$RUNS/}"
  then teachers+=(--teacher "$RUNS/mpnet") names+=(mpnet); fi
fi
step "teachers: ${names[*]}"

for student in l6 l3; do
  if [ ! -f "$RUNS/s_$student/metrics.json" ]; then
    step "distill s_$student"
    epochs=$([ $student = l3 ] && echo "$L3_EPOCHS" || echo 3)
    heavy $IRP distill "${teachers[@]}" --train "$RUNS/train.jsonl" --valid "$RUNS/dev_select.jsonl" \
      --out "$RUNS/s_$student" --backbone "minilm-$student" --epochs "$epochs" $STUDENT_FLAGS \
      > "$RUNS/s_$student.log" 2>&1
  fi
done

step "table"
extra=$([ -f "$RUNS/mpnet/metrics.json" ] && [[ " ${names[*]} " != *" mpnet "* ]] && echo mpnet || true)
teacher_list=$(IFS=,; echo "${names[*]}")
heavy $PY bench/distill_simmc.py --runs "$RUNS" --baseline "$baseline" --teachers "$teacher_list" \
  --students s_l6,s_l3 ${extra:+--extra $extra} --out "$TABLE.json" --plot "$TABLE.png" $TABLE_FLAGS
step done
