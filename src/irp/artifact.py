"""The model artifact (DESIGN section 5): a directory that rebuilds the model offline, on any device.

    config.json        run config, calibration, threshold and its promise, versions, data fingerprints, training info
    model.safetensors  all weights (encoder + summary embeddings + head); never pickled
    encoder_config.json  the encoder architecture (weights come from model.safetensors)
    tokenizer/         the tokenizer files
    metrics.json       validation metrics at the chosen threshold, with 95 % bootstrap intervals
    MODEL_CARD.md      data, settings, metrics, intended use and limits
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import irp
from irp.calibration import brier_score, calibrate_logits, expected_calibration_error, fit_calibration, sigmoid
from irp.config import IRPConfig
from irp.features import Featurizer
from irp.fileio import atomic_write_text, write_json_atomic
from irp.metrics import evaluation_report, nan_to_none
from irp.model.encoder import load_tokenizer
from irp.model.irp import IRPModel
from irp.threshold import ThresholdChoice, choose_threshold, guarantee_sentence

FORMAT_VERSION = 1
# The keys of the threshold section that state the promise (GET /v1/model, `IRPClassifier.promise`).
PROMISE_KEYS = (
    "target_precision", "confidence", "lower_bound", "value", "rule", "n_valid", "valid_positives",
    "predicted_positive", "guarantee",
)


def library_versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        "irp": irp.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }


@dataclass(frozen=True)
class OperatingPoint:
    """Calibration and threshold fitted on validation: the map, the calibrated probabilities (n,) float32 the
    threshold was chosen on (exactly what `IRPClassifier.predict_proba` returns for those records), the choice."""

    calibration: dict[str, Any]
    probs: npt.NDArray[np.float32]
    choice: ThresholdChoice


def check_validation_labels(labels: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Validation labels (n,) as float64; a clear ValueError when they cannot fit calibration and a threshold.

    >>> check_validation_labels([0, 1, 1]).tolist()
    [0.0, 1.0, 1.0]
    >>> check_validation_labels([1, 1])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: the validation labels hold a single class (2 positives of 2 records): ...
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if y.size == 0:
        raise ValueError("the validation data holds no records: calibration and the operating point need both classes")
    if np.isnan(y).any():
        raise ValueError(f"{int(np.isnan(y).sum())} validation records have no label")
    positives = int(y.sum())
    if positives in (0, y.size):
        raise ValueError(
            f"the validation labels hold a single class ({positives} positives of {y.size} records): "
            "calibration and the operating point need both"
        )
    return y


def fit_operating_point(
    labels: npt.ArrayLike, logits: npt.ArrayLike, target_precision: float, confidence: float, calibration: str
) -> OperatingPoint:
    """Fit the calibration map on validation logits (n,), then choose the threshold on the calibrated scale."""
    y = check_validation_labels(labels)
    cal = fit_calibration(calibration, logits, y)  # type: ignore[arg-type]  # checked by IRPConfig / the CLI
    probs = calibrate_logits(cal, logits)
    return OperatingPoint(cal, probs, choose_threshold(y, probs, target_precision, confidence))


def threshold_section(choice: ThresholdChoice) -> dict[str, Any]:
    """config.json "threshold": the operating point, how it was chosen, and the promise it makes."""
    return {
        "value": choice.threshold,
        "rule": choice.rule,
        "target_precision": choice.target_precision,
        "reached": choice.reached,
        "valid_precision": choice.precision,
        "valid_recall": choice.recall,
        "message": choice.message,
        "confidence": choice.confidence,
        "lower_bound": None if math.isnan(choice.lower_bound) else choice.lower_bound,
        "n_valid": choice.n,
        "valid_positives": choice.positives,
        "predicted_positive": choice.predicted_positive,
        "guarantee": guarantee_sentence(choice),
    }


def promise(meta: dict[str, Any]) -> dict[str, Any]:
    """What the artifact's operating point promises (target, confidence, certified bound, validation counts, rule,
    the guarantee sentence) plus the calibration method; artifacts from before certification say so.

    >>> old = {"threshold": {"value": 0.5, "rule": "max_recall_at_precision", "target_precision": 0.8}}
    >>> promise(old)["guarantee"][:13], promise(old)["confidence"], promise(old)["calibration"]
    ('No guarantee:', 0.0, 'none')
    """
    thr = meta.get("threshold") or {}
    out = {key: thr.get(key) for key in PROMISE_KEYS}
    out["threshold"] = out.pop("value")
    if out["confidence"] is None:
        out["confidence"] = 0.0
    if not out["guarantee"]:
        out["guarantee"] = (
            "No guarantee: this artifact predates certified thresholds (point rule on validation); "
            "re-fit it with `irp threshold`."
        )
    out["calibration"] = (meta.get("calibration") or {}).get("method", "none")
    return out


def validation_metrics(labels: npt.ArrayLike, logits: npt.ArrayLike, point: OperatingPoint) -> dict[str, Any]:
    """metrics.json: validation metrics at the chosen threshold (95 % bootstrap intervals) and calibration quality
    before and after (measured on the data the map was fitted on, so the "after" is optimistic)."""
    y = np.asarray(labels, dtype=np.float64)
    metrics = nan_to_none(evaluation_report(y, point.probs, point.choice.threshold))
    raw = sigmoid(np.asarray(logits, dtype=np.float64))
    metrics |= {
        "split": "valid",
        "ece": expected_calibration_error(y, point.probs),
        "brier": brier_score(y, point.probs),
        "ece_uncalibrated": expected_calibration_error(y, raw),
        "brier_uncalibrated": brier_score(y, raw),
        "calibration": point.calibration["method"],
        "lower_bound": None if math.isnan(point.choice.lower_bound) else point.choice.lower_bound,
        "confidence": point.choice.confidence,
    }
    return metrics


def write_artifact(
    out_dir: Path,
    model: IRPModel,
    featurizer: Featurizer,
    config: IRPConfig,
    valid_labels: np.ndarray,
    valid_logits: np.ndarray,
    training: dict[str, Any],
    data: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], float]:
    """Fit calibration and the operating point on validation logits (n,) and write every artifact file;
    returns (metrics, threshold). `extra`: more config.json sections (e.g. "distillation": the teachers)."""
    point = fit_operating_point(
        valid_labels, valid_logits, config.target_precision, config.confidence, config.calibration
    )
    metrics = validation_metrics(valid_labels, valid_logits, point)
    model.save(out_dir)
    featurizer.tokenizer.save_pretrained(out_dir / "tokenizer")
    meta = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "pad_id": featurizer.pad_id,
        "calibration": point.calibration,
        "threshold": threshold_section(point.choice),
        "versions": library_versions(),
        "data": data,
        "training": training,
        **(extra or {}),
    }
    write_meta_files(out_dir, meta, metrics)
    return metrics, point.choice.threshold


def write_meta_files(out_dir: Path, meta: dict[str, Any], metrics: dict[str, Any]) -> None:
    """config.json, metrics.json and MODEL_CARD.md, each replaced atomically (a reader sees old or new)."""
    write_json_atomic(out_dir / "config.json", meta)
    write_json_atomic(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "MODEL_CARD.md", model_card(meta, metrics))


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """An artifact's config.json; FileNotFoundError / ValueError with a clear message for anything else."""
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir} is not an irp model directory (no such folder)")
    if not path.exists():
        raise FileNotFoundError(f"{model_dir} is not an irp model directory (no config.json)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not an irp artifact config (not a JSON object)")
    missing = [key for key in ("config", "pad_id", "threshold", "training") if key not in meta]
    if missing:
        raise ValueError(f"{model_dir} is not an irp model artifact (config.json lacks {', '.join(missing)})")
    return meta


