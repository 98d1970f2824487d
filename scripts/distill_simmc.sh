#!/usr/bin/env bash
# Issue 21 on SIMMC fashion: teachers, students, their weight soups and the distillation table, by the documented
# commands.
#
#   bash scripts/distill_simmc.sh [RUNS]        (RUNS defaults to runs/distill_simmc; finished steps are skipped)
#
# 1. import SIMMC 1.0 fashion train and dev; split dev in halves by dialog: dev_select (early stopping,
#    calibration, certified thresholds, every choice) and dev_report (read only by `irp evaluate` and the table);
# 2. teachers on fashion train: minilm-l6 seeds $SEEDS (the first is the `irp train` defaults' baseline) and
#    mpnet-base for $MPNET_EPOCHS epochs, validated every half epoch (`make backbones`; MPNET_EPOCHS=0 skips it),
#    once plain (mpnet) and once with the weight average `--ema 0.999` (mpnet_ema; sixth round: dev_select AP
#    0.8589 against 0.8493, and 0.858881 for the ensemble of the two, so it teaches alone);
# 3. students minilm-l6 (seeds $L6_SEEDS) and minilm-l3 (seeds $L3_SEEDS, $L3_EPOCHS epochs), `irp distill` from
#    mpnet-base alone (T 2, alpha 0.5: the defaults; from the minilm-l6 seeds when MPNET_EPOCHS=0) with
#    $STUDENT_FLAGS (the weight average) and, with TRANSFER=furniture (the default), SIMMC furniture dev as unlabelled
#    transfer records (4,827 turns of another catalogue; `irp distill` never reads a transfer record's label).
#    mpnet-base alone because its students had the best mean dev_select AP over seeds: 0.8578 (seeds 13, 1, 2)
#    against 0.8532 for the students of all four teachers and 0.8507 for those of the three minilm-l6 seeds
#    (docs/distill.md, third round). Tried and not kept (fourth round): a second mpnet-base seed (its ensemble with
#    the first: 0.8471 < 0.8493 alone), alpha 0.2 (students 0.8565 < 0.8572). The transfer records (fifth round):
#    soups 0.8638 > 0.8619 (minilm-l6) and 0.83290 = 0.83290 (minilm-l3, kept by the pre-set rule "higher", a tie).
#    Sixth round: minilm-l6 students of mpnet_ema as well (seeds $L6_EMA_SEEDS, same flags) join the minilm-l6 soup's
#    pool: its greedy soup took one student of each teacher (seed 1 of both), 0.8645 > 0.8638. Tried and not kept
#    (seventh round): `irp augment` copies of train as further transfer records (students 0.8594 < 0.8604);
#    (eighth round) `--layer-decay 0.9` (0.8598), `--temperature 1` (0.8562) and `--temperature 4` (0.8597), each
#    short of 0.8604 + 0.003;
# 4. `irp soup` (greedy, on dev_select) of each backbone's student seeds: s_l6 and s_l3, the students the bar is on;
# 5. bench/distill_simmc.py: the table on dev_report, the seed means, the plot and the issue's bar, into $TABLE.*;
# 6. `irp threshold` on all of dev for copies of the baseline and the students (NAME_dev): the models to ship.
# Measured wall on 2 cores: 13-20 min per minilm-l6 teacher, 57-65 min for mpnet-base's 2 epochs, 15-17 min per
# minilm-l6 student with the transfer records (13-14 without; plus 8 min the first time mpnet-base scores train),
# 13-14 min per 5-epoch minilm-l3 student (11-13 without), 1-5 min per soup, 12 min for the table. One heavy step at
# a time (a flock).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/distill_simmc}
SEEDS=${SEEDS:-"13 1 2"}
MPNET_EPOCHS=${MPNET_EPOCHS:-2}
L6_SEEDS=${L6_SEEDS:-"13 1 2 3 4"}
L6_EMA_SEEDS=${L6_EMA_SEEDS:-"13 1"}  # minilm-l6 students of mpnet_ema (sixth round), in the same soup pool
L3_SEEDS=${L3_SEEDS:-"13 1 2"}
STUDENT_FLAGS=${STUDENT_FLAGS:---ema 0.999}
L3_EPOCHS=${L3_EPOCHS:-5}
TRANSFER=${TRANSFER:-furniture}  # furniture: SIMMC furniture dev as the students' transfer records; none: no transfer
TABLE=${TABLE:-bench/results/distill_simmc}  # the table: TABLE.json, .md, .png
TABLE_FLAGS=${TABLE_FLAGS:-}  # more bench/distill_simmc.py flags, e.g. --no-cost
SHARED=${IRP_SHARED_DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
IRP="$PY -m irp.cli"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOCK=${LOCK:-/tmp/irp-heavy.lock}  # shared with any other heavy job on this machine
heavy() { flock "$LOCK" nice -n 5 "$@"; }
step() { echo "$(date -u +%H:%M:%S) $*"; }
case "$TRANSFER" in furniture|none) ;; *) echo "TRANSFER must be furniture or none, got '$TRANSFER'" >&2; exit 2;; esac
mkdir -p "$RUNS"

[ -f "$RUNS/train.jsonl" ] || $IRP import simmc "$SHARED/simmc1_fashion/image_intent_train.jsonl" --out "$RUNS/train.jsonl"
[ -f "$RUNS/dev.jsonl" ] || $IRP import simmc "$SHARED/simmc1_fashion/image_intent_dev.jsonl" --out "$RUNS/dev.jsonl"
if [ "$TRANSFER" = furniture ]; then
  [ -f "$RUNS/furniture.jsonl" ] || $IRP import simmc "$SHARED/simmc1_furniture/furniture_annotated_dev.jsonl" \
    --out "$RUNS/furniture.jsonl"
  transfer_flags=(--transfer "$RUNS/furniture.jsonl")
