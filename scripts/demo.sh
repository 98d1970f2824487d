#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded default data (a simulated voice-shopping log).
# simulate -> validate -> split by session -> train IRP (defaults, minilm-l6, one epoch) -> certified operating point
# on validation -> evaluate on the held-out test split -> three baselines on the same split, same threshold rule ->
# one comparison table (precision, recall, F0.5, AP, target verdict: met / consistent / missed on the test
# precision's 95 % interval) with the promise, and the plots.
#
# Size: N=15000 interactions, split 60 / 20 / 20 by session, 1 epoch (override: N=40000 EPOCHS=2 make demo).
# Chosen by reasoning and earlier runs, never on this test split: at the same CPU time one epoch over more records
# beats more epochs over fewer (N=4000 with 2 epochs trained on 2,667 records and lost to tfidf-lr on F0.5; with
# 4,000 training records and 1 epoch IRP is above tfidf-lr by 0.026 AP in docs/RESULTS.md), a 20 % validation split
# certifies the target at more recall than 1/6, and 9,000 training records keep the run under 5 minutes on 2 cores.
# Target: TARGET=0.7 at CONFIDENCE=0.9 (the promise: precision >= TARGET on new records from the validation
# distribution with probability >= CONFIDENCE).
# Why 0.7 and not 0.8 on this log: the simulated tap is a noisy proxy (a visual intent is missed 12 % of the time,
# and about half the time when no screen is at hand, which the model cannot see), so even a perfect model of the
# visual intent measures tap precision about 0.81: 0.8 can never be certified here at any size (docs/benchmarks.md).
set -euo pipefail
OUT=${OUT:-runs/demo}; N=${N:-15000}; EPOCHS=${EPOCHS:-1}; TARGET=${TARGET:-0.7}; CONFIDENCE=${CONFIDENCE:-0.9}
IRP=${IRP:-.venv/bin/irp}; PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
started=$(date +%s)

step "1/6 simulate $N interactions"
$IRP simulate --n "$N" --seed 7 --out "$OUT/sim.parquet"
step "2/6 validate the log"
$IRP validate "$OUT/sim.parquet"
step "3/6 split by session: train 60 %, valid 20 %, test 20 %"
$IRP split "$OUT/sim.parquet" --fraction 0.6 --seed 0 --out-first "$OUT/train.parquet" --out-second "$OUT/heldout.parquet"
$IRP split "$OUT/heldout.parquet" --fraction 0.5 --seed 1 --out-first "$OUT/valid.parquet" --out-second "$OUT/test.parquet"
step "4/6 train IRP (minilm-l6, mean summarizer, combined loss); certify precision >= $TARGET at confidence $CONFIDENCE on valid"
$IRP train --train "$OUT/train.parquet" --valid "$OUT/valid.parquet" --out "$OUT/model" --epochs "$EPOCHS" \
  --target-precision "$TARGET" --confidence "$CONFIDENCE"
step "5/6 evaluate on the held-out test split (plots in $OUT/plots)"
$IRP evaluate --model "$OUT/model" --data "$OUT/test.parquet" --json "$OUT/irp_test.json" --plots "$OUT/plots"
step "6/6 baselines on the same split, thresholds certified by the same rule"
for kind in majority keyword tfidf-lr; do
  $IRP baseline --kind $kind --train "$OUT/train.parquet" --valid "$OUT/valid.parquet" --test "$OUT/test.parquet" \
    --target-precision "$TARGET" --json "$OUT/baseline_$kind.json" > "$OUT/baseline_$kind.log" 2>&1
done
$PY - "$OUT" "$TARGET" "$(( $(date +%s) - started ))" <<'PY'
import json, sys
from pathlib import Path
from rich.console import Console
from rich.table import Table

from irp.metrics import VERDICT_NOTE

STYLE = {"met": "green", "consistent": "yellow", "missed": "bold red"}

out, target, seconds = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rows = [("irp (minilm-l6, mean)", out / "irp_test.json")] + [
    (f"baseline {k}", out / f"baseline_{k}.json") for k in ("majority", "keyword", "tfidf-lr")]
table = Table("model", "operating point (valid)", "precision", "recall", "F0.5", "AP", f"precision >= {target:g}? (95 % CI)",
              title=f"held-out test split ({out / 'test.parquet'}); target precision {target:g}")
for name, path in rows:
    r = json.loads(path.read_text())
    point = r.get("operating_point") or r.get("threshold_choice") or {}
    cert = point.get("rule") == "certified_precision"
    lb = point.get("lower_bound")
    where = (f"certified, bound {lb:.3f}" if cert and lb is not None
             else "[bold red]not certified: F0.5 fallback[/]" if point.get("rule") == "max_f05_fallback"
             else str(point.get("rule", "?")))
    cell = lambda k: "n/a" if r.get(k) is None else f"{r[k]:.3f} [{r['ci'][k][0]:.2f}, {r['ci'][k][1]:.2f}]"
    # irp evaluate and irp baseline judge the target the same way: met / consistent / missed on the interval
    verdict = r["target_met"]
    table.add_row(name, where, cell("precision"), cell("recall"), cell("f05"), cell("ap"),
                  f"[{STYLE[verdict]}]{verdict}[/]")
Console(width=150).print(table)
print(f"Target column: {VERDICT_NOTE}")
meta = json.loads((out / "model" / "config.json").read_text())
promise = (meta.get("threshold") or {}).get("guarantee")
print(f"\nThe promise (IRP, {out / 'model' / 'config.json'}): {promise or 'n/a (this artifact has no guarantee field)'}")
irp, lr = (json.loads((out / f).read_text()) for f in ("irp_test.json", "baseline_tfidf-lr.json"))
print(f"IRP vs tfidf-lr on the test split: recall at the certified threshold {irp['recall']:.3f} vs {lr['recall']:.3f}, "
      f"AP {irp['ap']:.3f} vs {lr['ap']:.3f}.")
n_test = irp["n"]
print(f"The promise is about all new records; the certified threshold is the most recall whose bound passes, so its "
      f"true precision sits just above the target, and {n_test:,} test records measure it to a few points: "
      f"'consistent' is what a kept promise usually looks like here (bench/guarantee.py measures how often it holds).")
print(f"Thresholds were chosen on the validation split; model: {out / 'model'}; plots: {out / 'plots'}; "
      f"{seconds} s from simulate to here.")
PY
