"""ONNX export and runtime on the tiny encoder: parity with torch (fp32 <= 1e-4, int8 <= 0.02 and AP within
0.005) on the calibrated probabilities, runtime selection, stale exports, failed checks that install nothing, and
`irp threshold` re-fitting an exported artifact."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_records
from irp.data.io import load_records, write_records
from irp.metrics import average_precision


def train_tiny(backbone: str, out: Path, **changes) -> Path:
    """A small artifact trained in a few seconds on make_records (products carry the label signal)."""
    from irp.config import IRPConfig
    from irp.train import train

    config = IRPConfig(backbone=backbone, epochs=1, batch_size=16, lr=3e-3, device="cpu", **changes)
    train(config, make_records(300, 1), make_records(100, 2), out, quiet=True)
    return out


def warm_engine(artifact: Path):  # -> irp.serve.Engine
    """The serving engine of `artifact` on the torch runtime, warmed up (the serving tests' module fixture)."""
    from irp.serve import Engine, load_classifier

    engine = Engine(load_classifier(artifact, "torch"), artifact)
    engine.warm_up()
    return engine


def copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "onnx"))
    return dst


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("parity") / "valid.jsonl"
    write_records(path, make_records(120, 7))
    return path


@pytest.fixture(scope="module")
def artifact(tiny_backbone: str, tmp_path_factory) -> Path:
    return train_tiny(tiny_backbone, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def exported(artifact: Path, valid_file: Path, tmp_path_factory):
    """(model dir, export report) of an fp32 + int8 export."""
    from irp.export import export_onnx

    model_dir = copy_artifact(artifact, tmp_path_factory.mktemp("exported") / "model")
    return model_dir, export_onnx(model_dir, int8=True, data=valid_file)


def _probs(model_dir: Path, runtime: str, records: list[dict]) -> np.ndarray:
    from irp.predict import IRPClassifier

    return IRPClassifier.load(model_dir, runtime=runtime).predict_proba(records).astype(np.float64)


def test_export_writes_both_models_and_its_report(exported) -> None:
    model_dir, report = exported
    onnx_dir = model_dir / "onnx"
    assert {p.name for p in onnx_dir.iterdir()} == {"model.onnx", "model.int8.onnx", "export.json"}
    assert report.passed and report.installed and report.int8_scheme in ("per-channel", "vector-wise", "blockwise")
    info = json.loads((onnx_dir / "export.json").read_text())
    assert info["passed"] and info["weights_sha256"] and info["parity"]["int8"]["n"] == 120
    assert not list(model_dir.glob(".onnx-*"))  # no temporary folder left behind


def test_parity_fp32_and_int8_against_torch(exported, valid_file: Path) -> None:
    """Measured here through the public API, independently of the export's own check."""
    model_dir, report = exported
    records = load_records(valid_file)
    labels = np.array([r["label"] for r in records], dtype=float)
    torch_p = _probs(model_dir, "torch", records)
    fp32 = _probs(model_dir, "onnx-fp32", records)
    int8 = _probs(model_dir, "onnx-int8", records)
    from irp.calibration import amplification

    scale = amplification(json.loads((model_dir / "config.json").read_text()))  # calibrated: up to 1/T sharper
    assert np.abs(fp32 - torch_p).max() <= 1e-4 * scale
    assert np.abs(int8 - torch_p).max() <= 0.02 * scale
    assert abs(average_precision(labels, int8) - average_precision(labels, torch_p)) <= 0.005
    assert report.parity["fp32"].max_abs_diff_raw <= 1e-4 and report.parity["int8"].max_abs_diff_raw <= 0.02
    assert report.parity["fp32"].max_abs_diff <= 1e-4 * scale and report.parity["int8"].max_abs_diff <= 0.02 * scale
    # The model is not trivial: parity on a constant predictor would prove nothing.
    assert torch_p.std() > 0.05 and average_precision(labels, torch_p) > 0.7


def test_parity_covers_the_calibrated_output(exported) -> None:
    model_dir, report = exported
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["calibration"]["method"] == "temperature"
    for p in report.parity.values():
        assert p.calibration == "temperature" and p.threshold == meta["threshold"]["value"]
        assert 0 < p.max_abs_diff_raw <= p.tolerance
        t = meta["calibration"]["temperature"]
        assert p.calibrated_tolerance == pytest.approx(p.tolerance * max(1.0, 1.0 / t))
        assert max(p.max_abs_diff, p.max_abs_diff_single) <= p.calibrated_tolerance


def test_threshold_refit_keeps_the_onnx_export_valid(exported, valid_file: Path, tmp_path: Path) -> None:
    """`irp threshold` round trip: same raw scores, new calibration and threshold, the artifact still loads (ONNX
    included: the weights are untouched) and parity is re-checked on the new calibrated scale."""
    from irp.onnx_runtime import load_onnx
    from irp.predict import IRPClassifier
    from irp.rethreshold import rethreshold

    model_dir = tmp_path / "model"
    shutil.copytree(exported[0], model_dir)
    records = load_records(valid_file)
    before = IRPClassifier.load(model_dir, runtime="onnx-fp32")
    old_meta = json.loads((model_dir / "config.json").read_text())
    result = rethreshold(model_dir, valid_file, target_precision=0.6, confidence=0.5)
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["threshold"]["value"] == result.point.choice.threshold != old_meta["threshold"]["value"]
    assert meta["calibration"]["temperature"] != old_meta["calibration"]["temperature"]  # fitted on another file
    info = json.loads((model_dir / "onnx" / "export.json").read_text())
    assert info["rechecked"] and info["passed"] and info["parity_data"] == str(valid_file)
    for p in info["parity"].values():
        assert p["threshold"] == meta["threshold"]["value"] and p["passed"] and p["n"] == len(records)
    load_onnx(model_dir, "onnx-int8")  # not refused as stale
    after = IRPClassifier.load(model_dir, runtime="onnx-fp32")
    np.testing.assert_array_equal(after.decision_function(records), before.decision_function(records))
    torch_p, fp32 = _probs(model_dir, "torch", records), _probs(model_dir, "onnx-fp32", records)
    scale = max(1.0, 1.0 / meta["calibration"]["temperature"])  # T < 1 sharpens differences by up to 1 / T
    assert np.abs(fp32 - torch_p).max() <= 1e-4 * scale
    assert np.abs(_probs(model_dir, "onnx-int8", records) - torch_p).max() <= 0.02 * scale
    threshold = meta["threshold"]["value"]
    assert ((fp32 >= threshold) == (torch_p >= threshold)).mean() >= 0.99
    assert after.threshold_ == threshold and after.promise["confidence"] == 0.5
    # same weights, new answers: the version names the refitted operating point
    assert after.version.startswith(before.version + "-op") and after.version != before.version


def test_failed_parity_recheck_rewrites_nothing(exported, valid_file: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from irp import export
    from irp.rethreshold import rethreshold

    model_dir = tmp_path / "model"
    shutil.copytree(exported[0], model_dir)
    monkeypatch.setattr(export, "FP32_TOLERANCE", 0.0)
    monkeypatch.setattr(export, "SINGLE_RECORD_CHECKS", 2)
    names = ("config.json", "metrics.json", "MODEL_CARD.md", "onnx/export.json")
    before = {name: (model_dir / name).read_bytes() for name in names}
    with pytest.raises(export.ExportError, match="nothing rewritten"):
        rethreshold(model_dir, valid_file, target_precision=0.6, confidence=0.5)
    assert {name: (model_dir / name).read_bytes() for name in names} == before


def test_int8_failing_the_recheck_is_recorded_not_fatal(exported, valid_file: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 is an optional speed-up: when it no longer passes parity on the new file, the operating point is still
    written, export.json marks int8 failed (so `--runtime auto` skips it) and the result says so."""
    from irp import export
    from irp.rethreshold import rethreshold
    from irp.serve.runtime_choice import pick_fastest

    model_dir = tmp_path / "model"
    shutil.copytree(exported[0], model_dir)
    old_threshold = json.loads((model_dir / "config.json").read_text())["threshold"]["value"]
    monkeypatch.setattr(export, "INT8_TOLERANCE", 0.0)
    dry = rethreshold(model_dir, valid_file, target_precision=0.6, confidence=0.5, dry_run=True)
    assert not dry.written and len(dry.notes) == 1 and "int8 no longer passes" in dry.notes[0]
    assert json.loads((model_dir / "config.json").read_text())["threshold"]["value"] == old_threshold
    result = rethreshold(model_dir, valid_file, target_precision=0.6, confidence=0.5)
    assert result.written and result.notes == dry.notes
    info = json.loads((model_dir / "onnx" / "export.json").read_text())
    assert info["parity"]["fp32"]["passed"] and not info["parity"]["int8"]["passed"] and not info["passed"]
    assert json.loads((model_dir / "config.json").read_text())["threshold"]["value"] == result.point.choice.threshold
    timings = {"onnx-int8": 1.0, "onnx-fp32": 2.0, "torch": 3.0}  # int8 would win on speed
    choice = pick_fastest(model_dir, measure=lambda name, predict: [timings[name]]).meta_["runtime_choice"]
    assert choice["chosen"] == "onnx-fp32" and "parity failed" in choice["candidates"]["onnx-int8"]["excluded"]
    # a second refit on the same file: int8 "still fails", and the fp32 reference still decides
    again = rethreshold(model_dir, valid_file, target_precision=0.6, confidence=0.5, dry_run=True)
    assert "int8 still fails" in again.notes[0]


def test_single_records_and_edge_shapes_match_torch(exported) -> None:
    model_dir, _ = exported
    records = [
        {"utterance": "show me"},  # no products at all
        {"utterance": "red " * 300, "intent": "browse", "products": [{"title": "dress " * 50, "color": ["a"] * 20}]},
        {"utterance": "batteries", "products": [{"title": "AA batteries", "brand": None, "price": 3}] * 7},
        make_records(1, 3)[0],
    ]
    from irp.schema import validate_record

    records = [validate_record(r) for r in records]
    torch_p = _probs(model_dir, "torch", records)
    for i, record in enumerate(records):  # one at a time: batch 1, no padding
        assert abs(_probs(model_dir, "onnx-fp32", [record])[0] - torch_p[i]) <= 1e-4
    assert np.abs(_probs(model_dir, "onnx-fp32", records) - torch_p).max() <= 1e-4  # padded together


def test_vector_wise_int8_export_passes_parity(artifact: Path, valid_file: Path, tmp_path: Path) -> None:
    """The fused Attention becomes an int8 Q/K/V GEMM + MultiHeadAttention; every linear layer runs in int8."""
    import onnx

    from irp.export import export_onnx

    model_dir = copy_artifact(artifact, tmp_path / "model")
    report = export_onnx(model_dir, int8=True, data=valid_file, int8_scheme="vector-wise")
    assert report.passed and report.int8_scheme == "vector-wise", report.parity
    assert any(note.startswith("vector-wise: ") for note in report.notes)
    ops = [node.op_type for node in onnx.load(str(model_dir / "onnx" / "model.int8.onnx")).graph.node]
    assert "Attention" not in ops and "MultiHeadAttention" in ops and "DynamicQuantizeMatMul" in ops
    records = load_records(valid_file)
    int8 = _probs(model_dir, "onnx-int8", records)
    assert np.abs(int8 - _probs(model_dir, "torch", records)).max() <= 0.02
    # Alone vs in padded batches: the same up to the quantization grid (the u8 range spans the batch's rows).
    alone = [_probs(model_dir, "onnx-int8", [r])[0] for r in records[:8]]
    np.testing.assert_allclose(alone, int8[:8], atol=1e-3)


def test_concurrent_batch_scoring_matches_one_run_at_a_time(exported, valid_file: Path) -> None:
    from irp.onnx_runtime import load_onnx
    from irp.predict import IRPClassifier

    model_dir, _ = exported
    records = load_records(valid_file)
    one_at_a_time = IRPClassifier(*load_onnx(model_dir, "onnx-int8", threads=1, concurrency=1))
    concurrent = IRPClassifier(*load_onnx(model_dir, "onnx-int8", threads=1, concurrency=3))
    expected = one_at_a_time.predict_proba(records, batch_size=8)  # 15 batches: several windows of 12
    np.testing.assert_array_equal(concurrent.predict_proba(records, batch_size=8), expected)
    assert concurrent.model_.concurrency == 3 and IRPClassifier.load(model_dir, runtime="onnx").model_.threads == 1


def test_runtime_resolution(exported, artifact: Path) -> None:
    from irp.onnx_runtime import RuntimeUnavailable, resolve_runtime

    model_dir, _ = exported
    assert resolve_runtime(model_dir, "auto") == "onnx-int8"
    assert resolve_runtime(model_dir, "onnx") == "onnx-int8"
    assert resolve_runtime(model_dir, "onnx-fp32") == "onnx-fp32"
    assert resolve_runtime(artifact, "auto") == "torch"  # never exported
    with pytest.raises(RuntimeUnavailable, match="irp export-onnx"):
        resolve_runtime(artifact, "onnx")
    with pytest.raises(ValueError, match="unknown runtime"):
        resolve_runtime(model_dir, "tensorrt")
    from irp.predict import IRPClassifier

    clf = IRPClassifier.load(model_dir, runtime="onnx")
    assert clf.meta_["runtime"] == "onnx-int8" and clf.threshold_ == pytest.approx(
        json.loads((model_dir / "config.json").read_text())["threshold"]["value"]
    )


def test_stale_export_is_refused(exported, tmp_path: Path) -> None:
    from irp.onnx_runtime import RuntimeUnavailable, load_onnx

    model_dir = tmp_path / "model"
    shutil.copytree(exported[0], model_dir, ignore=shutil.ignore_patterns("checkpoints"))
    with open(model_dir / "model.safetensors", "ab") as handle:  # as if retrained in place
        handle.write(b" ")
    with pytest.raises(RuntimeUnavailable, match="re-run `irp export-onnx"):
        load_onnx(model_dir, "onnx")


def test_failed_parity_installs_nothing_unless_forced(artifact: Path, valid_file: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from irp import export

    model_dir = copy_artifact(artifact, tmp_path / "model")
    monkeypatch.setattr(export, "FP32_TOLERANCE", 0.0)  # no export can be exactly equal everywhere
    monkeypatch.setattr(export, "SINGLE_RECORD_CHECKS", 4)
    with pytest.raises(export.ExportError, match="fp32: max"):
        export.export_onnx(model_dir, data=valid_file, max_records=40)
    assert not (model_dir / "onnx").exists() and not list(model_dir.glob(".onnx-*"))
    report = export.export_onnx(model_dir, data=valid_file, max_records=40, force=True)
    assert report.installed and not report.passed
    assert (model_dir / "onnx" / "model.onnx").is_file() and not (model_dir / "onnx" / "model.int8.onnx").exists()


@pytest.mark.slow
def test_cli_export_then_predict_with_onnx(artifact: Path, valid_file: Path, tmp_path: Path) -> None:
    model_dir = copy_artifact(artifact, tmp_path / "model")
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    irp = [sys.executable, "-m", "irp.cli"]
    done = subprocess.run(irp + ["export-onnx", "--model", str(model_dir), "--int8", "--data", str(valid_file)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "fp32: max |Δp|" in done.stdout and "passed" in done.stdout
    out = {}
    for runtime in ("torch", "onnx"):
        out[runtime] = tmp_path / f"{runtime}.jsonl"
        done = subprocess.run(irp + ["predict", "--model", str(model_dir), "--data", str(valid_file), "--out",
                                     str(out[runtime]), "--runtime", runtime], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
    torch_p = np.array([r["probability"] for r in load_records(out["torch"])])
    onnx_p = np.array([r["probability"] for r in load_records(out["onnx"])])
    from irp.calibration import amplification

    assert np.abs(torch_p - onnx_p).max() <= 0.02 * amplification(json.loads((model_dir / "config.json").read_text()))
    bad = subprocess.run(irp + ["export-onnx", "--model", str(tmp_path / "nope")], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "not an irp model directory" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("summarizer", ["none", "max", "mmr"])
def test_other_summarizers_export_with_parity(tiny_backbone: str, valid_file: Path, tmp_path: Path,
                                              summarizer: str) -> None:
    from irp.export import export_onnx

    model_dir = train_tiny(tiny_backbone, tmp_path / "model", summarizer=summarizer)
    report = export_onnx(model_dir, int8=True, data=valid_file)
    assert report.passed, report.parity
    records = load_records(valid_file)
    assert np.abs(_probs(model_dir, "onnx-fp32", records) - _probs(model_dir, "torch", records)).max() <= 1e-4