else
  transfer_flags=()
fi
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
l6_seeds=()  # the minilm-l6 teachers' folder names; the first is the baseline
for seed in $SEEDS; do train "t$seed" --seed "$seed"; l6_seeds+=("t$seed"); done
baseline=${l6_seeds[0]}
names=("${l6_seeds[@]}") student_teachers=("${l6_seeds[@]}")
ema_teachers=()  # the sixth round's second teacher of the minilm-l6 students
if [ "$MPNET_EPOCHS" -gt 0 ]; then
  train mpnet --backbone mpnet-base --epochs "$MPNET_EPOCHS" --eval-every 331 --seed 13  # 331: half an epoch
  train mpnet_ema --backbone mpnet-base --epochs "$MPNET_EPOCHS" --eval-every 331 --seed 13 --ema 0.999
  names+=(mpnet mpnet_ema) student_teachers=(mpnet) ema_teachers=(mpnet_ema)
fi
step "teachers: ${names[*]}; the students learn from ${student_teachers[*]} (minilm-l6 also from ${ema_teachers[*]:-none})"

distill_student() {  # NAME BACKBONE EPOCHS SEED TEACHER...
  local name=$1 backbone=$2 epochs=$3 seed=$4; shift 4
  if [ ! -f "$RUNS/$name/metrics.json" ]; then
    step "distill $name"
    heavy $IRP distill "${@/#/--teacher=$RUNS/}" --train "$RUNS/train.jsonl" \
      --valid "$RUNS/dev_select.jsonl" --out "$RUNS/$name" --backbone "minilm-$backbone" --epochs "$epochs" \
      --seed "$seed" $STUDENT_FLAGS "${transfer_flags[@]}" > "$RUNS/$name.log" 2>&1
  fi
}

students=() groups=()
for student in l6 l3; do
  epochs=$([ $student = l3 ] && echo "$L3_EPOCHS" || echo 3)
  student_seeds=$([ $student = l3 ] && echo "$L3_SEEDS" || echo "$L6_SEEDS")
  seeds=()
  for seed in $student_seeds; do
    distill_student "s_${student}_seed$seed" "$student" "$epochs" "$seed" "${student_teachers[@]}"
    seeds+=("s_${student}_seed$seed")
  done
  if [ $student = l6 ] && [ ${#ema_teachers[@]} -gt 0 ]; then
    for seed in $L6_EMA_SEEDS; do
      distill_student "s_l6e_seed$seed" l6 "$epochs" "$seed" "${ema_teachers[@]}"
      seeds+=("s_l6e_seed$seed")
    done
  fi
  if [ ${#seeds[@]} -lt 2 ]; then students+=("${seeds[0]}"); continue; fi  # one seed: no soup
  if [ ! -f "$RUNS/s_$student/metrics.json" ]; then
    step "soup s_$student"
    heavy $IRP soup "${seeds[@]/#/--model=$RUNS/}" --valid "$RUNS/dev_select.jsonl" --out "$RUNS/s_$student" \
      > "$RUNS/s_$student.log" 2>&1
  fi
  students+=("s_$student") groups+=(--group "minilm-$student students=$(IFS=+; echo "${seeds[*]}")")
done
groups+=(--group "minilm-l6 seeds=$(IFS=+; echo "${l6_seeds[*]}")")

step "table"
teacher_list=$(IFS=,; echo "${names[*]}")
heavy $PY bench/distill_simmc.py --runs "$RUNS" --baseline "$baseline" --teachers "$teacher_list" \
  --students "$(IFS=,; echo "${students[*]}")" "${groups[@]}" \
  --out "$TABLE.json" --plot "$TABLE.png" $TABLE_FLAGS

# 6. The models to ship (and for a withheld split): every choice is made and dev_report is read, so the baseline and
#    the students get their operating point on all of dev (twice the records: a tighter certificate), in copies
#    NAME_dev; the table above keeps the dev_select thresholds it was reported with.
for name in "$baseline" "${students[@]}"; do
  if [ ! -f "$RUNS/${name}_dev/metrics.json" ] || [ "$RUNS/${name}_dev/metrics.json" -ot "$RUNS/$name/metrics.json" ]; then
    step "threshold ${name}_dev on all of dev"
    rm -rf "$RUNS/${name}_dev.tmp" && cp -r "$RUNS/$name" "$RUNS/${name}_dev.tmp"
    heavy $IRP threshold --model "$RUNS/${name}_dev.tmp" --valid "$RUNS/dev.jsonl" > "$RUNS/${name}_dev.log" 2>&1
    $PY -c 'import json, sys; sys.exit(not json.load(open(sys.argv[1]))["threshold"]["reached"])' \
        "$RUNS/${name}_dev.tmp/config.json" \
      || step "WARNING ${name}_dev: the target precision is not certified on dev (fallback threshold; ${name}_dev.log)"
    # the parity re-check on dev may fail the int8 graph (a tail statistic: max |Δp| over 2,000 records); try the
    # other int8 schemes on dev, else the copy serves fp32 (the failed int8 stays marked, `auto` skips it)
    heavy $IRP export-onnx --model "$RUNS/${name}_dev.tmp" --int8 --data "$RUNS/dev.jsonl" >> "$RUNS/${name}_dev.log" 2>&1 \
      || step "${name}_dev: no int8 scheme passes parity on dev; it serves fp32"
    rm -rf "$RUNS/${name}_dev" && mv "$RUNS/${name}_dev.tmp" "$RUNS/${name}_dev"
  fi
done
step done
