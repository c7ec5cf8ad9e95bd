"""Parameter initialisation and verification against the canonical parameter table (shared.params)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from shared.params import ParamSpec, check_parameters, param_table


class ParameterMismatch(ValueError):
    """A model's parameters differ from its config's parameter table."""


def check_against_table(model: nn.Module, table: list[ParamSpec]) -> None:
    """Raise ParameterMismatch naming every missing, extra or mis-shaped parameter."""
    check_parameters({p.name: p.shape for p in table}, {n: tuple(p.shape) for n, p in model.named_parameters()},
                     what="model parameters", error=ParameterMismatch)


@torch.no_grad()
def init_from_table(model: nn.Module, table: list[ParamSpec], generator: Optional[torch.Generator] = None) -> None:
    """Draw every parameter from its table initializer (torch's global RNG unless a generator is given)."""
    params = dict(model.named_parameters())
    for spec in table:
        p = params[spec.name]
        if spec.init == "zeros":
            p.zero_()
        elif spec.init == "ones":
            p.fill_(1.0)
        elif spec.init == "normal":
            p.normal_(0.0, spec.std, generator=generator)
        elif spec.init == "linear_uniform":
            bound = 1.0 / math.sqrt(spec.fan_in) if spec.fan_in > 0 else 0.0
            p.uniform_(-bound, bound, generator=generator)
        else:
            raise ValueError(f"unknown initializer {spec.init!r} for {spec.name}")


def build_checked(model: nn.Module, cfg, generator: Optional[torch.Generator] = None) -> None:
    table = param_table(cfg)
    check_against_table(model, table)
    init_from_table(model, table, generator)
