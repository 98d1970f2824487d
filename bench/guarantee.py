"""Does the precision promise hold on unseen records? Coverage of the certified rule vs the point rule.

A team asks for precision 0.8. `irp.threshold.choose_threshold` picks the operating point on a validation
sample either with the old point rule (`confidence=0`: the most recall whose *validation* precision reaches
the target) or with the certified rule (`confidence=C`: fixed-sequence Clopper-Pearson testing, precision >=
target on new records with probability >= C). This bench measures how often each promise holds. A third rule,
"grouped", is the certified rule with the validation records' sessions as groups (`choose_threshold(...,
groups=...)`): its bound counts effective records (Kish's design effect over sessions), which matters where the
turns of one session go together; `median_design_effect_grouped` says how much they did.

Protocol, per pool (one trained model scores a large pool ONCE; the trials only re-split the scores):

- simulated: a model trained on a separate simulated log (its own seed) scores >= 60,000 simulated records;
- SIMMC 1.0 fashion (when ../shared/data is present): a model trained on fashion train scores fashion dev;
- `--simmc-compare DIR` (repeatable): an existing artifact scores fashion dev, one pool per model ("simmc:NAME"),
  all drawn with the same seed, so the models' operating points are compared over the same validation halves.

Each trial draws a validation sample and a disjoint test sample *by session* (records of one session never
straddle them, as `irp split` does): for the simulated pool, sessions in random order until 2,000 validation
records (the last session cut at 2,000; its remaining records are left out of both), test = every record of the
other sessions; for SIMMC, half of the dialogs for validation and the other half for test. On the validation
sample each rule chooses a threshold at the target (warnings of the F0.5 fallback are silenced and counted);
on the test sample we record precision and recall at that threshold.

Definitions (in guarantee.json):

- `coverage_<rule>`: share of trials whose test precision >= target. A trial whose threshold predicts no test
  record positive has undefined precision; it counts as NOT covered (conservative; `empty_test_<rule>` counts
  them). A fallback trial (nothing certified / reached on validation) counts like any other: covered only if
  its test precision happens to reach the target.
- `violation_rate_<rule>`: share of trials that claimed the target (rule did not fall back) and missed it on
  test. This is the quantity the guarantee bounds by 1 - C (the certified rule never claims when it falls back).
- `coverage_<rule>_when_reached`: coverage among the trials that did not fall back.
- `median_recall_<rule>`: median test recall over all trials (`..._when_reached`: over the trials that did not
  fall back, with `median_precision_<rule>_when_reached`: what a model delivers where its rule makes a promise);
  `fallback_rate_<rule>`: share of trials whose rule fell back to the F0.5 threshold. The certified rule falls
  back exactly when its first candidate (the threshold predicting 5 % of the validation records positive,
  `irp.threshold.default_min_predicted`) fails its bound; `pool_precision_top_5pct` (the pool's precision there)
  says how close to the target that start is.
- `coverage_<rule>_pool`, `violation_rate_<rule>_pool`: the same with the precision over the whole pool at the
  chosen threshold, the population the validation sample was drawn from (the quantity the guarantee is about,
  free of the test sample's own noise; for SIMMC the test half is the pool minus the validation half, so a lucky
  validation half makes an unlucky test half and the test-half check is about twice as noisy).
- `share_meeting_<rule>` (with `--recall-bar R`): share of all trials whose test precision reaches the target
  and test recall reaches R (a bar such as "precision >= 0.8 at recall >= 0.45"; fallbacks count like any other).
- `median_design_effect_<rule>` (grouped rule): predicted positives / effective predicted positives at the chosen
  threshold, the median over trials (1 = the sessions' turns behave like independent records).
- `oracle_recall_at_target`: the most recall of any threshold whose precision over the whole pool reaches the
  target (what a rule that knew the population could get).

The test sample is finite, so its precision is an estimate of the population precision the guarantee speaks
about (for the simulated pool ~62K test records: a small extra noise; for SIMMC ~1,750 test records).

Scores are the model's raw probabilities. Calibration (temperature scaling, or isotonic) is a monotone
transform fitted after training, so it changes no set of records a threshold selects, and so no precision,
recall or coverage here (isotonic's ties can merge candidates; temperature keeps them all).

    .venv/bin/python bench/guarantee.py --out bench/results        # trains, scores, caches the scored pools
    .venv/bin/python bench/guarantee.py --out bench/results        # rerun: reuses them

The simulated pool's scores are cached in OUT/pool_simulated.npz; the SIMMC pool's in WORK/pool_simmc.npz (runs/,
not committed: SIMMC labels are CC-BY-NC-SA data that stay in ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from irp.threshold import PrecisionTargetWarning, choose_threshold

# Per rule: (confidence, grouped); confidence None = the --confidence argument. "grouped" certifies as "guaranteed"
# but counts the validation records of one session as correlated (irp.threshold.clustered_counts).
RULES: dict[str, tuple[float | None, bool]] = {"point": (0.0, False), "guaranteed": (None, False),
                                               "grouped": (None, True)}
CLEAN_TAPS = ("--screen-rate", "1.0", "--miss-rate", "0.05", "--accidental-tap-rate", "0.01")
ROOT = Path(__file__).resolve().parents[1]
SIMMC_DIR = ROOT.parent / "shared" / "data" / "simmc1_fashion"
LABELS = {
    "y": "label (the tap, as logged)",
    "y_clean_taps": "label re-drawn with irp simulate --screen-rate 1.0 --miss-rate 0.05 --accidental-tap-rate 0.01 "
                    "(same records and scores)",
    "y_true_intent": "true_intent (the latent visual intent; same records and scores)",
}


# ---- pure logic: splits, one trial, the summary --------------------------------------------------------------


def session_codes(session_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Integer code per record, equal for records of one session: (n,) -> (n,).

    >>> session_codes(["b", "a", "b", "c"]).tolist()
    [1, 0, 1, 2]
    """
    _, codes = np.unique(np.asarray(session_ids, dtype=str), return_inverse=True)
    return codes.astype(np.int64)


