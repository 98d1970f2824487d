"""The audit on real data: SIMMC 1.0 fashion dev, with the human NLU annotation standing in for annotators.

SIMMC's proxy label (`label_image_response`: the human assistant answered the turn by showing a new image)
plays the tap; the crowd-sourced dialog-act annotation of the user's turn plays the reviewers: a verdict
is "yes" when `annotated_user_acts` holds a `DA:REQUEST:GET:*` act ("the user asked to get items"), else
"no". Everything goes through the commands a team would run:

    irp import simmc dev.jsonl --out records.jsonl
    irp audit sample --data records.jsonl --n N --out DIR --seed S
    (verdict CSV made from annotated_user_acts for the sampled ids: the spreadsheet of another tool)
    irp audit import DIR --verdicts verdicts.csv
    irp audit report DIR --json report.json --plots PLOTS

Because the annotation covers every turn, the census values (all 3,513 dev turns) are known too, and the
JSON puts them beside the sample's estimates and intervals.

    python bench/audit_simmc.py --n 400 --out bench/results/audit_simmc.json --plots bench/results/audit_simmc
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from irp.fileio import write_json_atomic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "simmc1_fashion" / "image_intent_dev.jsonl"
DEFAULT_SOURCE = Path(os.environ.get("IRP_SIMMC_DEV", SHARED))


def requested_items(acts: object) -> bool:
    """The stand-in verdict: the user turn carries a DA:REQUEST:GET:* act."""
    values = acts if isinstance(acts, list) else [acts] if isinstance(acts, str) else []
    return any(str(a).startswith("DA:REQUEST:GET") for a in values)


def irp(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "irp.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    if done.returncode != 0:
        raise SystemExit(f"irp {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def repeated_samples(records_path: Path, verdict_of: dict[str, bool], label_of: dict[str, int], args) -> dict:
    """Coverage of the census precision and recall over `--reps` new samples (library calls of the same commands:
    write_sample, import_verdicts, audit_report)."""
    from irp.audit.estimate import audit_report
    from irp.audit.sample import write_sample
    from irp.data.io import load_records

    records = load_records(records_path)
    ids = list(label_of)
    y = np.array([label_of[i] for i in ids])
    v = np.array([verdict_of[i] for i in ids])
    census = {"precision": float(v[y == 1].mean()), "recall": float(y[v].mean())}
    hits = {k: 0 for k in census}
    widths = {k: [] for k in census}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            folder = write_sample(records, args.n, Path(tmp) / f"s{rep}", seed=1000 + rep)
            with open(Path(tmp) / "v.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["id", "annotator", "verdict"])
                writer.writerows([r["id"], "simmc-nlu", "yes" if verdict_of[r["id"]] else "no"] for r in folder.records)
            folder.import_verdicts(Path(tmp) / "v.csv")
            report = audit_report(folder)
            for key, value in census.items():
                lo, hi = report[key]["ci95"]
                hits[key] += lo <= value <= hi
                widths[key].append(hi - lo)
    return {"reps": args.reps, "n": args.n, "seeds": [1000, 1000 + args.reps - 1],
            "coverage": {k: hits[k] / args.reps for k in census},
            "mean_width": {k: float(np.mean(w)) for k, w in widths.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit_simmc.json"))
    parser.add_argument("--plots", type=Path, default=Path("bench/results/audit_simmc"))
    parser.add_argument("--reps", type=int, default=200, help="repeated samples for the coverage of the census values")
    args = parser.parse_args()
    if not args.source.is_file():
        raise SystemExit(f"{args.source}: SIMMC fashion dev not found (see ../shared/data/README.md)")

    rows = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
    verdict_of = {f"{r['dialog_id']}_{r['turn_idx']}": requested_items(r.get("annotated_user_acts")) for r in rows}
    label_of = {f"{r['dialog_id']}_{r['turn_idx']}": int(r["label_image_response"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        irp("import", "simmc", str(args.source), "--out", str(work / "records.jsonl"))
        print(irp("audit", "sample", "--data", str(work / "records.jsonl"), "--n", str(args.n), "--out",
                  str(work / "audit"), "--seed", str(args.seed)))
        sample_ids = [json.loads(line)["id"] for line in (work / "audit" / "sample.jsonl").read_text().splitlines()]
        with open(work / "verdicts.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "annotator", "verdict"])
            writer.writerows([i, "simmc-nlu", "yes" if verdict_of[i] else "no"] for i in sample_ids)
        print(irp("audit", "import", str(work / "audit"), "--verdicts", str(work / "verdicts.csv")))
        print(irp("audit", "report", str(work / "audit"), "--json", str(work / "report.json"), "--plots",
                  str(args.plots)))
        report = json.loads((work / "report.json").read_text())
        coverage = repeated_samples(work / "records.jsonl", verdict_of, label_of, args)

    ids = list(label_of)
    y = np.array([label_of[i] for i in ids])
    v = np.array([verdict_of[i] for i in ids])
    census = {"turns": len(ids), "taps": int(y.sum()), "requested": int(v.sum()),
              "precision": float(v[y == 1].mean()), "recall": float(y[v].mean())}
    out = {
        "source": str(args.source),
        "stand_in_verdict": "annotated_user_acts has DA:REQUEST:GET:* -> yes, else no",
        "n": args.n, "seed": args.seed,
        "estimate": {k: report[k] for k in ("precision", "recall", "visual_rate")},
        "strata": report["strata"],
        "census": census,
        "covered": {k: report[k]["ci95"][0] <= census[k] <= report[k]["ci95"][1] for k in ("precision", "recall")},
        "repeated_samples": coverage,
        "plots": sorted(str(p) for p in args.plots.glob("*.png")),
        "command": " ".join(sys.argv),
    }
    write_json_atomic(args.out, out, allow_nan=False, default=None)
    print(json.dumps({k: out[k] for k in ("estimate", "census", "covered", "repeated_samples")}, indent=1))


if __name__ == "__main__":
    main()
