"""One-off encoding of a whole data set with a frozen tokenizer, cached on disk for dynamics training.

The tokenizer is frozen, so encoding every training batch again is waste. The cache is a directory
    meta.json      tokenizer fingerprint, data set fingerprint, chunk length, shapes
    latents.npy    float16 (N, n_latents, d_bottleneck), row i = frame row i of the data set
written atomically (a temporary directory renamed at the end) and rebuilt when the tokenizer, the
data or the chunk length change. Episodes are encoded in consecutive chunks of at most the
tokenizer's training clip length (see common.encode_chunked); the work is split over ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.data.format import open_dataset
from shared.data.windows import WindowSampler

from . import distributed as D
from .common import encode_chunked, to_video

CACHE_VERSION = 1


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(tokenizer_dir: Path, data_dir: Path, chunk: int) -> dict:
    meta_bytes = (Path(data_dir) / "meta.json").read_bytes()
    meta = json.loads(meta_bytes)
    return {"version": CACHE_VERSION,
            "tokenizer_weights_sha256": file_digest(Path(tokenizer_dir) / "model.safetensors"),
            "data_frames": int(meta.get("num_frames", -1)), "data_episodes": int(meta.get("num_episodes", -1)),
            "data_meta_sha256": hashlib.sha256(meta_bytes).hexdigest(), "chunk": int(chunk)}


def cache_is_valid(cache_dir: Path, expected: dict) -> bool:
    meta = cache_dir / "meta.json"
    if not meta.is_file() or not (cache_dir / "latents.npy").is_file():
        return False
    try:
        saved = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False
    return all(saved.get(k) == v for k, v in expected.items())


@torch.no_grad()
def build_latent_cache(tokenizer, tokenizer_dir: Path, data_dir: Path, cache_dir: Path, chunk: int,
                       world: D.World, batch_frames: int = 256) -> Path:
    """Encode every frame of the data set (split over ranks); returns the cache directory."""
    cache_dir = Path(cache_dir)
    expected = fingerprint(tokenizer_dir, data_dir, chunk)
    if cache_is_valid(cache_dir, expected):
        if world.is_main:
            print(f"latent cache {cache_dir} is up to date", flush=True)
        return cache_dir
    dataset = open_dataset(data_dir)
    cfg = tokenizer.config
    N = int(dataset.frames.shape[0])
    tmp = cache_dir.parent / f".{cache_dir.name}.building"
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.lib.format.open_memmap(tmp / "latents.npy", mode="w+", dtype=np.float16,
                                  shape=(N, cfg.n_latents, cfg.d_bottleneck)).flush()
    D.barrier(world)
    out = np.load(tmp / "latents.npy", mmap_mode="r+")
    table = dataset.episodes
    mine = np.arange(len(table))[world.rank::world.world_size]
    # Chunks of `chunk` frames; a batch holds chunks of equal length.
    jobs: dict[int, list[tuple[int, int]]] = {}
    for ep in mine:
        start, length = int(table["start"][ep]), int(table["length"][ep])
        for s in range(0, length, chunk):
            n = min(chunk, length - s)
            jobs.setdefault(n, []).append((start + s, n))
    total = sum(n for lst in jobs.values() for _, n in lst)
    bar = None
    if world.is_main:
        from tqdm import tqdm
        bar = tqdm(total=total * world.world_size, unit="frame", desc="encode latents", dynamic_ncols=True)
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    for n, items in sorted(jobs.items(), reverse=True):
        per_batch = max(1, batch_frames // n)
        for i in range(0, len(items), per_batch):
            group = items[i:i + per_batch]
            frames = np.stack([dataset.frames[r:r + n] for r, _ in group])
            video = to_video(torch.from_numpy(frames), device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                z = encode_chunked(tokenizer, video, chunk).float()
            z = z.cpu().numpy().astype(np.float16)
            for (r, _), zz in zip(group, z):
                out[r:r + n] = zz
            if bar is not None:
                bar.update(n * len(group) * world.world_size)
    out.flush()
    del out
    D.barrier(world)
    if world.is_main:
        bar.close()
        meta = dict(expected, frames=N, n_latents=cfg.n_latents, d_bottleneck=cfg.d_bottleneck, dtype="float16")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.rename(tmp, cache_dir)
    D.barrier(world)
    return cache_dir


class LatentWindowDataset(Dataset):
    """Windows of cached latents (with the data set's actions), indexed like WindowDataset.

    Items: latents float32 (T, n_latents, d_bottleneck), actions (T, 16), action_mask (T, 16),
    rewards (T,), task_id, episode, start. The latent array is memory-mapped lazily in each worker.
    """

    def __init__(self, data_dir: Path, cache_dir: Path, window: int, episodes=None):
        self.windows = WindowSampler(data_dir, window, seed=0, episodes=episodes)
        self.cache_dir = Path(cache_dir)
        self.window = window
        self._latents = None

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_latents"] = None
        return state

    def __getitem__(self, index: int) -> dict:
        if self._latents is None:
            self._latents = np.load(self.cache_dir / "latents.npy", mmap_mode="r")
        episode, start = self.windows.window_at(int(index))
        data = self.windows.dataset
        row = int(data.episodes["start"][episode]) + start
        batch = self.windows.read(np.array([index]))
        return {"latents": torch.from_numpy(np.asarray(self._latents[row:row + self.window], dtype=np.float32)),
                "actions": torch.from_numpy(batch["actions"][0]),
                "action_mask": torch.from_numpy(batch["action_mask"][0]),
                "rewards": torch.from_numpy(batch["rewards"][0]),
                "task_id": torch.tensor(batch["task_id"][0]), "episode": torch.tensor(episode),
                "start": torch.tensor(start)}
