#!/usr/bin/env bash
# Issue 21 on SIMMC fashion: teachers, students and the distillation table, by the documented commands.
#
#   bash scripts/distill_simmc.sh [RUNS]        (RUNS defaults to runs/distill_simmc; finished steps are skipped)
#
# 1. import SIMMC 1.0 fashion train and dev; split dev in halves by dialog: dev_select (early stopping,
#    calibration, certified thresholds, teacher choice) and dev_report (read only by `irp evaluate` and the table);
# 2. teachers on fashion train: minilm-l6 seeds $SEEDS (the first is the `irp train` defaults' baseline) and
#    mpnet-base for $MPNET_EPOCHS epoch(s) (`make backbones`; MPNET_EPOCHS=0 skips it). mpnet-base joins the
#    teachers only if its dev_select AP is at least the best minilm-l6 seed's (selection on dev_select only);
# 3. students minilm-l6 and minilm-l3, `irp distill` from the teachers (T 2, alpha 0.5: the defaults);
# 4. bench/distill_simmc.py: the table on dev_report, the plot, and the issue's bar, into bench/results/.
# CPU cost on 2 cores: ~18-22 min per minilm-l6 run, ~18 min per mpnet-base epoch (+ ~9 min scoring the
# training records as a teacher), ~10 min for the minilm-l3 student. One heavy step at a time (a flock).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/distill_simmc}
SEEDS=${SEEDS:-"13 1 2"}
MPNET_EPOCHS=${MPNET_EPOCHS:-1}
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
teachers=() l6=()
for seed in $SEEDS; do train "t$seed" --seed "$seed"; teachers+=(--teacher "$RUNS/t$seed"); l6+=("t$seed"); done
baseline=${l6[0]}
if [ "$MPNET_EPOCHS" -gt 0 ]; then
  train mpnet --backbone mpnet-base --epochs "$MPNET_EPOCHS" --seed 13
  if $PY - "$RUNS" "${l6[@]}" <<'EOF'
import json, sys
from pathlib import Path
runs, seeds = Path(sys.argv[1]), sys.argv[2:]
ap = lambda name: json.loads((runs / name / "metrics.json").read_text())["ap"]  # dev_select AP
print(f"mpnet-base dev_select AP {ap('mpnet'):.4f}; best minilm-l6 seed {max(map(ap, seeds)):.4f}")
sys.exit(0 if ap("mpnet") >= max(map(ap, seeds)) else 1)
EOF
  then teachers+=(--teacher "$RUNS/mpnet") l6+=(mpnet); fi
fi
step "teachers: ${l6[*]}"

for student in l6 l3; do
  if [ ! -f "$RUNS/s_$student/metrics.json" ]; then
    step "distill s_$student"
    heavy $IRP distill "${teachers[@]}" --train "$RUNS/train.jsonl" --valid "$RUNS/dev_select.jsonl" \
      --out "$RUNS/s_$student" --backbone "minilm-$student" > "$RUNS/s_$student.log" 2>&1
  fi
done

step "table"
extra=$([ -f "$RUNS/mpnet/metrics.json" ] && [[ " ${l6[*]} " != *" mpnet "* ]] && echo mpnet || true)
teacher_list=$(IFS=,; echo "${l6[*]}")
heavy $PY bench/distill_simmc.py --runs "$RUNS" --baseline "$baseline" --teachers "$teacher_list" \
  --students s_l6,s_l3 ${extra:+--extra $extra} --out bench/results/distill_simmc.json \
  --plot bench/results/distill_simmc.png
step done
