"""Image metrics both backends, the trainers and the demo report: PSNR, written once."""

from __future__ import annotations

from typing import Union

import numpy as np

# The MSE floor: identical images give 100 dB on [0, 1] intensities instead of infinity.
MIN_MSE = 1e-10

ArrayOrFloat = Union[float, np.ndarray]


def psnr_from_mse(mse: ArrayOrFloat, peak: float = 1.0) -> ArrayOrFloat:
    """PSNR in dB of a mean squared error (a number or an array of them) for intensities in [0, peak].

    The MSE is taken relative to peak**2, so the floor MIN_MSE applies on the [0, 1] scale for any peak."""
    relative = np.maximum(np.asarray(mse, dtype=np.float64) / (float(peak) ** 2), MIN_MSE)
    out = -10.0 * np.log10(relative)
    return float(out) if out.ndim == 0 else out


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """Per-frame PSNR in dB of frames a against b: (N, ...) -> (N,), the MSE of each frame over all
    its other axes, for intensities in [0, peak] (255 for uint8 frames). Computed in float64."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"psnr needs two arrays of the same shape (N, ...), got {a.shape} and {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    return psnr_from_mse((diff ** 2).reshape(len(diff), -1).mean(axis=1), peak)
