"""Weight soups (`irp soup`): one model whose weights are the average of several runs of one recipe (Wortsman et
al. 2022, "Model soups"). Runs fine-tuned from the same pretrained encoder with different seeds stay in one basin of
the loss, so the average of their weights is a working model, usually as good as their mean or better, at one
model's serving cost: the luck of a seed (about ±0.01 AP between student seeds on SIMMC) averages out.

Recipes: `greedy` (the one Wortsman et al. recommend) orders the ingredients by their own validation AP and adds
each only if the soup's validation AP does not drop; `uniform` averages them all. Then calibration and the certified
threshold are fitted on the same validation file, as at the end of `irp train`. Ingredients must share the
architecture and the input pipeline (backbone, fields, summarizer, context, MMR, token budgets); seed, schedule,
learning rate, loss and teachers may differ.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from irp.artifact import read_meta, write_artifact
from irp.config import IRPConfig
from irp.metrics import average_precision

Recipe = Literal["greedy", "uniform"]
RECIPES: tuple[str, ...] = ("greedy", "uniform")
# What every ingredient must share with the first: what the network is and what it reads.
PIPELINE_KEYS = ("backbone", "fields", "summarizer", "context_turns", "mmr_m", "mmr_lambda", "budget")


class SoupError(ValueError):
    """Ingredients that cannot be averaged (not artifacts, other architectures or inputs); the message names one."""


@dataclass(frozen=True)
class SoupStep:
    """One greedy step: the ingredient tried, the validation AP of the soup with it, whether it stayed."""

    name: str
    valid_ap: float
    kept: bool


@dataclass(frozen=True)
class SoupResult:
    out_dir: Path
    ingredient_ap: dict[str, float]  # each ingredient alone on the validation file
    steps: list[SoupStep]
    kept: list[str]
    metrics: dict[str, Any]
    threshold: float


def check_ingredients(folders: list[Path], out_dir: Path) -> list[dict[str, Any]]:
    """The ingredients' config.json, after checking there are >= 2 distinct artifacts with one architecture and one
    input pipeline, none of them `out_dir`. Raises SoupError naming the folder; reads no weights."""
    if len(folders) < 2:
        raise SoupError(f"--model: a soup needs at least two ingredients, got {len(folders)}")
    resolved = [Path(f).resolve() for f in folders]
    if len(set(resolved)) < len(resolved):
        raise SoupError("--model: an ingredient is named twice (each run counts once)")
    if Path(out_dir).resolve() in resolved:
        raise SoupError(f"--out {out_dir} is one of the ingredients: write the soup to a new folder")
    metas = []
    for folder in folders:
        try:
            meta = read_meta(folder)
        except (FileNotFoundError, ValueError) as e:
            raise SoupError(f"--model {folder}: {e}") from None
        if not (Path(folder) / "model.safetensors").is_file():
            raise SoupError(f"--model {folder}: not an irp model directory (no model.safetensors)")
        metas.append(meta)
    first, first_encoder = metas[0], _encoder_config(folders[0])
    for folder, meta in zip(folders[1:], metas[1:]):
        for key in PIPELINE_KEYS:
            if meta["config"].get(key) != first["config"].get(key):
                raise SoupError(
                    f"--model {folder} has {key} {meta['config'].get(key)!r} but --model {folders[0]} has "
                    f"{first['config'].get(key)!r}: ingredients must share the architecture and the inputs"
                )
        if meta["pad_id"] != first["pad_id"] or _encoder_config(folder) != first_encoder:
            raise SoupError(f"--model {folder}: its encoder differs from --model {folders[0]}'s")
    return metas


def _encoder_config(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "encoder_config.json").read_text())


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean (in float32, then each tensor's own dtype) of state dicts with the same names/shapes.

    >>> a, b = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}
    >>> average_weights([a, b])["w"].tolist()
    [2.0, 4.0]
    """
    first = states[0]
    for state in states[1:]:
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise SoupError("the ingredients' weights differ in names or shapes: they are not one architecture")
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(first[k].dtype) for k in first}


def best_first(alone_ap: Sequence[float]) -> list[int]:
    """Ingredient indices by their own AP, best first, stable on ties (the order both recipes report and greedy
    tries).

    >>> best_first([0.5, 0.7, 0.6, 0.7])
    [1, 3, 2, 0]
    """
    return sorted(range(len(alone_ap)), key=lambda i: -alone_ap[i])


def greedy_members(
    alone_ap: Sequence[float], soup_ap: Callable[[list[int]], float],
    on_trial: Callable[[int, float, bool], None] = lambda *_: None,
) -> list[int]:
    """The greedy recipe: ingredients ordered by their own AP, best first (stable on ties), each added iff the soup's
    AP does not drop. `soup_ap(members)` scores the soup of those ingredients; `on_trial(i, ap, kept)` hears each
    trial. Returns the kept ingredients in the order they were added.

    >>> greedy_members([0.5, 0.7, 0.6], lambda m: {(1, 2): 0.72, (1, 2, 0): 0.71}[tuple(m)])
    [1, 2]
    """
    order = best_first(alone_ap)
    kept, best = order[:1], alone_ap[order[0]]
    for i in order[1:]:
        trial = soup_ap(kept + [i])
        on_trial(i, trial, trial >= best)
        if trial >= best:
            kept, best = kept + [i], trial
    return kept


