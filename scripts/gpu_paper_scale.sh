#!/usr/bin/env bash
# Paper-scale evidence on one lent H100/H200 (issue 13), in ONE device call of <= 10 min, resumable in a second:
#   1. bench/train_throughput.py --device cuda: c/a >= 15 and c/b >= 1.0 in the same run, MFU, host syncs per step
#   2. one 900K-record epoch of `irp train` (batch 1024; tokenization reported separately: featurize_s), evaluated
#   3. `irp ablate --table all` (Tables 1-3, sweep, robustness, transfer, backbones) with 3 seeds on TRAIN_N >=
#      100,000 training records (a random subset of the 900K log), full 20K validation and test sets, SIMMC rows
#   4. $OUT: env.txt, log.txt, train_throughput.json, eval_900k_test.json, model_900k_config.json, ablate.tgz
#      (tables, plots, RESULTS.md, ablate_meta.json) and benchmarks_gpu.md (numbers for docs/benchmarks.md)
#
# The device has no PyPI and no network, and a call carries at most 64 MiB: the three backbones travel as fp16
# copies (loaded into fp32 master weights; minilm-l6 43 MiB, minilm-l3 33 MiB, mpnet-base 209 MiB) plus gzipped
# SIMMC, tarred and cut into parts of <= 60 MiB. Files written on the machine stay while it is warm (30 s after a
# call), so the parts go over in consecutive calls, the last one running everything:
#
#   here:    bash scripts/gpu_paper_scale.sh pack          # -> .gpu/stage/part.00 .. part.NN + MANIFEST (prints N)
#            (MPNET=0 bash scripts/gpu_paper_scale.sh pack: without mpnet-base, 2 parts; its rows are then skipped)
#   device:  run(command="bash scripts/gpu_paper_scale.sh stage", carry=[".gpu/stage/part.00"], timeout_s=120)
#            ... one call per part except the last, back to back ...
#   device:  run(command="OUT=$OUT bash scripts/gpu_paper_scale.sh run", carry=[".gpu/stage/part.NN",
#            ".gpu/stage/MANIFEST"], timeout_s=600)
#            (if the ablation did not finish in the budget: the same call again resumes it from its cache)
#   here:    bash scripts/gpu_paper_scale.sh land /work/.device/...   # docs/RESULTS.md, docs/bench/*.json
#
# CPU miniature of the whole path (pack -> stage -> assemble -> verify -> every step, tiny sizes; checks the
# script, not the numbers):  MINI=1 bash scripts/gpu_paper_scale.sh mini
set -uo pipefail
MODE=${1:-run}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MINI=${MINI:-0}
STAGE_DIR=${STAGE_DIR:-.gpu/stage}                # here: where pack writes the parts (git-ignored)
PART_MB=${PART_MB:-60}
W=${W:-/tmp/irp-paper}                            # on the device: survives between calls while the machine is warm
PY=${PY:-python3}                                 # the device's python3 holds torch; here, the project's venv:
if [ -x .venv/bin/python ] && { [ "$MINI" = 1 ] || [ "$MODE" = pack ] || [ "$MODE" = land ]; }; then PY=.venv/bin/python; fi

if [ "$MINI" = 1 ]; then   # tiny sizes, CPU, the same steps
  W=${W_MINI:-/tmp/irp-paper-mini}; STAGE_DIR=${STAGE_DIR_MINI:-/tmp/irp-paper-mini-pack}
  DEVICE=cpu; N=${N:-3000}; V=${V:-600}; TRAIN_N=${TRAIN_N:-400}; SEEDS=${SEEDS:-1}; EPOCHS=${EPOCHS:-1}
  BATCH=${BATCH:-32}; BATCH_900K=${BATCH_900K:-64}; JOBS=${JOBS:-1}; BENCH=--quick; BUDGET_S=${BUDGET_S:-1500}
  ABLATE_EXTRA=${ABLATE_EXTRA:---quick --compare-backbones minilm-l3,minilm-l6 --cost-queries 20}
else
  DEVICE=${DEVICE:-cuda}; N=${N:-900000}; V=${V:-20000}; TRAIN_N=${TRAIN_N:-100000}; SEEDS=${SEEDS:-3}
  EPOCHS=${EPOCHS:-1}; BATCH=${BATCH:-512}; BATCH_900K=${BATCH_900K:-1024}; JOBS=${JOBS:-6}; BENCH=${BENCH:-}
  BUDGET_S=${BUDGET_S:-570}; ABLATE_EXTRA=${ABLATE_EXTRA:---cost-queries 100}
