"""`irp threshold`: re-fit calibration and the certified operating point of a trained artifact, without retraining.

A team changes its target precision or confidence, or validates on fresher logs: the validation file is scored once
with the artifact's network (raw logits), calibration is re-fitted on them, the threshold is chosen on the new
calibrated scale (`irp.artifact.fit_operating_point`), and config.json, metrics.json and MODEL_CARD.md are
replaced atomically. The weights and the ONNX graphs are untouched (calibration runs after the graph); when the
artifact was exported, ONNX parity is re-measured with the new calibration and threshold and onnx/export.json
rewritten. The fp32 graph must still match torch (else nothing is written); an int8 graph that does not is recorded
as failed (`irp serve --runtime auto` then picks among the others, a reload onto it is refused) and said in `notes`:
int8 is an optional speed-up, not a reason to refuse the new operating point. Everything is computed before
anything is written, so a failure leaves the artifact as it was.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from irp.artifact import (
    OperatingPoint,
    fit_operating_point,
    promise,
    read_meta,
    threshold_section,
    validation_metrics,
    write_meta_files,
)
from irp.calibration import calibrate_logits
from irp.config import IRPConfig
from irp.threshold import precision_lower_bound


@dataclass(frozen=True)
class PointOnFile:
    """A threshold's counts on the validation file: precision/recall (NaN when undefined), the certified lower bound
    at `confidence` (NaN when confidence is 0), records predicted positive."""

    precision: float
    recall: float
    predicted_positive: int
    lower_bound: float


def point_on_file(labels: npt.ArrayLike, probs: npt.ArrayLike, threshold: float, confidence: float) -> PointOnFile:
    """Measure a fixed threshold on labelled probabilities (n,). For a threshold chosen on *other* data the bound is
    an exact certificate on this file's distribution.

    >>> p = point_on_file([1, 1, 0, 1], [0.9, 0.8, 0.7, 0.1], 0.75, 0.9)
    >>> p.precision, p.recall, p.predicted_positive, round(p.lower_bound, 3)
    (1.0, 0.6666666666666666, 2, 0.316)
    """
    y = np.asarray(labels, dtype=np.float64)
    pred = np.asarray(probs, dtype=np.float64) >= threshold
    tp, predicted, positives = int(y[pred].sum()), int(pred.sum()), int(y.sum())
    precision = tp / predicted if predicted else math.nan
    recall = tp / positives if positives else math.nan
    bound = precision_lower_bound(tp, predicted, confidence) if confidence > 0 and predicted else math.nan
    return PointOnFile(precision, recall, predicted, bound)


@dataclass(frozen=True)
class RethresholdResult:
    """What `rethreshold` computed (and wrote unless `dry_run`)."""

    model_dir: Path
    before: dict[str, Any]  # the old promise (as recorded in config.json)
    before_on_file: PointOnFile  # the old threshold, old calibration, measured on this validation file
    after: dict[str, Any]  # the new promise
    point: OperatingPoint
    meta: dict[str, Any]  # the new config.json
    metrics: dict[str, Any]  # the new metrics.json
    export_info: dict[str, Any] | None  # the new onnx/export.json (None: never exported)
    written: bool
    notes: tuple[str, ...] = ()  # what changed beyond the operating point (an int8 graph that failed parity)


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def comparison_rows(result: RethresholdResult, valid_name: str) -> list[tuple[str, str, str]]:
    """(row, before, after) for the CLI's before/after table of the operating point."""
    b, a, bf = result.before, result.after, result.before_on_file
    choice = result.point.choice
    return [
        ("threshold (calibrated probability)", _fmt(b["threshold"], ".6g"), _fmt(a["threshold"], ".6g")),
        ("calibration", b["calibration"], a["calibration"]),
        ("rule", _fmt(b["rule"]), a["rule"]),
        ("target precision", _fmt(b["target_precision"], "g"), _fmt(a["target_precision"], "g")),
        ("confidence", _fmt(b["confidence"], "g"), _fmt(a["confidence"], "g")),
        ("certified lower bound (as recorded)", _fmt(b["lower_bound"]), _fmt(a["lower_bound"])),
        (f"lower bound on {valid_name} at confidence {a['confidence']:g}", _fmt(bf.lower_bound),
         _fmt(a["lower_bound"])),
        (f"precision on {valid_name}", _fmt(bf.precision), _fmt(choice.precision)),
        (f"recall on {valid_name}", _fmt(bf.recall), _fmt(choice.recall)),
        (f"predicted positive on {valid_name}", _fmt(bf.predicted_positive, ","), _fmt(choice.predicted_positive, ",")),
        ("validation records / positives", f"{_fmt(b['n_valid'], ',')} / {_fmt(b['valid_positives'], ',')}",
         f"{choice.n:,} / {choice.positives:,}"),
    ]


