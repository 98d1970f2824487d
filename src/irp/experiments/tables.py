"""The ablation tables: which rows each has (`build_tables`), and how a table's numbers come out of the cached
scores of its runs (`compute_table`).

Every row names a model (or an oracle), the record set it is evaluated on and with which label, and the group
whose reference row it is compared with. Thresholds are chosen per seed on the row's validation set (against
the label the model learned), and metrics are reported on its evaluation set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irp.config import DEFAULT_FIELDS, SUMMARIZERS, IRPConfig
from irp.experiments.data import DataContext, corrupt_set
from irp.experiments.runner import ModelSpec, RunCache
from irp.experiments.stats import (
    METRICS,
    MeanStd,
    OperatingPoint,
    compare,
    mean_std,
    pick_threshold,
    point_metrics,
    resample_seed_means,
)

TABLES = ("1", "2", "3", "sweep", "robustness", "transfer", "backbones", "distill")  # --table names; robustness: two
# Table 1: fields added one at a time (the paper's feature ablation); product rows use mean pooling.
FEATURE_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("utterance", ("utterance",)),
    ("utterance + intent", ("utterance", "intent")),
    ("+ title", ("utterance", "intent", "title")),
    ("+ brand", ("utterance", "intent", "title", "brand")),
    ("+ color", ("utterance", "intent", "title", "brand", "color")),
    ("+ style", ("utterance", "intent", "title", "brand", "color", "style")),
    ("all fields (mean)", DEFAULT_FIELDS),
)
LOSS_ROWS = ("bce", "precision", "combined", "fbeta")


@dataclass(frozen=True)
class RowSpec:
    """One row: a model (or an oracle score) evaluated on one record set against one label."""

    name: str
    model: ModelSpec | None = None
    eval_set: str = "test"
    eval_label: str = "label"
    valid_label: str = "label"  # the threshold is chosen against this label on the model's validation set
    group: str = ""  # compared with the reference row of the same group
    reference: bool = False
    params: tuple[tuple[str, Any], ...] = ()
    oracle_field: str | None = None  # score = this record field (0/1): the best a model could do
    cost: bool = False  # backbones table: seed 0's model is exported to ONNX and one query timed on the CPU
    ensemble: int = 0  # > 0: one model, the mean probability of the model's seeds 0..ensemble-1 (a teacher)

    @property
    def valid_set(self) -> str:
        return self.model.valid_set if self.model is not None else "valid"

    def seeds(self, n: int) -> list[int]:
        """The row's seeds as reported (an ensemble is one model: seed 0 stands for it)."""
        if self.ensemble:
            return [0]
        return self.model.seeds(n) if self.model is not None else [0]

    def run_seeds(self, n: int) -> list[int]:
        """The seeds of the runs the row needs (an ensemble's members)."""
        return list(range(self.ensemble)) if self.ensemble else self.seeds(n)


@dataclass(frozen=True)
class TableSpec:
    key: str  # output file stem
    title: str
    description: str
    rows: tuple[RowSpec, ...]
    notes: tuple[str, ...] = ()
    contrasts: tuple[tuple[str, str], ...] = ()  # extra paired comparisons (row, versus row), same group
    operating_point: str | None = None  # overrides the run's --operating-point (distill: the certified threshold)


@dataclass(frozen=True)
class TableSettings:
    """What the table builders need: the base model config and the grids."""

    base: IRPConfig  # backbone, optimisation and the default model (all fields, mean, combined loss)
    backbones: tuple[str, ...]  # the first one is the primary; tables 1-3 repeat per backbone
    alphas: tuple[float, ...] = (0.5, 1.0)
    betas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    corruptions: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    compare: tuple[tuple[str, str], ...] = ()  # backbones table: (label, backbone name or folder), reference first
    compare_notes: tuple[str, ...] = ()  # e.g. backbones skipped because they are not installed
    # distill table: the students' (label, backbone), the teacher ensemble's size, T and α, notes
    students: tuple[tuple[str, str], ...] = ()
    teachers: int = 3
    temperature: float = 2.0
    distill_alpha: float = 0.5
    distill_notes: tuple[str, ...] = ()
    distill_domains: tuple[str, ...] = ("sim", "fashion")
    primary_label: str = ""  # the primary backbone's display name ("" = its name)


