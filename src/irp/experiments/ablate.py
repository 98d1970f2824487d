"""`irp ablate`: plan the runs of the requested tables, run what is not cached yet, compute and write the tables,
the plots and the report.

Layout of OUT:
    table1.md / .csv / .json, table2.*, table3.*, sweep.*, robustness_retrieval.*, robustness_labels.*, transfer.*,
    backbones.*, distill.*
    plots/*.png          PR curves, sweep operating points, retrieval-failure curve, backbone quality vs cost
    RESULTS.md           the report (irp.report), also written to --report PATH with its plots beside it
    ablate_meta.json     hardware, data sizes, wall times and the command of every invocation
    cache/runs/<key>/    scores of finished runs (the resume state, and the backbone table's measured costs);
                         cache/data/ imported SIMMC records; cache/teacher-models/ the distill table's teachers
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from irp.config import IRPConfig, default_lr
from irp.experiments.data import SIMMC_SOURCES, DataContext, DataSpec, default_simmc_dir
from irp.experiments.render import to_csv, to_json, to_markdown, to_rich
from irp.experiments.runner import (
    ModelSpec,
    RunCache,
    RunReport,
    RunTask,
    Runtime,
    default_threads,
    feature_units,
    run_all,
)
from irp.experiments.tables import (
    TABLES,
    EvalSettings,
    TableResult,
    TableSettings,
    TableSpec,
    backbone_label,
    build_tables,
    compute_table,
)
from irp.fileio import atomic_write_text, write_json_atomic

# Defaults that --quick changes: small data, a tiny encoder, one seed, a coarse sweep, fewer resamples.
# Without --lr the learning rate is default_lr(batch size), as for `irp train`.
FULL_DEFAULTS: dict[str, Any] = dict(
    seeds=3, epochs=3, batch_size=32, max_train=0, max_eval=0, n_boot=1000,
    alphas=(0.5, 1.0), betas=(0.0, 0.5, 1.0, 2.0), cost_queries=200,
)
QUICK_DEFAULTS: dict[str, Any] = dict(
    seeds=1, epochs=2, lr=3e-3, batch_size=32, max_train=500, max_eval=300, n_boot=200,
    alphas=(1.0,), betas=(0.0, 1.0), cost_queries=30, teachers=1,
)
PARITY_RECORDS = {False: 500, True: 100}  # validation records of the backbones table's int8 parity check
INT8_SCHEMES = {False: "auto", True: "per-channel"}  # --quick: the fastest scheme only (fp32 timed if it fails)
# --quick: one stand-in per architecture (minilm-l3 is the BERT of minilm-l6 with fewer layers): keeps the CI guard fast
QUICK_STAND_INS = (("minilm-l6", "bert"), ("mpnet-base", "mpnet"))


@dataclass(frozen=True)
class AblationOptions:
    train: Path
    valid: Path
    test: Path
    out: Path
    tables: tuple[str, ...] = TABLES
    quick: bool = False
    seeds: int = 3
    backbone: str | None = None  # None: minilm-l6, or the tiny encoder with --quick
    backbones: tuple[str, ...] = ()  # extra backbones: tables 1-3 are repeated for each
    compare_backbones: tuple[str, ...] = ()  # backbones table; () = the built-in ones installed (--quick: stand-ins)
    cost_queries: int = 200  # single queries timed per backbone (after 10 warm-up calls)
    teachers: int = 3  # distill table: the teacher is the ensemble of the primary model's seeds 0..teachers-1
    temperature: float = 2.0  # distill table: soft-target temperature of the students
    distill_alpha: float = 0.5  # distill table: the label loss's share in the students' loss
    epochs: int = 3
    max_steps: int = 0
    batch_size: int = 32
    lr: float = 5e-5
    device: str = "auto"
    max_train: int = 0
    max_eval: int = 0
    jobs: int = 1
    operating_point: str = "f05"
    target_precision: float = 0.8
    alphas: tuple[float, ...] = (0.5, 1.0)
    betas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    corruptions: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    n_boot: int = 1000
    simmc_dir: Path | None = None
    keep_models: bool = False
    report: Path | None = None
    command: str = ""

    def as_command(self) -> str:
        """The `irp ablate` command line that reproduces these options (non-default flags only).

        >>> AblationOptions(Path("t.jsonl"), Path("v.jsonl"), Path("x.jsonl"), Path("out"), seeds=5).as_command()
        'irp ablate --table all --train t.jsonl --valid v.jsonl --test x.jsonl --out out --seeds 5'
        """
        paths = dict(train=self.train, valid=self.valid, test=self.test, out=self.out)
        defaults = AblationOptions.create(self.quick, **paths)
        table = "all" if set(self.tables) == set(TABLES) else ",".join(self.tables)
        args = ["irp", "ablate", "--table", table]
        args += [part for name, path in paths.items() for part in (f"--{name}", str(path))]
        args += ["--quick"] if self.quick else []
        for f in dataclasses.fields(self):
            value, flag = getattr(self, f.name), f"--{f.name.replace('_', '-')}"
            if f.name in (*paths, "tables", "quick", "command") or value == getattr(defaults, f.name):
                continue
            if isinstance(value, bool):
                args.append(flag)
            elif isinstance(value, tuple):
                args += [flag, ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
            else:
                args += [flag, str(value)]
        return shlex.join(args)

    @classmethod
    def create(cls, quick: bool = False, **given: Any) -> AblationOptions:
        """Options from the given values (None = not given) over the full or the --quick defaults."""
        values = dict(QUICK_DEFAULTS if quick else FULL_DEFAULTS)
        values.update({k: v for k, v in given.items() if v is not None})
        values.setdefault("lr", default_lr(values["batch_size"]))
        return cls(quick=quick, **values)

    def check(self) -> None:
        """Raise ValueError naming the first unusable option."""
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown:
            raise ValueError(f"unknown table(s) {', '.join(unknown)}: use {', '.join(TABLES)} or all")
        for name in ("train", "valid", "test"):
            if not Path(getattr(self, name)).is_file():
                raise ValueError(f"--{name} {getattr(self, name)}: no such file")
        if self.seeds < 1 or self.jobs < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--seeds, --jobs, --epochs and --batch-size must be >= 1")
        if self.operating_point not in ("f05", "target"):
            raise ValueError(f"--operating-point must be f05 or target, got {self.operating_point!r}")
        if not 0.0 < self.target_precision <= 1.0:
            raise ValueError("--target-precision must be in (0, 1]")
        if not self.corruptions or any(not 0.0 <= f <= 1.0 for f in self.corruptions):
            raise ValueError("--corruptions must be fractions in [0, 1] (at least one)")
        if not self.alphas or not self.betas or any(a <= 0 for a in self.alphas) or any(b < 0 for b in self.betas):
            raise ValueError("--alphas must be > 0 and --betas >= 0 (at least one of each)")
        if self.n_boot < 1:
            raise ValueError("--n-boot must be >= 1")
        if self.cost_queries < 1:
            raise ValueError("--cost-queries must be >= 1")
        if self.teachers < 1:
            raise ValueError("--teachers must be >= 1")
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"--distill-alpha must be in [0, 1], got {self.distill_alpha}")
        if self.simmc_dir is not None and "transfer" in self.tables:
            missing = [rel for rel in SIMMC_SOURCES.values() if not (Path(self.simmc_dir) / rel).is_file()]
            if missing:
                raise ValueError(f"--simmc-dir {self.simmc_dir} lacks {', '.join(missing)}")


def parse_tables(spec: str) -> tuple[str, ...]:
    """`--table` value: one name, a comma-separated list, or `all`.

    >>> parse_tables("all") == TABLES, parse_tables("1, sweep")
    (True, ('1', 'sweep'))
    """
    names = tuple(p.strip() for p in spec.split(",") if p.strip())
    return TABLES if "all" in names else names


def parse_floats(spec: str) -> tuple[float, ...]:
    """A comma-separated list of numbers; percentages allowed.

    >>> parse_floats("0, 25%, 0.5,1")
    (0.0, 0.25, 0.5, 1.0)
    """
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        try:
            out.append(float(part[:-1]) / 100 if part.endswith("%") else float(part))
        except ValueError:
            raise ValueError(f"not a number: {part!r}") from None
    return tuple(out)


# ---- planning -------------------------------------------------------------------------------------------
@dataclass
class Plan:
    tasks: list[RunTask]
    labels: dict[str, str]  # run key -> "table · row · seed s" of its first use
    n_runs: int  # distinct (model, seed) runs the tables need
    cached: int  # of which every needed score is cached
    cost: dict[str, str] = dataclasses.field(default_factory=dict)  # run key -> valid set: cost still to measure


def plan_runs(
    specs: Sequence[TableSpec], ctx: DataContext, cache: RunCache, seeds: int, cost_models: Path | None = None,
    teacher_models: Path | None = None,
) -> Plan:
    """The distinct runs the tables need (shared runs once), which record sets each still has to score, and whose
    cost (backbones, distill tables) is still to be measured: those runs keep their model, trained again if it is
    gone; likewise the teachers of a student that still has to run (distill table)."""
    needed: dict[str, tuple[ModelSpec, int, set[str]]] = {}
    labels: dict[str, str] = {}
    cost: dict[str, str] = {}
    for table in specs:
        for row in table.rows:
            if row.model is None:
                continue
            for seed in row.run_seeds(seeds):
                key = row.model.key(seed, ctx)
                entry = needed.setdefault(key, (row.model, seed, set()))
                entry[2].update((row.valid_set, row.eval_set))
                suffix = f" · seed {seed}" if row.model.kind == "irp" else ""
                labels.setdefault(key, f"{table.key} · {row.name}{suffix}")
            first = row.model.key(row.run_seeds(seeds)[0], ctx)
            if row.cost and not (cache.meta(first) or {}).get("cost"):
                cost[first] = row.valid_set
    missing_sets = {key: tuple(sorted(s for s in sets if not cache.has(key, s, ctx.fingerprint(s))))
                    for key, (_, _, sets) in needed.items()}
    # A student that runs needs its teachers' artifacts: a teacher whose model is not kept runs (again) first.
    teaching = {t for key, (spec, seed, _) in needed.items()
                if spec.teachers and (missing_sets[key] or key in cost) for t in spec.teacher_keys(ctx)}
    for spec, _, _ in list(needed.values()):  # a teacher no row reports still has to be trained
        for teacher, teacher_seed in spec.teachers:
            key = teacher.key(teacher_seed, ctx)
            if key not in needed:
                needed[key], missing_sets[key] = (teacher, teacher_seed, set()), ()
    tasks, cached = [], 0
    for key, (spec, seed, sets) in needed.items():
        missing = missing_sets[key]
        model_gone = key in cost and not (cost_models is not None and (cost_models / key / "config.json").exists())
        teacher_gone = key in teaching and not (teacher_models is not None
                                                and (teacher_models / key / "config.json").exists())
        cached += not missing
        if missing or model_gone or teacher_gone:
            tasks.append(RunTask(spec, seed, key, missing, keep_for_cost=key in cost, keep_as_teacher=key in teaching))
    return Plan(tasks, labels, len(needed), cached, cost)


# ---- environment ----------------------------------------------------------------------------------------
def hardware(device: str = "auto") -> dict[str, Any]:
    """CPU model and cores, and the GPU that training used (if any)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpu_cores": os.cpu_count(), "platform": platform.platform()}
    import torch

    info["torch_threads"] = torch.get_num_threads()
    if device != "cpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def loader_workers(jobs: int, device: str) -> int:
    """Batch-collating DataLoader workers per run: the library default (-1) for one run at a time; with concurrent
    runs on a GPU, the cores shared out so that runs and their loaders do not oversubscribe the CPU (not part of
    a run's key: it does not change what is learned)."""
    if jobs == 1:
        return -1
    import torch

    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return max(0, (os.cpu_count() or 1) // jobs - 1) if on_gpu else 0


def _options_dict(opts: AblationOptions) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()}


