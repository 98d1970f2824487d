"""deploy/prometheus: the rules pass `promtool check rules` and their unit tests (`promtool test rules`: offers
and answers on different replicas, a fleet below the promise that no replica could flag alone, a healthy fleet,
a swap), and the scrape config passes `promtool check config`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run `make system-deps` (apt-get install prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=DEPLOY)


@pytest.mark.parametrize("args", [("check", "rules", "rules.yml"), ("test", "rules", "rules_test.yml"),
                                  ("check", "config", "prometheus.yml")])
def test_promtool(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
