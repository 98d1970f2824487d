"""Training runs of an ablation: what to fit (`ModelSpec` + seed), a cache of their scores, and their execution.

A run is identified by a key: a hash of the canonical model config (device left out), the seed, the label it
learns, and the fingerprints of its training and validation data. Its product is one score array per record set
it was asked to score, cached as `.npy` in OUT/cache/runs/<key>/ and written atomically, so an interrupted
ablation continues where it stopped and identical runs requested by several tables are trained once.

Model artifacts are written to a temporary folder and deleted once scored (`keep_models` keeps them).
Runs can execute in this process or in a pool of worker processes (`jobs > 1`): small encoders leave a GPU
mostly idle, so several concurrent runs multiply its throughput.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from irp.config import TEXT_FIELDS, IRPConfig
from irp.experiments.data import DataContext, DataSpec, fingerprint
from irp.fileio import atomic_path, write_json_atomic

BASELINE_KINDS = ("majority", "keyword", "tfidf-lr")
# Settings that do not change the scores a run produces (the ablation chooses its own thresholds).
_NOT_LEARNED = ("device", "num_workers", "checkpoint_every", "target_precision", "confidence", "calibration")
_DEFAULTS = IRPConfig()


def canonical(config: IRPConfig) -> IRPConfig:
    """The same model with irrelevant settings reset, so equal models get equal keys: no product input means
    summarizer `none` and text fields only; MMR knobs only matter for mmr; alpha/beta only for the combined loss,
    which with α = 1 and β = 0 is BCE.

    >>> c = canonical(IRPConfig(fields=("utterance", "intent", "title"), summarizer="none", loss="bce", alpha=2.0))
    >>> c.fields, c.summarizer, c.alpha
    (('utterance', 'intent'), 'none', 1.0)
    >>> canonical(IRPConfig(loss="combined", alpha=1.0, beta=0.0)) == canonical(IRPConfig(loss="bce"))
    True
    """
    changes: dict[str, Any] = {}
    if config.summarizer == "none" or not config.product_fields:
        changes["summarizer"] = "none"
        changes["fields"] = tuple(f for f in config.fields if f in TEXT_FIELDS)
    if changes.get("summarizer", config.summarizer) != "mmr":
        changes["mmr_m"], changes["mmr_lambda"] = _DEFAULTS.mmr_m, _DEFAULTS.mmr_lambda
    if config.loss == "combined" and config.alpha == 1.0 and config.beta == 0.0:
        changes["loss"] = "bce"  # 1·BCE + 0·soft precision is BCE
    if changes.get("loss", config.loss) != "combined":
        changes["alpha"], changes["beta"] = _DEFAULTS.alpha, _DEFAULTS.beta
    return config.replace(**changes)


@dataclass(frozen=True)
class ModelSpec:
    """What to fit, without the seed: the IRP model (`kind="irp"`, with a config) or a baseline kind."""

    kind: str = "irp"
    config: IRPConfig | None = None
    domain: str = "sim"  # sim: --train/--valid files; fashion: SIMMC fashion train split by dialog
    label_field: str = "label"
    # irp distill: the (model, seed) runs whose artifacts teach this one (config.distill_alpha, .temperature)
    teachers: tuple[tuple[ModelSpec, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "irp" and self.config is None:
            raise ValueError("an irp ModelSpec needs a config")
        if self.kind not in ("irp", *BASELINE_KINDS):
            raise ValueError(f"unknown model kind {self.kind!r}")
        if self.config is not None:
            object.__setattr__(self, "config", canonical(self.config))

    @property
    def train_set(self) -> str:
        return "train" if self.domain == "sim" else f"{self.domain}_train"

    @property
    def valid_set(self) -> str:
        return "valid" if self.domain == "sim" else f"{self.domain}_valid"

    def seeds(self, n: int) -> list[int]:
        """Seeds to run: baselines are deterministic, so one."""
        return [0] if self.kind != "irp" else list(range(n))

    def key(self, seed: int, ctx: DataContext) -> str:
        config = None
        if self.config is not None:
            config = {k: v for k, v in self.config.replace(seed=seed).to_dict().items() if k not in _NOT_LEARNED}
            if not self.teachers:  # no distillation: keys as before these settings existed
                config.pop("distill_alpha", None)
                config.pop("temperature", None)
        parts: list[Any] = [
            self.kind, config, self.domain, self.label_field,
            ctx.fingerprint(self.train_set), ctx.fingerprint(self.valid_set),
        ]
        if self.teachers:  # a student is its teachers' too (absent otherwise: older keys stay valid)
            parts.append([teacher.key(s, ctx) for teacher, s in self.teachers])
        return f"{self.kind}-{fingerprint(*parts)}"

    def teacher_keys(self, ctx: DataContext) -> list[str]:
        return [teacher.key(s, ctx) for teacher, s in self.teachers]


@dataclass(frozen=True)
class RunTask:
    """One (model, seed) to run, and the record sets it still has to score."""

    spec: ModelSpec
    seed: int
    key: str
    score_sets: tuple[str, ...]
    keep_for_cost: bool = False  # keep the artifact in Runtime.cost_models for the cost measurement (backbones)
    keep_as_teacher: bool = False  # keep the artifact in Runtime.teacher_models: a student distils from it


class RunCache:
    """Scores and metadata of finished runs: OUT/cache/runs/<key>/{run.json, <set>-<fingerprint>.npy}."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _scores_path(self, key: str, name: str, fp: str) -> Path:
        safe = name.replace("@", "_").replace("=", "")
        return self.root / key / f"{safe}-{fp[:12]}.npy"

    def has(self, key: str, name: str, fp: str) -> bool:
        return self._scores_path(key, name, fp).exists()

    def load(self, key: str, name: str, fp: str) -> np.ndarray:
        return np.load(self._scores_path(key, name, fp))

    def save(self, key: str, name: str, fp: str, scores: np.ndarray) -> None:
        with atomic_path(self._scores_path(key, name, fp)) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.asarray(scores, dtype=np.float32))

    def meta(self, key: str) -> dict[str, Any] | None:
        path = self.root / key / "run.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_meta(self, key: str, meta: dict[str, Any]) -> None:
        write_json_atomic(self.root / key / "run.json", meta)