def _data_sizes(ctx: DataContext, specs: Sequence[TableSpec]) -> dict[str, dict[str, Any]]:
    """Records, positives and (simulated logs) true_intent rate of every set used, in a fixed order: those
    evaluated on and every model's training set (loaded here when all its runs came from the cache)."""
    trained_on = {row.model.train_set for spec in specs for row in spec.rows if row.model is not None}
    used = (set(ctx.sizes()) | trained_on) - {"train", "valid", "test"}
    names = ["train", "valid", "test", *sorted(used)]
    out = {}
    for name in names:
        records = ctx.records(name)
        n, pos = len(records), sum(r.get("label") == 1 for r in records)
        out[name] = {"records": n, "positives": pos, "positive_rate": round(pos / n, 4) if n else None}
        source = ctx.source_records(name)
        if source is not None and source > n:
            out[name]["drawn_from"] = source  # records in the given file, of which these are a random subset
        if records and all(r.get("true_intent") in (0, 1) for r in records):
            out[name]["true_intent_rate"] = round(sum(r["true_intent"] for r in records) / n, 4)
    return out


# ---- the command ----------------------------------------------------------------------------------------
def run_ablation(opts: AblationOptions, console: Console | None = None) -> list[TableResult]:
    """Run (or resume) the ablation described by `opts`; write every table, plot, the meta file and the report."""
    from irp.experiments.figures import table_plots
    from irp.report import write_report

    console = console or Console()
    opts.check()
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    out = opts.out
    (out / "cache").mkdir(parents=True, exist_ok=True)
    backbone = opts.backbone or "minilm-l6"
    if opts.quick and opts.backbone is None:
        from irp.model.encoder import build_tiny_encoder

        tiny = out / "cache" / "tiny-backbone"
        if not (tiny / "config.json").exists():
            build_tiny_encoder(tiny)
        backbone = str(tiny.resolve())
    compare, compare_notes = compared_backbones(opts, backbone)
    simmc_dir = opts.simmc_dir if opts.simmc_dir is not None else default_simmc_dir()
    ctx = DataContext(DataSpec(
        Path(opts.train), Path(opts.valid), Path(opts.test), out / "cache" / "data",
        opts.max_train, opts.max_eval, simmc_dir,
    ))
    base = IRPConfig(
        backbone=backbone, epochs=opts.epochs, max_steps=opts.max_steps, batch_size=opts.batch_size, lr=opts.lr,
        device=opts.device, target_precision=opts.target_precision, checkpoint_every=10**9,
        num_workers=loader_workers(opts.jobs, opts.device),
    )
    students, distill_notes = distill_students(opts, backbone)
    settings = TableSettings(base, (backbone, *opts.backbones), opts.alphas, opts.betas, opts.corruptions,
                             compare, compare_notes, students=students, teachers=opts.teachers,
                             temperature=opts.temperature, distill_alpha=opts.distill_alpha,
                             distill_notes=distill_notes, distill_domains=("sim",) if opts.quick else ("sim", "fashion"),
                             primary_label="minilm-l6 (tiny stand-in)" if opts.quick and opts.backbone is None else "")
    specs = build_tables(opts.tables, settings, ctx)
    cache = RunCache(out / "cache" / "runs")
    cost_models, teacher_models = out / "cache" / "cost-models", out / "cache" / "teacher-models"
    plan = plan_runs(specs, ctx, cache, opts.seeds, cost_models, teacher_models)
    console.print(
        f"[bold]irp ablate[/]: tables {', '.join(s.key for s in specs)}; backbone {backbone_label(backbone)}; "
        f"{plan.n_runs} distinct runs, {plan.cached} cached, [bold]{len(plan.tasks)} to run[/] "
        f"(jobs {opts.jobs}, device {opts.device})"
    )
    for task in plan.tasks:  # import SIMMC, write subsets and corrupted sets once here, before any worker starts
        for name in {task.spec.train_set, task.spec.valid_set, *task.score_sets}:
            ctx.path(name)
    runtime = Runtime(
        out / "cache" / "runs", out / "cache" / "scratch", out / "cache" / "features",
        out / "models" if opts.keep_models else None, default_threads(opts.jobs) if opts.jobs > 1 else 0,
        write_features=opts.jobs == 1, cost_models=cost_models, teacher_models=teacher_models,
    )
    reports = _run_with_progress(plan, ctx, runtime, opts.jobs, console)
    _measure_costs(plan, ctx, cache, cost_models, opts, console)

    ev = EvalSettings(opts.seeds, opts.operating_point, opts.target_precision, opts.n_boot)  # type: ignore[arg-type]
    results = []
    for spec in specs:
        table = compute_table(spec, ctx, cache, ev)
        table.plots = table_plots(table, out / "plots")
        data = table.to_dict()
        for suffix, text in ((".md", to_markdown(data, "plots")), (".csv", to_csv(data)), (".json", to_json(data))):
            atomic_write_text(out / f"{spec.key}{suffix}", text)
        console.print(to_rich(data))
        results.append(table)

    meta = _write_meta(opts, out, ctx, specs, cache, plan, reports, started, time.perf_counter() - t0, backbone)
    report_path = write_report(out, opts.report)
    console.print(
        f"tables -> {out}/ ({', '.join(s.key for s in specs)}); report -> {report_path}; "
        f"wall time {meta['wall_s']:.0f} s ({len(reports)} runs trained)"
    )
    return results