fi
OUT=${OUT:-runs/gpu_paper}

# ---- here: build the parts ---------------------------------------------------------------------------------
pack() {
  local tmp names
  tmp=$(mktemp -d); names="minilm-l6 minilm-l3"; [ "${MPNET:-1}" = 1 ] && names="$names mpnet-base"
  mkdir -p "$tmp/bundle/shared"
  $PY -m irp.backbones pack "$tmp/bundle/backbones" $names || exit 1
  $PY -m irp.backbones verify >/dev/null || exit 1
  SHARED=${SHARED:-$ROOT/../shared/data}
  for f in simmc1_fashion/image_intent_train.jsonl simmc1_fashion/image_intent_dev.jsonl \
           simmc1_furniture/furniture_annotated_dev.jsonl; do
    mkdir -p "$tmp/bundle/shared/$(dirname $f)"; gzip -c "$SHARED/$f" > "$tmp/bundle/shared/$f.gz" || exit 1
  done
  rm -rf "$STAGE_DIR"; mkdir -p "$STAGE_DIR"
  tar -cf - -C "$tmp" bundle | split -b "${PART_MB}m" -d -a 2 - "$STAGE_DIR/part."
  (cd "$STAGE_DIR" && sha256sum part.* > MANIFEST)
  rm -rf "$tmp"
  echo "parts in $STAGE_DIR:"; ls -la "$STAGE_DIR"
  echo "device calls: one 'stage' call per part but the last (carry that part), then 'run' carrying the last part and MANIFEST"
}

# ---- device: keep the carried part(s) where the next call finds them -----------------------------------------
stage() {
  mkdir -p /tmp/irp-stage
  for f in "$STAGE_DIR"/part.* "$STAGE_DIR"/MANIFEST; do [ -f "$f" ] && cp "$f" /tmp/irp-stage/; done
  ls -la /tmp/irp-stage; df -h /tmp | tail -1
}

say() { echo "== $* at $(( $(date +%s) - t0 )) s"; }
left() { echo $(( BUDGET_S - ($(date +%s) - t0) )); }
done_or() { [ -f "$W/done.$1" ]; }
mark() { touch "$W/done.$1"; }

