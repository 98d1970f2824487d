"""Sim 50K/10K/10K (seed 7): AP and precision at matched recall of IRP mean, IRP none and tfidf-lr on the test split.

Run in the folder of s_train.parquet / s_test.parquet (scripts/gpu_run3.sh makes them) with the two IRP test
probability files at the paths below (sim_mean_test_probs.npy from the GPU run, none_probs.npy from `irp train
--summarizer none` on CPU); writes compare.json."""
import json, numpy as np
from irp.data.io import load_records
from irp.baselines import TfidfLRBaseline, labels_of
from irp.metrics import average_precision, precision_at_recall, paired_bootstrap

train, test = load_records("s_train.parquet"), load_records("s_test.parquet")
y = labels_of(test).astype(float)
scores = {
    "irp mean": np.load("/work/.device/3/sim_mean_test_probs.npy"),
    "irp none": np.load("none_probs.npy"),
    "tfidf-lr": TfidfLRBaseline().fit(train).predict_proba(test)[:, 1],
}
out = {}
for name, s in scores.items():
    row = {"ap": average_precision(y, s)}
    for r in (0.2, 0.4, 0.6):
        row[f"precision@recall>={r}"] = precision_at_recall(y, s, r)[0]
    out[name] = row
for other in ("irp none", "tfidf-lr"):
    out[f"ap diff irp mean - {other}"] = paired_bootstrap(y, scores["irp mean"], None, scores[other], None, metric="ap", n_boot=1000, seed=0)
print(json.dumps(out, indent=2))
json.dump(out, open("compare.json", "w"), indent=2)
