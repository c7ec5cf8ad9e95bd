"""Value contracts at the PyTorch backend's public boundaries (the rules and messages: shared.values)."""

from __future__ import annotations

import torch


def value_range(x: torch.Tensor) -> tuple[bool, float, float]:
    """(all finite, min, max) of a tensor, for shared.values.check_values (NaN bounds when empty)."""
    if x.numel() == 0:
        return True, float("nan"), float("nan")
    x = x.detach()
    return bool(torch.isfinite(x).all()), float(x.min()), float(x.max())
