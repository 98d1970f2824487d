"""Which soup recipe generalises: greedy (chosen on validation AP) or uniform, judged without a test set.

`irp soup --recipe greedy` keeps the ingredients that raise the validation AP, so the validation AP of its soup is
optimistic. This bench cross-fits the choice inside one labelled file: it splits the file's dialogs in two halves at
random (`irp split`'s `split_by_session`, seeds --seed, --seed + 1, ...), runs the greedy recipe
(`irp.soup.greedy_members`, the one `irp soup` runs) on half A, and measures the greedy soup, the uniform soup, the
best single ingredient (on A) and the ingredients' mean on half B, which chose nothing. Soups are scored once on the
whole file and memoised by their member set, so many splits cost a few soups each.

    python bench/soup_recipe.py --valid dev_select.jsonl --splits 50 --out bench/results/soup_recipe_simmc.json \
        runs/s_l6_seed13 runs/s_l6_seed1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from irp.artifact import load_model
from irp.data.io import load_records
from irp.data.split import split_by_session
from irp.fileio import write_json_atomic
from irp.metrics import average_precision
from irp.soup import SoupError, average_weights, check_ingredients, greedy_members
from irp.train import prepare_features, score_logits

Members = frozenset[int]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ingredients", type=Path, nargs="+", help="artifact folders of one architecture (irp soup's)")
    ap.add_argument("--valid", type=Path, required=True, help="labelled records with session_id (the soup's file)")
    ap.add_argument("--splits", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.splits < 1:
        ap.error(f"--splits must be >= 1, got {args.splits}")
    try:
        check_ingredients(list(args.ingredients), args.out)  # >= 2, one architecture and input pipeline
    except SoupError as e:
        ap.error(str(e))
    started = time.perf_counter()
    model, featurizer, _ = load_model(args.ingredients[0], device="cpu")
    records = load_records(args.valid)
    features, _ = prepare_features(records, featurizer, "label", cache_dir=None)
    y = np.asarray(features.labels, dtype=float)
    states = [load_file(str(f / "model.safetensors")) for f in args.ingredients]
    logits: dict[Members, np.ndarray] = {}

    def scored(members: Members) -> np.ndarray:  # logits [N] of the soup of `members` on the whole file
        if members not in logits:
            model.load_state_dict(average_weights([states[i] for i in sorted(members)]), strict=True)
            logits[members] = score_logits(model, featurizer, features, torch.device("cpu"))
            print(f"scored soup {sorted(members)} ({len(logits)} so far)", file=sys.stderr)
        return logits[members]

    everyone = frozenset(range(len(states)))
    rows = []
    for split in range(args.splits):
        half_a, _ = split_by_session(records, 0.5, seed=args.seed + split)
        in_a = {id(r) for r in half_a}  # the same record objects, kept in file order: ids need not be unique
        a = np.array([id(r) in in_a for r in records])
        b = ~a
        alone_a = [average_precision(y[a], scored(frozenset({i}))[a]) for i in range(len(states))]
        kept = frozenset(greedy_members(alone_a, lambda m: average_precision(y[a], scored(frozenset(m))[a])))
        on_b = {
            "greedy": average_precision(y[b], scored(kept)[b]),
            "uniform": average_precision(y[b], scored(everyone)[b]),
            "best_single": average_precision(y[b], scored(frozenset({int(np.argmax(alone_a))}))[b]),
            "mean_single": float(np.mean([average_precision(y[b], scored(frozenset({i}))[b])
                                          for i in range(len(states))])),
        }
        rows.append({"split": split, "greedy_members": sorted(kept), "ap_on_b": on_b})
        print(f"split {split}: greedy {sorted(kept)} " + " ".join(f"{k} {v:.4f}" for k, v in on_b.items()))

    recipes = list(rows[0]["ap_on_b"])
    table = {k: np.array([r["ap_on_b"][k] for r in rows]) for k in recipes}
    diff = table["uniform"] - table["greedy"]
    summary = {
        "mean_ap_on_b": {k: round(float(v.mean()), 5) for k, v in table.items()},
        "uniform_minus_greedy": {"mean": round(float(diff.mean()), 5), "sd": round(float(diff.std(ddof=1)), 5),
                                 "uniform_wins": int((diff > 0).sum()), "ties": int((diff == 0).sum()),
                                 "splits": len(rows)},
        "mean_greedy_size": float(np.mean([len(r["greedy_members"]) for r in rows])),
    }
    result = {"ingredients": [str(f) for f in args.ingredients], "valid": str(args.valid), "n": len(y),
              "splits": args.splits, "seed": args.seed, "summary": summary, "rows": rows,
              "soups_scored": len(logits), "wall_s": round(time.perf_counter() - started, 1),
              "command": " ".join(["python", *sys.argv])}
    write_json_atomic(args.out, result)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