def load_model(model_dir: str | Path, device: str = "cpu") -> tuple[IRPModel, Featurizer, dict[str, Any]]:
    """Rebuild model and featurizer from an artifact; offline, safetensors only, CPU works for GPU-trained models."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    config = IRPConfig.from_dict(meta["config"])
    featurizer = Featurizer(load_tokenizer(str(model_dir / "tokenizer")), config)
    model = IRPModel.load(model_dir, config, meta["pad_id"], device=device)
    return model, featurizer, meta


def _fmt(metrics: dict[str, Any], key: str) -> str:
    value, ci = metrics.get(key), (metrics.get("ci") or {}).get(key)
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")


def _num(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _calibration_text(cal: dict[str, Any]) -> str:
    """One line on the probability scale the threshold lives on."""
    method = cal.get("method", "none")
    if method == "temperature":
        return f"temperature scaling, T = {cal['temperature']:.4f} (probability = sigmoid(logit / T))"
    if method == "isotonic":
        return f"isotonic regression on sigmoid(logit), {len(cal.get('x', []))} knots"
    return "none (probability = sigmoid(logit))"


def _promise_block(meta: dict[str, Any]) -> str:
    """The promise, stated where the model is documented: threshold, rule, target, confidence, bound, counts."""
    p, thr = promise(meta), meta["threshold"]
    certified = p["rule"] == "certified_precision"
    if p["lower_bound"] is None:
        bound = "none (point rule: nothing certified)"
    else:
        bound = f"{p['lower_bound']:.4f}" + ("" if certified else " (at the fallback threshold: not a certificate)")
    detail = f"\n{thr['message']}\n" if thr["reached"] else ""  # a fallback's message is the card's warning
    counts = (
        f"{p['n_valid']:,} records, {p['valid_positives']:,} positives, {p['predicted_positive']:,} predicted positive"
        if p["n_valid"] is not None else "not recorded"
    )
    return f"""| | |