def draw_split(
    codes: npt.NDArray[np.int64],
    rng: np.random.Generator,
    *,
    n_valid: int | None = None,
    session_fraction: float | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A session-disjoint (validation, test) pair of record index arrays.

    `n_valid`: sessions in random order fill exactly `n_valid` validation records (the last one is cut; its
    other records go to neither side); test = the records of all later sessions. `session_fraction`: that share
    of the sessions (rounded) for validation, the rest for test.

    >>> codes = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    >>> v, t = draw_split(codes, np.random.default_rng(0), n_valid=3)
    >>> len(v), len(set(codes[v]) & set(codes[t]))
    (3, 0)
    >>> v, t = draw_split(codes, np.random.default_rng(0), session_fraction=0.5)
    >>> len(set(codes[v])), len(set(codes[t])), len(v) + len(t)
    (2, 2, 8)
    """
    if (n_valid is None) == (session_fraction is None):
        raise ValueError("give exactly one of n_valid and session_fraction")
    n_sessions = int(codes.max()) + 1
    rank = rng.permutation(n_sessions)  # (S,) position of each session in the draw order
    key = rank[codes]  # (n,)
    order = np.argsort(key, kind="stable")  # records grouped by session, sessions in draw order
    if session_fraction is not None:
        cut = int(round(session_fraction * n_sessions))
        return np.sort(order[key[order] < cut]), np.sort(order[key[order] >= cut])
    assert n_valid is not None
    if not 0 < n_valid < codes.size:
        raise ValueError(f"n_valid must be in (0, {codes.size}), got {n_valid}")
    valid = order[:n_valid]
    last = key[order[n_valid - 1]]  # the session that was cut (or just filled)
    test = order[key[order] > last]
    return np.sort(valid), np.sort(test)


def measure_at(y: npt.NDArray[Any], scores: npt.NDArray[Any], threshold: float) -> tuple[float, float, int]:
    """(precision, recall, predicted positive) of `score >= threshold`; precision NaN when nothing is predicted.

    >>> measure_at(np.array([1, 0, 1, 1]), np.array([0.9, 0.8, 0.3, 0.7]), 0.5)
    (0.6666666666666666, 0.6666666666666666, 3)
    """
    pred = scores >= threshold
    k = int(pred.sum())
    tp = int(y[pred].sum())
    pos = int(y.sum())
    return (tp / k if k else float("nan")), (tp / pos if pos else float("nan")), k


@dataclass
class Trials:
    """Per-trial outcomes of one rule: each (T,)."""

    precision: npt.NDArray[np.float64]
    recall: npt.NDArray[np.float64]
    predicted: npt.NDArray[np.int64]
    fallback: npt.NDArray[np.bool_]
    threshold: npt.NDArray[np.float64]
    valid_precision: npt.NDArray[np.float64]
    pool_precision: npt.NDArray[np.float64]  # over the whole pool (validation included): the draws' population
    design_effect: npt.NDArray[np.float64]  # at the chosen threshold, grouped rule only (NaN otherwise)


def run_trials(
    y: npt.NDArray[Any],
    scores: npt.NDArray[Any],
    codes: npt.NDArray[np.int64],
    *,
    trials: int,
    target: float,
    confidence: float,
    seed: int = 0,
    n_valid: int | None = None,
    session_fraction: float | None = None,
) -> dict[str, Trials]:
    """Draw `trials` session-disjoint splits; on each, every rule chooses on valid and is measured on test."""
    rng = np.random.default_rng(seed)
    confs = {name: (confidence if c is None else c, grouped) for name, (c, grouped) in RULES.items()}
    s_sorted = np.sort(scores)  # ascending, for the pool's precision at any threshold
    pos_above = np.cumsum(y[np.argsort(scores, kind="stable")][::-1])[::-1]  # (n,) positives with score >= s_sorted[i]
    out: dict[str, dict[str, list[Any]]] = {name: {f: [] for f in Trials.__dataclass_fields__} for name in RULES}
    for _ in range(trials):
        v, t = draw_split(codes, rng, n_valid=n_valid, session_fraction=session_fraction)
        for name, (conf, grouped) in confs.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PrecisionTargetWarning)
                choice = choose_threshold(y[v], scores[v], target, conf, groups=codes[v] if grouped else None)
            p, r, k = measure_at(y[t], scores[t], choice.threshold)
            rec = out[name]
            rec["precision"].append(p)
            rec["recall"].append(r)
            rec["predicted"].append(k)
            rec["fallback"].append(choice.rule == "max_f05_fallback")
            rec["threshold"].append(choice.threshold)
            rec["valid_precision"].append(choice.precision)
            rec["design_effect"].append(choice.design_effect)
            i = int(np.searchsorted(s_sorted, choice.threshold, side="left"))  # first pool score >= threshold
            rec["pool_precision"].append(pos_above[i] / (y.size - i) if i < y.size else float("nan"))
    return {name: Trials(**{f: np.asarray(vals) for f, vals in rec.items()}) for name, rec in out.items()}


def summarize(results: dict[str, Trials], target: float, recall_bar: float | None = None) -> dict[str, Any]:
    """The JSON keys of one pool from the per-trial outcomes (module docstring: definitions).

    >>> t = Trials(np.array([0.9, 0.7, np.nan]), np.array([0.5, 0.6, 0.0]), np.array([10, 10, 0]),
    ...            np.array([False, False, True]), np.zeros(3), np.zeros(3), np.array([0.9, 0.7, 0.9]),
    ...            np.full(3, np.nan))
    >>> s = summarize({"point": t}, 0.8)
    >>> s["coverage_point"], s["violation_rate_point"], s["fallback_rate_point"], s["empty_test_point"]
    (0.3333, 0.3333, 0.3333, 1)
    >>> summarize({"point": t}, 0.8, recall_bar=0.5)["share_meeting_point"]  # only the first: 0.9 at 0.5
    0.3333
    """
    out: dict[str, Any] = {}
    for name, t in results.items():
        covered = np.nan_to_num(t.precision, nan=-1.0) >= target  # empty prediction -> not covered
        reached = ~t.fallback
        out[f"coverage_{name}"] = round(float(covered.mean()), 4)
        out[f"coverage_{name}_when_reached"] = round(float(covered[reached].mean()), 4) if reached.any() else None
        out[f"violation_rate_{name}"] = round(float((reached & ~covered).mean()), 4)
        pool_ok = np.nan_to_num(t.pool_precision, nan=-1.0) >= target
        out[f"coverage_{name}_pool"] = round(float(pool_ok.mean()), 4)
        out[f"violation_rate_{name}_pool"] = round(float((reached & ~pool_ok).mean()), 4)
        out[f"median_recall_{name}"] = round(float(np.median(t.recall)), 4)
        out[f"mean_recall_{name}"] = round(float(np.mean(t.recall)), 4)
        for stat, values in (("recall", t.recall), ("precision", t.precision)):
            out[f"median_{stat}_{name}_when_reached"] = (
                round(float(np.nanmedian(values[reached])), 4) if reached.any() else None
            )
        out[f"fallback_rate_{name}"] = round(float(t.fallback.mean()), 4)
        out[f"empty_test_{name}"] = int((t.predicted == 0).sum())
        prec = t.precision[~np.isnan(t.precision)]
        out[f"test_precision_quantiles_{name}"] = (
            {f"q{int(q * 100):02d}": round(float(np.quantile(prec, q)), 4) for q in (0.05, 0.1, 0.5, 0.9)}
            if prec.size else None
        )
        out[f"test_recall_quantiles_{name}"] = {
            f"q{int(q * 100):02d}": round(float(np.quantile(t.recall, q)), 4) for q in (0.1, 0.5, 0.9)
        }
        out[f"median_predicted_share_{name}"] = None  # filled by the caller (needs the test size)
        if recall_bar is not None:  # precision >= target AND recall >= bar on the test sample, over all trials
            meets = (np.nan_to_num(t.precision, nan=-1.0) >= target) & (t.recall >= recall_bar)
            out[f"share_meeting_{name}"] = round(float(meets.mean()), 4)
        if not np.isnan(t.design_effect).all():
            out[f"median_design_effect_{name}"] = round(float(np.nanmedian(t.design_effect)), 4)
    return out


def oracle_recall(y: npt.NDArray[Any], scores: npt.NDArray[Any], target: float) -> float:
    """The most recall of any threshold whose precision over the whole pool reaches the target (a reference).

    >>> oracle_recall(np.array([1, 1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6, 0.5]), 0.75)
    1.0
    """
    order = np.argsort(-scores, kind="stable")
    ys, ss = y[order], scores[order]
    end = np.append(np.flatnonzero(ss[1:] != ss[:-1]), ss.size - 1)
    tp = np.cumsum(ys)[end]
    ok = tp / (end + 1) >= target - 1e-12
    return float(tp[ok].max() / y.sum()) if ok.any() else 0.0


# ---- building and scoring the pools (slow; cached as DIR/pool_<name>.npz) -----------------------------------


def _irp(*args: str) -> None:
    exe = Path(sys.executable).parent / "irp"
    cmd = [str(exe), *args]
    print("$ irp " + " ".join(args), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(cmd, check=True, env=env)


def _score(model_dir: Path, data: Path, runtime: str) -> dict[str, npt.NDArray[Any]]:
    """Score every record of `data` once: labels, raw scores, session ids."""
    from irp.data.io import load_records
    from irp.predict import IRPClassifier

    records = load_records(data)
    clf = IRPClassifier.load(model_dir, runtime=runtime)
    t0 = time.perf_counter()
    scores = clf.predict_proba(records)
    secs = time.perf_counter() - t0
    print(f"scored {len(records):,} records of {data} with {model_dir} ({runtime}) in {secs:.0f} s", flush=True)
    return {
        "y": np.array([int(r["label"]) for r in records], dtype=np.int8),
        "scores": np.asarray(scores, dtype=np.float64),
        "session": np.array([str(r.get("session_id") or r["id"]) for r in records]),
        "score_seconds": np.array(secs),
    }


def _train_args(args: argparse.Namespace, max_steps: int) -> list[str]:
    out = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", "13"]
    if max_steps:
        out += ["--max-steps", str(max_steps)]
    return out


def _export(model: Path, runtime: str) -> None:
    if runtime.startswith("onnx") and not (model / "onnx").exists():
        _irp("export-onnx", "--model", str(model), "--int8", "--max-records", "500")


def build_sim_pool(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train on a simulated log (seed 101), score a separate simulated pool (seed 202) once."""
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.sim_model) if args.sim_model else work / "sim_model"
    if not (model / "config.json").exists():
        log = work / "sim_trainlog.parquet"
        _irp("simulate", "--n", str(args.sim_train_n), "--seed", "101", "--out", str(log))
        _irp("split", str(log), "--fraction", "0.857", "--seed", "0",
             "--out-first", str(work / "sim_train.parquet"), "--out-second", str(work / "sim_valid.parquet"))
        _irp("train", "--train", str(work / "sim_train.parquet"), "--valid", str(work / "sim_valid.parquet"),
             "--out", str(model), *_train_args(args, args.sim_max_steps))
    _export(model, args.runtime)
    pool = work / "sim_pool.parquet"
    if not pool.exists():
        _irp("simulate", "--n", str(args.sim_pool_n), "--seed", "202", "--out", str(pool))
    scored = _score(model, pool, args.runtime)
    scored["source"] = np.array(f"simulated pool (irp simulate --n {args.sim_pool_n} --seed 202), model {model}")
    # The same records with other labels (the simulator's label knobs act only on the tap, so the same seed
    # gives the same utterances, products and true_intent, hence the same scores): the latent intent itself,
    # and taps with a screen always at hand and fewer misses.
    clean = work / "sim_pool_clean_taps.parquet"
    if not clean.exists():
        _irp("simulate", "--n", str(args.sim_pool_n), "--seed", "202", *CLEAN_TAPS, "--out", str(clean))
    from irp.data.io import load_records

    recs = load_records(pool)
    scored["y_true_intent"] = np.array([int(r["true_intent"]) for r in recs], dtype=np.int8)
    clean_recs = load_records(clean)
    if [r["id"] for r in clean_recs] != [r["id"] for r in recs]:
        raise RuntimeError("the clean-tap pool does not have the same records")
    scored["y_clean_taps"] = np.array([int(r["label"]) for r in clean_recs], dtype=np.int8)
    return scored


