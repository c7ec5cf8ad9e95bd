"""Patch index conventions, written once for every backend.

A frame (C, H, W) becomes Np = (H/p)(W/p) patches in row-major grid order; inside a patch vector
of length Dp = C*p*p the channel index is slowest, then the row inside the patch, then the
column (the layout of torch's F.unfold). `unpatchify` is the exact inverse.

`patch_layout` states the layout as shapes and an axis permutation; each backend applies it with
its own reshape and transpose (numpy here, torch and JAX in their tokenizers):

    patches = frames.reshape(L.frame_split).transpose(L.to_patches).reshape(L.patches_shape)
    frames = patches.reshape(L.patch_split).transpose(L.to_frames).reshape(L.frames_shape)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatchLayout:
    frames_shape: tuple[int, ...]     # (*lead, C, H, W)
    patches_shape: tuple[int, ...]    # (*lead, Np, C*p*p)
    frame_split: tuple[int, ...]      # (*lead, C, gh, p, gw, p): frames with the grid split out
    patch_split: tuple[int, ...]      # (*lead, gh, gw, C, p, p): the same axes in patch order
    to_patches: tuple[int, ...]       # axis permutation frame_split -> patch_split
    to_frames: tuple[int, ...]        # its inverse


def patch_layout(lead: tuple[int, ...], channels: int, height: int, width: int, patch_size: int) -> PatchLayout:
    """The patch layout of frames (*lead, channels, height, width) with square patches of patch_size."""
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"frame size {height}x{width} is not divisible by patch_size={p}")
    lead = tuple(int(n) for n in lead)
    gh, gw = height // p, width // p
    n = len(lead)
    batch = tuple(range(n))
    to_patches = batch + (n + 1, n + 3, n, n + 2, n + 4)
    return PatchLayout(
        frames_shape=lead + (channels, height, width),
        patches_shape=lead + (gh * gw, channels * p * p),
        frame_split=lead + (channels, gh, p, gw, p),
        patch_split=lead + (gh, gw, channels, p, p),
        to_patches=to_patches,
        to_frames=tuple(int(i) for i in np.argsort(to_patches)),
    )


def patchify(frames: np.ndarray, patch_size: int) -> np.ndarray:
    """(..., C, H, W) -> (..., Np, C*p*p)."""
    *lead, C, H, W = frames.shape
    L = patch_layout(tuple(lead), C, H, W, patch_size)
    return frames.reshape(L.frame_split).transpose(L.to_patches).reshape(L.patches_shape)


def unpatchify(patches: np.ndarray, height: int, width: int, channels: int, patch_size: int) -> np.ndarray:
    """(..., Np, C*p*p) -> (..., C, H, W)."""
    *lead, Np, Dp = patches.shape
    L = patch_layout(tuple(lead), channels, height, width, patch_size)
    if (Np, Dp) != L.patches_shape[-2:]:
        raise ValueError(f"patches of shape (..., {Np}, {Dp}) do not fit {channels}x{height}x{width} "
                         f"frames with patch_size={patch_size}")
    return patches.reshape(L.patch_split).transpose(L.to_frames).reshape(L.frames_shape)


def patch_pixel_index(patch: int, feature: int, width: int, channels: int, patch_size: int) -> tuple[int, int, int]:
    """(channel, row, col) of element `feature` of patch number `patch` (for tests and docs)."""
    p = patch_size
    gw = width // p
    gy, gx = divmod(patch, gw)
    c, rem = divmod(feature, p * p)
    py, px = divmod(rem, p)
    return c, gy * p + py, gx * p + px
