"""Is the simulator's output realistic and learnable, and does retrieval carry signal?

Simulates (or reads) a log, checks its rates, and compares two TF-IDF + logistic-regression models on a
session-disjoint 80/20 split: utterance only vs utterance + retrieved product titles. The simulator is
designed so that the titles add signal (vague queries, follow-ups and reorders do not name the category),
so the second must win by a clear margin in average precision. Prints a table and writes JSON.

    .venv/bin/python bench/sim_quality.py --n 100000 --seed 7 --json bench/results/sim_quality.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score

from irp.data.simulate import SimConfig, simulate

C_GRID = (0.125, 0.25, 0.5, 1.0, 2.0)  # inverse regularization strengths tried for each model


def _in_test(session_id: str, frac: float = 0.2) -> bool:
    """Session-level split so that turns of one session never straddle train and test."""
    h = int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < frac


def _features(parts_train: list[list[str]], parts_test: list[list[str]]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """One TF-IDF (word 1-2 grams) per text field, fitted on train, stacked side by side."""
    xs_train, xs_test = [], []
    for tr, te in zip(parts_train, parts_test):
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        xs_train.append(vec.fit_transform(tr))
        xs_test.append(vec.transform(te))
    return sp.hstack(xs_train).tocsr(), sp.hstack(xs_test).tocsr()


def _fit_ap(train_parts: list[list[str]], test_parts: list[list[str]], y_train: np.ndarray,
            valid: np.ndarray, y_test: dict[str, np.ndarray]) -> dict[str, float]:
    """Logistic regression on TF-IDF features; C chosen by AP on a validation part of train, then refit.

    `valid` marks the validation rows of train (session-disjoint). Returns test AP and ROC AUC per target.
    """
    fit_parts = [[x for x, v in zip(xs, valid) if not v] for xs in train_parts]
    val_parts = [[x for x, v in zip(xs, valid) if v] for xs in train_parts]
    x_fit, x_val = _features(fit_parts, val_parts)
    best_c, best_ap = C_GRID[0], -1.0
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_fit, y_train[~valid])
        ap = average_precision_score(y_train[valid], clf.predict_proba(x_val)[:, 1])
        if ap > best_ap:
            best_c, best_ap = c, ap
    x_train, x_test = _features(train_parts, test_parts)
    p = LogisticRegression(C=best_c, max_iter=2000).fit(x_train, y_train).predict_proba(x_test)[:, 1]
    out = {"C": best_c, "valid_ap_label": float(best_ap)}
    for name, y in y_test.items():
        out[f"ap_{name}"] = float(average_precision_score(y, p))
        out[f"roc_auc_{name}"] = float(roc_auc_score(y, p))
    return out


def measure(records: list[dict]) -> dict[str, object]:
    label = np.array([r["label"] for r in records])
    true = np.array([r["true_intent"] for r in records])
    test = np.array([_in_test(r["session_id"]) for r in records])
    valid = np.array([_in_test(r["session_id"] + "/valid") for r in records])[~test]  # 20 % of train
    utt = [r["utterance"] for r in records]
    titles = [" | ".join(p["title"] for p in r["products"]) for r in records]
    split = lambda xs: ([x for x, t in zip(xs, test) if not t], [x for x, t in zip(xs, test) if t])  # noqa: E731
    utt_tr, utt_te = split(utt)
    tit_tr, tit_te = split(titles)
    targets = {"label": label[test], "true_intent": true[test]}
    only = _fit_ap([utt_tr], [utt_te], label[~test], valid, targets)
    both = _fit_ap([utt_tr, tit_tr], [utt_te, tit_te], label[~test], valid, targets)
    intents = Counter(r["intent"] for r in records)
    cats = Counter(r["products"][0]["category"] for r in records if r["products"])
    return {
        "n": len(records),
        "n_test": int(test.sum()),
        "positive_rate": float(label.mean()),
        "true_positive_rate": float(true.mean()),
        "label_noise_rate": float((label != true).mean()),
        "n_categories": len(cats),
        "intents": dict(sorted(intents.items())),
        "utterance_only": only,
        "utterance_titles": both,
        "ap_margin_label": both["ap_label"] - only["ap_label"],
        "ap_margin_true_intent": both["ap_true_intent"] - only["ap_true_intent"],
        "base_rate_ap_label": float(label[test].mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", default="bench/results/sim_quality.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    records = list(simulate(SimConfig(n=args.n, seed=args.seed)))
    sim_s = time.perf_counter() - t0
    result = {"config": {"n": args.n, "seed": args.seed}, "simulate_seconds": sim_s, **measure(records)}
    result["measure_seconds"] = time.perf_counter() - t0 - sim_s
    checks = {
        "positive_rate in [0.10, 0.45]": 0.10 <= result["positive_rate"] <= 0.45,
        "categories >= 20": result["n_categories"] >= 20,
        "all 8 intents": len(result["intents"]) == 8,
        "label noise in [0.05, 0.25]": 0.05 <= result["label_noise_rate"] <= 0.25,
        "AP margin >= 0.03": result["ap_margin_label"] >= 0.03,
    }
    result["checks"] = checks
    for key in ("n", "positive_rate", "true_positive_rate", "label_noise_rate", "n_categories",
                "base_rate_ap_label", "ap_margin_label", "ap_margin_true_intent"):
        print(f"{key:24s} {result[key]:.4f}" if isinstance(result[key], float) else f"{key:24s} {result[key]}")
    for name in ("utterance_only", "utterance_titles"):
        print(f"{name:24s} " + "  ".join(f"{k}={v:.4f}" for k, v in result[name].items()))
    print("intents", result["intents"])
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