def _simmc_dev(work: Path) -> Path:
    """SIMMC 1.0 fashion dev as irp records (imported once into WORK)."""
    work.mkdir(parents=True, exist_ok=True)
    dev = work / "f_dev.jsonl"
    if not dev.exists():
        _irp("import", "simmc", str(SIMMC_DIR / "image_intent_dev.jsonl"), "--out", str(dev))
    return dev


def build_simmc_pool(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train on SIMMC fashion train (90 % of its dialogs; 10 % for validation), score fashion dev once."""
    model = Path(args.simmc_model) if args.simmc_model else work / "simmc_model"
    dev = _simmc_dev(work)
    if not (model / "config.json").exists():
        train = work / "f_train.jsonl"
        _irp("import", "simmc", str(SIMMC_DIR / "image_intent_train.jsonl"), "--out", str(train))
        _irp("split", str(train), "--fraction", "0.9", "--seed", "0",
             "--out-first", str(work / "f_fit.jsonl"), "--out-second", str(work / "f_trainvalid.jsonl"))
        _irp("train", "--train", str(work / "f_fit.jsonl"), "--valid", str(work / "f_trainvalid.jsonl"),
             "--out", str(model), *_train_args(args, args.simmc_max_steps))
    _export(model, args.runtime)
    scored = _score(model, dev, args.runtime)
    scored["source"] = np.array(f"SIMMC 1.0 fashion dev ({dev}), model {model} trained on fashion train")
    return scored


def build_compare_pool(model: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Score fashion dev once with an existing artifact (`--simmc-compare`): one pool per model, same records."""
    dev = _simmc_dev(work)
    _export(model, args.runtime)
    scored = _score(model, dev, args.runtime)
    scored["source"] = np.array(f"SIMMC 1.0 fashion dev ({dev}), model {model}")
    return scored


def _pool_cache(name: str, cache_dir: Path) -> Path:
    return cache_dir / f"pool_{name}.npz"


def load_or_build(name: str, cache_dir: Path, builder: Any, args: argparse.Namespace) -> dict[str, Any]:
    cache = _pool_cache(name, cache_dir)
    if cache.exists() and not args.rescore:
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    pool = builder(args, Path(args.work))
    np.savez_compressed(cache, **pool)
    return pool


def load_simmc_pool(name: str, builder: Any, args: argparse.Namespace, what: str) -> dict[str, Any] | None:
    """A SIMMC pool, cached in --work (its labels are CC-BY-NC-SA data that must not enter the repository): built when
    ../shared/data is present, read from the cache otherwise; None (and a note naming `what`) when neither is."""
    work = Path(args.work)
    if not (SIMMC_DIR.exists() or _pool_cache(name, work).exists()):
        print(f"{what} skipped: {SIMMC_DIR} is absent", file=sys.stderr)
        return None
    return load_or_build(name, work, builder, args)


# ---- report -------------------------------------------------------------------------------------------------


def pool_report(pool: dict[str, Any], args: argparse.Namespace, kind: str, label: str = "y",
                target: float | None = None) -> tuple[dict[str, Any], dict[str, Trials]]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    target = args.target if target is None else target
    y, s = pool[label].astype(np.int64), pool["scores"].astype(np.float64)
    codes = session_codes(pool["session"])
    split = {"n_valid": args.sim_n_valid} if kind == "simulated" else {"session_fraction": 0.5}
    t0 = time.perf_counter()
    res = run_trials(y, s, codes, trials=args.trials, target=target, confidence=args.confidence,
                     seed=args.seed, **split)
    rng = np.random.default_rng(args.seed)  # the first split again, for the sizes
    v, t = draw_split(codes, rng, **split)
    report: dict[str, Any] = {
        "pool": str(pool["source"]),
        "label": LABELS[label],
        "n_pool": int(y.size),
        "sessions": int(codes.max() + 1),
        "positive_rate": round(float(y.mean()), 4),
        "ap": round(float(average_precision_score(y, s)), 4),
        "roc_auc": round(float(roc_auc_score(y, s)), 4),
        "oracle_recall_at_target": round(oracle_recall(y, s, target), 4),
        # where the certified scan starts (5 % of the validation records predicted positive, by default): when the
        # precision there is close to the target, the first bound often fails and the rule falls back
        "pool_precision_top_5pct": round(float(y[np.argsort(-s, kind="stable")[: max(1, y.size // 20)]].mean()), 4),
        "trials": args.trials,
        "split": ("sessions in random order until exactly n_valid validation records; test = the other sessions"
                  if kind == "simulated" else "half of the dialogs for validation, the other half for test"),
        "n_valid": int(v.size),
        "n_test": int(t.size),
        "valid_positives_first_trial": int(y[v].sum()),
        "target_precision": target,
        "confidence": args.confidence,
        **summarize(res, target, args.recall_bar),
        "recall_given_up": None,
        "trial_seconds": round(time.perf_counter() - t0, 1),
    }
    for rule, tr in res.items():
        report[f"median_predicted_share_{rule}"] = round(float(np.median(tr.predicted)) / t.size, 4)
    # median recall of the point rule minus the certified rule's; None where a rule falls back in most trials (its
    # recall is then the F0.5 threshold's, below the target: nothing was given up for a guarantee)
    both_work = max(report["fallback_rate_point"], report["fallback_rate_guaranteed"]) <= 0.5
    report["recall_given_up"] = (round(report["median_recall_point"] - report["median_recall_guaranteed"], 4)
                                 if both_work else None)
    return report, res


def plot(reports: dict[str, dict[str, Any]], results: dict[str, dict[str, Trials]], path: Path,
         confidence: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(reports)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 2.6 * len(names)), 4.6))
    x = np.arange(len(names))
    # "simulated_clean_taps" -> one word per line; "simmc:soup_tr_l6" -> pool, then the model's name
    ticks = [f"{n.replace(':', chr(10)) if ':' in n else n.replace('_', chr(10))}\n"
             f"P >= {reports[n]['target_precision']:g}" for n in names]
    w = 0.8 / len(RULES)
    colors = {"point": "#d95f02", "guaranteed": "#1b9e77", "grouped": "#7570b3"}
    labels = {"point": "point rule (C = 0)", "guaranteed": f"certified (C = {confidence:g})",
              "grouped": f"certified by session (C = {confidence:g})"}
    for k, rule in enumerate(RULES):
        offset = (k - (len(RULES) - 1) / 2) * w
        cov = [reports[n][f"coverage_{rule}"] for n in names]
        bars = ax1.bar(x + offset, cov, w, color=colors[rule], label=labels[rule])
        ax1.bar_label(bars, fmt="%.2f", fontsize=7)
        data = [results[n][rule].recall for n in names]
        ax2.boxplot(data, positions=x + offset, widths=w * 0.9, patch_artist=True,
                    boxprops={"facecolor": colors[rule], "alpha": 0.7}, medianprops={"color": "black"},
                    showfliers=False)
    ax1.axhline(confidence, ls="--", color="grey", lw=1)
    ax1.text(len(names) - 0.5, confidence + 0.01, f"C = {confidence:g}", ha="right", va="bottom", fontsize=8)
    ax1.set_xticks(x, ticks, fontsize=8)
    ax1.set_ylim(0, 1.15)
    ax1.set_ylabel("coverage: share of trials with test precision >= target")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.set_title("Does the promise hold?")
    ax2.set_xticks(x, ticks, fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("test recall at the chosen threshold")
    ax2.set_title(f"What it costs ({reports[names[0]]['trials']} trials per pool)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(reports: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("pool", "target", "rule", "coverage", "violations", "fallback", "median recall",
                  "test precision q10/q50",
                  title="precision promise on unseen records (confidence of the certified rule: see guarantee.json)")
    for name, r in reports.items():
        for rule in RULES:
            q = r[f"test_precision_quantiles_{rule}"] or {}
            table.add_row(name, f"{r['target_precision']:g}", rule, f"{r[f'coverage_{rule}']:.3f}",
                          f"{r[f'violation_rate_{rule}']:.3f}",
                          f"{r[f'fallback_rate_{rule}']:.3f}", f"{r[f'median_recall_{rule}']:.3f}",
                          f"{q.get('q10', float('nan')):.3f} / {q.get('q50', float('nan')):.3f}")
    Console(width=140).print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="writes OUT/guarantee.json, OUT/guarantee.png, OUT/pool_simulated.npz")
    ap.add_argument("--work", default="runs/guarantee", help="trained models and data files")
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sim-n-valid", type=int, default=2000)
    ap.add_argument("--sim-pool-n", type=int, default=64000)
    ap.add_argument("--sim-train-n", type=int, default=14000)
    ap.add_argument("--sim-model", help="an existing artifact to score the simulated pool with (default: train one)")
    ap.add_argument("--simmc-model", help="an existing artifact trained on SIMMC fashion train")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--sim-max-steps", type=int, default=0, help="0 = the whole epoch")
    ap.add_argument("--simmc-max-steps", type=int, default=300, help="CPU budget: 300 steps of 32 (half an epoch)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--runtime", default="onnx", help="torch or onnx (int8 export, much faster on CPU)")
    ap.add_argument("--pools", default="simulated,simmc", help="comma-separated; 'none' runs only --simmc-compare")
    ap.add_argument("--simmc-compare", action="append", default=[], metavar="DIR",
                    help="also a SIMMC fashion dev pool scored by this artifact (repeatable; pools 'simmc:NAME'), to "
                         "compare models' operating points over the same draws")
    ap.add_argument("--extra-targets", type=float, nargs="*", default=[0.7],
                    help="also run the simulated pool (tap labels) at these targets")
    ap.add_argument("--rescore", action="store_true", help="ignore cached OUT/pool_*.npz")
    ap.add_argument("--recall-bar", type=float, default=None,
                    help="also report share_meeting_<rule>: trials with test precision >= target and recall >= this")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    reports: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, Trials]] = {}
    wanted = args.pools.split(",")
    if "simulated" in wanted:
        pool = load_or_build("simulated", out, build_sim_pool, args)
        reports["simulated"], results["simulated"] = pool_report(pool, args, "simulated")
        for t in args.extra_targets:
            name = f"simulated@{t:g}"
            reports[name], results[name] = pool_report(pool, args, "simulated", target=t)
        for label in ("y_clean_taps", "y_true_intent"):
            name = "simulated_" + label[2:]
            reports[name], results[name] = pool_report(pool, args, "simulated", label=label)
    if "simmc" in wanted and (pool := load_simmc_pool("simmc", build_simmc_pool, args, "SIMMC pool")) is not None:
        reports["simmc_fashion"], results["simmc_fashion"] = pool_report(pool, args, "simmc")
    for model in map(Path, args.simmc_compare):
        builder = partial(build_compare_pool, model)
        if (pool := load_simmc_pool(f"simmc_{model.name}", builder, args, f"SIMMC pool of {model}")) is not None:
            name = f"simmc:{model.name}"
            reports[name], results[name] = pool_report(pool, args, "simmc")
    doc = {
        "what": "coverage of the precision promise: point rule (confidence 0) vs certified rule vs certified rule "
                "counting sessions (grouped), on session-disjoint validation/test draws from one scored pool "
                "(bench/guarantee.py docstring)",
        "scores": "raw model probabilities; calibration is monotone and selects the same records at every threshold",
        "empty_test_prediction": "counts as not covered",
        "command": "python bench/guarantee.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "pools": reports,
    }
    (out / "guarantee.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot(reports, results, out / "guarantee.png", args.confidence)
    print_table(reports)
    print(f"wrote {out / 'guarantee.json'} and {out / 'guarantee.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
