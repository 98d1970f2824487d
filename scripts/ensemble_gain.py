"""Ensemble selection (Caruana et al. 2004) on a validation file: does adding CANDIDATE to the ensemble of MEMBERS
(mean of their calibrated probabilities) raise its AP? Exit 0 if it does, 1 if not; prints both APs.

    python scripts/ensemble_gain.py --data dev_select.jsonl --candidate runs/mpnet runs/t13 runs/t1 runs/t2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from irp.data.io import load_records
from irp.metrics import average_precision
from irp.predict import IRPClassifier


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="labelled validation records")
    ap.add_argument("--candidate", type=Path, required=True, help="artifact folder that may join")
    ap.add_argument("members", type=Path, nargs="+", help="artifact folders of the ensemble")
    args = ap.parse_args(argv)
    records = load_records(args.data)
    y = np.array([r["label"] for r in records], dtype=float)
    probs = [np.asarray(IRPClassifier.load(m).predict_proba(records)) for m in [*args.members, args.candidate]]
    without = average_precision(y, np.mean(probs[:-1], axis=0))
    with_candidate = average_precision(y, np.mean(probs, axis=0))
    print(f"AP of the ensemble on {args.data.name}: {without:.6f} without {args.candidate.name}, "
          f"{with_candidate:.6f} with it")
    return 0 if with_candidate > without else 1


if __name__ == "__main__":
    raise SystemExit(main())
