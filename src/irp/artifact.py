"""The model artifact (DESIGN section 5): a directory that rebuilds the model offline, on any device.

    config.json        run config, threshold and how it was chosen, versions, data fingerprints, training info
    model.safetensors  all weights (encoder + summary embeddings + head); never pickled
    encoder_config.json  the encoder architecture (weights come from model.safetensors)
    tokenizer/         the tokenizer files
    metrics.json       validation metrics at the chosen threshold, with 95 % bootstrap intervals
    MODEL_CARD.md      data, settings, metrics, intended use and limits
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

import irp
from irp.config import IRPConfig
from irp.features import Featurizer
from irp.fileio import atomic_write_text, write_json_atomic
from irp.metrics import evaluation_report, nan_to_none
from irp.model.encoder import load_tokenizer
from irp.model.irp import IRPModel
from irp.threshold import choose_threshold

FORMAT_VERSION = 1


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """sha256 and size of a data file, so a model says exactly what it was trained on."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


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


def write_artifact(
    out_dir: Path,
    model: IRPModel,
    featurizer: Featurizer,
    config: IRPConfig,
    valid_labels: np.ndarray,
    valid_probs: np.ndarray,
    training: dict[str, Any],
    data: dict[str, Any],
) -> tuple[dict[str, Any], float]:
    """Choose the operating point on validation and write every artifact file; returns (metrics, threshold)."""
    choice = choose_threshold(valid_labels, valid_probs, config.target_precision)
    metrics = nan_to_none(evaluation_report(valid_labels, valid_probs, choice.threshold))
    metrics["split"] = "valid"
    model.save(out_dir)
    featurizer.tokenizer.save_pretrained(out_dir / "tokenizer")
    meta = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "pad_id": featurizer.pad_id,
        "threshold": {
            "value": choice.threshold,
            "rule": choice.rule,
            "target_precision": choice.target_precision,
            "reached": choice.reached,
            "valid_precision": choice.precision,
            "valid_recall": choice.recall,
            "message": choice.message,
        },
        "versions": library_versions(),
        "data": data,
        "training": training,
    }
    write_json_atomic(out_dir / "config.json", meta)
    write_json_atomic(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "MODEL_CARD.md", model_card(meta, metrics))
    return metrics, choice.threshold


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{model_dir} is not an irp model directory (no config.json)")
    return json.loads(path.read_text())


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
  epochs {cfg['epochs']}, max steps {cfg['max_steps'] or 'none'}, seed {cfg['seed']}
- trained {train['steps']} steps on {train['device']} (world size {train['world_size']}) in {train['wall_s']} s;
  best validation AP at step {train['best_step']}; truncated fields: {train['truncations'] or 'none'}

## Operating point
threshold **{thr['value']:.4f}**, rule `{thr['rule']}` (target precision {thr['target_precision']});
{thr['message']}
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

These are validation numbers (the threshold was chosen on the same data); measure on a held-out test file with
`irp evaluate` before trusting them.

## Intended use and limits
- Intended: rank or gate a proactive "continue on a screen?" offer, at a high-precision operating point.
- Labels are behavioural proxies (taps), not ground truth: missed and accidental taps cap measurable precision.
- Trained on one distribution (see Data); re-check the threshold when traffic, retrieval or the catalogue shift.
- Not for decisions about people; it sees only the query, its intent label and the retrieved products.

Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}
"""