def compared_backbones(opts: AblationOptions, primary: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(label, backbone) pairs of the backbones table, and notes on those left out.

    Default: every built-in backbone that is installed (a note names the others and `make backbones`). With
    --quick and no --compare-backbones: tiny random stand-ins with each one's architecture (MiniLM-L6's is the
    primary tiny encoder), so that the quick pipeline checks the table, the MPNet code path and the cost
    measurement in seconds, on any machine; their numbers say nothing about the pretrained backbones."""
    from irp.backbones import NAMES, BackboneError, available, locate

    if "backbones" not in opts.tables:
        return (), ()
    if opts.quick and not opts.compare_backbones:
        from irp.model.encoder import build_tiny_encoder, build_tiny_mpnet

        pairs = []
        for name, arch in QUICK_STAND_INS:
            folder = opts.out / "cache" / f"tiny-{name}"
            if name == "minilm-l6" and opts.backbone is None:
                folder = Path(primary)
            elif not (folder / "config.json").exists():
                (build_tiny_mpnet if arch == "mpnet" else build_tiny_encoder)(folder, seed=NAMES.index(name) + 1)
            pairs.append((f"{name} (tiny stand-in)", str(folder.resolve())))
        note = ("--quick: tiny random encoders stand in for the backbones (the BERT of the MiniLMs and MPNet, hidden "
                "32, 2 layers, no pretrained weights): these rows check the pipeline, not the backbones; run without "
                "--quick, or pass --compare-backbones minilm-l3,minilm-l6,mpnet-base, for the real ones")
        return tuple(pairs), (note,)
    pairs, notes = [], []
    for name in opts.compare_backbones or NAMES:
        if name in NAMES and not available(name):
            try:
                locate(name)
            except BackboneError as e:
                notes.append(f"{name} skipped: {e}")
            continue
        if name not in NAMES and not Path(name).expanduser().is_dir():
            notes.append(f"{name} skipped: neither a built-in backbone ({', '.join(NAMES)}) nor a folder")
            continue
        pairs.append((backbone_label(name), name))
    return tuple(pairs), tuple(notes)


def distill_students(opts: AblationOptions, primary: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(label, backbone) of the distill table's students, and notes on those left out: the primary backbone and
    minilm-l3 where installed; with --quick, a tiny random 1-layer stand-in for minilm-l3 only."""
    from irp.backbones import BackboneError, locate
    from irp.model.encoder import build_tiny_encoder

    if "distill" not in opts.tables:
        return (), ()
    if opts.quick and opts.backbone is None:
        small = opts.out / "cache" / "tiny-minilm-l3"
        if not (small / "config.json").exists():
            build_tiny_encoder(small, seed=5, num_layers=1)
        note = ("--quick: a tiny random encoder of 1 layer stands in for the minilm-l3 student (the minilm-l6 student "
                "is left out: same code path, the CI guard stays fast), the teacher is the baseline's seed 0 alone (an "
                "ensemble of 1), the SIMMC rows are left out: these rows check the pipeline, not distillation")
        return (("minilm-l3 (tiny stand-in)", str(small.resolve())),), (note,)
    students, notes = [(backbone_label(primary), primary)], []
    if backbone_label(primary) != "minilm-l3":
        try:
            locate("minilm-l3")
            students.append(("minilm-l3", "minilm-l3"))
        except BackboneError as e:
            notes.append(f"student minilm-l3 skipped: {e}")
    return tuple(students), tuple(notes)