def backbone_label(name: str) -> str:
    """A short display name of a backbone (a folder's name).

    >>> backbone_label("minilm-l6"), backbone_label("/models/distilroberta-base/")
    ('minilm-l6', 'distilroberta-base')
    """
    return Path(name).name or name


def _irp(config: IRPConfig, **kw: Any) -> ModelSpec:
    return ModelSpec("irp", config, **kw)


def _per_backbone(settings: TableSettings) -> list[tuple[str, IRPConfig]]:
    many = len(settings.backbones) > 1
    return [(backbone_label(b) if many else "", settings.base.replace(backbone=b)) for b in settings.backbones]


def table1(settings: TableSettings) -> TableSpec:
    rows: list[RowSpec] = []
    for g, (group, base) in enumerate(_per_backbone(settings)):
        for name, fields in FEATURE_STEPS:
            config = base.replace(fields=fields, summarizer="mean")
            rows.append(RowSpec(name, _irp(config), group=group, reference=name == "utterance"))
        if g == 0:
            rows += [RowSpec(kind if kind != "tfidf-lr" else "tfidf-lr (all fields)", ModelSpec(kind), group=group)
                     for kind in ("majority", "keyword", "tfidf-lr")]
    return TableSpec(
        "table1", "Table 1 — input features",
        "Fields added one at a time (products summarized by mean pooling), against the utterance-only model, "
        "with the baselines (majority = training positive rate; keyword = fixed visual-cue lexicon; tf-idf + "
        "logistic regression over all fields).",
        tuple(rows),
    )


def table2(settings: TableSettings) -> TableSpec:
    names = {"none": "none (no products)", "mean": "mean", "max": "max", "mmr": "mmr", "concat": "concat"}
    rows = [
        RowSpec(names[s], _irp(base.replace(fields=DEFAULT_FIELDS, summarizer=s)), group=group, reference=s == "mean")
        for group, base in _per_backbone(settings)
        for s in SUMMARIZERS
    ]
    return TableSpec(
        "table2", "Table 2 — product summarization",
        "All fields; the top-k products summarized by mean or max pooling per attribute (slots), MMR selection "
        f"of {settings.base.mmr_m} diverse products as text (λ = {settings.base.mmr_lambda}), all products as "
        "text (concat), or no products (none).",
        tuple(rows),
    )


def table3(settings: TableSettings) -> TableSpec:
    b = settings.base
    names = {"bce": "bce", "precision": "soft precision", "combined": f"combined (α={b.alpha:g}, β={b.beta:g})",
             "fbeta": "soft F0.5"}
    rows = [
        RowSpec(names[loss], _irp(base.replace(loss=loss)), group=group, reference=loss == "bce")
        for group, base in _per_backbone(settings)
        for loss in LOSS_ROWS
    ]
    return TableSpec(
        "table3", "Table 3 — training loss",
        "All fields, mean pooling; loss = BCE, soft precision 1 − Σpy/(Σp+ε), combined α·BCE + β·soft precision, "
        "or soft F0.5.",
        tuple(rows),
    )


def sweep(settings: TableSettings) -> TableSpec:
    if any(a <= 0 for a in settings.alphas):
        raise ValueError("every alpha of the sweep must be > 0 (the x axis is beta / alpha)")
    grid = [(a, b) for a in settings.alphas for b in settings.betas]
    ref = (1.0, 0.0) if (1.0, 0.0) in grid else grid[0]
    rows = tuple(
        RowSpec(f"α={a:g}, β={b:g}", _irp(settings.base.replace(loss="combined", alpha=a, beta=b)),
                reference=(a, b) == ref, params=(("alpha", a), ("beta", b), ("beta_over_alpha", b / a)))
        for a, b in grid
    )
    return TableSpec(
        "sweep", "Sweep — combined loss α·BCE + β·soft precision",
        "All fields, mean pooling; a grid over α and β.", rows,
    )