@dataclass(frozen=True)
class Runtime:
    """Where runs write and how they score (picklable, for worker processes)."""

    cache_root: Path
    scratch: Path  # temporary model artifacts
    features_dir: Path | None = None  # tokenized data, shared by runs with the same input settings
    models_dir: Path | None = None  # keep artifacts here when set
    threads: int = 0  # torch threads per worker process, 0 = leave as is
    write_features: bool = True  # False in worker pools: the features were built before the runs started
    cost_models: Path | None = None  # artifacts kept until their cost is measured (RunTask.keep_for_cost)
    teacher_models: Path | None = None  # teachers' artifacts, kept for the students (RunTask.keep_as_teacher)


def _score_device(config: IRPConfig) -> str:
    from irp.train import resolve_device

    return str(resolve_device(config.device))


def _baseline(spec: ModelSpec, ctx: DataContext) -> Any:
    from irp.baselines import make_baseline
    from irp.config import DEFAULT_FIELDS

    params: dict[str, Any] = {"fields": DEFAULT_FIELDS} if spec.kind == "tfidf-lr" else {}
    train = ctx.records(spec.train_set)
    return make_baseline(spec.kind, **params).fit(train, ctx.labels(spec.train_set, spec.label_field).astype(int))


# ---- tokenized features, shared by runs ------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureUnit:
    """One record set tokenized for one input setting (and label): one entry of the features cache."""

    config: IRPConfig  # only its input settings matter
    set_name: str
    label_field: str


def input_settings(config: IRPConfig) -> tuple[Any, ...]:
    """What changes the tokenized input of a model (not the seed, loss or optimiser)."""
    return (config.backbone, config.fields, config.summarizer, config.context_turns, config.mmr_m,
            config.mmr_lambda, config.budget)


