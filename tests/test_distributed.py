"""DDP across 2 CPU processes (gloo), launched by torchrun exactly as users launch it, against one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _train(launcher: list[str], backbone: str, log: dict[str, Path], out: Path, batch_size: int) -> dict:
    args = ["train", "--train", str(log["train"]), "--valid", str(log["valid"]), "--out", str(out),
            "--backbone", backbone, "--epochs", "3", "--batch-size", str(batch_size), "--lr", "3e-3",
            "--device", "cpu", "--seed", "5"]
    proc = subprocess.run(launcher + args, capture_output=True, text=True, env=os.environ | OFFLINE, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "metrics.json").read_text()) | {"meta": json.loads((out / "config.json").read_text())}


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun missing")
def test_ddp_two_gloo_processes_match_one_process(tiny_backbone: str, small_log: dict[str, Path], tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    ddp = _train([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "irp.cli"], tiny_backbone, small_log,
                 tmp_path / "ddp", batch_size=16)
    single = _train([sys.executable, "-m", "irp.cli"], tiny_backbone, small_log, tmp_path / "single", batch_size=32)
    assert ddp["meta"]["training"]["world_size"] == 2
    # Same global batch (2 x 16 vs 32), same number of optimiser steps; batches differ in composition only.
    assert ddp["meta"]["training"]["steps"] == pytest.approx(single["meta"]["training"]["steps"], abs=3)
    assert abs(ddp["ap"] - single["ap"]) < 0.05
    assert not (tmp_path / "ddp" / "checkpoints" / "last.tmp").exists()