run() {
  t0=$(date +%s)
  mkdir -p "$OUT" "$W"
  export PYTHONPATH=$ROOT/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 IRP_CACHE_DIR=$W/features
  export IRP_BACKBONE_DIR=$W/bundle/backbones TOKENIZERS_PARALLELISM=false
  irp() { $PY -m irp.cli "$@"; }
  { date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    nproc
    $PY -c "import sys, torch, transformers, onnxruntime; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'onnxruntime', onnxruntime.__version__)"
    echo "N=$N V=$V TRAIN_N=$TRAIN_N SEEDS=$SEEDS EPOCHS=$EPOCHS BATCH=$BATCH JOBS=$JOBS BUDGET_S=$BUDGET_S MINI=$MINI"
  } | tee "$OUT/env.txt"

  # 1. assemble the carried bundle (parts checked against MANIFEST, weights against their markers)
  if ! done_or bundle; then
    stage >/dev/null
    (cd /tmp/irp-stage && sha256sum -c MANIFEST) || { echo "missing or damaged parts: stage every part first"; exit 2; }
    rm -rf "$W/bundle"; cat /tmp/irp-stage/part.* | tar -xf - -C "$W" || exit 2
    for f in $(cd "$W/bundle/shared" && find . -name "*.gz"); do
      mkdir -p "$W/shared/$(dirname $f)"; gunzip -c "$W/bundle/shared/$f" > "$W/shared/${f%.gz}"
    done
    $PY -m irp.backbones verify || exit 2
    mark bundle
  fi
  $PY -m irp.backbones list
  say "bundle ready"

  # 2. one simulated log: 900K train / 20K valid / 20K test (rows in session order; splits barely share sessions)
  D=$W/data; mkdir -p "$D"
  if ! done_or data; then
    irp simulate --n $(( N + 2 * V )) --seed 7 --out $D/sim.parquet | tail -1
    $PY - <<PY || exit 3
import pyarrow.parquet as pq
t = pq.read_table("$D/sim.parquet")
pq.write_table(t.slice(0, $N), "$D/train.parquet"); pq.write_table(t.slice($N, $V), "$D/valid.parquet")
pq.write_table(t.slice($N + $V), "$D/test.parquet")
PY
    mark data
  fi
  say data

  # 3. throughput: (a) HF default, (b) HF tuned, (c) irp's step, one process, one device
  if ! done_or bench; then
    $PY bench/train_throughput.py --device $DEVICE --backbone minilm-l6 --out "$OUT" $BENCH \
      --tokenize-data $D/valid.parquet --tokenize-n $V 2>&1 \
      | grep -v -i "warn\|loading weights\|MISSING\|UNEXPECTED\|newly initialized\|LOAD REPORT\|^Key\|^---\|^$" | tail -8
    [ -f "$OUT/train_throughput.json" ] && mark bench
  fi
  say bench

  # 4. a 900K-record epoch of irp train (featurize_s = tokenization, train_loop_s = the epoch), then the test set
  if ! done_or e900k; then
    irp train --train $D/train.parquet --valid $D/valid.parquet --out $W/m900k --epochs 1 --batch-size $BATCH_900K \
      --device $DEVICE --eval-every 1000000 --checkpoint-every 1000000 2>&1 | grep -E " (ap|precision|recall) "
    irp evaluate --model $W/m900k --data $D/test.parquet --json "$OUT/eval_900k_test.json" 2>&1 \
      | grep -E " (ap|precision|recall|threshold) "
    cp $W/m900k/config.json "$OUT/model_900k_config.json" && mark e900k
    $PY -c "import json; i = json.load(open('$W/m900k/config.json'))['training']; print({k: i.get(k) for k in ('featurize_s', 'train_loop_s', 'eval_s', 'steps', 'wall_s', 'device')})"
  fi
  say "900K epoch"

  # 5. the ablation, bounded by what is left of the budget (finished runs are cached: a rerun continues)
  budget=$(( $(left) - 40 ))
  if [ $budget -gt 60 ]; then
    timeout $budget $PY -m irp.cli ablate --table all --train $D/train.parquet --valid $D/valid.parquet \
      --test $D/test.parquet --out $W/ablate --seeds $SEEDS --max-train $TRAIN_N --epochs $EPOCHS \
      --batch-size $BATCH --device $DEVICE --jobs $JOBS --simmc-dir $W/shared --report $W/ablate/RESULTS.md \
      $ABLATE_EXTRA 2>&1 | grep -E "^irp ablate|cost of|^tables ->|Error|error" | tail -20
    status=${PIPESTATUS[0]}
    [ $status = 124 ] && echo "ablation stopped by the budget: call again to resume it"
  else
    echo "no time left for the ablation: call again to run it"
  fi
  say ablation

  # 6. what comes back (<= 8 files): tables, plots, report and meta in one archive; a benchmarks section
  [ -d $W/ablate ] && tar -czf "$OUT/ablate.tgz" -C $W --exclude ablate/cache --exclude ablate/models ablate
  $PY - "$OUT" <<'PY' > "$OUT/benchmarks_gpu.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1]); env = (out / "env.txt").read_text().splitlines()
b = json.loads((out / "train_throughput.json").read_text()) if (out / "train_throughput.json").exists() else {}
m = json.loads((out / "model_900k_config.json").read_text()) if (out / "model_900k_config.json").exists() else {}
e = json.loads((out / "eval_900k_test.json").read_text()) if (out / "eval_900k_test.json").exists() else {}
print(f"<!-- generated by scripts/gpu_paper_scale.sh on {env[0] if env else '?'} -->")
print(f"Hardware: {env[1] if len(env) > 1 else '?'}; {env[2] if len(env) > 2 else '?'} CPU cores; {env[3] if len(env) > 3 else ''}\n")
if b:
    print("| recipe | batch | tokens / example | examples/s | host syncs / step |\n| --- | --- | --- | --- | --- |")
    for k, name in (("hf_default", "(a) HF default"), ("hf_tuned", "(b) HF tuned"), ("irp", "(c) irp train step")):
        print(f"| {name} | {b['batch_size'][k]} | {b['mean_tokens_per_example'][k]} | {b['examples_per_s'][k]:,.0f} | {b['host_syncs_per_step'].get(k)} |")
    t = b.get("targets", {})
    print(f"\n- c/a = **{b['ratio_irp_hf_default']}** (target >= 15: {'met' if t.get('ratio_irp_hf_default>=15') else 'NOT met'}); "
          f"c/b = **{b['ratio_irp_hf_tuned']}** (target >= 1.0: {'met' if t.get('ratio_irp_hf_tuned>=1.0') else 'NOT met'}); "
          f"MFU of (c) {b.get('mfu')}; device {b['device']}; compile {b['compile']}.")
if m:
    tr, c = m.get("training", {}), m.get("config", {})
    print(f"\n900K epoch (`irp train`, {tr.get('n_train'):,} records, batch {c.get('batch_size')}, {tr.get('steps')} steps on {tr.get('device')}): "
          f"tokenize + product summaries {tr.get('featurize_s')} s (featurize_s); training loop {tr.get('train_loop_s')} s "
          f"(train_loop_s, incl. {tr.get('eval_s')} s of validation); wall {tr.get('wall_s')} s.")
if e:
    def ci(k):
        lo_hi = (e.get("ci") or {}).get(k)
        return f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else ""
    print(f"Held-out test ({e.get('n'):,} records, {e.get('positives'):,} positive): AP {e.get('ap'):.3f} {ci('ap')}, "
          f"precision {e.get('precision'):.3f} {ci('precision')}, recall {e.get('recall'):.3f} {ci('recall')} at threshold {e.get('threshold'):.4g}.")
PY
  cat "$OUT/benchmarks_gpu.md"
  say "done (OUT=$OUT)"
}