def make_soup(
    folders: list[Path],
    valid: Path,
    out_dir: Path,
    recipe: Recipe = "greedy",
    *,
    device: str = "cpu",
    label_field: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> SoupResult:
    """Average the ingredients' weights (`recipe`), fit calibration and the certified threshold on `valid`, write
    the artifact to `out_dir`. Raises SoupError (bad ingredients), FileNotFoundError / ValueError (bad validation
    file or labels); nothing is written before the soup is chosen."""
    from safetensors.torch import load_file

    from irp.artifact import check_validation_labels, load_model
    from irp.train import prepare_features, resolve_device, score_logits

    if recipe not in RECIPES:
        raise SoupError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    metas = check_ingredients(folders, out_dir)
    if not Path(valid).is_file():
        raise FileNotFoundError(f"validation file {valid} does not exist")
    started = time.perf_counter()
    label_field = label_field or metas[0]["training"].get("label_field", "label")
    torch_device = resolve_device(device)
    model, featurizer, _ = load_model(folders[0], device=str(torch_device))
    features, valid_info = prepare_features(valid, featurizer, label_field, cache_dir=None)
    labels = check_validation_labels(features.labels)

    def score(state: dict[str, torch.Tensor]) -> tuple[np.ndarray, float]:  # raw logits (n,), their AP
        model.load_state_dict(state, strict=True)
        logits = score_logits(model, featurizer, features, torch_device)
        return logits, average_precision(labels, logits)

    names = [str(f) for f in folders]
    states = [load_file(str(Path(f) / "model.safetensors"), device=str(torch_device)) for f in folders]
    alone = [score(state) for state in states]  # (logits, AP) of each ingredient on its own
    for name, (_, ap) in zip(names, alone):
        log(f"ingredient {name}: validation AP {ap:.4f}")
    alone_ap = [a for _, a in alone]
    order = best_first(alone_ap)
    if recipe == "uniform":
        kept = order
        logits, ap = score(average_weights(states))
        steps = [SoupStep("+".join(names), ap, True)]
    else:
        trials: dict[tuple[int, ...], tuple[np.ndarray, float]] = {tuple(order[:1]): alone[order[0]]}
        steps = [SoupStep(names[order[0]], alone_ap[order[0]], True)]

        def soup_ap(members: list[int]) -> float:
            trials[tuple(members)] = score(average_weights([states[k] for k in members]))
            return trials[tuple(members)][1]

        def heard(i: int, trial_ap: float, kept: bool) -> None:
            steps.append(SoupStep(names[i], trial_ap, kept))
            log(f"soup + {names[i]}: validation AP {trial_ap:.4f} ({'kept' if kept else 'dropped'})")

        kept = greedy_members(alone_ap, soup_ap, heard)
        logits, ap = trials[tuple(kept)]
        model.load_state_dict(average_weights([states[k] for k in kept]), strict=True)
    log(f"soup of {len(kept)}: validation AP {ap:.4f}")

    lead = metas[order[0]]  # the best ingredient lends the soup its settings
    config = IRPConfig.from_dict(lead["config"])
    soup_s = time.perf_counter() - started
    training = dict(lead["training"]) | {
        "wall_s": round(sum(m["training"].get("wall_s") or 0.0 for m in metas) + soup_s, 2),  # every run counts
        "steps": sum(int(m["training"].get("steps") or 0) for m in metas),
        "soup_s": round(soup_s, 2),
        "label_field": label_field,
    }
    ingredient_ap = dict(zip(names, alone_ap))
    kept_names = [names[k] for k in kept]
    extra: dict[str, Any] = {"soup": _soup_section(folders, metas, recipe, ingredient_ap, steps, kept_names, ap)}
    teacher_sets = {tuple(t["weights_sha256"] for t in (m.get("distillation") or {}).get("teachers", []))
                    for m in metas}
    if len(teacher_sets) == 1 and lead.get("distillation"):  # students of one teacher set: its card section holds
        extra["distillation"] = lead["distillation"]
    data = {"train": (lead.get("data") or {}).get("train"), "valid": valid_info}
    metrics, threshold = write_artifact(
        Path(out_dir), model, featurizer, config, labels, logits, training, {k: v for k, v in data.items() if v}, extra
    )
    return SoupResult(Path(out_dir), ingredient_ap, steps, kept_names, metrics, threshold)


def _soup_section(folders: list[Path], metas: list[dict[str, Any]], recipe: str, alone: dict[str, float],
                  steps: list[SoupStep], kept: list[str], valid_ap: float) -> dict[str, Any]:
    """config.json "soup": every ingredient (version, weights, seed, its validation AP), the recipe, what was kept."""
    from irp.distill import Teacher  # the same provenance record as a teacher's

    return {
        "recipe": recipe,
        "valid_ap": valid_ap,
        "kept": kept,
        "ingredients": [Teacher(Path(f), m).describe() | {"soup_valid_ap": alone[str(f)]}
                        for f, m in zip(folders, metas)],
        "steps": [{"name": s.name, "valid_ap": s.valid_ap, "kept": s.kept} for s in steps],
    }
