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


@pytest.mark.parametrize("kind", ["bce", "precision", "combined", "fbeta"])
def test_records_without_label_are_masked_out_of_the_label_loss(kind: str) -> None:
    """Weight 0 (a transfer record, label NaN) = the record is absent, for every label loss."""
    from irp.losses import distillation_loss

    logits = torch.tensor([1.5, -0.3, 0.2, 2.0, -4.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, float("nan")])
    weight = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    expected = irp_loss(logits[:4], labels[:4], kind, 0.7, 0.5)
    assert irp_loss(logits, torch.nan_to_num(labels), kind, 0.7, 0.5, weight=weight).item() == pytest.approx(expected.item())
    soft = torch.tensor([0.9, 0.1, 0.3, 0.8, 0.6])
    only_labels = distillation_loss(logits, labels, soft, kind, 0.7, 0.5, distill_alpha=1.0, temperature=2.0)
    assert only_labels.item() == pytest.approx(expected.item())


def test_distillation_loss_mixes_labels_and_the_teachers_at_temperature() -> None:
    from irp.losses import distillation_loss, soft_label_loss

    logits = torch.tensor([1.5, -0.3, 0.2, -4.0], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 0.0, float("nan")])
    soft = torch.tensor([0.9, 0.1, 0.3, 0.6])
    t = 2.0
    manual = 4.0 * F.binary_cross_entropy_with_logits(logits / t, soft)  # T² · BCE(sigmoid(z/T), q)
    assert soft_label_loss(logits, soft, t).item() == pytest.approx(manual.item())
    mixed = distillation_loss(logits, labels, soft, "bce", 1.0, 0.5, distill_alpha=0.25, temperature=t)
    hard = F.binary_cross_entropy_with_logits(logits[:3], labels[:3])
    assert mixed.item() == pytest.approx(0.25 * hard.item() + 0.75 * manual.item(), rel=1e-6)
    # Teachers only: the unlabelled record is pulled toward its soft target (sigmoid(-4/2) = 0.12 < 0.6: up).
    distillation_loss(logits, labels, soft, "bce", 1.0, 0.5, distill_alpha=0.0, temperature=t).backward()
    assert logits.grad[3] < 0 and torch.isfinite(logits.grad).all()
    # A batch of transfer records only: the label part is 0, not NaN.
    none = torch.full((2,), float("nan"))
    assert torch.isfinite(distillation_loss(torch.zeros(2), none, torch.full((2,), 0.5), "combined", 1.0, 0.5, 0.5, 1.0))
