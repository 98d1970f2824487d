#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded default data (a simulated voice-shopping log).
# simulate -> validate -> split by session -> train IRP (defaults, minilm-l6) -> evaluate on held-out test
# -> three baselines on the same split -> one comparison table and the plots. N=4000 interactions, 2 epochs by
# default (override: N=20000 EPOCHS=3 make demo).
set -euo pipefail
OUT=${OUT:-runs/demo}; N=${N:-4000}; EPOCHS=${EPOCHS:-2}; IRP=${IRP:-.venv/bin/irp}; PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/6 simulate $N interactions"
$IRP simulate --n "$N" --seed 7 --out "$OUT/sim.parquet"
step "2/6 validate the log"
$IRP validate "$OUT/sim.parquet"
step "3/6 split by session: train 2/3, valid 1/6, test 1/6"
$IRP split "$OUT/sim.parquet" --fraction 0.6667 --seed 0 --out-first "$OUT/train.parquet" --out-second "$OUT/heldout.parquet"
$IRP split "$OUT/heldout.parquet" --fraction 0.5 --seed 1 --out-first "$OUT/valid.parquet" --out-second "$OUT/test.parquet"
step "4/6 train IRP (minilm-l6, mean summarizer, combined loss, threshold for precision >= 0.8 on valid)"
$IRP train --train "$OUT/train.parquet" --valid "$OUT/valid.parquet" --out "$OUT/model" --epochs "$EPOCHS"
step "5/6 evaluate on the held-out test split (plots in $OUT/plots)"
$IRP evaluate --model "$OUT/model" --data "$OUT/test.parquet" --json "$OUT/irp_test.json" --plots "$OUT/plots"
step "6/6 baselines on the same split"
for kind in majority keyword tfidf-lr; do
  $IRP baseline --kind $kind --train "$OUT/train.parquet" --valid "$OUT/valid.parquet" --test "$OUT/test.parquet" \
    --json "$OUT/baseline_$kind.json" > "$OUT/baseline_$kind.log" 2>&1
done
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from rich.console import Console
from rich.table import Table

out = Path(sys.argv[1])
rows = [("irp (minilm-l6, mean)", out / "irp_test.json")] + [
    (f"baseline {k}", out / f"baseline_{k}.json") for k in ("majority", "keyword", "tfidf-lr")]
table = Table("model", "precision", "recall", "F0.5", "AP", "ROC AUC", title=f"held-out test ({out / 'test.parquet'})")
for name, path in rows:
    r = json.loads(path.read_text())
    cell = lambda k: "n/a" if r.get(k) is None else f"{r[k]:.3f} [{r['ci'][k][0]:.2f}, {r['ci'][k][1]:.2f}]"
    table.add_row(name, cell("precision"), cell("recall"), cell("f05"), cell("ap"), cell("roc_auc"))
Console(width=140).print(table)
print(f"thresholds were chosen on the validation split; model: {out / 'model'}; plots: {out / 'plots'}")
PY