def robustness_retrieval(settings: TableSettings) -> TableSpec:
    base = settings.base
    fusion = _irp(base)
    rows = [
        RowSpec(f"{f:.0%} of products replaced", fusion, eval_set=corrupt_set(f) if f else "test",
                reference=f == 0, params=(("corruption", f),))
        for f in settings.corruptions
    ]
    floors = ("utterance only (reads no products)", "utterance + intent (reads no products)")
    rows += [
        RowSpec(floors[0], _irp(base.replace(fields=("utterance",), summarizer="none"))),
        RowSpec(floors[1], _irp(base.replace(fields=("utterance", "intent"), summarizer="none"))),
    ]
    worst = f"{max(settings.corruptions):.0%} of products replaced"
    return TableSpec(
        "robustness_retrieval", "Robustness (a) — retrieval failure at test time",
        "The all-fields model (mean pooling), trained on clean logs, evaluated on the test set where a fraction of "
        "each record's products is replaced by random catalogue products (threshold from the clean validation "
        "set); the models that read no products are the floor it should fall toward.",
        tuple(rows),
        contrasts=tuple((worst, floor) for floor in floors),
    )


def robustness_labels(settings: TableSettings, ctx: DataContext) -> TableSpec:
    title = "Robustness (b) — label noise: proxy label (tap) vs. true_intent"
    description = (
        "Simulated logs know the latent visual intent (`true_intent`) behind the noisy proxy label (a carousel "
        "tap). The all-fields model is trained on either label (its threshold chosen on validation against the "
        "label it learned) and evaluated against both; the oracle scores each record by its true_intent and shows "
        "the best precision and recall measurable against taps."
    )
    missing = [name for name in ("train", "valid", "test") if not ctx.has_field(name, "true_intent")]
    if missing:
        note = f"skipped: the {', '.join(missing)} records have no true_intent (not a simulated log)"
        return TableSpec("robustness_labels", title, description, (), (note,))
    proxy, true = _irp(settings.base), _irp(settings.base, label_field="true_intent")
    rows: list[RowSpec] = []
    for eval_label, group in (("label", "against the proxy label"), ("true_intent", "against true_intent")):
        rows += [
            RowSpec("trained on the proxy label", proxy, eval_label=eval_label, group=group, reference=True),
            RowSpec("trained on true_intent", true, eval_label=eval_label, valid_label="true_intent", group=group),
        ]
    rows.append(RowSpec("oracle (score = true_intent)", None, eval_label="label", group="against the proxy label",
                        oracle_field="true_intent"))
    return TableSpec("robustness_labels", title, description, tuple(rows))


def transfer(settings: TableSettings, ctx: DataContext) -> TableSpec:
    title = "Transfer — simulated logs to SIMMC 1.0"
    description = (
        "The all-fields model trained on the simulated logs (threshold from the simulated validation set), "
        "evaluated zero-shot on SIMMC fashion dev (label: the assistant showed another product) and SIMMC "
        "furniture dev (label: annotated show/rotate request), next to the same model fine-tuned from the "
        "backbone on SIMMC fashion train (85 % of its dialogs; threshold from the other 15 %)."
    )
    if not ctx.simmc_available:
        return TableSpec("transfer", title, description, (), (
            "skipped: the SIMMC files were not found (pass --simmc-dir or set IRP_SHARED_DATA)",))
    sim, tuned = _irp(settings.base), _irp(settings.base, domain="fashion")
    rows: list[RowSpec] = []
    for eval_set, group in (("fashion_dev", "SIMMC fashion dev"), ("furniture_dev", "SIMMC furniture dev")):
        rows += [
            RowSpec("simulated logs, zero-shot", sim, eval_set=eval_set, group=group, reference=True),
            RowSpec("fine-tuned on SIMMC fashion train", tuned, eval_set=eval_set, group=group),
        ]
    return TableSpec("transfer", title, description, tuple(rows))


