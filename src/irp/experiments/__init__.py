"""Ablation experiments (`irp ablate`): the paper's Tables 1-3, a loss-weight sweep, robustness to retrieval
failure and label noise, and transfer to SIMMC, each as mean ± std over seeds with paired bootstrap comparisons.

- `data`: the named record sets (given files, corrupted test sets, SIMMC) and their content fingerprints;
- `runner`: model specs, the resumable score cache and the execution of runs (in process or in a worker pool);
- `tables`: which rows each table has and how its numbers come out of the cached scores;
- `stats`: thresholds, per-seed metrics, mean ± std and the seed-averaged paired bootstrap (pure);
- `corrupt`: retrieval failure (pure); `render`: Markdown / CSV / JSON / rich; `figures`: PNG plots;
- `ablate`: the command's orchestration. The report is `irp.report`.
"""

from irp.experiments.ablate import AblationOptions, parse_floats, parse_tables, run_ablation
from irp.experiments.corrupt import corrupt_products
from irp.experiments.stats import MeanStd, mean_std, paired_seed_bootstrap, pick_threshold

__all__ = [
    "AblationOptions",
    "MeanStd",
    "corrupt_products",
    "mean_std",
    "paired_seed_bootstrap",
    "parse_floats",
    "parse_tables",
    "pick_threshold",
    "run_ablation",
]
