"""The Muon optimizer's constants, one spec for both backends (dreamer4_torch.train.optim,
dreamer4_jax.train): which parameters it updates is shared.params.hidden_matrix_names."""

from __future__ import annotations

import math

OPTIMIZERS = ("adamw", "muon")
MUON_MOMENTUM = 0.95                           # Nesterov momentum
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)      # the quintic iteration's coefficients (Jordan et al. 2024)
NEWTON_SCHULZ_STEPS = 5
NEWTON_SCHULZ_EPS = 1e-7
MUON_RMS = 0.2                                 # update RMS relative to lr (Liu et al. 2025)


def muon_lr_scale(shape) -> float:
    """0.2 * sqrt(max(rows, cols)): an orthogonalised update's RMS is 1/sqrt(max(rows, cols)), so this
    gives it AdamW's typical update RMS of 0.2 lr (the same for a matrix and its transpose)."""
    if len(shape) != 2:
        raise ValueError(f"Muon updates matrices only, got a parameter of shape {tuple(shape)}")
    return MUON_RMS * math.sqrt(max(shape))