def backbones_table(settings: TableSettings, ctx: DataContext) -> TableSpec:
    """The paper's backbone comparison on our data: the all-fields mean-pooling model per backbone, on the simulated
    log and fine-tuned on SIMMC fashion, with what each costs (training examples/s, CPU latency of one query)."""
    title = "Backbones — quality against cost"
    description = (
        "The all-fields model (mean pooling, combined loss) with each backbone: trained on the simulated log "
        "(threshold from its validation set, evaluated on its test set), and fine-tuned from the backbone on SIMMC "
        "fashion train (85 % of its dialogs; threshold from the other 15 %; evaluated on SIMMC fashion dev). Cost: "
        "training examples/s on the run's device (optimiser steps x batch over the training loop without its "
        "validation passes; mean over the seeds' runs), and the CPU p50 latency of one query, record in to "
        "probability out on 1 thread, through the ONNX export of the seed-0 simulated-log model (int8 where its "
        "parity check passes, else fp32)."
    )
    notes = list(settings.compare_notes)
    if not settings.compare:
        return TableSpec("backbones", title, description, (), tuple(notes or ["skipped: no backbone to compare"]))
    reference = next((label for label, _ in settings.compare if label.startswith("minilm-l6")), settings.compare[0][0])
    rows: list[RowSpec] = []
    domains = [("sim", "simulated log", "test")]
    if ctx.simmc_available:
        domains.append(("fashion", "SIMMC fashion (fine-tuned)", "fashion_dev"))
    else:
        notes.append("SIMMC rows skipped: the SIMMC files were not found (pass --simmc-dir or set IRP_SHARED_DATA)")
    for domain, group, eval_set in domains:
        for label, backbone in settings.compare:
            model = _irp(settings.base.replace(backbone=backbone), domain=domain)
            rows.append(RowSpec(label, model, eval_set=eval_set, group=group, reference=label == reference,
                                params=(("backbone", label),), cost=domain == "sim"))
    return TableSpec("backbones", title, description, tuple(rows), tuple(notes))


def distill_table(settings: TableSettings, ctx: DataContext) -> TableSpec:
    """Distillation: the primary model (reference), the teacher (an ensemble of its seeds) and the students
    distilled from that teacher, with their cost, at the certified operating point."""
    k, base = settings.teachers, settings.base
    title = "Distillation — a teacher ensemble in a small student"
    description = (
        f"The all-fields model (mean pooling, combined loss) with the primary backbone is the baseline (reference; "
        f"mean ± std over seeds). The teacher is the ensemble of its seeds 0-{k - 1} (mean probability: one model, "
        f"so no ±; with one seed, that seed's model). Each student is an ordinary IRP model trained by `irp distill` on α · (the label loss) + "
        f"(1 − α) · T² · BCE against the teacher's averaged probabilities at temperature T (α = "
        f"{settings.distill_alpha:g}, T = {settings.temperature:g}; no transfer data), on the same training data. "
        "Simulated log: trained on its train set, thresholds from its validation set, evaluated on its test set; "
        "SIMMC fashion: train on 85 % of fashion train's dialogs, thresholds from the other 15 %, evaluated on "
        "fashion dev. Precision and recall at the certified operating point (the `irp train` rule); train time = "
        "one run's wall time (a student's includes scoring its teachers; the ensemble's is the sum of its members'); "
        "CPU p50 = one query on 1 thread through the ONNX runtime `irp serve --runtime auto` picks (the faster of "
        "fp32 and int8 where int8 passes parity), seed-0 model, simulated-log run."
    )
    notes = list(settings.distill_notes)
    rows: list[RowSpec] = []
    domains = [("sim", "simulated log", "test")]
    if "fashion" in settings.distill_domains and ctx.simmc_available:
        domains.append(("fashion", "SIMMC fashion (fine-tuned)", "fashion_dev"))
    elif "fashion" in settings.distill_domains:
        notes.append("SIMMC rows skipped: the SIMMC files were not found (pass --simmc-dir or set IRP_SHARED_DATA)")
    primary = settings.primary_label or backbone_label(base.backbone)
    for domain, group, eval_set in domains:
        baseline = _irp(base, domain=domain)
        teachers = tuple((baseline, seed) for seed in range(k))
        rows.append(RowSpec(f"baseline {primary}", baseline, eval_set=eval_set, group=group, reference=True,
                            params=(("backbone", primary),), cost=domain == "sim"))
        teacher_name = f"teacher: ensemble of {k} {primary} seeds" if k > 1 else f"teacher: {primary} seed 0"
        rows.append(RowSpec(teacher_name, baseline, eval_set=eval_set, group=group,
                            params=(("backbone", primary), ("ensemble", k)), ensemble=k))
        for label, backbone in settings.students:
            config = base.replace(backbone=backbone, distill_alpha=settings.distill_alpha,
                                  temperature=settings.temperature)
            student = _irp(config, domain=domain, teachers=teachers)
            rows.append(RowSpec(f"student {label}", student, eval_set=eval_set, group=group,
                                params=(("backbone", label), ("teachers", k)), cost=domain == "sim"))
    return TableSpec("distill", title, description, tuple(rows), tuple(notes), operating_point="target")


