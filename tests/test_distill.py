"""`irp distill` on the tiny encoder: two teachers (seeds) distilled into a student with unlabelled transfer records;
the artifact names its teachers; teachers' scores are cached; resume works; the step stays sync-free; bad input
exits 2 and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import catch_host_reads, make_records
from irp.cli import app
from irp.data.io import write_records


@pytest.fixture
def teachers(tiny_seeds: list[Path]) -> list[Path]:
    return tiny_seeds


@pytest.fixture(scope="module")
def transfer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("transfer") / "transfer.jsonl"
    records = make_records(160, seed=9)
    for record in records[::2]:
        del record["label"]  # transfer records need no label; the labels the others carry are not read
    write_records(path, records)
    return path


def distill_args(backbone: str, log: dict[str, Path], teachers: list[Path], out: Path, *extra: str) -> list[str]:
    args = ["distill", "--train", str(log["train"]), "--valid", str(log["valid"]), "--out", str(out),
            "--backbone", backbone, "--batch-size", "16", "--lr", "3e-3", "--device", "cpu", "--epochs", "2"]
    for teacher in teachers:
        args += ["--teacher", str(teacher)]
    return args + list(extra)


def invoke(args: list[str], cache: Path):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200", "IRP_CACHE_DIR": str(cache)})


def test_student_names_its_teachers_and_learns(tiny_backbone: str, small_log: dict[str, Path], teachers: list[Path],
                                               transfer_file: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "student"
    extra = ("--transfer", str(transfer_file), "--temperature", "2", "--alpha", "0.5", "--checkpoint-every", "10")
    first = invoke(distill_args(tiny_backbone, small_log, teachers, out, *extra, "--max-steps", "30"), cache)
    assert first.exit_code == 0, first.output
    meta = json.loads((out / "config.json").read_text())
    distilled = meta["distillation"]
    assert (distilled["temperature"], distilled["alpha"]) == (2.0, 0.5)
    assert (meta["config"]["distill_alpha"], meta["config"]["temperature"]) == (0.5, 2.0)
    assert (distilled["n_train"], distilled["n_transfer"], distilled["n_unlabelled"]) == (400, 160, 160)
    assert meta["training"]["n_transfer"] == 160 and meta["data"]["transfer"]["sha256"] == distilled["transfer"]["sha256"]
    for teacher, described in zip(teachers, distilled["teachers"]):
        teacher_meta = json.loads((teacher / "config.json").read_text())
        assert described["path"] == str(teacher) and described["backbone"] == tiny_backbone
        assert described["seed"] == teacher_meta["config"]["seed"]
        assert described["data"]["train"]["sha256"] == teacher_meta["data"]["train"]["sha256"]
        from irp.predict import IRPClassifier

        assert described["version"] == IRPClassifier.load(teacher).version
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Distillation" in card and all(t["version"] in card for t in distilled["teachers"])
    # Each teacher scored train and transfer once, cached as .npy keyed by its weights and the file.
    assert sorted(distilled["teacher_cache"].values()) == ["written"] * 4
    assert len(list((cache / "teachers").glob("*.npy"))) == 4

    # Resume from the last checkpoint for more steps: the soft targets come back from the cache.
    more = invoke(distill_args(tiny_backbone, small_log, teachers, out, *extra, "--max-steps", "60", "--resume"), cache)
    assert more.exit_code == 0, more.output
    assert "resumed from step 30" in more.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["training"]["steps"] == 60
    assert sorted(meta["distillation"]["teacher_cache"].values()) == ["hit"] * 4
    assert json.loads((out / "metrics.json").read_text())["ap"] > 0.75  # the label follows the products


def test_soft_targets_are_the_teachers_average_at_temperature(teachers: list[Path], small_log: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """The cached logits are the teachers' own raw logits; the soft target is mean sigmoid(z / T)."""
    import torch

    from irp.data.io import load_records
    from irp.distill import load_teachers, soft_targets, teacher_logits
    from irp.predict import IRPClassifier

    found = load_teachers(teachers)
    records = load_records(small_log["valid"])
    logits = [teacher_logits(t, small_log["valid"], torch.device("cpu"), tmp_path)[0] for t in found]
    for teacher, z in zip(teachers, logits):
        scored: list[int] = []  # the progress callback: records scored so far, up to all of them
        assert np.allclose(z, IRPClassifier.load(teacher).decision_function(records, 16, scored.append), atol=1e-5)
        assert scored == sorted(scored) and scored[-1] == len(records) and len(scored) > 1
    expected = (1 / (1 + np.exp(-logits[0] / 3.0)) + 1 / (1 + np.exp(-logits[1] / 3.0))) / 2
    assert np.allclose(soft_targets(np.stack(logits), 3.0), expected, atol=1e-6)
    again, state = teacher_logits(found[0], small_log["valid"], torch.device("cpu"), tmp_path)
    assert state == "hit" and np.array_equal(again, logits[0])


