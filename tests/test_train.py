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

from conftest import catch_host_reads
from irp.data.io import load_records
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


def small_log_valid(model_dir: Path) -> Path:
    """The validation file an artifact was trained with (config.json records its path)."""
    return Path(json.loads((model_dir / "config.json").read_text())["data"]["valid"]["path"])


@pytest.fixture(scope="module")
def trained(tiny_backbone: str, small_log: dict[str, Path], tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    run_irp(*train_args(tiny_backbone, small_log, out))
    return out


def test_artifact_is_complete_and_never_pickled(trained: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer", "metrics.json", "MODEL_CARD.md"):
        assert (trained / name).exists(), name
    meta = json.loads((trained / "config.json").read_text())
    thr = meta["threshold"]
    assert thr["rule"] in ("certified_precision", "max_f05_fallback")  # defaults: confidence 0.9
    assert thr["confidence"] == 0.9 and thr["target_precision"] == 0.8 and thr["n_valid"] == 200
    assert thr["valid_positives"] == sum(r["label"] for r in load_records(small_log_valid(trained)))
    assert 0 < thr["predicted_positive"] <= 200 and thr["lower_bound"] is not None
    assert thr["guarantee"] and thr["message"] and set(thr) >= {"value", "reached", "valid_precision", "valid_recall"}
    assert meta["calibration"]["method"] == "temperature" and meta["calibration"]["temperature"] > 0
    assert meta["config"]["confidence"] == 0.9 and meta["config"]["calibration"] == "temperature"
    assert meta["data"]["train"]["sha256"] and meta["versions"]["torch"]
    assert not [p for p in trained.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pickle")]
    card = (trained / "MODEL_CARD.md").read_text()
    assert "Operating point" in card and "Intended use" in card
    assert "**The promise.** " + thr["guarantee"] in card and "confidence | 0.9" in card
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["ece"] <= metrics["ece_uncalibrated"] + 1e-9 and metrics["calibration"] == "temperature"


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
    assert (tmp_path / "plots" / "reliability.png").stat().st_size > 1000
    # calibration quality and the promise, checked against independent computations on the predictions
    from sklearn.metrics import brier_score_loss

    from irp.predict import IRPClassifier

    clf = IRPClassifier.load(trained)
    records = load_records(small_log["test"])
    y, p = np.array([r["label"] for r in records]), clf.predict_proba(records).astype(np.float64)
    assert report["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-6)
    assert 0 <= report["ece"] < 0.5
    assert report["target_precision"] == 0.8
    verdict = report["target_verdict"]
    assert report["target_met"] == verdict["verdict"] in ("met", "consistent", "missed")
    assert verdict["precision"] == report["precision"] and verdict["interval"] == report["ci"]["precision"]
    lo, hi = verdict["interval"]
    expected = "met" if lo >= 0.8 else "consistent" if hi >= 0.8 else "missed"
    assert verdict["verdict"] == expected and verdict["target"] == 0.8
    assert report["operating_point"] == json.loads(json.dumps(clf.promise))


def test_promise_property_states_the_operating_point(trained: Path) -> None:
    from irp.predict import IRPClassifier

    clf = IRPClassifier.load(trained)
    thr = json.loads((trained / "config.json").read_text())["threshold"]
    promise = clf.promise
    assert promise["threshold"] == thr["value"] == clf.threshold_
    for key in ("target_precision", "confidence", "lower_bound", "rule", "n_valid", "valid_positives",
                "predicted_positive", "guarantee"):
        assert promise[key] == thr[key], key
    assert promise["calibration"] == "temperature"


def test_temperature_scaling_fixes_a_deliberately_overconfident_model(trained: Path, small_log: dict[str, Path]) -> None:
    """The trained model's validation logits scaled x5 (an over-confident network): temperature scaling fitted on
    them lowers the validation ECE."""
    from irp.calibration import calibrate_logits, expected_calibration_error, fit_calibration, sigmoid
    from irp.predict import IRPClassifier

    records = load_records(small_log["valid"])
    y = np.array([r["label"] for r in records], dtype=float)
    logits = 5.0 * IRPClassifier.load(trained).decision_function(records).astype(np.float64)
    cal = fit_calibration("temperature", logits, y)
    before, after = expected_calibration_error(y, sigmoid(logits)), expected_calibration_error(y, calibrate_logits(cal, logits))
    assert cal["temperature"] > 2.0 and after < before  # measured here: see the report of issue 11
    assert after < 0.1


def _artifact_files(model_dir: Path) -> dict[str, bytes]:
    return {name: (model_dir / name).read_bytes() for name in ("config.json", "metrics.json", "MODEL_CARD.md")}


def test_threshold_command_refits_without_retraining(trained: Path, small_log: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from irp.predict import IRPClassifier

    model = tmp_path / "model"
    shutil.copytree(trained, model, ignore=shutil.ignore_patterns("checkpoints"))
    records = load_records(small_log["test"])
    before = IRPClassifier.load(model)
    weights = (model / "model.safetensors").read_bytes()
    proc = run_irp("threshold", "--model", str(model), "--valid", str(small_log["valid"]),
                   "--target-precision", "0.6", "--confidence", "0.5", "--calibration", "isotonic")
    assert "before" in proc.stdout and "after" in proc.stdout and "rewritten" in proc.stdout
    meta = json.loads((model / "config.json").read_text())
    thr = meta["threshold"]
    assert (thr["target_precision"], thr["confidence"], thr["rule"]) == (0.6, 0.5, "certified_precision")
    assert thr["lower_bound"] >= 0.6 and "50 %" in thr["guarantee"]
    assert meta["calibration"]["method"] == "isotonic" and meta["config"]["calibration"] == "isotonic"
    assert meta["refit"]["previous"]["threshold"]["target_precision"] == 0.8
    assert (model / "model.safetensors").read_bytes() == weights  # no retraining
    after = IRPClassifier.load(model)
    # same raw scores, new calibration and threshold; decisions are made on the new scale
    np.testing.assert_array_equal(after.decision_function(records), before.decision_function(records))
    assert after.threshold_ == thr["value"] and after.promise["target_precision"] == 0.6
    assert (after.predict(records) == (after.predict_proba(records) >= thr["value"])).all()
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["threshold"] == thr["value"] and metrics["calibration"] == "isotonic"
    assert "target precision | 0.6" in (model / "MODEL_CARD.md").read_text()
    # re-running with the artifact's own settings on the same file reproduces the operating point exactly
    run_irp("threshold", "--model", str(model), "--valid", str(small_log["valid"]))
    again = json.loads((model / "config.json").read_text())
    assert again["threshold"]["value"] == thr["value"] and again["calibration"] == meta["calibration"]


def test_threshold_command_bad_input_exits_2_and_writes_nothing(trained: Path, small_log: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    from irp.data.io import write_records

    files = _artifact_files(trained)
    one_class = tmp_path / "one_class.jsonl"
    write_records(one_class, [r | {"label": 1} for r in load_records(small_log["valid"])[:30]])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    not_artifact = tmp_path / "folder"
    not_artifact.mkdir()
    (not_artifact / "config.json").write_text('{"something": "else"}')
    valid = str(small_log["valid"])
    cases = [
        (["--model", str(trained), "--valid", valid, "--confidence", "1"], "--confidence must be in [0, 1)"),
        (["--model", str(trained), "--valid", valid, "--confidence", "-0.1"], "--confidence must be in [0, 1)"),
        (["--model", str(trained), "--valid", valid, "--target-precision", "1.0"], "--target-precision must be in (0, 1)"),
        (["--model", str(trained), "--valid", valid, "--target-precision", "0"], "--target-precision must be in (0, 1)"),
        (["--model", str(trained), "--valid", valid, "--calibration", "platt"], "--calibration must be one of"),
        (["--model", str(trained), "--valid", str(one_class)], "single class"),
        (["--model", str(trained), "--valid", str(empty)], "no records"),
        (["--model", str(not_artifact), "--valid", valid], "not an irp model artifact"),
        (["--model", str(tmp_path / "nope"), "--valid", valid], "not an irp model directory"),
        (["--model", str(trained), "--valid", str(tmp_path / "nope.jsonl")], "does not exist"),
    ]
    from typer.testing import CliRunner

    from irp.cli import app

    runner = CliRunner()  # in process: ten interpreter start-ups would dominate the test's time
    for args, expected in cases:
        result = runner.invoke(app, ["threshold", *args], env={"COLUMNS": "200"})
        assert result.exit_code == 2, (args, result.output)
        assert expected in " ".join(result.stderr.split()), (args, result.stderr)
    assert _artifact_files(trained) == files


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
    from typer.testing import CliRunner

    from irp.cli import app

    for flags, expected in ((("--confidence", "1.5"), "confidence must be in [0, 1)"),
                            (("--calibration", "platt"), "calibration must be one of"),
                            (("--target-precision", "1"), "precision 1 never is"),
                            (("--ema", "1.5"), "--ema (the weight average's decay) must be in [0, 1)"),
                            (("--layer-decay", "0"), "--layer-decay must be in (0, 1]")):
        result = CliRunner().invoke(app, train_args(tiny_backbone, small_log, tmp_path / "m", *flags),
                                    env={"COLUMNS": "200"})  # in process: the flags fail before any training
        assert result.exit_code == 2 and expected in " ".join(result.stderr.split()), result.output
    assert not (tmp_path / "m").exists()


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

    from irp.train import train_step

    model, optimizer, batch = _step_parts(tiny_backbone, "cpu")
    with catch_host_reads() as calls:
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


def test_artifacts_from_before_calibration_still_load_and_can_be_refitted(trained: Path, small_log: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """An artifact written before issue 11 (no calibration, no confidence, the point rule) serves the plain sigmoid,
    says it promises nothing, and `irp threshold` re-fits it (defaults: its own settings; --dry-run writes nothing)."""
    import shutil

    from irp.calibration import sigmoid
    from irp.predict import IRPClassifier
    from irp.rethreshold import rethreshold

    model = tmp_path / "old"
    shutil.copytree(trained, model, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((model / "config.json").read_text())
    del meta["calibration"]
    for key in ("confidence", "calibration"):
        del meta["config"][key]
    meta["threshold"] = {k: meta["threshold"][k] for k in ("value", "rule", "target_precision", "reached",
                                                            "valid_precision", "valid_recall", "message")}
    meta["threshold"]["rule"] = "max_recall_at_precision"
    (model / "config.json").write_text(json.dumps(meta))
    records = load_records(small_log["test"])[:40]
    clf = IRPClassifier.load(model)
    np.testing.assert_allclose(clf.predict_proba(records), sigmoid(clf.decision_function(records)), atol=1e-7)
    assert clf.promise["confidence"] == 0.0 and clf.promise["guarantee"].startswith("No guarantee")
    assert clf.promise["calibration"] == "none" and clf.promise["lower_bound"] is None

    snapshot = _artifact_files(model)
    dry = rethreshold(model, small_log["valid"], dry_run=True)
    assert not dry.written and _artifact_files(model) == snapshot
    assert dry.point.choice.rule in ("max_recall_at_precision", "max_f05_fallback")  # its own confidence: 0
    assert dry.point.calibration == {"method": "none"}
    new = rethreshold(model, small_log["valid"], confidence=0.9, calibration="temperature")
    assert new.written and new.meta["config"]["confidence"] == 0.9
    assert IRPClassifier.load(model).promise["calibration"] == "temperature"


def test_weight_average_is_the_exponential_moving_average_of_the_steps() -> None:
    import torch

    from irp.ema import WeightAverage

    net = torch.nn.Linear(3, 1)
    avg = WeightAverage(net, decay=0.8)
    expected = net.weight.detach().numpy().astype(np.float64).copy()
    rng = np.random.default_rng(0)
    for t in range(30):
        with torch.no_grad():
            net.weight.copy_(torch.from_numpy(rng.normal(size=(1, 3)).astype(np.float32)))
        avg.update(t)
        d = min(0.8, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * net.weight.detach().numpy()
    with avg.applied():
        np.testing.assert_allclose(net.weight.detach().numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="--ema"):
        WeightAverage(net, decay=1.0)


def test_ema_keeps_the_averaged_weights_not_the_last_ones(tiny_backbone: str, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from test_export import train_tiny

    out = train_tiny(tiny_backbone, tmp_path / "ema", ema_decay=0.9)  # one epoch, one validation: at the end
    kept = load_file(str(out / "model.safetensors"))
    last = tmp_path / "ema" / "checkpoints" / "last"
    raw = load_file(str(last / "model.safetensors"))
    shadow = {k.removeprefix("ema::"): v for k, v in load_file(str(last / "optimizer.safetensors")).items()
              if k.startswith("ema::")}
    assert shadow and set(shadow) <= set(kept)
    for name, value in shadow.items():
        np.testing.assert_array_equal(kept[name], value)
    assert any(not np.array_equal(raw[n], shadow[n]) for n in shadow), "the average equals the last weights"
    assert json.loads((out / "config.json").read_text())["config"]["ema_decay"] == 0.9
    assert "weight average (EMA) decay 0.9" in (out / "MODEL_CARD.md").read_text()


def test_layer_decay_gives_each_encoder_layer_its_learning_rate(tiny_backbone: str) -> None:
    import torch

    from conftest import make_records
    from irp.config import IRPConfig
    from irp.features import Featurizer
    from irp.model.encoder import load_encoder, load_tokenizer
    from irp.model.irp import IRPModel
    from irp.train import layer_depth, make_optimizer, set_lr, to_device, train_step

    def parts(layer_decay: float) -> tuple[IRPModel, torch.optim.Optimizer, dict[str, torch.Tensor]]:
        config = IRPConfig(backbone=tiny_backbone, layer_decay=layer_decay, weight_decay=0.0)
        featurizer = Featurizer(load_tokenizer(tiny_backbone), config)
        torch.manual_seed(0)
        model = IRPModel(load_encoder(tiny_backbone), config, featurizer.pad_id).train()
        batch = to_device(featurizer.collate(featurizer.featurize(make_records(16, seed=4)), np.arange(16)),
                          torch.device("cpu"))
        return model, make_optimizer(model, config), batch

    model, optimizer, batch = parts(1.0)  # off: irp train's two groups (weight decay or not), scale 1
    assert [g["lr_scale"] for g in optimizer.param_groups] == [1.0, 1.0]
    model, optimizer, batch = parts(0.5)
    layers = model.encoder.config.num_hidden_layers  # 2 in the tiny encoder
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert len(scale) == len(names)  # every parameter in exactly one group
    assert scale["encoder.embeddings.LayerNorm.weight"] == 0.5 ** (layers + 1)
    assert scale[f"encoder.encoder.layer.{layers - 1}.output.LayerNorm.weight"] == 0.5
    assert scale["head.weight"] == 1.0
    assert all(s == 0.5 ** (layers + 1 - layer_depth(n, layers)) for n, s in scale.items())
    # One Adam step moves each LayerNorm weight by about its group's LR (the first update is lr * g / |g|).
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    set_lr(optimizer, 1e-3)
    train_step(model, model, optimizer, batch, torch.device("cpu"), 1.0)
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters()}
    assert moved["encoder.embeddings.LayerNorm.weight"] == pytest.approx(1e-3 * 0.5 ** (layers + 1), rel=0.01)
    assert moved[f"encoder.encoder.layer.{layers - 1}.output.LayerNorm.weight"] == pytest.approx(5e-4, rel=0.01)


def test_training_with_layer_decay_records_it(tiny_backbone: str, tmp_path: Path) -> None:
    from test_export import train_tiny

    out = train_tiny(tiny_backbone, tmp_path / "llrd", layer_decay=0.8)
    assert json.loads((out / "config.json").read_text())["config"]["layer_decay"] == 0.8
    assert json.loads((out / "metrics.json").read_text())["ap"] > 0.5  # still learns the product signal
    assert "layer-wise LR decay 0.8" in (out / "MODEL_CARD.md").read_text()
