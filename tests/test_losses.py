import math

import pytest
import torch
import torch.nn.functional as F

from irp.losses import irp_loss, soft_fbeta_loss, soft_precision_loss


def test_soft_precision_hand_computed() -> None:
    logits = torch.tensor([math.log(3.0), 0.0, -math.log(3.0)])  # p = 0.75, 0.5, 0.25
    labels = torch.tensor([1.0, 0.0, 1.0])
    # 1 - (0.75 + 0.25) / (0.75 + 0.5 + 0.25)
    assert soft_precision_loss(logits, labels).item() == pytest.approx(1 - 1.0 / 1.5, abs=1e-6)


def test_soft_fbeta_hand_computed() -> None:
    logits = torch.tensor([math.log(3.0), 0.0, -math.log(3.0)])
    labels = torch.tensor([1.0, 0.0, 1.0])
    tp, fp, fn = 0.75 + 0.25, 0.5, (1 - 0.75) + (1 - 0.25)
    expected = 1 - 1.25 * tp / (1.25 * tp + 0.25 * fn + fp)
    assert soft_fbeta_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_combined_is_weighted_sum_and_bce_matches_torch() -> None:
    logits, labels = torch.tensor([1.5, -0.3, 0.2, 2.0]), torch.tensor([1.0, 0.0, 0.0, 1.0])
    bce = F.binary_cross_entropy_with_logits(logits, labels)
    assert irp_loss(logits, labels, "bce").item() == pytest.approx(bce.item())
    combined = irp_loss(logits, labels, "combined", alpha=0.3, beta=2.0)
    assert combined.item() == pytest.approx(0.3 * bce.item() + 2.0 * soft_precision_loss(logits, labels).item())
    with pytest.raises(ValueError):
        irp_loss(logits, labels, "hinge")


@pytest.mark.parametrize("kind", ["bce", "precision", "combined", "fbeta"])
def test_gradients_flow_and_point_the_right_way(kind: str) -> None:
    logits = torch.tensor([0.5, 0.5, -0.2, 0.1], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    irp_loss(logits, labels, kind).backward()
    grad = logits.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Descending the loss raises positives' logits and lowers negatives' (precision loss: at least negatives').
    assert (grad[labels == 0] > 0).all()
    if kind != "precision":
        assert (grad[labels == 1] < 0).all()


def test_precision_loss_ignores_missed_positives() -> None:
    """Soft precision only punishes false positives: pushing a negative down lowers it, a positive's p barely."""
    labels = torch.tensor([1.0, 0.0])
    base = soft_precision_loss(torch.tensor([0.0, 0.0]), labels)
    fewer_fp = soft_precision_loss(torch.tensor([0.0, -3.0]), labels)
    assert fewer_fp < base
