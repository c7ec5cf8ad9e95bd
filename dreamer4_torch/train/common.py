"""Pieces both trainers use: data streams, evaluation sharding, PSNR, image grids, chunked coding.

Time positions: the tokenizer is causal in time with window-relative positions, so it must never
see a clip longer than the clips it was trained on (upstream trains on 8 frames and encodes
32-frame windows, so positions 8..31 were never trained). The tokenizer trainer records its clip
length in the checkpoint's config (TokenizerConfig.clip_frames), and Tokenizer.encode / decode
split longer sequences by it. `encode_chunked` / `decode_chunked` chunk by an explicit length, for
tokenizers whose checkpoints predate the field (`tokenizer_clip_frames` then reads the run's
options.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from shared.config import ConfigError, TokenizerConfig
from shared.io import CheckpointError, read_config
from shared.metrics import psnr_from_mse

from . import distributed as D


class BatchStream:
    """Endless micro-batches from a map-style dataset with a resumable distributed sampler."""

    def __init__(self, dataset, batch_size: int, world: D.World, seed: int, workers: int):
        from dreamer4_torch.data import DistributedWindowSampler
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = DistributedWindowSampler(dataset, num_replicas=world.world_size, rank=world.rank, seed=seed)
        if self.sampler.num_samples < batch_size:
            raise SystemExit(f"error: each process gets {self.sampler.num_samples} training windows per epoch, "
                             f"fewer than --batch-size {batch_size}; collect more data or lower the batch size")
        # Its own generator: creating an iterator must not consume the global RNG (exact resume).
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
                                 drop_last=True, persistent_workers=workers > 0,
                                 pin_memory=world.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(seed))

    def __iter__(self) -> Iterator[dict]:
        while True:
            self.sampler.set_epoch(self.sampler.epoch)
            for batch in self.loader:
                self.sampler.advance(self.batch_size)
                yield batch
            self.sampler.set_epoch(self.sampler.epoch + 1)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def shard(n: int, world: D.World) -> tuple[np.ndarray, np.ndarray]:
    """Split items 0..n-1 over ranks with equal counts (padding with weight-0 repeats), so every rank
    runs the same number of forward passes (needed under FSDP)."""
    per_rank = -(-n // world.world_size)
    idx = np.arange(per_rank * world.world_size)
    weights = (idx < n).astype(np.float64)
    idx = np.minimum(idx, n - 1)
    mine = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
    return idx[mine], weights[mine]


def frame_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame mean squared error of images in [0, 1] (prediction clamped): (..., C, H, W) -> (...)."""
    return (pred.float().clamp(0, 1) - target.float()).pow(2).flatten(-3).mean(-1)


# PSNR in dB of a (pooled) mean squared error of images in [0, 1].
psnr_of = psnr_from_mse


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame full-frame PSNR in dB (float64, on the inputs' device): (..., C, H, W) -> (...)."""
    mse = frame_mse(pred, target)
    return torch.as_tensor(psnr_from_mse(mse.double().cpu().numpy()), device=mse.device)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) float in [0, 1] -> (..., H, W, C) uint8."""
    return (video.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).movedim(-3, -1).cpu().numpy()


def grid(rows: list[np.ndarray], scale: int = 2, pad: int = 2) -> np.ndarray:
    """Rows of frames (each (n, H, W, 3) uint8) -> one image with `pad` pixels between frames, upscaled
    by `scale` (nearest neighbour)."""
    H, W = rows[0].shape[1:3]
    n = max(r.shape[0] for r in rows)
    out = np.full((len(rows) * (H + pad) + pad, n * (W + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            y, x = pad + i * (H + pad), pad + j * (W + pad)
            out[y:y + H, x:x + W] = frame
    return out.repeat(scale, 0).repeat(scale, 1)


def side_by_side_gif(left: np.ndarray, right: np.ndarray, scale: int = 2) -> list[np.ndarray]:
    """Two videos (T, H, W, 3) -> GIF frames with `left` and `right` next to each other."""
    gap = np.full((left.shape[1], 2, 3), 255, np.uint8)
    return [np.concatenate([l, gap, r], axis=1).repeat(scale, 0).repeat(scale, 1) for l, r in zip(left, right)]


def encode_chunked(tokenizer, video: torch.Tensor, chunk: int) -> torch.Tensor:
    """Tokenizer.encode over (B, T, C, H, W) in consecutive chunks of at most `chunk` frames."""
    parts = [tokenizer.encode(video[:, s:s + chunk]) for s in range(0, video.shape[1], chunk)]
    return torch.cat(parts, dim=1)


def decode_chunked(tokenizer, z: torch.Tensor, chunk: int) -> torch.Tensor:
    parts = [tokenizer.decode(z[:, s:s + chunk]) for s in range(0, z.shape[1], chunk)]
    return torch.cat(parts, dim=1)


TRAINING_FILE = "options.json"


def tokenizer_clip_frames(tokenizer_dir: Path) -> Optional[int]:
    """The clip length a tokenizer checkpoint was trained on, if recorded: its config's clip_frames,
    or, for checkpoints written before the config held it, the run's options.json."""
    try:
        cfg = read_config(Path(tokenizer_dir))
    except (CheckpointError, ConfigError):
        cfg = None
    if isinstance(cfg, TokenizerConfig) and cfg.clip_frames is not None:
        return cfg.clip_frames
    path = Path(tokenizer_dir) / TRAINING_FILE
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["frames"])
    except (KeyError, ValueError, TypeError, json.JSONDecodeError):
        return None


def to_video(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, T, 3, H, W) -> float (B, T, 3, H, W) in [0, 1] on `device`."""
    return frames.to(device, non_blocking=True).float().div_(255.0)
