"""The trainers' optimizer: AdamW, or Muon for the transformer's hidden matrices with AdamW for the rest.

`--optimizer adamw` (upstream's) is torch.optim.AdamW on two groups: decayed matrices, and norms /
biases / embeddings / learned tokens without decay.

`--optimizer muon` (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; the learning-rate
matching of Liu et al. 2025, "Muon is scalable for LLM training") updates the linear weights inside
the transformer layers (shared.params.hidden_matrix_names) with momentum (0.95, Nesterov)
orthogonalised by five Newton-Schulz iterations, scaled by 0.2 * sqrt(max(rows, cols)) so that the
update's RMS is that of a typical AdamW update and the AdamW learning rate, schedule and weight decay
carry over. Everything else (input projections, output heads, embeddings, learned tokens, norms,
biases) stays on AdamW. Both live in one torch Optimizer (`MuonAdamW`), so the trainer's LambdaLR
schedule, gradient clipping and distributed checkpoints treat it like AdamW.

The Muon half is torch.optim.Muon's update with adjust_lr_fn="match_rms_adamw" (which runs the
iteration in bfloat16; this one runs it in float32), the AdamW half torch.optim.AdamW's
(tests/train/test_optim.py checks both); dreamer4_jax/train/optim.py holds the same optimizer in optax
(parity_tests/test_training.py). Why the dmc64 recipes use it: docs/experiments.md, "Tokenizer recipe"
and "Dynamics recipe".

Muon orthogonalises whole matrices, so every rank must hold them whole: DDP (each rank has the full,
all-reduced gradient) works; FSDP2 shards them and is refused.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn

from shared.optim import (MUON_MOMENTUM, NEWTON_SCHULZ, NEWTON_SCHULZ_EPS, NEWTON_SCHULZ_STEPS, OPTIMIZERS,
                          muon_lr_scale)
from shared.params import decay_names, hidden_matrix_names


def orthogonalise(g: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS, eps: float = NEWTON_SCHULZ_EPS) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with g's singular vectors (singular values near 1)."""
    if g.dim() != 2:
        raise ValueError(f"orthogonalise needs a matrix, got shape {tuple(g.shape)}")
    x = g.float() / (g.float().norm() + eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    a, b, c = NEWTON_SCHULZ
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


def decay_groups(model: nn.Module, weight_decay: float, policy: str = "weights") -> list[dict]:
    """AdamW groups (the non-empty ones) by shared.params.decay_names: under the trainers' policy
    "weights" the linear weights decay and norms, biases, embeddings and learned tokens do not."""
    decayed = decay_names(model.config, policy)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if name in decayed else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's hidden matrices (shared.params.hidden_matrix_names: the linear weights inside the
    transformer layers), which Muon updates."""
    names = hidden_matrix_names(model.config)
    return [p for n, p in model.named_parameters() if n in names and p.requires_grad]


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the groups with `muon=True`, AdamW on the others (see the module docstring).

    Group keys: lr, weight_decay, muon; AdamW groups also betas, eps. State per parameter: AdamW
    `step`, `exp_avg`, `exp_avg_sq`; Muon `momentum_buffer`.
    """

    def __init__(self, params: Iterable[dict], lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = MUON_MOMENTUM):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, momentum=momentum,
                        muon=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"]:
                for p in group["params"]:
                    muon_lr_scale(p.shape)                  # raises for anything but a matrix

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["muon"]:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = torch.zeros_like(p)
                    mu = group["momentum"]
                    buf.mul_(mu).add_(p.grad)
                    update = orthogonalise(p.grad + mu * buf)
                    p.mul_(1.0 - lr * wd)
                    p.add_(update, alpha=-lr * muon_lr_scale(p.shape))
                else:
                    if not state:
                        state["step"] = torch.zeros((), dtype=torch.float32)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    beta1, beta2 = group["betas"]
                    state["step"] += 1
                    k = float(state["step"])
                    state["exp_avg"].lerp_(p.grad, 1.0 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                    denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1.0 - beta2 ** k)).add_(group["eps"])
                    p.mul_(1.0 - lr * wd)
                    p.addcdiv_(state["exp_avg"], denom, value=-lr / (1.0 - beta1 ** k))
        return loss


def make_optimizer(model: nn.Module, kind: str, lr: float, weight_decay: float, betas=(0.9, 0.95),
                   eps: float = 1e-8) -> torch.optim.Optimizer:
    """`kind` "adamw": torch.optim.AdamW on decay_groups; "muon": MuonAdamW with the transformer's
    hidden matrices on Muon (decayed) and decay_groups of the rest on AdamW."""
    if kind == "adamw":
        return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
    if kind != "muon":
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    hidden = muon_parameters(model)
    if not hidden:
        raise ValueError("--optimizer muon: the model has no BlockCausalTransformer matrices to put on Muon")
    hidden_ids = {id(p) for p in hidden}
    rest = decay_groups(model, weight_decay)
    for group in rest:
        group["params"] = [p for p in group["params"] if id(p) not in hidden_ids]
    groups = [{"params": hidden, "weight_decay": weight_decay, "muon": True}] + [g for g in rest if g["params"]]
    return MuonAdamW(groups, lr=lr, betas=betas, eps=eps)
