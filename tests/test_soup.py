"""`irp soup` on the tiny encoder: the artifact holds the mean of its ingredients' weights, greedy keeps only runs
that do not lower validation AP, the artifact names its ingredients, and bad input exits 2 writing nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from irp.cli import app
from irp.soup import SoupError, average_weights, make_soup


@pytest.fixture
def runs(tiny_seeds: list[Path]) -> list[Path]:
    return tiny_seeds  # two seeds of one recipe: the soup's ingredients


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def invoke(args: list[str]):
    return CliRunner().invoke(app, ["soup", *args], env={"COLUMNS": "200"})


def model_args(folders: list[Path]) -> list[str]:
    return [arg for f in folders for arg in ("--model", str(f))]


def test_uniform_soup_holds_the_mean_of_its_ingredients_weights(runs: list[Path], small_log: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    from irp.data.io import load_records
    from irp.predict import IRPClassifier

    out = tmp_path / "soup"
    result = invoke([*model_args(runs), "--valid", str(small_log["valid"]), "--out", str(out), "--recipe", "uniform"])
    assert result.exit_code == 0, result.output
    a, b, s = weights(runs[0]), weights(runs[1]), weights(out)
    assert s.keys() == a.keys()
    for name in a:
        torch.testing.assert_close(s[name], (a[name] + b[name]) / 2)
    assert not torch.equal(a["head.weight"], b["head.weight"])  # two different runs, so the mean is new weights
    meta = json.loads((out / "config.json").read_text())
    soup = meta["soup"]
    assert soup["recipe"] == "uniform" and sorted(soup["kept"]) == [str(r) for r in runs]
    assert [i["seed"] for i in soup["ingredients"]] == [1, 2]
    assert all(len(i["weights_sha256"]) == 64 for i in soup["ingredients"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ap"] == pytest.approx(soup["valid_ap"], abs=1e-6)  # calibration is monotone: AP unchanged
    assert meta["threshold"]["n_valid"] == 200 and meta["data"]["valid"]["records"] == 200
    walls = [json.loads((r / "config.json").read_text())["training"]["wall_s"] for r in runs]
    assert meta["training"]["wall_s"] >= sum(walls)  # the soup's cost counts every run
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Weight soup" in card and "optimistic" not in card  # uniform chose nothing on the validation file
    probs = IRPClassifier.load(out).predict_proba(load_records(small_log["test"]))
    assert probs.shape == (200,) and np.isfinite(probs).all()


def test_greedy_soup_drops_a_run_that_lowers_validation_ap(runs: list[Path], small_log: dict[str, Path],
                                                           tmp_path: Path) -> None:
    # A third "run" whose head points the other way: averaging it in cancels the head, so greedy must drop it.
    flipped = tmp_path / "flipped"
    shutil.copytree(runs[0], flipped, ignore=shutil.ignore_patterns("checkpoints"))
    state = weights(flipped)
    state["head.weight"] = -3 * state["head.weight"]
    save_file(state, str(flipped / "model.safetensors"), metadata={"format": "pt"})

    result = make_soup([*runs, flipped], small_log["valid"], tmp_path / "soup")
    steps = result.steps
    assert steps[0].name == max(result.ingredient_ap, key=result.ingredient_ap.get)  # the best run starts it
    running = steps[0].valid_ap
    for step in steps[1:]:  # each run stays exactly when the soup's validation AP does not drop
        assert step.kept == (step.valid_ap >= running)
        running = max(running, step.valid_ap) if step.kept else running
    assert str(flipped) not in result.kept and str(flipped) == min(result.ingredient_ap, key=result.ingredient_ap.get)
    kept = [weights(Path(k)) for k in result.kept]
    torch.testing.assert_close(weights(tmp_path / "soup")["head.weight"],
                               torch.stack([k["head.weight"] for k in kept]).mean(0))
    soup = json.loads((tmp_path / "soup" / "config.json").read_text())["soup"]
    assert soup["kept"] == result.kept and len(soup["steps"]) == 3
    assert "validation AP is optimistic" in (tmp_path / "soup" / "MODEL_CARD.md").read_text()  # greedy chose on it


def test_weights_of_another_architecture_are_refused() -> None:
    with pytest.raises(SoupError, match="names or shapes"):
        average_weights([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])


def test_bad_input_exits_2_and_writes_nothing(runs: list[Path], small_log: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "soup"
    not_artifact = tmp_path / "not_a_model"
    not_artifact.mkdir()
    other_fields = tmp_path / "other_fields"
    shutil.copytree(runs[1], other_fields, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((other_fields / "config.json").read_text())
    meta["config"]["fields"] = ["utterance", "title"]
    (other_fields / "config.json").write_text(json.dumps(meta))
    valid = str(small_log["valid"])
    cases = [
        (model_args(runs[:1]) + ["--valid", valid, "--out", str(out)], "at least two ingredients"),
        (model_args([runs[0], runs[0]]) + ["--valid", valid, "--out", str(out)], "named twice"),
        (model_args([runs[0], not_artifact]) + ["--valid", valid, "--out", str(out)], "not an irp model directory"),
        (model_args([runs[0], other_fields]) + ["--valid", valid, "--out", str(out)], "share the architecture"),
        (model_args(runs) + ["--valid", valid, "--out", str(runs[0])], "is one of the ingredients"),
        (model_args(runs) + ["--valid", str(tmp_path / "nope.jsonl"), "--out", str(out)], "does not exist"),
        (model_args(runs) + ["--valid", valid, "--out", str(out), "--recipe", "best"], "--recipe"),
    ]
    before = {r: (r / "config.json").read_text() for r in runs}
    for args, expected in cases:
        result = invoke(args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and expected in message, (args, result.output)
    assert not out.exists()
    assert before == {r: (r / "config.json").read_text() for r in runs}


def test_greedy_members_tries_best_first_and_keeps_on_ties() -> None:
    from irp.soup import greedy_members

    aps = {(0, 2): 0.95, (0, 2, 1): 0.94, (0, 2, 3): 0.96}
    heard: list[tuple[int, float, bool]] = []
    # best first: 0 (0.9), 2 (0.7), 1 (0.6), 3 (0.5); 2 raises the AP, 1 lowers it, 3 raises it
    kept = greedy_members([0.9, 0.6, 0.7, 0.5], lambda m: aps[tuple(m)], lambda *t: heard.append(t))
    assert kept == [0, 2, 3] and heard == [(2, 0.95, True), (1, 0.94, False), (3, 0.96, True)]
    # a tie with the current soup's AP keeps the ingredient; a drop of any size does not
    assert greedy_members([0.5, 0.4], lambda m: 0.5) == [0, 1]
    assert greedy_members([0.5, 0.4], lambda m: 0.49) == [0]
