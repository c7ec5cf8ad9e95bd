"""Shortcut-forcing arithmetic (backend-neutral).

Notation (DREAMER4.md section 3): k_max is the finest number of steps (a power of two),
e_max = log2(k_max). A step index e means step size d = 2^-e (e = e_max is the finest, d = 1/k_max).
A signal index i means signal level tau = i / k_max (tau = 1 is clean data, tau = 0 pure noise).
The corrupted input is z_tau = (1 - tau) z0 + tau z1 with z0 ~ N(0, I).

Training draws per (batch row, frame):
  flow rows (the first B - B_boot rows): e = e_max;
  bootstrap rows (the last B_boot rows): e ~ U{0, ..., e_max - 1};
  then K = 2^e, j ~ U{0, ..., K - 1}, tau = j / K, signal index = j * k_max / K (tau = 1 never drawn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Fraction of each batch used as bootstrap rows (upstream: round(0.25 * B)).
BOOTSTRAP_FRACTION = 0.25
# Upstream's sampler divides by max(1e-4, 1 - tau); the training loss clamps at 1e-6.
SAMPLER_MIN_DENOM = 1e-4
LOSS_MIN_DENOM = 1e-6


def _check_kmax(k_max: int) -> int:
    if k_max <= 0 or k_max & (k_max - 1):
        raise ValueError(f"k_max must be a power of two, got {k_max}")
    return int(round(math.log2(k_max)))


def e_max(k_max: int) -> int:
    return _check_kmax(k_max)


def n_step_bins(k_max: int) -> int:
    """Rows of the step embedding: step indices 0..e_max."""
    return _check_kmax(k_max) + 1


def n_signal_bins(k_max: int) -> int:
    """Rows of the signal embedding: signal indices 0..k_max."""
    _check_kmax(k_max)
    return k_max + 1


def step_size(step_idx):
    """d = 2^-e (works elementwise on arrays)."""
    return np.exp2(-np.asarray(step_idx, dtype=np.float64))


def signal_level(signal_idx, k_max: int):
    """tau = i / k_max (elementwise)."""
    return np.asarray(signal_idx, dtype=np.float64) / k_max


def signal_index(tau, k_max: int):
    """Inverse of signal_level; tau must lie on the k_max grid."""
    idx = np.asarray(tau, dtype=np.float64) * k_max
    rounded = np.rint(idx)
    if not np.allclose(idx, rounded, atol=1e-6):
        raise ValueError(f"signal level(s) {tau} are not on the 1/{k_max} grid")
    return rounded.astype(np.int64)


def step_index(d):
    """Inverse of step_size; d must be a power of two <= 1."""
    e = -np.log2(np.asarray(d, dtype=np.float64))
    rounded = np.rint(e)
    if not np.allclose(e, rounded, atol=1e-9) or np.any(rounded < 0):
        raise ValueError(f"step size(s) {d} are not of the form 2^-e")
    return rounded.astype(np.int64)


def ramp_weight(tau):
    """w(tau) = 0.9 tau + 0.1: noisier inputs count less."""
    return 0.9 * np.asarray(tau) + 0.1


def n_bootstrap_rows(batch: int, step: int = 0, bootstrap_start: int = 0,
                     fraction: float = BOOTSTRAP_FRACTION) -> int:
    """Bootstrap rows in a batch of `batch` at training step `step`.

    Before `bootstrap_start` every row is a flow row (upstream computes the bootstrap rows there
    and throws the result away). Always leaves at least one flow row.
    """
    if step < bootstrap_start:
        return 0
    return int(min(max(round(fraction * batch), 0), batch - 1))


@dataclass(frozen=True)
class ShortcutDraw:
    """Indices for one training batch, all (B, T)."""

    step_idx: np.ndarray     # int64, e in 0..e_max
    signal_idx: np.ndarray   # int64, i in 0..k_max-1
    n_bootstrap: int         # the last n_bootstrap rows are bootstrap rows

    @property
    def step_size(self) -> np.ndarray:
        return step_size(self.step_idx).astype(np.float32)

    def signal_level(self, k_max: int) -> np.ndarray:
        return signal_level(self.signal_idx, k_max).astype(np.float32)


def draw_shortcut_indices(rng: np.random.Generator, batch: int, frames: int, k_max: int,
                          n_bootstrap: int) -> ShortcutDraw:
    """Draw (step_idx, signal_idx) for every (b, t) of a batch; see the module docstring."""
    emax = _check_kmax(k_max)
    if not 0 <= n_bootstrap < batch:
        raise ValueError(f"n_bootstrap must be in [0, batch), got {n_bootstrap} for batch={batch}")
    if n_bootstrap and emax == 0:
        raise ValueError("bootstrap rows need k_max >= 2")
    step_idx = np.full((batch, frames), emax, dtype=np.int64)
    if n_bootstrap:
        step_idx[batch - n_bootstrap:] = rng.integers(0, emax, size=(n_bootstrap, frames))
    K = np.left_shift(1, step_idx)
    j = np.floor(rng.random((batch, frames)) * K).astype(np.int64)
    signal_idx = j * (k_max // K)
    return ShortcutDraw(step_idx=step_idx, signal_idx=signal_idx, n_bootstrap=int(n_bootstrap))


def half_step_indices(step_idx: np.ndarray, signal_idx: np.ndarray, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the bootstrap target's second half-step: (e + 1, i + k_max * d / 2)."""
    step_idx = np.asarray(step_idx)
    half = np.right_shift(k_max, step_idx + 1)    # k_max * 2^-(e+1)
    return step_idx + 1, np.asarray(signal_idx) + half


@dataclass(frozen=True)
class SamplerStep:
    signal_idx: int
    step_idx: int
    tau: float
    step_size: float


def inference_plan(k_max: int, n_steps: int) -> list[SamplerStep]:
    """The K Euler steps that take a new frame from noise (tau = 0) to clean (tau = 1).

    Step i runs at tau_i = i / K with step size d = 1/K, i.e. signal index i * k_max / K and
    step index log2(K). K must be a power of two <= k_max.
    """
    _check_kmax(k_max)
    if n_steps <= 0 or n_steps & (n_steps - 1) or n_steps > k_max:
        raise ValueError(f"the number of sampling steps must be a power of two in [1, {k_max}], got {n_steps}")
    e = int(round(math.log2(n_steps)))
    scale = k_max // n_steps
    return [SamplerStep(signal_idx=i * scale, step_idx=e, tau=i / n_steps, step_size=1.0 / n_steps)
            for i in range(n_steps)]


def context_labels(k_max: int) -> tuple[int, int]:
    """(signal_idx, step_idx) given to clean context frames by upstream's sampler: (k_max - 1, e_max)."""
    return k_max - 1, _check_kmax(k_max)


def noisy_context_signal_idx(k_max: int, tau_ctx: float = 0.9) -> int:
    """Signal index for the paper's slightly-noised context (tau_ctx on the k_max grid, rounded down)."""
    _check_kmax(k_max)
    return int(min(k_max - 1, math.floor(tau_ctx * k_max + 1e-9)))
