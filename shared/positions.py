"""Position signals: the sinusoid tables added to tokens, and RoPE angle tables.

All tables are float32 and computed with float32 arithmetic in upstream's order of operations,
so that a backend adding them reproduces upstream's activations to the last bit that matters:
  angle[pos, i] = pos * exp(-(2 * floor(i / 2) / D) * ln(base))
  table[pos, i] = sin(angle) for even i, cos(angle) for odd i.
"""

from __future__ import annotations

import functools
import math

import numpy as np

_F32 = np.float32


@functools.lru_cache(maxsize=64)
def _sinusoid_table_cached(n: int, d: int, base: float) -> np.ndarray:
    pos = np.arange(n, dtype=_F32)[:, None]
    i = np.arange(d, dtype=_F32)[None, :]
    k = np.floor(i / _F32(2.0))
    div = np.exp((-(_F32(2.0) * k) / _F32(max(1.0, float(d)))) * _F32(math.log(base)))
    ang = pos * div
    table = np.where((np.arange(d) % 2 == 0)[None, :], np.sin(ang), np.cos(ang)).astype(_F32)
    table.setflags(write=False)
    return table


def sinusoid_table(n: int, d: int, base: float = 10000.0) -> np.ndarray:
    """(n, d) float32 sinusoid table (read-only)."""
    if n < 0 or d <= 0:
        raise ValueError(f"sinusoid_table needs n >= 0 and d > 0, got n={n}, d={d}")
    return _sinusoid_table_cached(int(n), int(d), float(base))


@functools.lru_cache(maxsize=64)
def _position_table_cached(n_frames: int, n_slots: int, d: int, scale: bool, time: bool,
                           frame_offset: int) -> np.ndarray:
    pos_s = sinusoid_table(n_slots, d)[None, :, :]
    if time:
        pos_t = sinusoid_table(frame_offset + n_frames, d)[frame_offset:, None, :]
        pos = pos_t + pos_s
    else:
        pos = np.broadcast_to(pos_s, (n_frames, n_slots, d))
    if scale:
        pos = pos * _F32(1.0 / math.sqrt(d))
    pos = np.ascontiguousarray(pos, dtype=_F32)
    pos.setflags(write=False)
    return pos


def position_table(n_frames: int, n_slots: int, d: int, *, scale: bool, time: bool = True,
                   frame_offset: int = 0) -> np.ndarray:
    """(T, S, D) float32 table added to the tokens before the first layer.

    (pos_t[t] + pos_s[s]) * (1/sqrt(D) if scale). With `time=False` (models with time RoPE) only
    the slot table is used. `frame_offset` gives frames absolute indices offset..offset+T-1; upstream
    always uses 0 (positions restart at every call, i.e. window-relative).
    """
    return _position_table_cached(int(n_frames), int(n_slots), int(d), bool(scale), bool(time),
                                  int(frame_offset))


def rope_angles(positions: np.ndarray, head_dim: int, base: float = 10000.0) -> np.ndarray:
    """(..., head_dim // 2) float32 RoPE angles pos * base^(-2i/head_dim).

    Rotation convention (both backends): split the head vector into halves x1 = x[:h/2],
    x2 = x[h/2:]; out = [x1 cos - x2 sin, x2 cos + x1 sin].
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    half = head_dim // 2
    inv_freq = np.exp(np.arange(half, dtype=_F32) * _F32(-2.0 * math.log(base) / head_dim)).astype(_F32)
    return (np.asarray(positions, dtype=_F32)[..., None] * inv_freq).astype(_F32)
