#!/usr/bin/env bash
# The prepared GPU script behind docs/benchmarks.md (and the full ablation run when time allows).
# On the lent GPU machine: `bash scripts/gpu_run.sh` with .gpu/ carried (fp16 MiniLM copy + gzipped SIMMC files).
# Locally, a miniature of the same run: `SIM_N=6000 TRAIN_N=4000 DEVICE=cpu QUICK=1 bash scripts/gpu_run.sh`.
set -uo pipefail
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT"
SIM_N=${SIM_N:-940000}; TRAIN_N=${TRAIN_N:-900000}; DEVICE=${DEVICE:-cuda}; QUICK=${QUICK:-0}
ABLATE_S=${ABLATE_S:-0}; PY=${PY:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 IRP_CACHE_DIR=/tmp/irp-cache
B=.gpu/minilm; D=/tmp/irpdata; mkdir -p $D /tmp/shared
irp() { $PY -m irp.cli "$@"; }
t0=$(date +%s)
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; nproc
  $PY -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"; } | tee $OUT/env.txt
for f in .gpu/shared/*/*.gz; do d=/tmp/shared/$(basename $(dirname $f)); mkdir -p $d; gunzip -c $f > $d/$(basename $f .gz); done

# 1. one simulated log, split by rows into train / valid / test (sessions are contiguous, so splits barely share any)
/usr/bin/time -v $PY -m irp.cli simulate --n $SIM_N --seed 7 --out $D/sim.parquet 2> $OUT/simulate_time.txt | tail -3
$PY - <<PY
import pyarrow.parquet as pq
t = pq.read_table("$D/sim.parquet"); n = $TRAIN_N; rest = (t.num_rows - n) // 2
pq.write_table(t.slice(0, n), "$D/train.parquet"); pq.write_table(t.slice(n, rest), "$D/valid.parquet")
pq.write_table(t.slice(n + rest), "$D/test.parquet"); print("split", n, rest, t.num_rows - n - rest)
PY
echo "data ready at $(( $(date +%s) - t0 )) s"

# 2. the throughput benchmark: three recipes in one process on the same device
Q=""; [ "$QUICK" = 1 ] && Q="--quick"
$PY bench/train_throughput.py --device $DEVICE --backbone $B --out $OUT $Q --tokenize-data $D/train.parquet --tokenize-n 200000 2>&1 | grep -v -i "warn\|loading weights\|MISSING\|UNEXPECTED\|newly initialized" | tail -8
echo "bench done at $(( $(date +%s) - t0 )) s"

# 3. a full epoch of irp train on the 900K log (tokenization timed separately in config.json: featurize_s)
irp train --train $D/train.parquet --valid $D/valid.parquet --out /tmp/m900 --backbone $B --epochs 1 \
  --batch-size 512 --device $DEVICE --eval-every 100000 --checkpoint-every 100000 2>&1 | tail -14
irp evaluate --model /tmp/m900 --data $D/test.parquet --json $OUT/eval_900k_test.json --plots $OUT 2>&1 | tail -12
cp /tmp/m900/config.json $OUT/model_900k_config.json; cp /tmp/m900/metrics.json $OUT/model_900k_valid_metrics.json
echo "900K run done at $(( $(date +%s) - t0 )) s"

# 4. the full ablation run on 100K training records, bounded by ABLATE_S seconds (resumable cells)
if [ "$ABLATE_S" -gt 0 ]; then
  timeout $ABLATE_S $PY -m irp.cli ablate --table all --train $D/train.parquet --valid $D/valid.parquet \
    --test $D/test.parquet --out $OUT/ablate --seeds 3 --backbone $B --max-train 100000 --max-eval 20000 \
    --epochs 1 --batch-size 256 --device $DEVICE --jobs 4 --simmc-dir /tmp/shared --report $OUT/ablate/RESULTS.md 2>&1 | tail -40
  echo "ablation stopped at $(( $(date +%s) - t0 )) s"
fi