def _measure_costs(
    plan: Plan, ctx: DataContext, cache: RunCache, cost_models: Path, opts: AblationOptions, console: Console
) -> None:
    """Export each cost run's kept model to ONNX and time single queries on the CPU, one model at a time after
    every training run finished (so that the timings do not share the CPU with training)."""
    from irp.experiments.cost import measure_cost

    for key, valid_set in plan.cost.items():
        model_dir = cost_models / key
        if not (model_dir / "config.json").exists():
            raise RuntimeError(f"the model of run {key} was not kept for its cost measurement")
        started = time.perf_counter()
        cost = measure_cost(model_dir, ctx.path(valid_set), opts.cost_queries, PARITY_RECORDS[opts.quick],
                            INT8_SCHEMES[opts.quick])
        meta = cache.meta(key) or {}
        meta["cost"] = cost
        cache.save_meta(key, meta)
        shutil.rmtree(model_dir, ignore_errors=True)
        scheme = (f"int8 {cost['int8_scheme']}" if cost.get("int8_scheme")
                  else f"fp32 (int8 {cost['int8_tried']} failed parity)")
        console.print(f"  cost of {plan.labels[key]}: CPU p50 {cost['latency']['p50_ms']:.1f} ms ({scheme}), "
                      f"measured in {time.perf_counter() - started:.0f} s")