def build_tables(names: Sequence[str], settings: TableSettings, ctx: DataContext) -> list[TableSpec]:
    """The table specs for `names` (keys of TABLES), in order."""
    out: list[TableSpec] = []
    for name in names:
        if name == "1":
            out.append(table1(settings))
        elif name == "2":
            out.append(table2(settings))
        elif name == "3":
            out.append(table3(settings))
        elif name == "sweep":
            out.append(sweep(settings))
        elif name == "robustness":
            out += [robustness_retrieval(settings), robustness_labels(settings, ctx)]
        elif name == "transfer":
            out.append(transfer(settings, ctx))
        elif name == "backbones":
            out.append(backbones_table(settings, ctx))
        elif name == "distill":
            out.append(distill_table(settings, ctx))
        else:
            raise ValueError(f"unknown table {name!r}: use one of {', '.join(TABLES)} or all")
    return out


# ---- results --------------------------------------------------------------------------------------------
@dataclass
class RowResult:
    name: str
    group: str
    reference: bool
    params: dict[str, Any]
    metrics: dict[str, MeanStd]
    per_seed: list[dict[str, float]]  # metrics and threshold of each seed
    vs_reference: dict[str, dict[str, float]] | None
    fallbacks: int  # seeds whose validation never reached the target precision (target rule only)
    runs: list[str]
    curve: tuple[np.ndarray, np.ndarray, float] | None = field(default=None, repr=False)  # seed 0: y, scores, thr
    interval: dict[str, dict[str, float]] | None = None  # 95 % bootstrap interval of each seed-mean metric
    cost: dict[str, Any] | None = None  # backbones table: throughput, latency, export

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name, "group": self.group, "reference": self.reference, "params": self.params,
            "n_seeds": len(self.per_seed),
            "metrics": {m: {"mean": v.mean, "std": v.std, "n": v.n} for m, v in self.metrics.items()},
            "per_seed": self.per_seed, "vs_reference": self.vs_reference, "fallbacks": self.fallbacks,
            "runs": self.runs,
        }
        if self.interval is not None:
            out["interval"] = self.interval
        if self.cost is not None:
            out["cost"] = self.cost
        return out


@dataclass
class TableResult:
    key: str
    title: str
    description: str
    rows: list[RowResult]
    groups: dict[str, dict[str, Any]]  # group -> {reference, eval_set, n, positives}
    notes: list[str]
    settings: dict[str, Any]  # operating point, n_boot, seeds
    contrasts: list[dict[str, Any]] = field(default_factory=list)  # {row, versus, metrics: metric -> diff/lo/hi/p}
    plots: list[str] = field(default_factory=list)  # file names under the plots folder

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.key, "title": self.title, "description": self.description, "settings": self.settings,
            "groups": self.groups, "notes": self.notes, "contrasts": self.contrasts, "plots": self.plots,
            "rows": [r.to_dict() for r in self.rows],
        }


