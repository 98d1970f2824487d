"""`irp serve --runtime auto`: the fastest runtime that passed parity, with injected timings (no real timing here).
One tiny artifact exported to fp32 and int8 ONNX; copies of it are tampered with per test."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from irp.serve import Engine, ServeSettings, create_app, load_classifier
from irp.serve.runtime_choice import pick_fastest, runtime_choice, time_interleaved, time_single_requests
from test_export import copy_artifact, train_tiny

LOOPBACK = ("127.0.0.1", 50124)


@pytest.fixture(scope="module")
def exported(tiny_backbone: str, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    from irp.export import export_onnx

    model_dir = train_tiny(tiny_backbone, tmp_path_factory.mktemp("auto") / "model")
    report = export_onnx(model_dir, int8=True, data=None, max_records=40)
    assert report.passed
    return model_dir


def with_onnx(src: Path, dst: Path) -> Path:
    """A copy of an exported artifact, ONNX files included (copy_artifact leaves them out)."""
    import shutil

    copy_artifact(src, dst)
    shutil.copytree(src / "onnx", dst / "onnx")
    return dst


def timings(p50: dict[str, float]):
    """A `measure` that reports fixed latencies per runtime (and records which runtimes were timed)."""
    timed: list[str] = []

    def measure(name: str, predict) -> list[float]:
        predict([{"utterance": "red dress"}])  # the candidate really answers
        timed.append(name)
        return [p50[name] - 1.0, p50[name], p50[name] + 5.0]

    return measure, timed


@pytest.mark.parametrize("int8_ms, fp32_ms, expected", [(13.3, 11.5, "onnx-fp32"), (6.9, 11.5, "onnx-int8")])
def test_auto_takes_the_lower_p50(exported: Path, int8_ms: float, fp32_ms: float, expected: str) -> None:
    """The CI machine's case (int8 slower than fp32 without VNNI) and the VNNI case (int8 faster)."""
    measure, timed = timings({"onnx-int8": int8_ms, "onnx-fp32": fp32_ms, "torch": 25.8})
    clf = pick_fastest(exported, measure=measure)
    choice = clf.meta_["runtime_choice"]
    assert sorted(timed) == ["onnx-fp32", "onnx-int8", "torch"]
    assert choice["chosen"] == expected == clf.meta_.get("runtime")
    assert choice["p50_ms"] == {"onnx-int8": int8_ms, "onnx-fp32": fp32_ms, "torch": 25.8}
    for name in ("onnx-int8", "onnx-fp32"):
        assert choice["candidates"][name]["parity"]["passed"]


def test_a_faster_runtime_that_fails_parity_is_not_chosen(exported: Path, tmp_path: Path) -> None:
    model_dir = with_onnx(exported, tmp_path / "m")
    info_path = model_dir / "onnx" / "export.json"
    info = json.loads(info_path.read_text())
    info["parity"]["int8"]["passed"] = False  # installed with --force
    info_path.write_text(json.dumps(info))
    measure, timed = timings({"onnx-int8": 1.0, "onnx-fp32": 11.5, "torch": 25.8})
    choice = pick_fastest(model_dir, measure=measure).meta_["runtime_choice"]
    assert choice["chosen"] == "onnx-fp32" and "onnx-int8" not in timed
    assert "parity failed" in choice["candidates"]["onnx-int8"]["excluded"]


def test_a_stale_or_missing_export_leaves_torch(exported: Path, tmp_path: Path) -> None:
    stale = with_onnx(exported, tmp_path / "stale")
    meta = stale / "onnx" / "export.json"
    meta.write_text(json.dumps(dict(json.loads(meta.read_text()), weights_sha256="0" * 64)))
    measure, timed = timings({"onnx-int8": 1.0, "onnx-fp32": 1.0, "torch": 25.8})
    choice = pick_fastest(stale, measure=measure).meta_["runtime_choice"]
    assert choice["chosen"] == "torch" and timed == ["torch"]
    assert "other weights" in choice["candidates"]["onnx-fp32"]["excluded"]
    plain = copy_artifact(exported, tmp_path / "plain")
    assert pick_fastest(plain, measure=timings({"torch": 3.0})[0]).meta_["runtime_choice"]["candidates"][
        "onnx-int8"] == {"excluded": "not exported"}