def _run_with_progress(plan: Plan, ctx: DataContext, runtime: Runtime, jobs: int, console: Console) -> list[RunReport]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if not plan.tasks:
        return []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        units = len(feature_units(plan.tasks)) if jobs > 1 else 0
        features_id = bar.add_task("tokenizing", total=units, visible=units > 0)
        task_id = bar.add_task("runs", total=len(plan.tasks))

        def on_done(report: RunReport) -> None:
            training = report.meta.get("training") or {}
            valid = report.meta.get("valid_metrics") or {}
            detail = ""
            if training:
                detail = (f" ({training.get('steps')} steps on {training.get('device')}, "
                          f"valid AP {valid.get('ap') or float('nan'):.3f})")
            bar.console.print(f"  done {plan.labels[report.task.key]}: {report.seconds:.1f} s{detail}")
            bar.advance(task_id)

        return run_all(plan.tasks, ctx, runtime, jobs, on_done, lambda n: bar.update(features_id, completed=n))


def _write_meta(
    opts: AblationOptions, out: Path, ctx: DataContext, specs: Sequence[TableSpec], cache: RunCache, plan: Plan,
    reports: list[RunReport], started: datetime, wall_s: float, backbone: str,
) -> dict[str, Any]:
    from irp.artifact import library_versions

    path = out / "ablate_meta.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    all_runs = [cache.meta(k) or {} for k in plan.labels]
    invocation = {
        "command": opts.command or opts.as_command(),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "runs_trained": len(reports),
        "hardware": hardware(opts.device),
    }
    meta = {
        **invocation,
        "options": _options_dict(opts),
        "backbone": backbone,
        "data": _data_sizes(ctx, specs),
        "runs": {
            "distinct": plan.n_runs, "cached_at_start": plan.cached, "trained_now": len(reports),
            "compute_s_all_runs": round(sum(m.get("wall_s", 0.0) for m in all_runs), 1),
        },
        "versions": library_versions(),
        "history": [*previous.get("history", []), invocation],
    }
    write_json_atomic(path, meta)
    return meta