def rethreshold(
    model_dir: str | Path,
    valid: str | Path,
    target_precision: float | None = None,
    confidence: float | None = None,
    calibration: str | None = None,
    *,
    device: str = "cpu",
    label_field: str | None = None,
    dry_run: bool = False,
) -> RethresholdResult:
    """Re-fit calibration and threshold of the artifact in `model_dir` on the labelled file `valid`; None keeps the
    artifact's current target precision / confidence / calibration. Raises FileNotFoundError or ValueError (bad
    artifact, settings or data; nothing written) and irp.export.ExportError (the fp32 ONNX graph fails parity with
    the new calibration; nothing written)."""
    from irp.artifact import load_model
    from irp.export import ExportError, Parity, recheck_parity, write_export_info
    from irp.onnx_runtime import read_export_info
    from irp.train import prepare_features, resolve_device, score_logits

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)  # FileNotFoundError / ValueError: not an artifact
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir} is not an irp model directory (no model.safetensors)")
    old = IRPConfig.from_dict(meta["config"])
    config = old.replace(  # validates the new settings (ValueError with a clear message)
        target_precision=old.target_precision if target_precision is None else float(target_precision),
        confidence=old.confidence if confidence is None else float(confidence),
        calibration=old.calibration if calibration is None else calibration,
    )
    if not Path(valid).is_file():
        raise FileNotFoundError(f"validation file {valid} does not exist")
    label_field = label_field or meta["training"].get("label_field", "label")

    torch_device = resolve_device(device)
    model, featurizer, _ = load_model(model_dir, device=str(torch_device))
    features, valid_info = prepare_features(valid, featurizer, label_field, cache_dir=None)
    if np.isnan(features.labels).any():
        raise ValueError(f"{int(np.isnan(features.labels).sum())} records of {valid} have no `{label_field}`")
    logits = score_logits(model, featurizer, features, torch_device)  # (n,) raw, the one scoring pass

    point = fit_operating_point(features.labels, logits, config.target_precision, config.confidence,
                                config.calibration)
    metrics = validation_metrics(features.labels, logits, point)
    before = promise(meta)
    before_on_file = point_on_file(
        features.labels, calibrate_logits(meta, logits), float(meta["threshold"]["value"]), config.confidence
    )

    new_meta = copy.deepcopy(meta)
    new_meta["config"] = config.to_dict()
    new_meta["calibration"] = point.calibration
    new_meta["threshold"] = threshold_section(point.choice)
    new_meta["data"] = dict(meta.get("data") or {}, calibration_valid=valid_info)
    new_meta["refit"] = {
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "valid": valid_info,
        "previous": {"threshold": meta["threshold"], "calibration": meta.get("calibration") or {"method": "none"}},
    }
    # Re-measure ONNX parity with the new calibration and threshold before writing anything.
    old_info = read_export_info(model_dir)
    old_parity = old_info.get("parity", {})
    export_info = recheck_parity(model_dir, old_info, new_meta, data=valid)
    notes: list[str] = []
    for name, entry in (export_info or {}).get("parity", {}).items():
        if entry["passed"]:
            continue
        problems = "; ".join(Parity(**entry).problems())
        if name == "fp32":
            raise ExportError(f"ONNX parity fails with the new calibration, nothing rewritten: {problems}")
        was = "still fails" if old_parity.get(name, {}).get("passed") is False else "no longer passes"
        notes.append(f"onnx {name} {was} parity on {Path(valid).name} ({problems}): recorded as failed, so "
                     f"`irp serve --runtime auto` will not pick it (`irp export-onnx --int8` re-quantizes)")
    if not dry_run:
        write_meta_files(model_dir, new_meta, metrics)
        if export_info is not None:
            write_export_info(model_dir, export_info)
    return RethresholdResult(
        model_dir, before, before_on_file, promise(new_meta), point, new_meta, metrics, export_info, not dry_run,
        tuple(notes),
    )
