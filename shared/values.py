"""Value contracts at the public inference boundaries, written once for both backends.

Shapes and dtypes are checked everywhere (they are static, free even under jit or torch.compile).
Values -- NaN or infinity anywhere, a frame outside [0, 1] -- cost a reduction and a read back to the
host, so they are checked where an array enters from a caller: the tokenizer's
encode and decode and the samplers (both backends), and the PyTorch dynamics model's inputs on the
CPU. A training step's own batches, which the library builds, are not re-checked on an accelerator.
Each backend reduces its array to (all finite, min, max); this module decides and words the error.
Actions beyond [-1, 1] are not an error: the dynamics model clamps them, as upstream does.
"""

from __future__ import annotations

from typing import Optional


def check_values(name: str, finite: bool, low: float, high: float, lo: Optional[float] = None,
                 hi: Optional[float] = None, hint: str = "") -> None:
    """ValueError naming `name` when the array held NaN/infinity (finite False) or values outside [lo, hi]
    (low and high: its minimum and maximum; ignored for an empty array, where they are NaN)."""
    if not finite:
        raise ValueError(f"{name} holds NaN or infinite values{hint}")
    if low != low or high != high:      # an empty array: nothing to check
        return
    if (lo is not None and low < lo) or (hi is not None and high > hi):
        bounds = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        raise ValueError(f"{name} must lie in {bounds}, got values in [{low:.6g}, {high:.6g}]{hint}")
