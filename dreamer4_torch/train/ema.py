"""An exponential moving average of the trained parameters (`--ema-decay`).

After optimizer step n (n = 1, 2, ...) every parameter's average moves towards the new value:

    ema <- ema + (1 - beta_n) (p - ema),   beta_n = min(decay, (1 + n) / (10 + n))

The warm-up of beta_n (as TensorFlow's ExponentialMovingAverage with num_updates) keeps the average
from being dominated by the random initialisation in the first few hundred steps. The average
starts from the initial parameters.

With EMA on, a checkpoint's `model.safetensors` holds the averaged weights -- what evaluation,
the sampler, the demo and the converters use -- and `training_state.pt` holds the raw weights the
optimizer continues from on `--resume`. Under FSDP the averages are sharded like the parameters;
`full_state` gathers them (a collective: every rank calls it).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def ema_beta(decay: float, updates: int) -> float:
    """The averaging weight of update number `updates` (from 1)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class Ema:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.take(model, updates=0)

    def take(self, model: nn.Module, updates: int) -> None:
        """Make the model's current parameters the average, after `updates` updates (resuming: the model
        holds the checkpoint's average at that moment)."""
        self.updates = updates
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - ema_beta(self.decay, self.updates)
        for name, p in model.named_parameters():
            self.params[name].lerp_(p.detach(), weight)

    def full_state(self, model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`model_state` (a full state dict of the model: parameters and buffers) with the parameters
        replaced by their averages, on the CPU in fp32."""
        out = dict(model_state)
        for name, value in self.params.items():
            full = value.full_tensor() if hasattr(value, "full_tensor") else value
            out[name] = full.detach().to("cpu", torch.float32).contiguous()
        return out
