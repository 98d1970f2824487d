"""An exponential moving average of a model's weights (Polyak averaging), `irp train --ema DECAY`.

Fine-tuning a small encoder on a few thousand labels is noisy from step to step and from seed to seed (Dodge et
al. 2020); validating and keeping the average of the recent weights instead of the last ones smooths that out at
the cost of one fused lerp per optimiser step. The decay ramps up with the step count, min(decay, (1 + t) / (10 +
t)) as in TF's ExponentialMovingAverage with num_updates, so the pretrained starting point and the randomly
initialised head are forgotten within the first few hundred steps instead of weighing decay^steps at the end.

>>> torch.manual_seed(0) and None
>>> net = torch.nn.Linear(2, 1)
>>> avg = WeightAverage(net, decay=0.5)
>>> with torch.no_grad():
...     _ = net.weight.add_(1.0)
>>> avg.update(step=100)  # decay min(0.5, 101/110) = 0.5: halfway to the new weights
>>> before = net.weight.detach().clone()
>>> with avg.applied():
...     torch.allclose(net.weight, before - 0.5)
True
>>> torch.equal(net.weight, before)  # the training weights are back
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """Shadow copies of every trainable parameter of `model`, float32 on the parameter's device. The parameters are
    held by reference (training and load_state_dict update them in place), so each step costs no lookup."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema decay must be in (0, 1) (0 turns the average off), got {decay}")
        self.decay = decay
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().float().clone() for p in self.params]

    def decay_at(self, step: int) -> float:
        """The decay of update `step`: it ramps up, (1 + t) / (10 + t), to `decay`.

        >>> avg = WeightAverage(torch.nn.Linear(1, 1), decay=0.99)
        >>> [round(avg.decay_at(t), 3) for t in (0, 90, 10**6)]
        [0.1, 0.91, 0.99]
        """
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """shadow <- decay_t * shadow + (1 - decay_t) * weights; one fused op, no host sync."""
        weights = [p.detach().float() for p in self.params]
        torch._foreach_lerp_(self.shadow, weights, 1.0 - self.decay_at(step))

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block (to validate or save them), its own after."""
        params = self.params
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)

    def tensors(self) -> dict[str, torch.Tensor]:
        """For the resumable checkpoint: {"ema::<parameter name>": shadow}."""
        return {f"ema::{n}": s.detach().cpu().contiguous() for n, s in zip(self.names, self.shadow)}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.shadow = [tensors[f"ema::{n}"].to(s.device) for n, s in zip(self.names, self.shadow)]
