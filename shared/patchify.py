"""Patch index conventions (numpy reference).

A frame (C, H, W) becomes Np = (H/p)(W/p) patches in row-major grid order; inside a patch vector
of length Dp = C*p*p the channel index is slowest, then the row inside the patch, then the
column (the layout of torch's F.unfold). `unpatchify` is the exact inverse.
"""

from __future__ import annotations

import numpy as np


def patchify(frames: np.ndarray, patch_size: int) -> np.ndarray:
    """(..., C, H, W) -> (..., Np, C*p*p)."""
    *lead, C, H, W = frames.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"frame size {H}x{W} is not divisible by patch_size={p}")
    x = frames.reshape(*lead, C, H // p, p, W // p, p)
    n = len(lead)
    # (..., gh, gw, C, ph, pw)
    x = x.transpose(*range(n), n + 1, n + 3, n, n + 2, n + 4)
    return x.reshape(*lead, (H // p) * (W // p), C * p * p)


def unpatchify(patches: np.ndarray, height: int, width: int, channels: int, patch_size: int) -> np.ndarray:
    """(..., Np, C*p*p) -> (..., C, H, W)."""
    *lead, Np, Dp = patches.shape
    p = patch_size
    gh, gw = height // p, width // p
    if Np != gh * gw or Dp != channels * p * p:
        raise ValueError(f"patches of shape (..., {Np}, {Dp}) do not fit {channels}x{height}x{width} "
                         f"frames with patch_size={p}")
    x = patches.reshape(*lead, gh, gw, channels, p, p)
    n = len(lead)
    # (..., C, gh, ph, gw, pw)
    x = x.transpose(*range(n), n + 2, n, n + 3, n + 1, n + 4)
    return x.reshape(*lead, channels, height, width)


def patch_pixel_index(patch: int, feature: int, width: int, channels: int, patch_size: int) -> tuple[int, int, int]:
    """(channel, row, col) of element `feature` of patch number `patch` (for tests and docs)."""
    p = patch_size
    gw = width // p
    gy, gx = divmod(patch, gw)
    c, rem = divmod(feature, p * p)
    py, px = divmod(rem, p)
    return c, gy * p + py, gx * p + px
