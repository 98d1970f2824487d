"""bench/soup_recipe.py end to end on two tiny runs: halves, the greedy choice on A, every recipe measured on B."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_bench

bench = load_bench("soup_recipe")


def test_cross_fitted_recipes_on_tiny_runs(tiny_seeds: list[Path], small_log: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "recipes.json"
    argv = [*map(str, tiny_seeds), "--valid", str(small_log["valid"]), "--splits", "3", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 200 and len(result["rows"]) == 3 and result["summary"]["uniform_minus_greedy"]["splits"] == 3
    for row in result["rows"]:
        on_b = row["ap_on_b"]
        assert all(0.0 <= ap <= 1.0 for ap in on_b.values())
        if len(row["greedy_members"]) == 2:  # both runs kept: the greedy soup is the uniform one
            assert on_b["greedy"] == on_b["uniform"]
        else:  # one run kept: the best run on A, alone
            assert on_b["greedy"] == on_b["best_single"]
    assert result["soups_scored"] <= 3  # two runs alone and their soup, each scored once whatever the splits


def test_bad_arguments_exit_2(tiny_seeds: list[Path], small_log: dict[str, Path], tmp_path: Path) -> None:
    for argv in ([str(tiny_seeds[0])], [*map(str, tiny_seeds), "--splits", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            bench.main([*argv, "--valid", str(small_log["valid"]), "--out", str(tmp_path / "x.json")])
        assert exit_info.value.code == 2 and not (tmp_path / "x.json").exists()
