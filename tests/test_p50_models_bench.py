"""bench/p50_models.py: models timed side by side on the runtime named, ratios to the first (tiny models, torch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import load_bench

bench = load_bench("p50_models")


def test_times_each_model_and_writes_ratios(tiny_seeds: list[Path], small_log: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "p50.json"
    specs = [f"{folder}:torch" for folder in tiny_seeds]
    result = bench.main([*specs, "--data", str(small_log["valid"]), "--out", str(out), "--blocks", "2", "--block", "3"])
    assert json.loads(out.read_text()) == result
    names = [f"{folder.name}:torch" for folder in tiny_seeds]
    assert list(result["p50_ms"]) == names and all(v > 0 for v in result["p50_ms"].values())
    assert result["ratio_to_first"][names[0]] == 1.0 and result["calls_per_model"] == 6
    assert result["ratio_to_first"][names[1]] == pytest.approx(result["p50_ms"][names[1]] / result["p50_ms"][names[0]],
                                                               abs=1e-3)


@pytest.mark.parametrize("spec", ["runs/t13", ":onnx-fp32", "runs/t13:"])
def test_a_model_without_its_runtime_is_refused(spec: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="DIR:RUNTIME"):
        bench.parse_model(spec)


@pytest.mark.parametrize("extra", [["--block", "0"], ["--blocks", "0"], ["runs/t13:torch"]])
def test_bad_arguments_exit_2(extra: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["runs/t13:torch", *extra, "--data", "x.jsonl", "--out", str(tmp_path / "p50.json")])
    assert exit_info.value.code == 2 and not (tmp_path / "p50.json").exists()
