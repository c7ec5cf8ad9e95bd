"""The tokenizer's clip-length chunking, for every backend (see TokenizerConfig.clip_frames).

The tokenizer is causal in time with window-relative positions, so encode/decode run it on
consecutive chunks of at most clip_frames frames, each starting at time position 0 (as the clips
it was trained on), and join the results on the time axis.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .config import TokenizerConfig


def by_clip(cfg: TokenizerConfig, fn: Callable[..., Any], clips: Sequence[Any],
            concat: Callable[[list], Any]) -> Any:
    """fn over the chunks (cfg.clip_chunks of axis 1) of the (B, T, ...) arrays `clips` (None passes
    through as None), the results joined by `concat` (the backend's concatenation on axis 1)."""
    chunks = cfg.clip_chunks(clips[0].shape[1])
    if len(chunks) == 1:
        return fn(*clips)
    return concat([fn(*(None if x is None else x[:, t] for x in clips)) for t in chunks])
