"""Ablations: the pure parts (corruption, thresholds, mean ± std, the seed-averaged paired bootstrap, run keys and
sharing, rendering, the generated reading) and the whole `irp ablate --table all --quick` pipeline end to end."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from irp.cli import app
from irp.config import IRPConfig
from irp.experiments.corrupt import corrupt_products
from irp.experiments.data import DataContext, DataSpec, corrupt_set
from irp.experiments.ablate import AblationOptions, plan_runs
from irp.experiments.render import markdown_rows, to_csv, to_json, to_markdown
from irp.experiments.runner import ModelSpec, RunCache, canonical
from irp.experiments.stats import METRICS, MeanStd, format_diff, mean_std, paired_seed_bootstrap, pick_threshold
from irp.experiments.tables import TableSettings, build_tables
from irp.metrics import paired_bootstrap
from irp.report import honest_reading, verdict
from irp.threshold import choose_threshold

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def flat(text: str) -> str:
    return " ".join(text.split())


# ---- retrieval failure -----------------------------------------------------------------------------------
CATALOG = [{"title": f"catalogue item {i}", "category": "random"} for i in range(50)]


def records_with_products(n: int, k: int = 5) -> list[dict]:
    return [{"id": str(i), "utterance": "u", "products": [{"title": f"r{i}p{j}"} for j in range(k)]} for i in range(n)]


def replaced(record: dict) -> int:
    return sum(p["title"].startswith("catalogue") for p in record["products"])


def test_corruption_replaces_the_asked_share_and_keeps_the_rest() -> None:
    records = records_with_products(400)
    assert [replaced(r) for r in corrupt_products(records, 0.0, CATALOG)] == [0] * 400
    assert all(replaced(r) == 5 for r in corrupt_products(records, 1.0, CATALOG))
    quarter = corrupt_products(records, 0.25, CATALOG, seed=3)
    counts = [replaced(r) for r in quarter]
    assert set(counts) <= {1, 2}  # 1.25 products: rounded up a quarter of the time
    assert abs(np.mean(counts) / 5 - 0.25) < 0.03
    for original, corrupted in zip(records, quarter):  # survivors keep their rank position
        kept = [(j, p["title"]) for j, p in enumerate(corrupted["products"]) if not p["title"].startswith("catalogue")]
        assert all(original["products"][j]["title"] == title for j, title in kept)
        assert corrupted["id"] == original["id"] and corrupted["utterance"] == original["utterance"]


def test_corruption_is_deterministic_pure_and_checked() -> None:
    records = records_with_products(50) + [{"id": "empty", "utterance": "u", "products": []}]
    before = json.dumps(records)
    a, b = corrupt_products(records, 0.5, CATALOG, seed=1), corrupt_products(records, 0.5, CATALOG, seed=1)
    assert a == b and a != corrupt_products(records, 0.5, CATALOG, seed=2)
    assert json.dumps(records) == before  # input untouched
    assert a[-1]["products"] == []
    with pytest.raises(ValueError, match="fraction"):
        corrupt_products(records, 1.5, CATALOG)
    with pytest.raises(ValueError, match="catalogue"):
        corrupt_products(records, 0.5, [])


# ---- statistics ------------------------------------------------------------------------------------------
def test_mean_std_matches_numpy_and_ignores_nan() -> None:
    values = [0.61, 0.64, 0.58, 0.70]
    ms = mean_std(values + [float("nan")])
    assert ms.n == 4 and math.isclose(ms.mean, np.mean(values)) and math.isclose(ms.std, np.std(values, ddof=1))
    assert mean_std([0.5]) == MeanStd(0.5, 0.0, 1) and mean_std([]).n == 0
    assert MeanStd(0.6123, 0.0456, 3).format() == "0.612 ± 0.046" and MeanStd(0.6123, 0.0, 1).format() == "0.612"
    assert format_diff(None) == "" and format_diff({"diff": 0.1, "lo": 0.05, "hi": 0.15, "p_value": 0.004}) == (
        "+0.100 [+0.050, +0.150] p=0.004")


def scores_for(y: np.ndarray, quality: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(quality * (2 * y - 1) + rng.normal(0, 1, y.size))))


def test_pick_threshold_rules() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    s = scores_for(y, 1.5, 1)
    thr, fell_back = pick_threshold(y, s, "f05")
    candidates = np.unique(s)
    f05 = [precision_recall_f05(y, s, t) for t in candidates]
    assert not fell_back and math.isclose(precision_recall_f05(y, s, thr), max(f05))
    assert pick_threshold(y, s, "target", 0.7) == (choose_threshold(y, s, 0.7).threshold, False)
    assert pick_threshold(y, s, "target", 1.0)[1] in (True, False)  # never raises, reports the fallback
    with pytest.raises(ValueError, match="operating point"):
        pick_threshold(y, s, "fixed")  # type: ignore[arg-type]


def precision_recall_f05(y: np.ndarray, s: np.ndarray, t: float) -> float:
    pred = s >= t
    tp, fp, fn = np.sum(pred & (y == 1)), np.sum(pred & (y == 0)), np.sum(~pred & (y == 1))
    return 1.25 * tp / (1.25 * tp + 0.25 * fn + fp)


def test_seed_bootstrap_with_one_seed_is_the_library_paired_bootstrap() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(400) < 0.3).astype(float)
    a, b = scores_for(y, 1.5, 1), scores_for(y, 0.7, 2)
    tied = np.round(b, 1)  # heavy ties: AP is evaluated at the end of each run of tied scores
    for sa, sb in ((a, b), (a, tied), (np.zeros_like(a), tied)):
        ours = paired_seed_bootstrap(y, [(sa, 0.5)], [(sb, 0.6)], n_boot=300, seed=7)
        for metric in METRICS:
            ref = paired_bootstrap(y, sa, 0.5, sb, 0.6, metric=metric, n_boot=300, seed=7)  # type: ignore[arg-type]
            assert ours[metric] == pytest.approx(ref, nan_ok=True), metric


def test_seed_bootstrap_averages_seeds_and_is_zero_against_itself() -> None:
    rng = np.random.default_rng(6)
    y = (rng.random(300) < 0.4).astype(float)
    row = [(scores_for(y, 1.5, s), 0.5) for s in (1, 2, 3)]
    ref = [(scores_for(y, 0.5, s), 0.5) for s in (4, 5)]
    out = paired_seed_bootstrap(y, row, ref, n_boot=200)
    single = [paired_bootstrap(y, s, t, ref[0][0], 0.5, "ap", n_boot=10)["diff"] for s, t in row]
    second = [paired_bootstrap(y, s, t, ref[1][0], 0.5, "ap", n_boot=10)["diff"] for s, t in row]
    assert out["ap"]["diff"] == pytest.approx((np.mean(single) + np.mean(second)) / 2)
    assert out["ap"]["lo"] > 0 and out["ap"]["p_value"] < 0.05  # a clearly better scorer
    same = paired_seed_bootstrap(y, row, row, n_boot=100)
    assert all(same[m]["diff"] == 0 and same[m]["lo"] == same[m]["hi"] == 0 and same[m]["p_value"] == 1 for m in METRICS)


# ---- run keys, sharing and planning ----------------------------------------------------------------------
def test_equal_models_share_a_key_and_the_device_does_not_matter(small_log: dict[str, Path], tmp_path: Path) -> None:
    ctx = DataContext(DataSpec(small_log["train"], small_log["valid"], small_log["test"], tmp_path))
    base = IRPConfig(backbone="x")
    key = ModelSpec("irp", base).key(0, ctx)
    assert ModelSpec("irp", base.replace(device="cuda", target_precision=0.9, num_workers=3)).key(0, ctx) == key
    assert ModelSpec("irp", base).key(1, ctx) != key
    assert ModelSpec("irp", base, label_field="true_intent").key(0, ctx) != key
    no_products = ModelSpec("irp", base.replace(fields=("utterance", "intent"), summarizer="mean"))
    assert no_products.key(0, ctx) == ModelSpec("irp", base.replace(summarizer="none")).key(0, ctx)
    assert canonical(base.replace(loss="combined", alpha=1.0, beta=0.0)).loss == "bce"
    assert ModelSpec("majority").seeds(3) == [0] and ModelSpec("irp", base).seeds(3) == [0, 1, 2]


def test_tables_share_runs(small_log: dict[str, Path], tmp_path: Path) -> None:
    ctx = DataContext(DataSpec(small_log["train"], small_log["valid"], small_log["test"], tmp_path))
    settings = TableSettings(IRPConfig(backbone="x"), ("x",))
    specs = build_tables(("1", "2", "3", "sweep"), settings, ctx)
    plan = plan_runs(specs, ctx, RunCache(tmp_path / "runs"), seeds=2)
    # distinct models: 7 feature rows; table 2 adds max, mmr, concat (none = utterance + intent, mean = all fields);
    # table 3 adds bce, soft precision, soft F0.5 (combined = all fields); the 8-point sweep adds 6 (1/0 = bce,
    # 1/0.5 = the default) -> 19 models x 2 seeds, plus 3 deterministic baselines.
    assert plan.n_runs == 19 * 2 + 3 and plan.cached == 0 and len(plan.tasks) == plan.n_runs
    assert all(set(t.score_sets) == {"valid", "test"} for t in plan.tasks)


def test_backbone_costs_are_planned_once_and_kept_models_are_reused(small_log: dict[str, Path], tmp_path: Path) -> None:
    ctx = DataContext(DataSpec(small_log["train"], small_log["valid"], small_log["test"], tmp_path, simmc_dir=None))
    settings = TableSettings(IRPConfig(backbone="x"), ("x",), compare=(("a", "x"), ("minilm-l6", "y")))
    (spec,) = build_tables(("backbones",), settings, ctx)
    assert [(r.name, r.reference, r.cost) for r in spec.rows] == [("a", False, True), ("minilm-l6", True, True)]
    assert "SIMMC" in spec.notes[0]
    cache = RunCache(tmp_path / "runs")
    plan = plan_runs([spec], ctx, cache, seeds=2, cost_models=tmp_path / "kept")
    first = spec.rows[0].model.key(0, ctx)
    assert len(plan.tasks) == 4 and set(plan.cost) == {first, spec.rows[1].model.key(0, ctx)}
    assert [t.keep_for_cost for t in plan.tasks] == [True, False, True, False]
    for task in plan.tasks:  # every score cached, but no cost yet and no kept model: the cost runs train again
        for name in task.score_sets:
            cache.save(task.key, name, ctx.fingerprint(name), np.zeros(3))
    again = plan_runs([spec], ctx, cache, seeds=2, cost_models=tmp_path / "kept")
    assert [t.score_sets for t in again.tasks] == [(), ()] and all(t.keep_for_cost for t in again.tasks)
    (tmp_path / "kept" / first).mkdir(parents=True)
    (tmp_path / "kept" / first / "config.json").write_text("{}")  # kept: measured without training again
    cache.save_meta(spec.rows[1].model.key(0, ctx), {"cost": {"runtime": "onnx-fp32"}})
    assert plan_runs([spec], ctx, cache, seeds=2, cost_models=tmp_path / "kept").tasks == []


def test_distill_students_run_after_their_kept_teachers(small_log: dict[str, Path], tmp_path: Path) -> None:
    """The student's key names its teachers; a student that still has to run keeps its teachers' models (trained
    again when they are gone), and runs after them; an ensemble row's score is the mean of its members'."""
    from irp.experiments.runner import RunTask, Runtime, run_all
    from irp.experiments.tables import compute_table
    from irp.experiments.tables import EvalSettings

    ctx = DataContext(DataSpec(small_log["train"], small_log["valid"], small_log["test"], tmp_path, simmc_dir=None))
    settings = TableSettings(IRPConfig(backbone="x"), ("x",), students=(("small", "y"),), teachers=2,
                             temperature=3.0, distill_alpha=0.25, distill_domains=("sim",))
    (spec,) = build_tables(("distill",), settings, ctx)
    baseline, ensemble, student = spec.rows
    assert (baseline.reference, ensemble.ensemble, ensemble.seeds(3), ensemble.run_seeds(3)) == (True, 2, [0], [0, 1])
    assert spec.operating_point == "target" and student.model.config.distill_alpha == 0.25
    teacher_keys = [baseline.model.key(s, ctx) for s in (0, 1)]
    assert student.model.teacher_keys(ctx) == teacher_keys
    other = ModelSpec("irp", student.model.config, teachers=((baseline.model, 2),))
    assert other.key(0, ctx) != student.model.key(0, ctx)  # other teachers, other student
    cache = RunCache(tmp_path / "runs")
    plan = plan_runs([spec], ctx, cache, seeds=2, cost_models=tmp_path / "kept", teacher_models=tmp_path / "teachers")
    keep = {t.key: t.keep_as_teacher for t in plan.tasks}
    assert keep == {teacher_keys[0]: True, teacher_keys[1]: True, student.model.key(0, ctx): False,
                    student.model.key(1, ctx): False}
    order: list[str] = []
    import irp.experiments.runner as runner

    def fake_execute(task: RunTask, ctx: DataContext, runtime: Runtime) -> dict:
        order.append("student" if task.spec.teachers else "teacher")
        return {}

    original, runner.execute = runner.execute, fake_execute
    try:
        run_all(list(reversed(plan.tasks)), ctx, Runtime(tmp_path / "runs", tmp_path / "scratch"), jobs=1)
    finally:
        runner.execute = original
    assert order == ["teacher", "teacher", "student", "student"]
    # Every score cached and the student done: nothing runs, no teacher needs to be kept.
    rng = np.random.default_rng(0)
    for task in plan.tasks:
        for name in task.score_sets:
            cache.save(task.key, name, ctx.fingerprint(name), rng.random(len(ctx.labels(name))))
    for key in plan.cost:
        cache.save_meta(key, {"cost": {"runtime": "onnx-fp32", "latency": {"p50_ms": 1.0}}})
    assert plan_runs([spec], ctx, cache, seeds=2, cost_models=tmp_path / "kept",
                     teacher_models=tmp_path / "teachers").tasks == []
    table = compute_table(spec, ctx, cache, EvalSettings(seeds=2, n_boot=50))
    members = [cache.load(k, "test", ctx.fingerprint("test")) for k in teacher_keys]
    assert np.allclose(table.rows[1].curve[1], np.mean(members, axis=0), atol=1e-6)
    assert table.rows[1].cost["members"] == 2 and table.rows[0].cost["cpu_p50_ms"] == 1.0


def test_skipped_tables_say_why(small_log: dict[str, Path], tmp_path: Path) -> None:
    ctx = DataContext(DataSpec(small_log["train"], small_log["valid"], small_log["test"], tmp_path, simmc_dir=None))
    specs = {s.key: s for s in build_tables(("robustness", "transfer"), TableSettings(IRPConfig(), ("x",)), ctx)}
    assert not specs["robustness_labels"].rows and "true_intent" in specs["robustness_labels"].notes[0]
    assert not specs["transfer"].rows and "SIMMC" in specs["transfer"].notes[0]
    retrieval = specs["robustness_retrieval"]
    assert [r.eval_set for r in retrieval.rows[:4]] == ["test", corrupt_set(0.25), corrupt_set(0.5), corrupt_set(1.0)]


def test_options_are_checked(small_log: dict[str, Path], tmp_path: Path) -> None:
    paths = dict(train=small_log["train"], valid=small_log["valid"], test=small_log["test"], out=tmp_path)
    AblationOptions.create(**paths).check()
    for bad in (dict(tables=("4",)), dict(seeds=0), dict(operating_point="x"), dict(alphas=(0.0,)),
                dict(corruptions=(1.5,)), dict(train=tmp_path / "missing.jsonl"), dict(simmc_dir=tmp_path)):
        with pytest.raises(ValueError):
            AblationOptions.create(**(paths | bad)).check()
    quick = AblationOptions.create(quick=True, **paths)
    assert quick.seeds == 1 and quick.max_train > 0 and AblationOptions.create(quick=True, seeds=3, **paths).seeds == 3


# ---- rendering and the reading ---------------------------------------------------------------------------
def fake_table(fusion_ap: tuple[float, float, float]) -> dict:
    def row(name: str, ap: float, reference: bool = False, vs: dict | None = None) -> dict:
        metrics = {m: {"mean": ap, "std": 0.01, "n": 3} for m in METRICS}
        return {"name": name, "group": "", "reference": reference, "params": {}, "n_seeds": 3, "metrics": metrics,
                "vs_reference": vs, "runs": ["k"], "fallbacks": 0, "per_seed": []}

    d, lo, hi = fusion_ap
    vs = {m: {"diff": d, "lo": lo, "hi": hi, "p_value": 0.01} for m in METRICS}
    return {"table": "table1", "title": "Table 1 — input features", "description": "d", "notes": [], "plots": [],
            "settings": {"operating_point": "f05", "target_precision": 0.8, "n_boot": 1000, "seeds": 3},
            "groups": {"": {"reference": "utterance", "eval_set": "test", "eval_label": "label", "n": 100,
                            "positives": 25}},
            "contrasts": [],
            "rows": [row("utterance", 0.5, reference=True), row("all fields (mean)", 0.5 + d, vs=vs)]}


def test_rendering_markdown_csv_json() -> None:
    table = fake_table((0.1, 0.05, 0.15))
    cells = markdown_rows(table)
    assert cells[1][0] == "utterance (reference)" and cells[1][5] == "—"
    assert cells[2][1] == "0.600 ± 0.010" and cells[2][5] == "+0.100 [+0.050, +0.150] p=0.01"
    md = to_markdown(table, "plots")
    assert md.count("\n| ") == 4 and "paired bootstrap" in md and "100 records, 25 positive (25.0%)" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["row"] for r in rows] == ["utterance", "all fields (mean)"]
    assert float(rows[1]["ap_mean"]) == 0.6 and float(rows[1]["d_ap_lo"]) == 0.05 and rows[0]["d_ap"] == ""
    table["rows"][0]["metrics"]["ap"]["mean"] = float("nan")
    assert json.loads(to_json(table))["rows"][0]["metrics"]["ap"]["mean"] is None  # strict JSON


def test_the_reading_follows_the_numbers() -> None:
    holds = honest_reading({"table1": fake_table((0.1, 0.05, 0.15))})[0]
    unclear = honest_reading({"table1": fake_table((0.02, -0.01, 0.05))})[0]
    reverse = honest_reading({"table1": fake_table((-0.1, -0.15, -0.05))})[0]
    assert "in AP this holds" in holds
    assert "within the interval" in unclear
    assert "does not hold" in reverse
    assert verdict(None, +1).startswith("cannot")


# ---- the whole pipeline ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from irp.data.simulate import SimConfig, simulate_to_file

    folder = tmp_path_factory.mktemp("sim_log")
    paths = {}
    for name, n, seed in (("train", 800, 1), ("valid", 400, 2), ("test", 400, 3)):
        paths[name] = folder / f"{name}.jsonl"
        simulate_to_file(paths[name], SimConfig(n=n, seed=seed), progress=False)
    return paths


TABLE_FILES = ("table1", "table2", "table3", "sweep", "robustness_retrieval", "robustness_labels", "transfer", "backbones",
               "distill")


def test_quick_ablation_writes_every_table_and_resumes(sim_log: dict[str, Path], tmp_path: Path) -> None:
    out, report = tmp_path / "ablate", tmp_path / "docs" / "RESULTS.md"
    args = ["ablate", "--table", "all", "--quick", "--train", str(sim_log["train"]), "--valid", str(sim_log["valid"]),
            "--test", str(sim_log["test"]), "--out", str(out), "--report", str(report), "--device", "cpu"]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    for stem in TABLE_FILES:
        for suffix in (".md", ".csv", ".json"):
            assert (out / f"{stem}{suffix}").stat().st_size > 0, stem + suffix
    tables = {stem: json.loads((out / f"{stem}.json").read_text()) for stem in TABLE_FILES}
    assert len(tables["table1"]["rows"]) == 10 and len(tables["table2"]["rows"]) == 5
    assert [r["name"] for r in tables["table3"]["rows"]][0] == "bce"
    for table in tables.values():
        for row in table["rows"]:
            assert row["reference"] or row["vs_reference"]["ap"]["lo"] is not None, (table["table"], row["name"])
    assert len(tables["robustness_labels"]["rows"]) == 5  # simulated logs know true_intent
    if (SHARED_DATA / "simmc1_fashion").is_dir():
        assert {r["group"] for r in tables["transfer"]["rows"]} == {"SIMMC fashion dev", "SIMMC furniture dev"}
    else:
        assert "SIMMC" in tables["transfer"]["notes"][0]
    backbones = tables["backbones"]  # --quick: tiny stand-ins of the three architectures, MPNet's included
    assert [r["name"] for r in backbones["rows"]][:2] == [f"{b} (tiny stand-in)" for b in ("minilm-l6", "mpnet-base")]
    assert len(backbones["rows"]) == (4 if (SHARED_DATA / "simmc1_fashion").is_dir() else 2)
    for row in backbones["rows"][:2]:
        cost = row["cost"]
        assert cost["cpu_p50_ms"] > 0 and cost["runtime"] in ("onnx-int8", "onnx-fp32") and cost["train_examples_per_s"] > 0
        assert row["interval"]["ap"]["lo"] <= row["metrics"]["ap"]["mean"] <= row["interval"]["ap"]["hi"]
    assert "stand" in backbones["notes"][0] and "CPU p50 ms" in (out / "backbones.md").read_text()
    distill = tables["distill"]  # --quick: the teacher is the primary model's seed 0, one tiny student
    assert [r["name"] for r in distill["rows"]] == ["baseline minilm-l6 (tiny stand-in)",
                                                    "teacher: minilm-l6 (tiny stand-in) seed 0",
                                                    "student minilm-l3 (tiny stand-in)"]
    student = distill["rows"][2]
    assert student["cost"]["cpu_p50_ms"] > 0 and student["cost"]["train_s"] > 0 and student["cost"]["params_m"] > 0
    assert student["vs_reference"]["ap"]["lo"] is not None and distill["settings"]["operating_point"] == "target"
    assert distill["rows"][1]["cost"]["members"] == 1 and "Δ AP vs baseline" in (out / "distill.md").read_text()

    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert {"table1_pr.png", "table2_pr.png", "table3_pr.png", "sweep_pr.png", "sweep_operating_point.png",
            "robustness_retrieval.png", "backbones_quality_cost.png", "distill_quality_latency.png"} <= plots
    text = report.read_text()
    assert "## Honest reading" in text and "irp ablate --table all" in text and "Table 1: *fusion beats" in text
    linked = {line.split("(results/")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")}
    assert linked == {p for t in tables.values() for p in t["plots"]} and all((report.parent / "results" / p).exists()
                                                                              for p in linked)
    assert (out / "RESULTS.md").exists() and json.loads((out / "ablate_meta.json").read_text())["runs"]["trained_now"] > 0

    second = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # resume: everything is cached
    assert second.exit_code == 0, second.output
    assert "0 to run" in flat(second.output)
    assert json.loads((out / "table1.json").read_text()) == tables["table1"]
    data = json.loads((out / "ablate_meta.json").read_text())["data"]  # written again, from the cache alone
    assert (data["train"]["records"], data["train"]["drawn_from"]) == (500, 800) and "drawn_from" in data["test"]
    assert "500 (random subset of the file's 800)" in report.read_text()
    if (SHARED_DATA / "simmc1_fashion").is_dir():
        assert "fashion_train" in data  # a training set is listed even when none of its runs trained now


def test_ablate_rejects_bad_arguments(small_log: dict[str, Path], tmp_path: Path) -> None:
    base = ["ablate", "--train", str(small_log["train"]), "--valid", str(small_log["valid"]), "--test",
            str(small_log["test"]), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*base, "--table", "7"])
    assert result.exit_code == 2 and "unknown table" in flat(result.output)
    result = CliRunner().invoke(app, [*base, "--alphas", "1,x"])
    assert result.exit_code == 2 and "not a number" in flat(result.output)


def test_subsample_file_is_the_same_subset_in_every_format(tmp_path: Path) -> None:
    import gzip
    import shutil

    from irp.data.io import load_records, write_records
    from irp.experiments.data import subsample_file

    records = [{"id": f"r{i}", "utterance": f"query {i}", "label": i % 2} for i in range(60)]
    write_records(tmp_path / "a.jsonl", records)
    write_records(tmp_path / "a.parquet", records)
    with open(tmp_path / "a.jsonl", "rb") as f, gzip.open(tmp_path / "a.jsonl.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    subsets = []
    for name, target in (("a.jsonl", "s1.jsonl"), ("a.parquet", "s2.parquet"), ("a.jsonl.gz", "s3.jsonl")):
        assert subsample_file(tmp_path / name, tmp_path / target, 15, seed=4) == 15
        subsets.append([r["id"] for r in load_records(tmp_path / target)])
    assert subsets[0] == subsets[1] == subsets[2] and len(set(subsets[0])) == 15
    assert subsets[0] == sorted(subsets[0], key=lambda i: int(i[1:]))  # file order kept
    assert subsample_file(tmp_path / "a.jsonl", tmp_path / "all.jsonl", 100) == 60
