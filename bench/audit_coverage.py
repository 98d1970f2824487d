"""Do the audit's 95 % intervals cover the truth? A simulated log, a simulated annotator, many repetitions.

The simulator knows each record's latent `true_intent`, so the proxy label's true precision P(true | tap) and
recall P(tap | true) over the log are known exactly. Each repetition draws a new `irp audit sample` design
(library call `write_sample`, the same code as the command, with the model's scores computed once), a
simulated annotator answers from `true_intent` (each answer flipped with probability --error-rate, "can't tell"
with probability --cant-tell-rate), the verdicts come in through `import_verdicts` (the path of `irp audit
import`), and `audit_report` (the `irp audit report` estimates) gives the intervals. One extra repetition runs
the real commands end to end (`irp audit sample/import/report` as subprocesses) and its JSON is kept.

With --model, strata are label x score band and the promise is translated; the bench also checks the
translation formula at the log's true tap precision above the threshold against the true precision of
visual intent there, and how often the certified visual-intent bound holds.

    python bench/audit_coverage.py --population pop.jsonl --model model --reps 200 --n 400 \
        --out bench/results/audit_coverage.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from irp.audit.estimate import audit_report, strata_data, translate_promise
from irp.audit.sample import write_sample
from irp.data.io import load_records
from irp.fileio import file_fingerprint, write_json_atomic
from irp.metrics import nan_to_none


def annotate(folder_ids: list[str], truth: dict[str, int], rng: np.random.Generator, error_rate: float,
             cant_tell_rate: float, annotator: str, path: Path) -> None:
    """A simulated annotator's verdict file (CSV id,annotator,verdict), as a spreadsheet would give it."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "annotator", "verdict"])
        for record_id in folder_ids:
            if rng.random() < cant_tell_rate:
                verdict = "cant_tell"
            else:
                visual = truth[record_id] if rng.random() >= error_rate else 1 - truth[record_id]
                verdict = "yes" if visual else "no"
            writer.writerow([record_id, annotator, verdict])


def covers(interval: list[float], value: float) -> bool:
    return bool(interval[0] <= value <= interval[1])


def run_setting(records: list[dict[str, Any]], scores: np.ndarray | None, model: dict[str, Any] | None, args,
                error_rate: float, second_share: float, name: str) -> dict[str, Any]:
    truth = {r["id"]: int(r["true_intent"]) for r in records}
    t = np.array([r["true_intent"] for r in records])
    y = np.array([r["label"] for r in records])
    target = {"precision": float(t[y == 1].mean()), "recall": float(y[t == 1].mean())}
    above = None if scores is None else scores >= model["threshold"]
    if above is not None:
        target["visual_precision_above"] = float(t[above].mean())
        target["tap_precision_above"] = float(y[above].mean())
    rng = np.random.default_rng(args.seed)
    hits: dict[str, list[bool]] = {k: [] for k in ("precision", "recall", "visual_precision_above",
                                                   "translation_at_true_tap_precision", "certified_bound_holds")}
    estimates: dict[str, list[float]] = {k: [] for k in ("precision", "recall", "translated", "width_precision",
                                                         "width_recall", "alpha")}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            folder = write_sample(records, args.n, Path(tmp) / f"s{rep}", seed=args.seed * 100_000 + rep,
                                  scores=scores, model=model)
            ids = [r["id"] for r in folder.records]
            annotate(ids, truth, rng, error_rate, args.cant_tell_rate, "sim", Path(tmp) / "v.csv")
            folder.import_verdicts(Path(tmp) / "v.csv")
            if second_share > 0:
                annotate(ids[: int(second_share * len(ids))], truth, rng, error_rate, args.cant_tell_rate, "sim2",
                         Path(tmp) / "v2.csv")
                folder.import_verdicts(Path(tmp) / "v2.csv")
            report = audit_report(folder)
            for key in ("precision", "recall"):
                hits[key].append(covers(report[key]["ci95"], target[key]))
                estimates[key].append(report[key]["estimate"])
                estimates[f"width_{key}"].append(report[key]["ci95"][1] - report[key]["ci95"][0])
            estimates["alpha"].append(report["agreement"]["krippendorff_alpha"])
            if above is not None:
                promise = report["promise"]
                hits["visual_precision_above"].append(
                    covers(promise["visual_precision_in_audited_log"]["ci95"], target["visual_precision_above"]))
                estimates["translated"].append(promise["translated"]["estimate"])
                if "certified_visual_precision_lower_bound" in promise:
                    hits["certified_bound_holds"].append(
                        promise["certified_visual_precision_lower_bound"] <= target["visual_precision_above"])
                at_truth = translate_promise(strata_data(folder), {**model["promise"], "lower_bound": target[
                    "tap_precision_above"], "confidence": 0.9})
                hits["translation_at_true_tap_precision"].append(
                    covers(at_truth["translated"]["ci95"], target["visual_precision_above"]))
    result: dict[str, Any] = {
        "setting": name, "error_rate": error_rate, "cant_tell_rate": args.cant_tell_rate,
        "second_annotator_share": second_share, "n": args.n, "reps": args.reps,
        "strata": "label x score band" if scores is not None else "label",
        "truth": target,
        "coverage": {k: (float(np.mean(v)) if v else None) for k, v in hits.items()},
        "mean_estimate": {k: (float(np.nanmean(v)) if v else None) for k, v in estimates.items()},
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(nan_to_none(result), indent=1), flush=True)
    return result


