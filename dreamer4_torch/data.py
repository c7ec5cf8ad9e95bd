"""PyTorch access to a dataset: a map-style Dataset of windows and a resumable distributed sampler.

    dataset = WindowDataset("data/dmc64", window=17)
    sampler = DistributedWindowSampler(dataset, num_replicas=world_size, rank=rank, seed=0)
    loader = DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=2,
                        persistent_workers=True, drop_last=True)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            ...                                   # batch["frames"]: uint8 (B, T, 3, H, W)
            sampler.advance(len(batch["frames"]))   # this rank consumed these windows
            if time_to_save: checkpoint["data"] = sampler.state_dict()

    # resuming: build the same dataset and sampler, then
    sampler.load_state_dict(checkpoint["data"])   # then loop from epoch = state["epoch"]

Items are dicts of tensors with the arrays of shared.data.windows (one window each, no batch
axis): frames uint8 (T, 3, H, W) -- convert to float in the trainer, on the device --,
actions float32 (T, 16), action_mask float32 (T, 16), rewards float32 (T,), and int64 scalars
task_id, episode, start.

Worker processes get a pickled WindowDataset that holds only the dataset path and the window
index, and map the arrays themselves on first use: nothing large is copied or pickled.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from shared.data.format import Dataset as DiskDataset
from shared.data.windows import WindowSampler


class WindowDataset(Dataset):
    """All valid windows of `window` frames of a dataset, as a map-style torch Dataset.

    Args:
      data: dataset directory or an opened shared.data.format.Dataset.
      window: frames per window (T).
      episodes: episode-table rows to use (e.g. from shared.data.windows.split_episodes);
        default all.
    """

    def __init__(self, data: str | os.PathLike | DiskDataset, window: int, episodes=None):
        self.windows = WindowSampler(data, window, seed=0, episodes=episodes)
        self.path = str(self.windows.dataset.path)
        self.window = window

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.windows.read(np.array([index]))
        return {key: torch.from_numpy(value[0]) if value.ndim > 1 else torch.tensor(value[0])
                for key, value in batch.items()}


class DistributedWindowSampler(Sampler[int]):
    """Shuffled window indices, a distinct shard per rank each epoch, resumable mid-epoch.

    Every epoch draws one permutation of all window indices from (seed, epoch); rank r takes
    positions r, r + R, r + 2R, ... of it (R = num_replicas), cut to the same length on every
    rank (the last len % R windows of the permutation are dropped that epoch), so ranks never
    share a window within an epoch.

    The DataLoader reads indices ahead of what the trainer has consumed, so the sampler cannot
    know the position by itself: call `advance(n)` after consuming n windows (or set `position`).
    `state_dict()` is then {"epoch", "position", ...}; after `load_state_dict` the next iteration
    over this epoch continues at exactly the next window.
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 seed: int = 0, shuffle: bool = True):
        if num_replicas is None or rank is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = torch.distributed.get_world_size() if distributed else 1
            rank = torch.distributed.get_rank() if distributed else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_windows = len(dataset)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.num_samples = self.num_windows // self.num_replicas
        if self.num_samples == 0:
            raise ValueError(f"{self.num_windows} windows cannot give each of {num_replicas} "
                             "ranks one window")
        self.epoch = 0
        self.position = 0
        self._keep_position = False

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` from its beginning (unless it is the epoch just restored by
        `load_state_dict`, whose position is kept)."""
        if not (self._keep_position and epoch == self.epoch):
            self.position = 0
        self._keep_position = False
        self.epoch = int(epoch)

    def shard(self, epoch: int) -> np.ndarray:
        """This rank's window indices for `epoch`, in order."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_windows)
        else:
            order = np.arange(self.num_windows)
        return order[self.rank:self.num_samples * self.num_replicas:self.num_replicas]

    def __iter__(self):
        indices = self.shard(self.epoch)[self.position:]
        self._keep_position = False
        return iter(indices.tolist())

    def __len__(self) -> int:
        return self.num_samples - self.position

    def advance(self, num_windows: int) -> None:
        """Record that the trainer consumed `num_windows` more windows of this epoch."""
        self.position = min(self.position + int(num_windows), self.num_samples)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_replicas": self.num_replicas, "num_windows": self.num_windows,
                "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "num_replicas", "num_windows", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: the saved sampler had {key}={state[key]!r}, this "
                                 f"one has {getattr(self, key)!r} (same data, seed and world size "
                                 "are needed to continue exactly)")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._keep_position = True