@dataclass(frozen=True)
class EvalSettings:
    seeds: int
    operating_point: OperatingPoint = "f05"
    target_precision: float = 0.8
    n_boot: int = 1000


def _scores(row: RowSpec, seed: int, set_name: str, ctx: DataContext, cache: RunCache) -> np.ndarray:
    if row.model is None:
        assert row.oracle_field is not None
        return ctx.labels(set_name, row.oracle_field)
    fp = ctx.fingerprint(set_name)
    scores = []
    for member in (row.run_seeds(0) if row.ensemble else [seed]):
        key = row.model.key(member, ctx)
        if not cache.has(key, set_name, fp):
            raise RuntimeError(f"no cached scores of run {key} on {set_name}: the run did not finish")
        scores.append(cache.load(key, set_name, fp).astype(np.float64))
    return np.mean(scores, axis=0)  # an ensemble's probability: the mean of its members'


def compute_table(spec: TableSpec, ctx: DataContext, cache: RunCache, ev: EvalSettings) -> TableResult:
    """Metrics per row (mean ± std over seeds) and the paired bootstrap of each row against its group's reference."""
    scored: list[tuple[RowSpec, np.ndarray, list[tuple[np.ndarray, float]], list[dict[str, float]], int]] = []
    rule = spec.operating_point or ev.operating_point
    with_cost = spec.key in ("backbones", "distill")
    for row in spec.rows:
        y_valid = ctx.labels(row.valid_set, row.valid_label)
        y_test = ctx.labels(row.eval_set, row.eval_label)
        runs, per_seed, fallbacks = [], [], 0
        for seed in row.seeds(ev.seeds):
            thr, fell_back = pick_threshold(
                y_valid, _scores(row, seed, row.valid_set, ctx, cache), rule, ev.target_precision
            )
            s_test = _scores(row, seed, row.eval_set, ctx, cache)
            runs.append((s_test, thr))
            per_seed.append({"seed": seed, "threshold": thr, **point_metrics(y_test, s_test, thr)})
            fallbacks += fell_back
        scored.append((row, y_test, runs, per_seed, fallbacks))

    # Every row is resampled once (the same resamples for all rows: same seed, same test size); comparisons
    # then only subtract. Rows of a group share their evaluation records, so the resamples are paired.
    resampled = [resample_seed_means(y, runs, ev.n_boot, seed=0) for _, y, runs, _, _ in scored]
    references = {row.group: (y, res) for (row, y, _, _, _), res in zip(scored, resampled) if row.reference}
    groups: dict[str, dict[str, Any]] = {}
    results: list[RowResult] = []
    for (row, y_test, runs, per_seed, fallbacks), res in zip(scored, resampled):
        vs = None
        if not row.reference and row.group in references:
            y_ref, ref_res = references[row.group]
            if not np.array_equal(y_ref, y_test):
                raise ValueError(f"{spec.key}: row {row.name!r} is not evaluated on its reference's examples")
            vs = compare(res, ref_res)
        groups.setdefault(row.group, {
            "reference": next((r.name for r in spec.rows if r.group == row.group and r.reference), None),
            "eval_set": row.eval_set, "eval_label": row.eval_label,
            "n": int(y_test.size), "positives": int(y_test.sum()),
        })
        results.append(RowResult(
            name=row.name, group=row.group, reference=row.reference, params=dict(row.params),
            metrics={m: mean_std([s[m] for s in per_seed]) for m in METRICS},
            per_seed=per_seed, vs_reference=vs, fallbacks=fallbacks,
            runs=[row.model.key(s, ctx) for s in row.run_seeds(ev.seeds)] if row.model is not None else [],
            curve=(y_test, runs[0][0], runs[0][1]),
            interval=_interval(res) if with_cost else None,
            cost=run_cost(row, ctx, cache, ev.seeds) if with_cost else None,
        ))
    contrasts = []
    by_name = {row.name: (y, res) for (row, y, _, _, _), res in zip(scored, resampled)}
    for name, versus in spec.contrasts:
        if name in by_name and versus in by_name and np.array_equal(by_name[name][0], by_name[versus][0]):
            contrasts.append({"row": name, "versus": versus, "metrics": compare(by_name[name][1], by_name[versus][1])})
    settings = {"operating_point": rule, "target_precision": ev.target_precision,
                "n_boot": ev.n_boot, "seeds": ev.seeds}
    return TableResult(spec.key, spec.title, spec.description, results, groups, list(spec.notes), settings, contrasts)