| --- | --- |
| threshold (calibrated probability) | **{p['threshold']:.6g}** |
| rule | `{p['rule']}` |
| target precision | {p['target_precision']:g} |
| confidence | {p['confidence']:g} |
| {"certified lower bound" if certified else "lower confidence bound"} of precision | {bound} |
| validation | {counts} |
| validation precision / recall | {_num(thr.get('valid_precision'))} / {_num(thr.get('valid_recall'))} |
| calibration | {_calibration_text(meta.get('calibration') or {})} |

**The promise.** {p['guarantee']}
{detail}"""


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table: the header, its rule and one line per row."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _recipe_extras(cfg: dict[str, Any]) -> str:
    """The card's note of the optional recipe settings that are on (none for an `irp train` default run).

    >>> _recipe_extras({"ema_decay": 0.999, "layer_decay": 0.9})
    ', weight average (EMA) decay 0.999, layer-wise LR decay 0.9'
    >>> _recipe_extras({"ema_decay": 0.0})
    ''
    """
    extras = []
    if cfg.get("ema_decay"):
        extras.append(f"weight average (EMA) decay {cfg['ema_decay']}")
    if cfg.get("layer_decay", 1.0) < 1.0:
        extras.append(f"layer-wise LR decay {cfg['layer_decay']}")
    return "".join(f", {e}" for e in extras)


def _distillation_block(distillation: dict[str, Any] | None) -> str:
    """The card's section on a distilled model's teachers (empty for a model trained on labels only)."""
    if not distillation:
        return ""
    table = _md_table(
        ["teacher", "version", "backbone", "seed", "validation AP", "trained on (sha256)"],
        [[f"`{t['path']}`", t["version"], f"`{t['backbone']}`", t.get("seed"), _num(t.get("valid_ap")),
          f"{str((t.get('data', {}).get('train') or {}).get('sha256', '?'))[:12]}…"]
         for t in distillation["teachers"]],
    )
    transfer = distillation.get("transfer")
    transfer_line = (f"`{transfer.get('path')}` ({transfer.get('records')} records, sha256 "
                     f"{str(transfer.get('sha256'))[:12]}…; {distillation['n_unlabelled']} without a label)"
                     if transfer else "none")
    return f"""
## Distillation
Trained on α · (the label loss) + (1 − α) · T² · BCE against the teachers' averaged probabilities at temperature T,
with α = {distillation['alpha']:g}, T = {distillation['temperature']:g}; transfer records: {transfer_line}.