def end_to_end(population: Path, model: Path | None, n: int, truth: dict[str, int], work: Path) -> dict[str, Any]:
    """One repetition through the real commands: irp audit sample -> verdict CSV -> import -> report --json."""
    def irp(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "irp.cli", *args], check=True, capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"})

    sample_args = ["audit", "sample", "--data", str(population), "--n", str(n), "--out", str(work / "audit"),
                   "--seed", "7"] + (["--model", str(model)] if model else [])
    irp(*sample_args)
    ids = [json.loads(line)["id"] for line in (work / "audit" / "sample.jsonl").read_text().splitlines()]
    annotate(ids, truth, np.random.default_rng(7), 0.0, 0.0, "sim", work / "verdicts.csv")
    irp("audit", "import", str(work / "audit"), "--verdicts", str(work / "verdicts.csv"))
    irp("audit", "report", str(work / "audit"), "--json", str(work / "report.json"))
    return json.loads((work / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=Path, required=True, help="simulated log (records with true_intent)")
    parser.add_argument("--model", type=Path, default=None, help="artifact for score strata and the promise")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--cant-tell-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit_coverage.json"))
    args = parser.parse_args()

    records = load_records(args.population)
    scores, model_info = None, None
    if args.model is not None:
        from irp.predict import IRPClassifier

        started = time.perf_counter()
        clf = IRPClassifier.load(args.model)
        scores = clf.predict_proba(records).astype(np.float64)
        model_info = {"path": str(args.model), "version": clf.version, "threshold": clf.threshold_,
                      "promise": clf.promise}
        print(f"scored {len(records)} records in {time.perf_counter() - started:.1f} s", flush=True)
    settings = []
    if scores is not None:
        settings.append(run_setting(records, scores, model_info, args, 0.0, 0.0, "score strata, exact annotator"))
    settings.append(run_setting(records, None, None, args, 0.0, 0.0, "label strata, exact annotator"))
    if scores is not None:
        settings.append(run_setting(records, scores, model_info, args, 0.05, 0.25,
                                    "score strata, annotators wrong 5 % of the time, 25 % seen twice"))
    truth = {r["id"]: int(r["true_intent"]) for r in records}
    with tempfile.TemporaryDirectory() as tmp:
        e2e = end_to_end(args.population, args.model, args.n, truth, Path(tmp))
    out = {
        "population": file_fingerprint(args.population) | {"records": len(records)},
        "model": None if model_info is None else {k: model_info[k] for k in ("path", "version", "threshold")}
        | {"promise": model_info["promise"]},
        "settings": settings,
        "end_to_end_report": e2e,
        "command": " ".join(sys.argv),
    }
    write_json_atomic(args.out, nan_to_none(out), allow_nan=False, default=None)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
