"""Where the demo's start frames and held-out episodes come from.

`DatasetSource` adapts a data set written by the collector (`shared.data.format`): `.tasks` (names),
`.task_ids`, `.episodes` (structured: task_id, start, length), `.frames` uint8 (N, 3, H, W),
`.actions` float32 (N, 16) (row t produced frame t; row 0 of an episode is zeros) and
`Dataset.action_mask(task_id)`; held-out episodes come from `shared.data.windows.split_episodes`.
Any object with those attributes works (the tests use a small in-memory one).

`NoDataSource` serves the demo without a data set: the tasks of the registry (`shared.data.tasks`,
when present) for their action sizes, and a random start latent instead of a real frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .backend import StartupError

NO_TASK = "(all action dimensions)"


def task_registry() -> dict[str, int]:
    """Task name -> action_dim from shared.data.tasks, or {} where that module is absent."""
    try:
        from shared.data.tasks import TASKS
    except ImportError:
        return {}
    return {name: int(spec.action_dim) for name, spec in TASKS.items()}


@dataclass
class Clip:
    """Consecutive frames of one episode: frames uint8 (T, 3, H, W), actions float32 (T, 16)."""

    frames: np.ndarray
    actions: np.ndarray
    episode: int
    start: int
    task: str


class NoDataSource:
    has_data = False

    def __init__(self, action_dim: int):
        registry = task_registry()
        self.action_dims = registry or {NO_TASK: action_dim}
        self.tasks = list(self.action_dims)
        self.pad = action_dim

    def action_dim(self, task: str) -> int:
        return min(self.action_dims[task], self.pad)

    def action_mask(self, task: str) -> np.ndarray:
        mask = np.zeros(self.pad, np.float32)
        mask[:self.action_dim(task)] = 1.0
        return mask

    def describe(self) -> str:
        return "no data set: every reset starts from a random latent (pass --data DIR for real start frames)"


class DatasetSource:
    has_data = True

    def __init__(self, dataset, image_size: tuple[int, int], action_pad: int, heldout: Optional[np.ndarray] = None,
                 path: str = ""):
        self.dataset = dataset
        self.path = path
        self.pad = action_pad
        self.image_size = tuple(image_size)
        self.tasks = list(dataset.tasks)
        self._task_id = dict(zip(dataset.tasks, dataset.task_ids))
        registry = task_registry()
        table = dataset.episodes
        self._episodes = {t: np.flatnonzero(table["task_id"] == i) for t, i in self._task_id.items()}
        self._heldout = {}
        for t, eps in self._episodes.items():
            held = eps if heldout is None else np.intersect1d(eps, heldout)
            self._heldout[t] = held if held.size else eps
        self.action_dims = {}
        for t in self.tasks:
            mask = np.asarray(dataset.action_mask(self._task_id[t]), np.float32)
            self.action_dims[t] = int(registry.get(t, int(mask.sum())))
        h, w = dataset.frames.shape[2:]
        self.resize = (h, w) != self.image_size

    @classmethod
    def open(cls, path: str, image_size: tuple[int, int], action_pad: int) -> "DatasetSource":
        try:
            from shared.data.format import open_dataset
            from shared.data.windows import split_episodes
        except ImportError as e:
            raise StartupError(f"--data {path}: this checkout has no data layer (shared.data): {e}") from e
        try:
            dataset = open_dataset(path)
        except (OSError, ValueError) as e:
            raise StartupError(f"--data {path}: {e}") from e
        if not dataset.num_episodes:
            raise StartupError(f"--data {path}: the data set has no episodes")
        _, heldout = split_episodes(dataset)
        return cls(dataset, image_size, action_pad, heldout, path=str(path))

    def action_dim(self, task: str) -> int:
        return min(self.action_dims[task], self.pad)

    def action_mask(self, task: str) -> np.ndarray:
        mask = np.zeros(self.pad, np.float32)
        mask[:self.action_dim(task)] = 1.0
        return mask

    def episodes(self, task: str, heldout: bool = True) -> np.ndarray:
        return (self._heldout if heldout else self._episodes)[task]

    def clip(self, task: str, rng: np.random.Generator, length: int, heldout: bool = True,
             episode: Optional[int] = None, from_start: bool = True) -> Clip:
        """`length` consecutive frames of a (random) episode of `task` (fewer if the episode is shorter)."""
        if episode is None:
            episode = int(rng.choice(self.episodes(task, heldout)))
        table = self.dataset.episodes
        start, n = int(table["start"][episode]), int(table["length"][episode])
        length = min(length, n)
        offset = 0 if from_start else int(rng.integers(0, n - length + 1))
        rows = slice(start + offset, start + offset + length)
        frames = np.array(self.dataset.frames[rows])                    # a copy, not the read-only map
        actions = np.zeros((length, self.pad), np.float32)
        acts = np.asarray(self.dataset.actions[rows], np.float32)
        actions[:, :min(self.pad, acts.shape[1])] = acts[:, :self.pad]
        if self.resize:
            frames = resize_frames(frames, self.image_size)
        return Clip(frames, actions, episode, offset, task)

    @property
    def render_options(self) -> dict:
        """How the data set's frames were rendered (for the real environment beside the agent)."""
        source = self.dataset.meta.get("source", {}) if isinstance(self.dataset.meta, dict) else {}
        return {k: source[k] for k in ("supersample", "shadows", "reflections") if k in source}

    def describe(self) -> str:
        n = sum(len(v) for v in self._episodes.values())
        note = f"; frames resized from {self.dataset.frames.shape[2]}x{self.dataset.frames.shape[3]}" \
            if self.resize else ""
        return f"data set {self.path}: {n} episodes of {len(self.tasks)} task(s){note}"


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (T, 3, h, w) -> (T, 3, H, W) with area/bicubic resampling (PIL)."""
    from PIL import Image
    out = np.empty((frames.shape[0], frames.shape[1], *size), np.uint8)
    for t, f in enumerate(frames):
        img = Image.fromarray(np.ascontiguousarray(f.transpose(1, 2, 0)))
        out[t] = np.asarray(img.resize((size[1], size[0]), Image.BICUBIC)).transpose(2, 0, 1)
    return out