def test_default_measure_times_single_records_on_the_clock(exported: Path) -> None:
    ticks = iter(range(10_000))  # a fake clock: every reading 1 s after the last -> 1000 ms per request
    clf = pick_fastest(exported, rounds=4, clock=lambda: float(next(ticks)))
    choice = clf.meta_["runtime_choice"]
    assert all(choice["candidates"][n]["timings_ms"] == [1000.0] * 4 for n in ("onnx-int8", "onnx-fp32", "torch"))
    assert choice["chosen"] == "onnx-fp32"  # a three-way tie goes to the exact ONNX runtime
    calls: list[int] = []
    assert time_single_requests(lambda batch: calls.append(len(batch)), [{}, {}], rounds=3,
                                clock=iter([0.0, 0.5, 1.0, 1.25, 2.0, 2.125]).__next__) == [500.0, 250.0, 125.0]
    assert calls == [1, 1, 1, 1]  # one untimed call, then one record per timed call


def test_interleaved_timing_rotates_the_order_and_skips_the_warm_up() -> None:
    seen: list[tuple[str, int]] = []
    records = [{"i": i} for i in range(5)]
    predicts = {name: (lambda batch, name=name: seen.append((name, batch[0]["i"]))) for name in "abc"}
    blocks: list[int] = []
    times = time_interleaved(predicts, records, block=2, warmup=1, clock=iter(range(100)).__next__,
                             on_block=blocks.append)
    assert blocks == [2, 2, 1] and {name: len(ms) for name, ms in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(ms == 1000.0 for t in times.values() for ms in t)  # one tick per call on the fake clock
    assert sorted(seen) == sorted((name, i) for name in "abc" for i in range(5))  # every record to every predictor
    firsts = [seen[k][0] for k in (0, 6, 12)]  # who opens each block
    assert firsts == ["b", "c", "a"]
    with pytest.raises(ValueError, match="block"):
        time_interleaved(predicts, records, block=0)


def test_get_model_shows_the_choice_and_a_reload_chooses_again(exported: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import irp.serve.runtime_choice as rc

    fake = {"onnx-int8": 13.3, "onnx-fp32": 11.5, "torch": 25.8}
    # The default measure, with fake timings: each candidate's predict is its Engine's, which names its runtime.
    monkeypatch.setattr(rc, "time_single_requests",
                        lambda predict, records, rounds, clock: [fake[predict.__self__.runtime]])
    with caplog.at_level(logging.WARNING, logger="irp.serve.runtime"):
        engine = Engine(load_classifier(exported, "auto"), exported)
    engine.warm_up()
    assert engine.runtime == "onnx-fp32"
    assert any("chose onnx-fp32" in r.getMessage() for r in caplog.records)
    client = TestClient(create_app(engine, ServeSettings(runtime="auto")), client=LOOPBACK)
    shown = client.get("/v1/model").json()
    assert shown["runtime"] == "onnx-fp32" and shown["runtime_choice"]["chosen"] == "onnx-fp32"
    assert shown["runtime_choice"]["p50_ms"] == fake and "timings_ms" not in shown["runtime_choice"]["candidates"]["torch"]

    fake["onnx-int8"] = 5.0  # the next load measures int8 faster: the reload chooses again
    again = with_onnx(exported, tmp_path / "again")
    reloaded = client.post("/v1/admin/reload", json={"model": str(again)})
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["runtime"] == "onnx-int8" and reloaded.json()["parity"]["passed"]
    assert client.get("/v1/model").json()["runtime_choice"]["chosen"] == "onnx-int8"

    forced = Engine(load_classifier(exported, "onnx-int8"), exported)
    assert forced.runtime == "onnx-int8" and runtime_choice(forced.classifier.meta_) is None