def test_distill_step_never_reads_a_tensor_back_to_the_host(tiny_backbone: str) -> None:
    """The soft targets and the NaN labels of transfer records are handled by tensor ops only (no sync on CUDA)."""
    import torch

    from irp.config import IRPConfig
    from irp.features import Featurizer
    from irp.model.encoder import load_encoder, load_tokenizer
    from irp.model.irp import IRPModel
    from irp.train import make_optimizer, train_step

    config = IRPConfig(backbone=tiny_backbone, distill_alpha=0.5, temperature=2.0)
    featurizer = Featurizer(load_tokenizer(tiny_backbone), config)
    model = IRPModel(load_encoder(tiny_backbone), config, featurizer.pad_id).train()
    optimizer = make_optimizer(model, config)
    features = featurizer.featurize(make_records(32, seed=4))
    features.labels[::3] = np.nan  # transfer records
    features.soft_targets = np.linspace(0.1, 0.9, 32, dtype=np.float32)
    batches = [featurizer.collate(features, np.arange(i, i + 16)) for i in (0, 16)]
    assert "soft_targets" in batches[0]
    cpu = torch.device("cpu")
    train_step(model, model, optimizer, batches[0], cpu, 1.0)  # creates the optimizer state
    with catch_host_reads() as calls:
        loss = train_step(model, model, optimizer, batches[1], cpu, 1.0)
    assert calls == [] and torch.isfinite(loss)


def test_bad_input_exits_2_and_writes_nothing(tiny_backbone: str, small_log: dict[str, Path], teachers: list[Path],
                                              tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "student"
    not_artifact = tmp_path / "not_a_model"
    not_artifact.mkdir()
    (not_artifact / "notes.txt").write_text("hello")
    other_fields = tmp_path / "other_fields"
    shutil.copytree(teachers[1], other_fields, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((other_fields / "config.json").read_text())
    meta["config"]["fields"] = ["utterance", "title"]
    (other_fields / "config.json").write_text(json.dumps(meta))
    cases = [
        ([not_artifact], (), "--teacher"),
        ([tmp_path / "missing"], (), "no such folder"),
        ([teachers[0], other_fields], (), "every teacher must read the same input fields"),
        ([teachers[0]], ("--fields", "utterance,intent"), "teachers and student must read the same input fields"),
        ([teachers[0]], ("--alpha", "1.5"), "--alpha"),
        ([teachers[0]], ("--alpha", "-0.1"), "--alpha"),
        ([teachers[0]], ("--temperature", "0"), "--temperature"),
        ([teachers[0]], ("--temperature", "-1"), "--temperature"),
        ([teachers[0]], ("--transfer", str(tmp_path / "nope.jsonl")), "--transfer"),
    ]
    for folders, extra, expected in cases:
        result = invoke(distill_args(tiny_backbone, small_log, folders, out, *extra), cache)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and expected in message, (extra, result.output)
    assert not out.exists() and not cache.exists()


@pytest.mark.slow
def test_ddp_student_matches_one_process(tiny_backbone: str, small_log: dict[str, Path], teachers: list[Path],
                                         tmp_path: Path) -> None:
    """Two gloo processes under torchrun distil like one process with the same global batch (the soft targets
    ride in every rank's batches; rank 0 alone writes the teachers' cache)."""
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                        "IRP_CACHE_DIR": str(tmp_path / "cache")}
    runs = {}
    for name, launcher, batch in (("ddp", [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "irp.cli"], 16),
                                  ("single", [sys.executable, "-m", "irp.cli"], 32)):
        args = distill_args(tiny_backbone, small_log, teachers, tmp_path / name, "--epochs", "3", "--seed", "5")
        args[args.index("--batch-size") + 1] = str(batch)
        proc = subprocess.run(launcher + args, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text()) | {
            "meta": json.loads((tmp_path / name / "config.json").read_text())}
    assert runs["ddp"]["meta"]["training"]["world_size"] == 2 and runs["ddp"]["meta"]["distillation"]["teachers"]
    assert runs["ddp"]["meta"]["training"]["steps"] == pytest.approx(runs["single"]["meta"]["training"]["steps"], abs=3)
    assert abs(runs["ddp"]["ap"] - runs["single"]["ap"]) < 0.05