def feature_units(tasks: Iterable[RunTask]) -> list[FeatureUnit]:
    """The distinct feature sets the model tasks read: training and validation data with the learned label,
    and every set they score (with `label`, which scoring ignores)."""
    units: dict[tuple[Any, ...], FeatureUnit] = {}
    for task in tasks:
        spec = task.spec
        if spec.kind != "irp" or spec.config is None:
            continue
        needs = [(spec.train_set, spec.label_field), (spec.valid_set, spec.label_field)]
        needs += [(name, "label") for name in task.score_sets]
        for name, label in needs:
            units.setdefault((input_settings(spec.config), name, label), FeatureUnit(spec.config, name, label))
    return list(units.values())


def build_features(unit: FeatureUnit, ctx: DataContext, runtime: Runtime) -> None:
    """Tokenize one unit into the features cache (a no-op when it is there)."""
    from irp.features import Featurizer
    from irp.model.encoder import load_tokenizer, resolve_backbone
    from irp.train import prepare_features

    assert runtime.features_dir is not None
    featurizer = Featurizer(load_tokenizer(resolve_backbone(unit.config.backbone)), unit.config)
    prepare_features(ctx.path(unit.set_name), featurizer, unit.label_field, runtime.features_dir)


def _scores(clf: Any, name: str, ctx: DataContext, runtime: Runtime) -> np.ndarray:
    """P(image-seeking) [n] of set `name`, from cached features when there are some."""
    if runtime.features_dir is None:
        return clf.predict_proba(ctx.records(name), batch_size=512)
    from irp.train import prepare_features, score

    features, _ = prepare_features(ctx.path(name), clf.featurizer_, "label", runtime.features_dir, runtime.write_features)
    return score(clf.model_, clf.featurizer_, features, clf.device_, batch_size=512)


# ---- one run ---------------------------------------------------------------------------------------------
def execute(task: RunTask, ctx: DataContext, runtime: Runtime) -> dict[str, Any]:
    """Fit the task's model, score its record sets into the cache, write run.json; returns the run's metadata."""
    cache = RunCache(runtime.cache_root)
    spec, started = task.spec, time.perf_counter()
    meta = cache.meta(task.key) or {}
    if spec.kind != "irp":
        model = _baseline(spec, ctx)
        for name in task.score_sets:
            cache.save(task.key, name, ctx.fingerprint(name), model.predict_proba(ctx.records(name))[:, 1])
        meta.update(kind=spec.kind, last_s=round(time.perf_counter() - started, 2))
        meta["wall_s"] = meta["last_s"]
        cache.save_meta(task.key, meta)
        return meta

    from irp.predict import IRPClassifier
    from irp.threshold import PrecisionTargetWarning
    from irp.train import train

    assert spec.config is not None
    config = spec.config.replace(seed=task.seed)
    kept = runtime.models_dir / task.key if runtime.models_dir else None
    runtime.scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runtime.scratch, prefix=f"{task.key}-") as tmp:
        model_dir = kept if kept is not None and (kept / "config.json").exists() else Path(tmp) / "model"
        trained = not (model_dir / "config.json").exists()
        if trained:
            with warnings.catch_warnings():  # the artifact's own threshold is not the ablation's: no warning
                warnings.simplefilter("ignore", PrecisionTargetWarning)
                result = train(
                    config, ctx.path(spec.train_set), ctx.path(spec.valid_set), model_dir,
                    label_field=spec.label_field, quiet=True, cache_dir=runtime.features_dir,
                    distillation=_distillation(spec, config, ctx, runtime),
                )
            meta.update(
                kind="irp", config=config.to_dict(), label_field=spec.label_field, domain=spec.domain,
                training=_training_info(model_dir),
                valid_metrics={k: result.metrics.get(k) for k in ("ap", "precision", "recall", "threshold")},
            )
        clf = IRPClassifier.load(model_dir, device=_score_device(config))
        for name in task.score_sets:
            cache.save(task.key, name, ctx.fingerprint(name), _scores(clf, name, ctx, runtime))
        if kept is not None and trained:
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(model_dir, kept, ignore=shutil.ignore_patterns("checkpoints"))
        for keep, folder in ((task.keep_for_cost, runtime.cost_models), (task.keep_as_teacher, runtime.teacher_models)):
            if keep and folder is not None:
                target = folder / task.key
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("checkpoints", "onnx"))
    meta["last_s"] = round(time.perf_counter() - started, 2)  # this execution (wall_s sums all of them)
    meta["wall_s"] = round(meta.get("wall_s", 0.0) + meta["last_s"], 2)
    meta["trainings"] = meta.get("trainings", 0) + int(trained)  # > 1: scores were added after the model was gone
    cache.save_meta(task.key, meta)
    return meta


