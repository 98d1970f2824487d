"""Training losses on logits [B] and 0/1 labels [B]; p = sigmoid(logits).

- bce:       mean binary cross-entropy.
- precision: 1 - sum(p*y) / (sum(p) + eps), a differentiable (soft) precision over the batch.
- combined:  alpha * bce + beta * precision (the paper's loss).
- fbeta:     1 - soft F_beta with beta = 0.5 (precision weighted twice as much as recall).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-7


def soft_precision_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """1 - Σ pᵢyᵢ / (Σ pᵢ + ε).

    >>> round(soft_precision_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])).item(), 4)  # p = .5, .5
    0.5
    """
    p = torch.sigmoid(logits)
    return 1.0 - (p * labels).sum() / (p.sum() + eps)


def soft_fbeta_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float = 0.5, eps: float = EPS) -> torch.Tensor:
    """1 - soft F_beta, with soft TP = Σpy, FP = Σp(1-y), FN = Σ(1-p)y.

    >>> round(soft_fbeta_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])).item(), 4)  # P=.5, R=.5
    0.5
    """
    p = torch.sigmoid(logits)
    tp = (p * labels).sum()
    fp = (p * (1 - labels)).sum()
    fn = ((1 - p) * labels).sum()
    b2 = beta * beta
    return 1.0 - (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp + eps)


def irp_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str, alpha: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """Dispatch on the `--loss` flag.

    >>> x, y = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])
    >>> bool(torch.isclose(irp_loss(x, y, "combined", 1.0, 0.5),
    ...                    irp_loss(x, y, "bce") + 0.5 * irp_loss(x, y, "precision")))
    True
    """
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, labels)
    if kind == "precision":
        return soft_precision_loss(logits, labels)
    if kind == "combined":
        return alpha * F.binary_cross_entropy_with_logits(logits, labels) + beta * soft_precision_loss(logits, labels)
    if kind == "fbeta":
        return soft_fbeta_loss(logits, labels)
    raise ValueError(f"unknown loss {kind!r}")
