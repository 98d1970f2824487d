"""One config object that fully describes a training run; it is saved with the model.

>>> cfg = IRPConfig(summarizer="mmr", fields=("utterance", "title"))
>>> IRPConfig.from_dict(cfg.to_dict()) == cfg
True
>>> cfg.product_fields
('title',)
>>> IRPConfig.from_dict({"target_precision": 1.0}).confidence  # an old artifact: the point rule
0.0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SUMMARIZERS = ("none", "mean", "max", "mmr", "concat")
LOSSES = ("bce", "precision", "combined", "fbeta")
CALIBRATIONS = ("temperature", "isotonic", "none")  # irp.calibration.METHODS (kept here: no numpy import)
TEXT_FIELDS = ("utterance", "intent", "context")
PRODUCT_FIELDS = ("title", "brand", "color", "style", "category", "material", "pattern")
DEFAULT_FIELDS = ("utterance", "intent", "title", "brand", "color", "style", "category")


@dataclass(frozen=True)
class TokenBudget:
    """Per-field token budgets; anything longer is truncated and *counted* (see Featurizer.truncations)."""

    intent: int = 4
    utterance: int = 48
    context: int = 32  # all context turns together, most recent kept
    value: int = 12  # one attribute value of one product (mean/max summarizers)
    product_text: int = 96  # all appended product text together (mmr/concat summarizers)


@dataclass(frozen=True)
class IRPConfig:
    # model inputs
    backbone: str = "minilm-l6"
    fields: tuple[str, ...] = DEFAULT_FIELDS
    summarizer: str = "mean"
    context_turns: int = 0
    mmr_m: int = 2  # products kept by MMR
    mmr_lambda: float = 0.7  # relevance vs. redundancy trade-off of MMR
    budget: TokenBudget = field(default_factory=TokenBudget)
    dropout: float = 0.1
    # loss
    loss: str = "combined"
    alpha: float = 1.0
    beta: float = 0.5
    # distillation (irp distill): distill_alpha * (the loss above, on the labels) + (1 - distill_alpha) * soft-label
    # BCE against the teachers' averaged probabilities at `temperature`; 1.0 = labels only (irp train)
    distill_alpha: float = 1.0
    temperature: float = 1.0
    # optimisation
    epochs: int = 3
    max_steps: int = 0  # 0 = no cap; otherwise stop after this many optimiser steps
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights (irp.ema)
    # layer-wise LR decay (irp.train.make_optimizer): encoder layer i of L trains at lr * layer_decay^(L - i), its
    # embeddings at lr * layer_decay^(L + 1), the rest (pooler, fusion, head) at lr; 1 = off
    layer_decay: float = 1.0
    patience: int = 2  # evaluations without AP improvement before early stopping
    eval_every: int = 0  # steps between validations; 0 = once per epoch
    checkpoint_every: int = 200  # steps between resumable checkpoints
    # operating point: precision >= target_precision certified at `confidence` (0 = the point rule), on
    # probabilities calibrated on validation by `calibration` (irp.calibration)
    target_precision: float = 0.8
    confidence: float = 0.9
    calibration: str = "temperature"
    # runtime
    device: str = "auto"
    seed: int = 13
    compile: bool = False
    num_workers: int = -1  # batch-collating worker processes; -1 = 4 on CUDA, none on CPU

    def __post_init__(self) -> None:
        if self.summarizer not in SUMMARIZERS:
            raise ValueError(f"summarizer must be one of {SUMMARIZERS}, got {self.summarizer!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        unknown = [f for f in self.fields if f not in TEXT_FIELDS + PRODUCT_FIELDS]
        if unknown:
            raise ValueError(f"unknown fields {unknown}; choose from {TEXT_FIELDS + PRODUCT_FIELDS}")
        if "utterance" not in self.fields:
            raise ValueError("fields must include 'utterance'")
        if not 0.0 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0, 1) (0 = the uncertified point rule), got {self.confidence}")
        if not 0.0 < self.target_precision <= 1.0:
            raise ValueError(f"target precision must be in (0, 1], got {self.target_precision}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"--alpha (distill_alpha: the label loss's share) must be in [0, 1], got {self.distill_alpha}")
        if not self.temperature > 0.0:
            raise ValueError(f"--temperature (of the soft targets) must be > 0, got {self.temperature}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema (the weight average's decay) must be in [0, 1) (0 = off), got {self.ema_decay}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"--layer-decay must be in (0, 1] (1 = off), got {self.layer_decay}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")

    @property
    def product_fields(self) -> tuple[str, ...]:
        """Product attributes used as inputs, in the order of `fields`."""
        return tuple(f for f in self.fields if f in PRODUCT_FIELDS)

    @property
    def uses_slots(self) -> bool:
        """Whether products enter as pooled attribute vectors (mean/max) rather than text."""
        return self.summarizer in ("mean", "max") and bool(self.product_fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IRPConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        # Artifacts written before certification and calibration used the point rule on the raw sigmoid.
        kwargs.setdefault("confidence", 0.0)
        kwargs.setdefault("calibration", "none")
        if "fields" in kwargs:
            kwargs["fields"] = tuple(kwargs["fields"])
        if isinstance(kwargs.get("budget"), dict):
            kwargs["budget"] = TokenBudget(**kwargs["budget"])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> IRPConfig:
        return dataclasses.replace(self, **changes)


def parse_fields(spec: str) -> tuple[str, ...]:
    """Parse the `--fields` flag.

    >>> parse_fields("utterance, intent,title")
    ('utterance', 'intent', 'title')
    """
    return tuple(part.strip() for part in spec.split(",") if part.strip())


def default_lr(batch_size: int, base: float = 5e-5, base_batch: int = 32) -> float:
    """Square-root scaling: large batches keep quality with a proportionally larger step (capped).

    >>> default_lr(32), round(default_lr(512), 6)
    (5e-05, 0.0002)
    """
    return min(base * (batch_size / base_batch) ** 0.5, 1e-3)


