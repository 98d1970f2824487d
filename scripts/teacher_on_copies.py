"""What a teacher says about `irp augment` copies that it did not already say about their sources.

A copy teaches a student something only where the teacher scores it differently from its source. Prints, for the
copies with and without a swapped product: the mean and median |q_copy - q_source| of the soft targets at
temperature T, and the share of copies whose decision (logit > 0) differs from their source's. Also the teacher's
AP and the spread of its soft targets on the source file and, with --valid, on a validation file (a teacher that
memorised its training records would be sharper there), and the share of records tied at its lowest logit (where a
soft target says only "negative"). Reads the teacher-score cache of `irp distill` and writes
nothing.

    python scripts/teacher_on_copies.py --teacher runs/mpnet --source train.jsonl --copies train_aug.jsonl \
        --valid dev_select.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from irp.data.augment import COPY_MARK
from irp.data.io import load_records
from irp.distill import load_teachers, soft_targets, teacher_logits
from irp.metrics import average_precision
from irp.train import default_cache_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True, help="teacher artifact folder")
    ap.add_argument("--source", type=Path, required=True, help="the records that were copied (labelled)")
    ap.add_argument("--copies", type=Path, required=True, help="the output of `irp augment` on --source")
    ap.add_argument("--valid", type=Path, help="labelled records the teacher did not train on")
    ap.add_argument("--temperature", type=float, default=2.0)
    args = ap.parse_args(argv)
    teacher = load_teachers([args.teacher])[0]

    def logits(path: Path) -> np.ndarray:
        return teacher_logits(teacher, path, torch.device("cpu"), default_cache_dir(), write_cache=False)[0]

    sources, records = load_records(args.source), load_records(args.copies)
    by_id = {r["id"]: i for i, r in enumerate(sources)}
    # each copy's source; other records in the file (e.g. transfer records it was concatenated with) are skipped
    pairs = [(k, by_id.get(r["id"].rsplit(COPY_MARK, 1)[0])) for k, r in enumerate(records) if COPY_MARK in r["id"]]
    keep = np.array([k for k, i in pairs if i is not None])
    index = np.array([i for _, i in pairs if i is not None])
    if not len(keep):
        raise SystemExit(f"no record of {args.copies} is a copy of a record of {args.source}")
    print(f"{len(keep):,} copies of {args.source.name} records in {args.copies.name} ({len(records) - len(keep):,} "
          "other records skipped)")
    copies = [records[k] for k in keep]
    z_sources = logits(args.source)  # [len(sources)]: scored once (a cache miss costs the teacher a pass)
    z_source, z_copy = z_sources[index], logits(args.copies)[keep]
    q_source, q_copy = soft_targets(z_source[None], args.temperature), soft_targets(z_copy[None], args.temperature)
    swapped = np.array([c["products"] != sources[i]["products"] for c, i in zip(copies, index, strict=True)])
    for name, part in (("words dropped only", ~swapped), ("words dropped, product swapped", swapped)):
        gap = np.abs(q_copy[part] - q_source[part])
        flips = np.mean((z_copy[part] > 0) != (z_source[part] > 0))
        print(f"{name}: {part.sum():,} copies, |q_copy - q_source| mean {gap.mean():.3f} median "
              f"{np.median(gap):.3f}, decision flips {flips:.1%}")
    files = [(args.source, sources, z_sources)]
    if args.valid:
        files.append((args.valid, load_records(args.valid), logits(args.valid)))
    for path, labelled, z in files:
        y = np.array([r["label"] for r in labelled], dtype=float)
        q = soft_targets(z[None], args.temperature)
        floor = z < z.min() + 0.05  # records the teacher cannot tell apart at the bottom of its ranking
        print(f"{path.name}: teacher AP {average_precision(y, z):.4f}, median |logit| {np.median(np.abs(z)):.2f}, "
              f"soft targets in (0.1, 0.9) {np.mean((q > 0.1) & (q < 0.9)):.1%}, at its lowest logit "
              f"({z.min():.2f} + 0.05) {floor.mean():.1%} of records with {y[floor].mean():.1%} positive")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