def _interval(res: Any) -> dict[str, dict[str, float]]:
    """95 % percentile interval of a row's seed-mean metrics over the bootstrap resamples of its test records."""
    out = {}
    for m in METRICS:
        boot = res.boot[m][~np.isnan(res.boot[m])] if res.boot[m].size else res.boot[m]
        lo, hi = (np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan))
        out[m] = {"lo": float(lo), "hi": float(hi)}
    return out


def run_cost(row: RowSpec, ctx: DataContext, cache: RunCache, seeds: int) -> dict[str, Any]:
    """What the row's model cost: training examples/s (mean over its seeds' runs, with the device) and, for a
    `cost` row, the ONNX export and CPU latency measured on its seed-0 model."""
    from irp.backbones import BACKBONES
    from irp.experiments.cost import training_rate

    assert row.model is not None and row.model.config is not None
    rates, devices, walls = [], set(), []
    for seed in row.run_seeds(seeds):
        meta = cache.meta(row.model.key(seed, ctx)) or {}
        training = meta.get("training") or {}
        batch = (meta.get("config") or {}).get("batch_size", row.model.config.batch_size)
        rate = training_rate(training, batch)
        if rate is not None:
            rates.append(rate)
            devices.add(str(training.get("device", "?")))
        if training.get("wall_s") is not None:
            walls.append(float(training["wall_s"]))
    name = row.model.config.backbone
    members = max(row.ensemble, 1)
    out: dict[str, Any] = {
        "params_m": BACKBONES[name].params_m if name in BACKBONES else None,  # replaced by the measured count below
        "train_examples_per_s": round(float(np.mean(rates)), 1) if rates else None,
        "train_device": ", ".join(sorted(devices)) or None,
        # one run's wall time (mean over seeds); an ensemble costs the sum of its members'
        "train_s": (round(float(np.sum(walls)), 1) if row.ensemble else round(float(np.mean(walls)), 1))
        if walls else None,
        "members": members,
    }
    if row.ensemble:  # its members' parameters; every query runs them all (no latency measured for it)
        out["params_m"] = None if out["params_m"] is None else round(out["params_m"] * members, 2)
        ref_cost = (cache.meta(row.model.key(0, ctx)) or {}).get("cost") or {}  # the seed-0 member's measurement
        if ref_cost.get("encoder_params_m") is not None:
            out["params_m"] = round(ref_cost["encoder_params_m"] * members, 2)
    if row.cost:
        measured = (cache.meta(row.model.key(row.seeds(seeds)[0], ctx)) or {}).get("cost") or {}
        latency = measured.get("latency") or {}
        out |= {"cpu_p50_ms": latency.get("p50_ms"), "cpu_p90_ms": latency.get("p90_ms"),
                "int8_tried": measured.get("int8_tried"),
                "runtime": measured.get("runtime"), "int8_scheme": measured.get("int8_scheme"),
                "p50_ms_by_runtime": measured.get("p50_ms_by_runtime"),
                "int8_failures": measured.get("int8_failures", []),
                "int8_max_abs_diff": measured.get("int8_max_abs_diff"),
                "parity_records": measured.get("parity_records"), "cpu": measured.get("cpu"),
                }
        if measured.get("encoder_params_m") is not None:
            out["params_m"] = measured["encoder_params_m"]
    return out
