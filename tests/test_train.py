"""End to end through the CLI on the tiny encoder: train -> artifact -> evaluate / predict, resume, reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from irp.train import epoch_batches

IRP = [sys.executable, "-m", "irp.cli"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "NO_PROXY": "*", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


def run_irp(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = os.environ | OFFLINE | {"COLUMNS": "200"}
    proc = subprocess.run(IRP + list(args), capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"irp {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def train_args(backbone: str, log: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train", "--train", str(log["train"]), "--valid", str(log["valid"]), "--out", str(out),
            "--backbone", backbone, "--epochs", "3", "--batch-size", "16", "--lr", "3e-3", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def trained(tiny_backbone: str, small_log: dict[str, Path], tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    run_irp(*train_args(tiny_backbone, small_log, out))
    return out


def test_artifact_is_complete_and_never_pickled(trained: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer", "metrics.json", "MODEL_CARD.md"):
        assert (trained / name).exists(), name
    meta = json.loads((trained / "config.json").read_text())
    assert meta["threshold"]["rule"] in ("max_recall_at_precision", "max_f05_fallback")
    assert meta["data"]["train"]["sha256"] and meta["versions"]["torch"]
    assert not [p for p in trained.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pickle")]
    card = (trained / "MODEL_CARD.md").read_text()
    assert "Operating point" in card and "Intended use" in card


def test_learns_the_product_signal(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["ap"] > 0.75  # labels follow the products' category; base rate is ~0.5


def test_evaluate_json_and_plots(trained: Path, small_log: dict[str, Path], tmp_path: Path) -> None:
    run_irp("evaluate", "--model", str(trained), "--data", str(small_log["test"]),
            "--json", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"), "--n-boot", "200")
    report = json.loads((tmp_path / "m.json").read_text())
    for key in ("precision", "recall", "f05", "ap", "roc_auc", "threshold", "n", "positives", "ci"):
        assert key in report
    assert report["n"] == 200
    assert (tmp_path / "plots" / "pr_curve.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "threshold_curves.png").stat().st_size > 1000


def test_predict_in_fresh_processes_is_reproducible(trained: Path, small_log: dict[str, Path], tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"pred{i}.jsonl"
        run_irp("predict", "--model", str(trained), "--data", str(small_log["test"]), "--out", str(out))
        outs.append([json.loads(line) for line in out.read_text().splitlines()])
    threshold = json.loads((trained / "config.json").read_text())["threshold"]["value"]
    assert [r["probability"] for r in outs[0]] == [r["probability"] for r in outs[1]]
    assert all(r["image_seeking"] == (r["probability"] >= round(threshold, 6) - 1e-6) or
               abs(r["probability"] - threshold) < 1e-5 for r in outs[0])


def test_python_api_matches_cli(trained: Path, small_log: dict[str, Path]) -> None:
    from irp.data.io import load_records
    from irp.predict import IRPClassifier

    clf = IRPClassifier.load(trained)
    records = load_records(small_log["test"])[:20]
    probs = clf.predict_proba(records)
    assert probs.shape == (20,) and ((probs >= 0) & (probs <= 1)).all()
    assert (clf.predict(records) == (probs >= clf.threshold_)).all()


def test_bad_flags_exit_2(tiny_backbone: str, small_log: dict[str, Path], tmp_path: Path) -> None:
    proc = run_irp(*train_args(tiny_backbone, small_log, tmp_path / "m", "--summarizer", "median"), check=False)
    assert proc.returncode == 2 and "summarizer" in proc.stderr
    proc = run_irp(*train_args("no/such-model", small_log, tmp_path / "m"), check=False)
    assert proc.returncode == 2 and "allow-network" in proc.stderr


def test_epoch_batches_are_reproducible_and_cover_everything() -> None:
    lengths = np.random.default_rng(0).integers(3, 40, size=1000)
    a, b = epoch_batches(lengths, 32, 7, 1), epoch_batches(lengths, 32, 7, 1)
    assert all((x == y).all() for x, y in zip(a, b))
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    spread = np.mean([lengths[x].max() - lengths[x].min() for x in a])
    assert spread < 3  # length bucketing keeps padding small


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_backbone: str, small_log: dict[str, Path], tmp_path: Path) -> None:
    extra = ("--checkpoint-every", "5", "--eval-every", "10", "--epochs", "4")
    straight = tmp_path / "straight"
    run_irp(*train_args(tiny_backbone, small_log, straight, *extra))

    crashed = tmp_path / "crashed"
    env = os.environ | OFFLINE
    proc = subprocess.Popen(IRP + train_args(tiny_backbone, small_log, crashed, *extra), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (crashed / "checkpoints" / "last" / "state.json").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (crashed / "metrics.json").exists(), "the run finished before it could be killed"
    run_irp(*train_args(tiny_backbone, small_log, crashed, *extra, "--resume"))
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((crashed / "metrics.json").read_text())
    assert abs(a["ap"] - b["ap"]) <= 0.01



def _step_parts(backbone: str, device: str):
    """A model, irp train's optimizer and two collated batches on `device`; one warm step already taken (the
    first step creates the optimizer state)."""
    import torch

    from conftest import make_records
    from irp.config import IRPConfig
    from irp.features import Featurizer
    from irp.model.encoder import load_encoder, load_tokenizer
    from irp.model.irp import IRPModel
    from irp.train import make_optimizer, to_device, train_step

    config = IRPConfig(backbone=backbone)
    featurizer = Featurizer(load_tokenizer(backbone), config)
    model = IRPModel(load_encoder(backbone), config, featurizer.pad_id).to(device).train()
    optimizer = make_optimizer(model, config)
    features = featurizer.featurize(make_records(32, seed=4))
    batches = [to_device(featurizer.collate(features, np.arange(i, i + 16)), torch.device(device)) for i in (0, 16)]
    train_step(model, model, optimizer, batches[0], torch.device(device), 1.0)
    return model, optimizer, batches[1]


def test_train_step_never_reads_a_tensor_back_to_the_host(tiny_backbone: str) -> None:
    """On CUDA every `.item()`, `bool(tensor)`, ... in the inner loop is a host-device sync that stalls the
    queue of kernel launches. On CPU the same calls are caught at the torch-function level."""
    import torch
    from torch.overrides import TorchFunctionMode

    from irp.train import train_step

    to_host = {torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__int__,
               torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.nonzero}
    calls: list[str] = []

    class CatchHostReads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in to_host:
                calls.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    model, optimizer, batch = _step_parts(tiny_backbone, "cpu")
    with CatchHostReads():
        loss = train_step(model, model, optimizer, batch, torch.device("cpu"), 1.0)
    assert calls == [], f"host reads in the training step: {calls}"
    assert torch.isfinite(loss) and not loss.requires_grad


@pytest.mark.gpu
def test_cuda_train_step_makes_no_host_device_sync(tiny_backbone: str) -> None:
    import torch

    from irp.train import train_step

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model, optimizer, batch = _step_parts(tiny_backbone, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = train_step(model, model, optimizer, batch, torch.device("cuda"), 1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.slow),
                                    pytest.param("cuda", marks=pytest.mark.gpu)])
def test_training_with_compile_learns(device: str, tiny_backbone: str, small_log: dict[str, Path], tmp_path: Path):
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    run_irp(*[device if a == "cpu" else a for a in train_args(tiny_backbone, small_log, tmp_path / "m", "--compile")])
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["ap"] > 0.75