{table}
"""


def _soup_block(soup: dict[str, Any] | None) -> str:
    """The card's section on a weight soup's ingredients (empty for a single run)."""
    if not soup:
        return ""
    table = _md_table(
        ["ingredient", "version", "seed", "validation AP alone", "in the soup"],
        [[f"`{i['path']}`", i["version"], i.get("seed"), _num(i.get("soup_valid_ap")),
          "yes" if i["path"] in soup["kept"] else "no"]
         for i in soup["ingredients"]],
    )
    chosen = ("\nThe greedy recipe chose its runs on the validation file, so the soup's validation AP is optimistic: "
              "judge it on records that chose nothing (`bench/soup_recipe.py` cross-fits the choice).\n"
              if soup["recipe"] == "greedy" else "")
    return f"""
## Weight soup
The weights are the average of the weights of {len(soup['kept'])} of these {len(soup['ingredients'])} runs (recipe
`{soup['recipe']}`; validation AP of the soup {_num(soup['valid_ap'])}); the settings above are those of its best
run, the step count and wall time the sum over every run.
{chosen}
{table}
"""


def model_card(meta: dict[str, Any], metrics: dict[str, Any]) -> str:
    cfg, thr, train = meta["config"], meta["threshold"], meta["training"]
    warning = "" if thr["reached"] else f"\n> **Warning:** {thr['message']}\n"
    data_lines = "\n".join(
        f"- {name}: `{info.get('path', '?')}` ({info.get('records', '?')} records, sha256 {str(info.get('sha256', '?'))[:12]}…)"
        for name, info in meta["data"].items()
    ) or "- (records passed in memory)"
    return f"""# Model card: irp image-seeking intent classifier

Predicts whether a spoken product query wants to be *seen* (image-seeking intent), so a voice assistant can
offer to continue on a screen. Method: arXiv 2511.14764 (utterance + intent + summarized top-k product metadata,
fused in one transformer encoder; loss α·BCE + β·soft precision).

## Data
{data_lines}
- label: `{train['label_field']}` (weak proxy: an image-carousel tap; noisy by nature)

## Settings
- backbone `{cfg['backbone']}`, fields `{','.join(cfg['fields'])}`, summarizer `{cfg['summarizer']}`
- loss `{cfg['loss']}` (α={cfg['alpha']}, β={cfg['beta']}), lr {cfg['lr']}, batch {cfg['batch_size']},
  epochs {cfg['epochs']}, max steps {cfg['max_steps'] or 'none'}, seed {cfg['seed']}{_recipe_extras(cfg)}
- trained {train['steps']} steps on {train['device']} (world size {train['world_size']}) in {train['wall_s']} s;
  best validation AP at step {train['best_step']}; truncated fields: {train['truncations'] or 'none'}

{_distillation_block(meta.get("distillation"))}{_soup_block(meta.get("soup"))}
## Operating point and what it promises
{_promise_block(meta)}
{warning}
## Validation metrics (95 % bootstrap intervals)
| metric | value |
| --- | --- |
| precision | {_fmt(metrics, 'precision')} |
| recall | {_fmt(metrics, 'recall')} |
| F0.5 | {_fmt(metrics, 'f05')} |
| AP | {_fmt(metrics, 'ap')} |
| ROC AUC | {_fmt(metrics, 'roc_auc')} |
| n / positives | {metrics['n']} / {metrics['positives']} |
| ECE (15 bins) / Brier, calibrated | {_num(metrics.get('ece'))} / {_num(metrics.get('brier'))} |
| ECE / Brier, raw sigmoid | {_num(metrics.get('ece_uncalibrated'))} / {_num(metrics.get('brier_uncalibrated'))} |

These are validation numbers (the threshold and the calibration were fitted on the same data); measure on a
held-out test file with `irp evaluate` (it reports `target_met`: met, consistent or missed on the test precision's
95 % interval, `ece` and `brier`) before trusting them.

## Intended use and limits
- Intended: rank or gate a proactive "continue on a screen?" offer, at a high-precision operating point.
- Labels are behavioural proxies (taps), not ground truth: missed and accidental taps cap measurable precision.
- Trained on one distribution (see Data); re-check the threshold when traffic, retrieval or the catalogue shift.
- Not for decisions about people; it sees only the query, its intent label and the retrieved products.

Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}
"""
