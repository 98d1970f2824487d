#!/usr/bin/env bash
# Second GPU pass: the throughput bench with shape-aware warm-up, and a 900K epoch at batch 1024.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 IRP_CACHE_DIR=/tmp/irp-cache
OUT=${OUT:-runs/gpu2}; mkdir -p $OUT; B=.gpu/minilm; D=/tmp/irpdata; mkdir -p $D; t0=$(date +%s)
python3 -m irp.cli simulate --n 940000 --seed 7 --out $D/sim.parquet | tail -1
python3 - <<PY
import pyarrow.parquet as pq
t = pq.read_table("$D/sim.parquet")
pq.write_table(t.slice(0, 900000), "$D/train.parquet"); pq.write_table(t.slice(900000, 20000), "$D/valid.parquet")
pq.write_table(t.slice(920000), "$D/test.parquet")
PY
echo "data $(( $(date +%s) - t0 )) s"
python3 bench/train_throughput.py --device cuda --backbone $B --out $OUT --tokenize-data $D/valid.parquet --tokenize-n 20000 2>&1 | grep -v -i "warn\|loading weights\|MISSING\|UNEXPECTED\|newly initialized\|Notes" | tail -6
echo "bench $(( $(date +%s) - t0 )) s"
python3 -m irp.cli train --train $D/train.parquet --valid $D/valid.parquet --out /tmp/m1024 --backbone $B --epochs 1 \
  --batch-size 1024 --device cuda --eval-every 100000 --checkpoint-every 100000 2>&1 | grep -E "ap |precision |recall " 
python3 -m irp.cli evaluate --model /tmp/m1024 --data $D/test.parquet --json $OUT/eval_900k_b1024_test.json 2>&1 | grep -E "ap |precision |recall "
cp /tmp/m1024/config.json $OUT/model_900k_b1024_config.json
echo "done $(( $(date +%s) - t0 )) s"
