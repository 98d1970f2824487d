#!/usr/bin/env bash
# Third GPU pass: the model-quality checks of the model issue.
#  1. SIMMC fashion: train on image_intent_train (defaults), threshold on half of dev (by dialog, seed 0),
#     metrics on the other half.  2. Simulated log 50K/10K/10K (seed 7): --summarizer mean vs none, test
#     probabilities saved for the matched-recall comparison with tfidf-lr (run on CPU: scripts/compare_sim.py).
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 IRP_CACHE_DIR=/tmp/irp-cache
OUT=${OUT:-runs/gpu3}; mkdir -p $OUT; B=${B:-.gpu/minilm}; D=/tmp/irpd3; mkdir -p $D /tmp/shared/simmc1_fashion
DEVICE=${DEVICE:-cuda}; SIM_SCALE=${SIM_SCALE:-1}; t0=$(date +%s)
irp() { python3 -m irp.cli "$@"; }
for f in image_intent_train image_intent_dev; do gunzip -c .gpu/shared/simmc1_fashion/$f.jsonl.gz > /tmp/shared/simmc1_fashion/$f.jsonl; done
irp import simmc /tmp/shared/simmc1_fashion/image_intent_train.jsonl --out $D/f_train.jsonl | tail -1
irp import simmc /tmp/shared/simmc1_fashion/image_intent_dev.jsonl --out $D/f_dev.jsonl | tail -1
irp split $D/f_dev.jsonl --fraction 0.5 --seed 0 --out-first $D/f_valid.jsonl --out-second $D/f_test.jsonl | tail -2
irp train --train $D/f_train.jsonl --valid $D/f_valid.jsonl --out /tmp/mf --backbone $B --target-precision 0.8 \
  --device $DEVICE ${SIMMC_EXTRA:-} 2>&1 | grep -E "ap |precision |recall |threshold"
irp evaluate --model /tmp/mf --data $D/f_test.jsonl --json $OUT/simmc_irp_test.json | grep -E "ap |precision |recall "
cp /tmp/mf/config.json $OUT/simmc_irp_config.json
echo "simmc done $(( $(date +%s) - t0 )) s"

irp simulate --n $(( 70000 / SIM_SCALE )) --seed 7 --out $D/s.parquet | tail -1
python3 - <<PY
import pyarrow.parquet as pq
t = pq.read_table("$D/s.parquet"); n = t.num_rows // 7
pq.write_table(t.slice(0, 5 * n), "$D/s_train.parquet"); pq.write_table(t.slice(5 * n, n), "$D/s_valid.parquet")
pq.write_table(t.slice(6 * n), "$D/s_test.parquet")
PY
for S in mean none; do
  irp train --train $D/s_train.parquet --valid $D/s_valid.parquet --out /tmp/ms_$S --backbone $B --summarizer $S \
    --batch-size 256 --device $DEVICE ${SIM_EXTRA:-} 2>&1 | grep -E "ap "
  irp evaluate --model /tmp/ms_$S --data $D/s_test.parquet --json $OUT/sim_${S}_test.json | grep -E "ap |precision |recall "
  python3 -c "
import numpy as np; from irp.predict import IRPClassifier; from irp.data.io import load_records
np.save('$OUT/sim_${S}_test_probs.npy', IRPClassifier.load('/tmp/ms_$S', device='$DEVICE').predict_proba(load_records('$D/s_test.parquet')))"
  echo "sim $S done $(( $(date +%s) - t0 )) s"
done
