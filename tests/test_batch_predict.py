"""`irp predict` at volume: files, folders and globs in bounded memory, Parquet parts, and Ray Data."""

from __future__ import annotations

import glob
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_records
from irp.data.io import load_records, write_records
from test_offpolicy import ENV, IRP, candidate  # noqa: F401  (the trained tiny candidate fixture)


def irp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(IRP + list(args), capture_output=True, text=True, env=ENV)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("predict_in")
    records = make_records(230, seed=9)
    write_records(folder / "a.parquet", records[:100])
    (folder / "sub").mkdir()
    write_records(folder / "sub" / "b.parquet", records[100:])
    write_records(folder / "all.jsonl", records)
    return folder


def test_folder_and_glob_give_the_single_file_scores_in_parts(candidate: Path, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from irp.batch_predict import input_files, predict_local, scored
    from irp.cli import app
    from irp.predict import IRPClassifier

    clf = IRPClassifier.load(candidate)
    records = load_records(inputs / "all.jsonl")
    reference = scored(records, clf.predict_proba(records), clf.threshold_)
    assert [p.name for p in input_files(inputs)] == ["a.parquet", "all.jsonl", "b.parquet"]  # path order
    for source in (str(inputs / "**" / "*.parquet"), str(inputs / "a.parquet")):
        out = tmp_path / f"parts{len(source)}"
        counts = predict_local(clf, input_files(source), out, clf.threshold_, batch_size=50, part_rows=64)
        parts = sorted(out.glob("part-*.parquet"))
        got = [r for part in parts for r in load_records(part)]
        assert got == reference[: len(got)] and counts["records"] == len(got) in (100, 230)
        assert all(len(load_records(p)) <= 64 for p in parts) and len(parts) == counts["parts"] == -(-len(got) // 64)
    done = irp("predict", "--model", str(candidate), "--data", str(inputs), "--out", str(tmp_path / "cli.jsonl"))
    assert done.returncode == 0, done.stderr
    assert load_records(tmp_path / "cli.jsonl") == reference[:100] + reference + reference[100:]  # the whole folder
    bad = CliRunner().invoke(app, ["predict", "--model", str(candidate), "--data", str(inputs / "nothing*.parquet"),
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--data" in bad.output


def test_unreachable_ray_address_exits_2_quickly(candidate: Path, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("ray", reason="Ray is the optional extra irp[ray]: pip install 'irp[ray]'")
    started = time.monotonic()
    done = irp("predict", "--model", str(candidate), "--data", str(inputs / "a.parquet"), "--out", str(tmp_path / "r"),
               "--engine", "ray", "--ray-address", "127.0.0.1:9")  # the discard port: nothing listens
    assert done.returncode == 2 and "cannot reach a Ray cluster at 127.0.0.1:9" in done.stderr, done.stderr
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_ray_engine_equals_the_local_engine(candidate: Path, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("ray", reason="Ray is the optional extra irp[ray]: pip install 'irp[ray]'")
    source = str(inputs / "**" / "*.parquet")
    local = irp("predict", "--model", str(candidate), "--data", source, "--out", str(tmp_path / "local.parquet"))
    assert local.returncode == 0, local.stderr
    ray = irp("predict", "--model", str(candidate), "--data", source, "--out", str(tmp_path / "ray"), "--engine", "ray",
              "--workers", "2", "--batch-size", "40")
    assert ray.returncode == 0, ray.stderr
    want = load_records(tmp_path / "local.parquet")
    got = [r for part in sorted(glob.glob(str(tmp_path / "ray" / "*.parquet"))) for r in load_records(part)]
    assert len(got) == len(want) == 230
    for a, b in zip(got, want):
        assert abs(a.pop("probability") - b.pop("probability")) <= 1e-6 + 1e-12  # 6 decimals; float32 batch effects
        assert a == b  # same records, same order, same decisions