# ---- here, after the run: regenerate the docs from what came back --------------------------------------------
land() {
  local from=${1:?usage: land DIR_WITH_THE_RETURNED_FILES}
  mkdir -p docs/bench runs/gpu_paper
  tar -xzf "$from/ablate.tgz" -C runs/gpu_paper
  cp "$from/train_throughput.json" docs/bench/train_throughput.json
  cp "$from/eval_900k_test.json" docs/bench/eval_900k_test.json
  cp "$from/model_900k_config.json" docs/bench/model_900k_config.json
  mkdir -p docs/bench/ablate && cp runs/gpu_paper/ablate/*.json docs/bench/ablate/
  $PY -m irp.report runs/gpu_paper/ablate docs/RESULTS.md
  echo "docs/RESULTS.md, docs/bench/*.json written; paste $from/benchmarks_gpu.md into docs/benchmarks.md"
}

# ---- here: the miniature ------------------------------------------------------------------------------------
mini() {
  [ "$MINI" = 1 ] || { echo "run as: MINI=1 bash scripts/gpu_paper_scale.sh mini"; exit 2; }
  OUT=${OUT_MINI:-/tmp/irp-paper-mini-out}
  if [ "${RESUME:-0}" != 1 ]; then  # RESUME=1: keep $W (finished steps and cached runs), as a warm device does
    rm -rf "$W" /tmp/irp-stage "$OUT"
    MPNET=${MPNET:-1} pack || exit 1
    mkdir -p /tmp/irp-stage
    for p in "$STAGE_DIR"/part.*; do cp "$p" /tmp/irp-stage/; done  # what the 'stage' calls do, one part each
    cp "$STAGE_DIR/MANIFEST" /tmp/irp-stage/
  fi
  mkdir -p "$OUT"
  run
  listing() { tar -tzf "$OUT/ablate.tgz" 2>/dev/null || true; }  # (grep -q on a pipe would SIGPIPE tar: pipefail)
  if [[ "$(listing)" != *ablate/backbones.json* ]]; then
    echo "== the second call (resumes the ablation)"; run
  fi
  ls -la "$OUT"; n=$(ls "$OUT" | wc -l); [ "$n" -le 8 ] || { echo "more than 8 files in OUT ($n)"; exit 1; }
  for f in env.txt train_throughput.json eval_900k_test.json model_900k_config.json ablate.tgz benchmarks_gpu.md; do
    [ -s "$OUT/$f" ] || { echo "missing $OUT/$f"; exit 1; }
  done
  for f in backbones.json RESULTS.md table1.json transfer.json plots/backbones_quality_cost.png; do
    [[ "$(listing)" == *ablate/$f* ]] || { echo "ablate.tgz lacks ablate/$f"; exit 1; }
  done
  grep -q '"ratio_irp_hf_default"' "$OUT/train_throughput.json" || { echo "no throughput ratios"; exit 1; }
  echo "MINI OK"
}

case "$MODE" in
  pack) pack ;;
  stage) stage ;;
  run) mkdir -p "$OUT"; run 2>&1 | tee "$OUT/log.txt"; exit ${PIPESTATUS[0]} ;;
  land) land "${2:-}" ;;
  mini) mini ;;
  *) echo "usage: $0 pack|stage|run|land DIR|mini"; exit 2 ;;
esac
