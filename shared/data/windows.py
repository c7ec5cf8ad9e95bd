"""Windows of consecutive frames from a dataset: the training examples of both backends.

A window is `window` consecutive rows of one episode (never two). Every valid window has an
index in [0, len(sampler)); `sample` draws indices uniformly, so every valid window is equally
likely, whatever the episode lengths.

A batch (dict of numpy arrays) of B windows of T = `window` frames:
  frames       uint8   (B, T, 3, H, W)
  actions      float32 (B, T, 16)   actions[:, t] produced frames[:, t] (zeros where none)
  action_mask  float32 (B, T, 16)   1 on the task's action dimensions; all 0 on a frame that
                                    starts an episode (it has no action)
  rewards      float32 (B, T)       reward of the transition into frames[:, t]
  task_id      int64   (B,)         index into shared.data.tasks.TASK_NAMES
  episode      int64   (B,)         row of the dataset's episode table
  start        int64   (B,)         frame index within the episode of the window's first frame
                                    (0: the window starts at the episode's first frame)
For T+1 frames and the T transitions between them, take window = T + 1 and use
actions[:, 1:], rewards[:, 1:].
"""

from __future__ import annotations

import os

import numpy as np

from .format import Dataset, DatasetError, open_dataset
from .tasks import ACTION_PAD, action_masks


def _as_dataset(data) -> Dataset:
    return data if isinstance(data, Dataset) else open_dataset(data)


class WindowSampler:
    """Index, read and sample windows of `window` frames.

    Args:
      dataset: a Dataset or a dataset directory.
      window: frames per window (>= 1).
      seed: seed of `sample`'s random stream.
      episodes: rows of the episode table to draw from (default: all), e.g. the train part of
        `split_episodes`. Episodes shorter than `window` contribute no windows.
    """

    def __init__(self, dataset: Dataset | str | os.PathLike, window: int, seed: int = 0,
                 episodes: np.ndarray | list[int] | None = None):
        self.dataset = _as_dataset(dataset)
        if not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.window = int(window)
        table = self.dataset.episodes
        if episodes is None:
            episodes = np.arange(len(table))
        episodes = np.asarray(episodes, np.int64).reshape(-1)
        if episodes.size and (episodes.min() < 0 or episodes.max() >= len(table)):
            raise ValueError(f"episode ids must be in [0, {len(table)}) for {self.dataset.path}")
        if np.unique(episodes).size != episodes.size:
            raise ValueError("episode ids must not repeat")
        counts = table["length"][episodes] - self.window + 1
        keep = counts > 0
        self.episode_ids = episodes[keep]
        self._counts = counts[keep]
        self._first_index = np.concatenate([[0], np.cumsum(self._counts)])
        if self._first_index[-1] == 0:
            raise DatasetError(f"{self.dataset.path}: none of the {episodes.size} selected episodes "
                               f"has {self.window} frames; no window can be drawn")
        self._masks = action_masks()
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self._first_index[-1])

    def evenly_spaced(self, count: int) -> np.ndarray:
        """Indices of min(count, len(self)) windows spread evenly from the first window to the last
        (the trainers' fixed evaluation windows)."""
        n = min(int(count), len(self))
        return np.linspace(0, len(self) - 1, n).round().astype(np.int64)

    def locate(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Window indices -> (episode ids, start frame within the episode), vectorised."""
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)})")
        slot = np.searchsorted(self._first_index, indices, side="right") - 1
        return self.episode_ids[slot], indices - self._first_index[slot]

    def window_at(self, index: int) -> tuple[int, int]:
        """(episode id, start frame within the episode) of window `index`."""
        episode, start = self.locate(np.array([index]))
        return int(episode[0]), int(start[0])

    def read(self, indices) -> dict[str, np.ndarray]:
        """The batch of windows `indices` (see the module docstring for the arrays)."""
        episodes, starts = self.locate(np.asarray(indices, np.int64).reshape(-1))
        data, T, batch = self.dataset, self.window, len(episodes)
        rows = data.episodes["start"][episodes] + starts
        task_ids = data.episodes["task_id"][episodes]
        frames = np.empty((batch, T, 3, data.height, data.width), np.uint8)
        actions = np.empty((batch, T, ACTION_PAD), np.float32)
        rewards = np.empty((batch, T), np.float32)
        for b, row in enumerate(rows):
            frames[b] = data.frames[row:row + T]
            actions[b] = data.actions[row:row + T]
            rewards[b] = data.rewards[row:row + T]
        action_mask = np.repeat(self._masks[task_ids][:, None, :], T, axis=1)
        action_mask[starts == 0, 0, :] = 0.0
        return {"frames": frames, "actions": actions, "action_mask": action_mask,
                "rewards": rewards, "task_id": task_ids.astype(np.int64),
                "episode": episodes.astype(np.int64), "start": starts.astype(np.int64)}

    def sample_indices(self, batch: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """`batch` window indices drawn uniformly (with replacement) from `rng` or this
        sampler's own stream."""
        return (self.rng if rng is None else rng).integers(0, len(self), size=int(batch))

    def sample(self, batch: int) -> dict[str, np.ndarray]:
        """A batch of `batch` windows drawn uniformly over all valid windows."""
        return self.read(self.sample_indices(batch))


def split_episodes(dataset: Dataset | str | os.PathLike, holdout_per_task: int | float = 1,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train / held-out split of the episodes, made per task.

    `holdout_per_task` is a count (int >= 0) or a fraction (float in (0, 1); rounded half up,
    at least 1) of each task's episodes to hold out. A task never loses all its episodes to the held-out
    side: with n episodes at most n - 1 are held out. The choice depends only on `seed` and the
    episodes' (task, index) identities, not on their order on disk.
    Returns (train episode ids, held-out episode ids), sorted int64 arrays of table rows.
    """
    data = _as_dataset(dataset)
    if isinstance(holdout_per_task, bool) or not (
            (isinstance(holdout_per_task, (int, np.integer)) and holdout_per_task >= 0)
            or (isinstance(holdout_per_task, float) and 0.0 < holdout_per_task < 1.0)):
        raise ValueError("holdout_per_task must be an integer >= 0 or a fraction in (0, 1), got "
                         f"{holdout_per_task!r}")
    table = data.episodes
    held_out = []
    for task_id in data.task_ids:
        rows = np.flatnonzero(table["task_id"] == task_id)
        rows = rows[np.argsort(table["index"][rows], kind="stable")]
        n = rows.size
        if isinstance(holdout_per_task, float):
            count = max(1, int(np.floor(holdout_per_task * n + 0.5)))
        else:
            count = int(holdout_per_task)
        count = min(count, n - 1)
        rng = np.random.default_rng([int(seed), int(task_id)])
        held_out.extend(rows[rng.permutation(n)[:count]].tolist())
    held_out = np.sort(np.asarray(held_out, np.int64))
    train = np.setdiff1d(np.arange(len(table), dtype=np.int64), held_out)
    return train, held_out
