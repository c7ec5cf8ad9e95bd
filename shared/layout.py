"""Token layouts, modality ids and attention masks (numpy booleans, True = may attend).

A frame is a row of S token slots. Space attention runs inside one frame under an (S, S) mask
that depends only on the layout and the mode, so one mask serves the whole batch. Time
attention runs per slot over frames and is causal.

Layouts (slot order is part of the checkpoint contract):
  tokenizer (encoder and decoder): [latent x n_latents, image x n_patches]
  dynamics: [action, signal, step, spatial x n_spatial, register x n_register, agent x n_agent]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .config import SPACE_MODES, DynamicsConfig, TokenizerConfig


class Modality(IntEnum):
    LATENT = -1
    IMAGE = 0
    ACTION = 1
    PROPRIO = 2
    REGISTER = 3
    SPATIAL = 4
    SIGNAL = 5
    STEP = 6
    AGENT = 7


@dataclass(frozen=True)
class TokenLayout:
    """An ordered list of (modality, count) segments making up one frame's token slots."""

    segments: tuple[tuple[Modality, int], ...]

    @property
    def n_tokens(self) -> int:
        return sum(n for _, n in self.segments)

    def modality_ids(self) -> np.ndarray:
        """(S,) int32 modality id of every slot."""
        parts = [np.full(n, int(m), dtype=np.int32) for m, n in self.segments if n > 0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def slice(self, modality: Modality) -> slice:
        """The slots of `modality` (an empty slice at the end if absent)."""
        start = 0
        for m, n in self.segments:
            if m == modality:
                return slice(start, start + n)
            start += n
        return slice(start, start)

    def count(self, modality: Modality) -> int:
        s = self.slice(modality)
        return s.stop - s.start


def tokenizer_layout(cfg: TokenizerConfig) -> TokenLayout:
    return TokenLayout(((Modality.LATENT, cfg.n_latents), (Modality.IMAGE, cfg.n_patches)))


def dynamics_layout(cfg: DynamicsConfig) -> TokenLayout:
    return TokenLayout((
        (Modality.ACTION, 1),
        (Modality.SIGNAL, 1),
        (Modality.STEP, 1),
        (Modality.SPATIAL, cfg.n_spatial),
        (Modality.REGISTER, cfg.n_register),
        (Modality.AGENT, cfg.n_agent),
    ))


def space_mask(layout: TokenLayout, mode: str) -> np.ndarray:
    """(S, S) bool mask for space attention; mask[q, k] is True when query q may attend to key k.

    encoder: latent queries see every slot; other queries see their own modality only.
    decoder: latent queries see latents only; other queries see their own modality and latents.
    wm_agent_isolated: non-agent queries see all non-agent keys; agent queries see agent keys only.
    wm_agent (the paper's rule): agent queries see everything; nothing else sees agent keys.
    Every row has at least its own slot allowed, so no query is fully masked.
    """
    mod = layout.modality_ids()
    q = mod[:, None]
    k = mod[None, :]
    same = q == k
    lat_q = q == int(Modality.LATENT)
    lat_k = k == int(Modality.LATENT)
    agent_q = q == int(Modality.AGENT)
    agent_k = k == int(Modality.AGENT)
    S = mod.shape[0]
    if mode == "encoder":
        allow = np.where(lat_q, True, same)
    elif mode == "decoder":
        allow = np.where(lat_q, lat_k, same | lat_k)
    elif mode == "wm_agent_isolated":
        allow = np.where(agent_q, agent_k, ~agent_k)
    elif mode == "wm_agent":
        allow = np.where(agent_q, True, ~agent_k)
    else:
        raise ValueError(f"unknown space-attention mode {mode!r}; expected one of {SPACE_MODES}")
    allow = np.broadcast_to(allow, (S, S)).copy()
    assert allow.any(axis=1).all(), "every query must see at least one key"
    return allow


def time_mask(n_frames: int) -> np.ndarray:
    """(T, T) bool causal mask: frame t sees frames <= t."""
    return np.tril(np.ones((n_frames, n_frames), dtype=bool))