def _distillation(spec: ModelSpec, config: IRPConfig, ctx: DataContext, runtime: Runtime) -> Any:
    """The Distillation of a student run (its teachers' kept artifacts), None for any other run."""
    if not spec.teachers:
        return None
    from irp.distill import Distillation, load_teachers

    if runtime.teacher_models is None:
        raise RuntimeError("a student run needs Runtime.teacher_models")
    folders = [runtime.teacher_models / key for key in spec.teacher_keys(ctx)]
    missing = [str(f) for f in folders if not (f / "config.json").exists()]
    if missing:
        raise RuntimeError(f"the teachers of a student run were not kept: {', '.join(missing)}")
    return Distillation(load_teachers(folders, config.fields, config.context_turns), config.temperature,
                        config.distill_alpha)


def _training_info(model_dir: Path) -> dict[str, Any]:
    info = json.loads((model_dir / "config.json").read_text()).get("training", {})
    keys = ("steps", "best_step", "wall_s", "featurize_s", "train_loop_s", "eval_s", "device", "n_train", "n_valid",
            "early_stopped")
    return {k: info[k] for k in keys if k in info}


# ---- worker processes ------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(data: DataSpec, runtime: Runtime) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    _WORKER["ctx"], _WORKER["runtime"] = DataContext(data), runtime


def _run_in_worker(task: RunTask) -> dict[str, Any]:
    return execute(task, _WORKER["ctx"], _WORKER["runtime"])


def _features_in_worker(unit: FeatureUnit) -> None:
    build_features(unit, _WORKER["ctx"], _WORKER["runtime"])


@dataclass
class RunReport:
    """What happened to one task (for progress lines and the wall-time summary)."""

    task: RunTask
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def run_all(
    tasks: Iterable[RunTask],
    ctx: DataContext,
    runtime: Runtime,
    jobs: int = 1,
    on_done: Callable[[RunReport], None] | None = None,
    on_features: Callable[[int], None] | None = None,
) -> list[RunReport]:
    """Execute tasks: baselines here; model runs here (jobs=1) or in `jobs` spawned worker processes, which first
    tokenize every distinct feature set once, in parallel, so that runs only read the features cache.

    A failing run raises after the others have finished, so finished runs are cached either way.
    """
    tasks = list(tasks)
    reports: list[RunReport] = []

    def done(task: RunTask, meta: dict[str, Any], t0: float) -> None:
        report = RunReport(task, meta, meta.get("last_s", time.perf_counter() - t0))
        reports.append(report)
        if on_done is not None:
            on_done(report)

    def run_here(here: list[RunTask]) -> None:
        for task in here:
            t0 = time.perf_counter()
            done(task, execute(task, ctx, runtime), t0)

    # Students need their teachers' artifacts: they run last, here, after every other run finished.
    students = [t for t in tasks if t.spec.teachers]
    tasks = [t for t in tasks if not t.spec.teachers]
    pooled = [t for t in tasks if t.spec.kind == "irp"] if jobs > 1 else []
    here = [t for t in tasks if t not in pooled]
    if not pooled:
        run_here(here + students)
        return reports
    errors: list[BaseException] = []
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(ctx.spec, runtime)
    ) as pool:
        units = feature_units(pooled) if runtime.features_dir is not None else []
        feature_futures = [pool.submit(_features_in_worker, u) for u in units]
        run_here(here)  # baselines on this process's CPU while the workers tokenize
        for n, future in enumerate(as_completed(feature_futures), 1):
            future.result()
            if on_features is not None:
                on_features(n)
        starts = {pool.submit(_run_in_worker, task): (task, time.perf_counter()) for task in pooled}
        for future in as_completed(starts):
            task, t0 = starts[future]
            try:
                done(task, future.result(), t0)
            except Exception as e:  # keep going: every finished run is cached
                errors.append(e)
    if errors:
        raise errors[0]
    run_here(students)
    return reports


def default_threads(jobs: int) -> int:
    """Torch threads per worker: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))
