"""Training losses on logits [B] and 0/1 labels [B]; p = sigmoid(logits).

- bce:       mean binary cross-entropy.
- precision: 1 - sum(p*y) / (sum(p) + eps), a differentiable (soft) precision over the batch.
- combined:  alpha * bce + beta * precision (the paper's loss).
- fbeta:     1 - soft F_beta with beta = 0.5 (precision weighted twice as much as recall).

Distillation (`irp distill`) adds a soft-label term against the teachers' averaged probabilities at temperature T:
`distillation_loss`. Records without a label (NaN: transfer data) get weight 0 in the label loss; every weight is
a tensor op, so a step still never reads a value back to the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-7


def soft_precision_loss(
    logits: torch.Tensor, labels: torch.Tensor, eps: float = EPS, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - Σ pᵢyᵢ / (Σ pᵢ + ε), over the records of weight 1 when `weight` [B] (0/1) is given.

    >>> round(soft_precision_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])).item(), 4)  # p = .5, .5
    0.5
    """
    p = torch.sigmoid(logits) if weight is None else torch.sigmoid(logits) * weight
    return 1.0 - (p * labels).sum() / (p.sum() + eps)


def soft_fbeta_loss(
    logits: torch.Tensor, labels: torch.Tensor, beta: float = 0.5, eps: float = EPS, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - soft F_beta, with soft TP = Σpy, FP = Σp(1-y), FN = Σ(1-p)y (over the records of weight 1).

    >>> round(soft_fbeta_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])).item(), 4)  # P=.5, R=.5
    0.5
    """
    p = torch.sigmoid(logits)
    if weight is not None:  # a record of weight 0 counts in none of TP, FP, FN
        p, labels = p * weight, labels * weight
    tp = (p * labels).sum()
    fp = (p * (1 - labels)).sum()
    fn = ((1 - p) * labels).sum()
    b2 = beta * beta
    return 1.0 - (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp + eps)


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over the records of weight 1 (all when `weight` is None; 0 when no record has weight).

    >>> x, y = torch.tensor([2.0, -1.0, 5.0]), torch.tensor([1.0, 0.0, 0.0])
    >>> bool(torch.isclose(weighted_bce(x, y, torch.tensor([1.0, 1.0, 0.0])), weighted_bce(x[:2], y[:2])))
    True
    """
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, labels)
    total = F.binary_cross_entropy_with_logits(logits, labels, weight=weight, reduction="sum")
    return total / weight.sum().clamp(min=1.0)


def irp_loss(
    logits: torch.Tensor, labels: torch.Tensor, kind: str, alpha: float = 1.0, beta: float = 0.5,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch on the `--loss` flag; `weight` [B] 0/1 leaves records out (1 = all count).

    >>> x, y = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])
    >>> bool(torch.isclose(irp_loss(x, y, "combined", 1.0, 0.5),
    ...                    irp_loss(x, y, "bce") + 0.5 * irp_loss(x, y, "precision")))
    True
    """
    if kind == "bce":
        return weighted_bce(logits, labels, weight)
    if kind == "precision":
        return soft_precision_loss(logits, labels, weight=weight)
    if kind == "combined":
        return alpha * weighted_bce(logits, labels, weight) + beta * soft_precision_loss(logits, labels, weight=weight)
    if kind == "fbeta":
        return soft_fbeta_loss(logits, labels, weight=weight)
    raise ValueError(f"unknown loss {kind!r}")


def soft_label_loss(logits: torch.Tensor, soft_targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean BCE(sigmoid(z / T), q) against soft targets q [B] in [0, 1] (Hinton et al. 2015: the T² keeps the
    gradient's scale independent of T). Its minimum is the targets' entropy, reached at sigmoid(z / T) = q.

    >>> z = torch.tensor([0.0, 2.0], requires_grad=True)
    >>> soft_label_loss(z, torch.sigmoid(z.detach() / 2.0), 2.0).backward()
    >>> z.grad.abs().max().item() < 1e-6  # at the teacher's probabilities the gradient vanishes
    True
    """
    return temperature * temperature * F.binary_cross_entropy_with_logits(logits / temperature, soft_targets)


def distillation_loss(
    logits: torch.Tensor, labels: torch.Tensor, soft_targets: torch.Tensor, kind: str, alpha: float, beta: float,
    distill_alpha: float, temperature: float,
) -> torch.Tensor:
    """distill_alpha · (the `kind` loss on the labelled records) + (1 − distill_alpha) · soft_label_loss.

    `labels` [B] is NaN for records without a label (transfer data): they are masked out of the label loss by
    weight (no boolean indexing, so no host sync) and still learn from the teachers.

    >>> x, q = torch.tensor([2.0, -1.0]), torch.tensor([0.9, 0.2])
    >>> y = torch.tensor([1.0, float("nan")])
    >>> mixed = distillation_loss(x, y, q, "bce", 1.0, 0.5, 0.5, 2.0)
    >>> bool(torch.isclose(mixed, 0.5 * irp_loss(x[:1], y[:1], "bce") + 0.5 * soft_label_loss(x, q, 2.0)))
    True
    """
    labelled = ~torch.isnan(labels)
    weight = labelled.to(logits.dtype)
    hard = irp_loss(logits, torch.nan_to_num(labels, nan=0.0), kind, alpha, beta, weight=weight)
    return distill_alpha * hard + (1.0 - distill_alpha) * soft_label_loss(logits, soft_targets, temperature)
