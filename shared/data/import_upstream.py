"""Convert upstream's data layout (nicklashansen/dreamer4) into this project's dataset format.

    python -m shared.data.import_upstream SRC DST [--frames DIR] [--tasks ...] [--size 128]

Upstream layout, per task (task names as in shared.data.tasks):
  SRC/<task>.pt         a torch-saved dict of tensors, one row per frame:
                          "episode" (N,) episode id of the row (an episode's rows are consecutive)
                          "action"  (N, A) action that produced the row's frame (NaN or
                                    anything on an episode's first row); A = the task's action
                                    size or 16 (padded)
                          "reward"  (N,) or (N, 1) reward of that transition (NaN or anything
                                    on an episode's first row)
  frames, either
  FRAMES/<task>/*shard*.pt   torch-saved {"frames": (n, 3, H, W) uint8}, in name order, 2048
                             frames each (upstream's preprocessed 128x128 shards), or
  FRAMES/<task>-<i>.png      i = 0, 1, ...: RGB strips 224 pixels high holding 224x224 frames
                             left to right (upstream's raw renders).
FRAMES defaults to SRC. Frames are resized to --size only when their size differs, with
upstream's own resize (bilinear, half-pixel centres, no anti-aliasing, truncated to uint8):
strips at 224 become exactly the frames of upstream's 128x128 shards.

Rows are matched to frames by position. If a task has fewer frames than rows (or more), the
longer side is cut and a warning printed, as upstream's loader does silently. Re-running skips
episodes already in DST.

Reading .pt files needs PyTorch (an optional dependency of the data layer: shared/ itself never
imports torch); a clear error says so when it is missing. Only tensors are unpickled
(torch.load(weights_only=True)) unless --trust-pickle is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from .format import DatasetError, DatasetWriter, open_dataset
from .tasks import ACTION_PAD, TASK_NAMES, get_task, resolve_tasks

STRIP_FRAME_SIZE = 224
UPSTREAM_SIZE = 128
ACTION_TOLERANCE = 1e-4  # actions this far outside [-1, 1] are clipped; further is an error


class UpstreamError(DatasetError):
    """The upstream files are missing, malformed, or need a dependency that is not installed."""


def load_pt(path: Path, allow_pickle: bool = False) -> dict:
    """A torch-saved dict, with every tensor converted to a numpy array."""
    try:
        import torch
    except ImportError:
        raise UpstreamError(
            f"{path}: reading upstream .pt files needs PyTorch, which is not installed "
            "(pip install torch; the CPU build is enough)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:
        hint = "" if allow_pickle else (" (only tensors and plain values are read from upstream files; if this "
                                        "file is one you trust and it holds other objects, retry with --trust-pickle)")
        raise UpstreamError(f"{path}: cannot be loaded: {error}{hint}") from error
    if not isinstance(obj, dict):
        raise UpstreamError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {key: value.numpy() if isinstance(value, torch.Tensor) else value
            for key, value in obj.items()}


def resize_like_upstream(frames: np.ndarray, size: int) -> np.ndarray:
    """(n, 3, h, w) uint8 -> (n, 3, size, size) uint8 exactly as upstream: values / 255,
    bilinear interpolation with half-pixel centres and no anti-aliasing (torch's
    F.interpolate(mode="bilinear", align_corners=False)), clamp to [0, 1], * 255, truncate.

    Float32 throughout, in torch's CPU kernel's order: along the width first, then the height,
    each as the fused multiply-add fma(x0, w0, x1 * w1) (emulated in float64, exact for these
    products); this reproduces torch's multi-threaded output bit for bit (on one thread torch's kernel
    rounds a few values differently, by one level)."""
    x = frames.astype(np.float32) / np.float32(255.0)
    for axis in (3, 2):
        n_in = x.shape[axis]
        scale = np.float32(n_in / size)
        source = np.maximum((np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale
                            - np.float32(0.5), np.float32(0.0))
        low = np.minimum(source.astype(np.int64), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        w1 = (source - low).astype(np.float32)
        w0 = np.float32(1.0) - w1
        shape = [1, 1, 1, 1]
        shape[axis] = size
        x0 = np.take(x, low, axis=axis).astype(np.float64)
        x1w1 = (np.take(x, high, axis=axis) * w1.reshape(shape)).astype(np.float64)
        x = (x0 * w0.reshape(shape) + x1w1).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def _shard_paths(frames_dir: Path, task: str) -> list[Path]:
    folder = frames_dir / task
    return sorted(folder.glob("*shard*.pt")) if folder.is_dir() else []


def _strip_paths(frames_dir: Path, task: str) -> list[Path]:
    paths, i = [], 0
    while (frames_dir / f"{task}-{i}.png").is_file():
        paths.append(frames_dir / f"{task}-{i}.png")
        i += 1
    return paths


def _frame_chunks(frames_dir: Path, task: str, allow_pickle: bool) -> tuple[str, Iterator[np.ndarray]]:
    """("shards" | "strips", iterator of (n, 3, h, w) uint8 chunks in row order)."""
    shards = _shard_paths(frames_dir, task)
    if shards:
        def read_shards():
            for path in shards:
                frames = load_pt(path, allow_pickle).get("frames")
                if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8
                        and frames.ndim == 4 and frames.shape[1] == 3):
                    raise UpstreamError(f"{path}: 'frames' must be uint8 (n, 3, H, W), got "
                                        f"{getattr(frames, 'dtype', type(frames))} "
                                        f"{getattr(frames, 'shape', '')}")
                yield frames
        return "shards", read_shards()
    strips = _strip_paths(frames_dir, task)
    if strips:
        def read_strips():
            from PIL import Image

            for path in strips:
                try:
                    with Image.open(path) as image:
                        pixels = np.asarray(image.convert("RGB"))
                except Exception as error:
                    raise UpstreamError(f"{path}: cannot read the PNG: {error}") from error
                h, w, _ = pixels.shape
                if h != STRIP_FRAME_SIZE or w % STRIP_FRAME_SIZE or w == 0:
                    raise UpstreamError(f"{path}: a strip must be {STRIP_FRAME_SIZE} high and a "
                                        f"multiple of {STRIP_FRAME_SIZE} wide, got {h}x{w}")
                n = w // STRIP_FRAME_SIZE
                yield np.ascontiguousarray(
                    pixels.reshape(h, n, STRIP_FRAME_SIZE, 3).transpose(1, 3, 0, 2))
        return "strips", read_strips()
    raise UpstreamError(f"no frames for task {task!r}: looked for {frames_dir / task}/*shard*.pt "
                        f"and {frames_dir / (task + '-0.png')}")


class _FrameStream:
    """The frames of one task in row order, read forward from a chunk iterator."""

    def __init__(self, chunks: Iterator[np.ndarray], size: int):
        self.chunks, self.size = chunks, size
        self.buffer = np.zeros((0, 3, size, size), np.uint8)
        self.first = 0  # row of buffer[0]
        self.exhausted = False

    def _pull(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            self.exhausted = True
            return False
        if chunk.shape[2:] != (self.size, self.size):
            chunk = resize_like_upstream(chunk, self.size)
        self.buffer = np.concatenate([self.buffer, chunk]) if len(self.buffer) else chunk
        return True

    def take(self, start: int, length: int) -> np.ndarray:
        """Rows [start, start + length), or fewer if the frames end first."""
        drop = min(start - self.first, len(self.buffer))
        self.buffer, self.first = self.buffer[drop:], self.first + drop
        while self.first + len(self.buffer) < start + length and self._pull():
            pass
        return self.buffer[start - self.first:start - self.first + length]

    def has_more_after(self, end: int) -> bool:
        return self.first + len(self.buffer) > end or (not self.exhausted and self._pull())


def _episode_runs(episode_ids: np.ndarray, where: Path) -> list[tuple[int, int]]:
    """(start, length) of each run of equal episode ids; an id may not come back later."""
    if episode_ids.size == 0:
        return []
    boundaries = np.flatnonzero(np.diff(episode_ids) != 0) + 1
    starts = np.concatenate([[0], boundaries])
    lengths = np.diff(np.concatenate([starts, [episode_ids.size]]))
    run_ids = episode_ids[starts]
    if np.unique(run_ids).size != run_ids.size:
        raise UpstreamError(f"{where}: an episode id occurs in two separate runs of rows")
    return list(zip(starts.tolist(), lengths.tolist()))


def _read_raw(path: Path, task: str, allow_pickle: bool):
    raw = load_pt(path, allow_pickle)
    missing = [key for key in ("episode", "action", "reward") if key not in raw]
    if missing:
        raise UpstreamError(f"{path}: missing key(s) {missing}; found {sorted(raw)}")
    episode = np.asarray(raw["episode"]).astype(np.int64).reshape(-1)
    action = np.asarray(raw["action"], np.float32)
    reward = np.asarray(raw["reward"], np.float32)
    if reward.ndim == 2 and reward.shape[1] == 1:
        reward = reward[:, 0]
    if action.ndim == 1:
        action = action[:, None]
    dim = get_task(task).action_dim
    if (action.ndim != 2 or not dim <= action.shape[1] <= ACTION_PAD or reward.ndim != 1
            or not len(episode) == len(action) == len(reward)):
        raise UpstreamError(f"{path}: expected episode (N,), action (N, {dim}..{ACTION_PAD}) and "
                            f"reward (N,), got {episode.shape}, {action.shape}, {reward.shape}")
    return episode, action[:, :dim], reward


def import_task(task: str, src: Path, frames_dir: Path, writer: DatasetWriter,
                allow_pickle: bool = False, log=print) -> int:
    """Import one task's episodes into `writer` (frames resized to the writer's size if they
    differ); return how many episodes were added."""
    raw_path = src / f"{task}.pt"
    episode, action, reward = _read_raw(raw_path, task, allow_pickle)
    kind, chunks = _frame_chunks(frames_dir, task, allow_pickle)
    stream = _FrameStream(chunks, writer.height)
    dim = get_task(task).action_dim
    added = 0
    for index, (start, length) in enumerate(_episode_runs(episode, raw_path)):
        frames = stream.take(start, length)
        cut = len(frames) < length
        if cut:
            log(f"warning: {task}: the {kind} end at frame {start + len(frames)} but "
                f"{raw_path} has {len(episode)} rows; episode {index} is cut to {len(frames)} "
                "frames and the rows after it are ignored")
            length = len(frames)
            if length == 0:
                break
        if not writer.has_episode(task, index):
            actions = np.zeros((length, ACTION_PAD), np.float32)
            rewards = np.zeros(length, np.float32)
            actions[1:, :dim] = action[start + 1:start + length]
            rewards[1:] = reward[start + 1:start + length]
            bad = ~(np.all(np.isfinite(actions), axis=1) & np.isfinite(rewards))
            if bad.any():
                raise UpstreamError(f"{raw_path}: row {start + int(np.argmax(bad))} (inside episode "
                                    f"{index}, not its first row) has a NaN or infinite action or "
                                    "reward")
            if np.abs(actions).max() > 1 + ACTION_TOLERANCE:
                raise UpstreamError(f"{raw_path}: episode {index} has actions outside [-1, 1] "
                                    f"(max |a| = {np.abs(actions).max():.4f})")
            writer.append(task, index, seed=-1, policy="upstream", policy_params={},
                          frames=frames, actions=np.clip(actions, -1, 1), rewards=rewards)
            added += 1
        if cut:
            break
    else:
        if stream.has_more_after(len(episode)):
            log(f"warning: {task}: the {kind} hold more frames than the {len(episode)} rows of "
                f"{raw_path}; the extra frames are ignored")
    return added


def _frame_size(src: Path, frames_dir: Path, tasks: list[str], size: int | None,
                allow_pickle: bool) -> int:
    if size is not None:
        return size
    for task in tasks:
        shards = _shard_paths(frames_dir, task)
        if shards:
            return int(load_pt(shards[0], allow_pickle)["frames"].shape[-1])
    return UPSTREAM_SIZE


def import_upstream(src, dst, frames_dir=None, tasks=None, size: int | None = None,
                    allow_pickle: bool = False, log=print) -> int:
    """Convert the tasks found in `src` (or the given `tasks`) into the dataset `dst`.
    Returns the number of episodes added."""
    src = Path(src)
    frames_dir = Path(frames_dir) if frames_dir else src
    if not src.is_dir():
        raise UpstreamError(f"{src}: no such directory")
    if tasks is None:
        found = {p.stem for p in src.glob("*.pt")}
        unknown = sorted(found - set(TASK_NAMES))
        if unknown:
            log(f"warning: ignoring files for unknown tasks: {', '.join(unknown)}")
        names = [name for name in TASK_NAMES if name in found]
        if not names:
            raise UpstreamError(f"{src}: no <task>.pt files of any of the 30 tasks")
    else:
        names = resolve_tasks(tasks)
        missing = [name for name in names if not (src / f"{name}.pt").is_file()]
        if missing:
            raise UpstreamError(f"{src}: no raw file for task(s) {', '.join(missing)}")
    side = _frame_size(src, frames_dir, names, size, allow_pickle)
    source = {"kind": "import_upstream", "src": str(src.resolve()),
              "frames": str(frames_dir.resolve()), "size": side}
    added = 0
    created = not Path(dst).exists()
    try:
        with DatasetWriter(dst, side, side, source) as writer:
            if writer.meta["source"].get("kind") != "import_upstream":
                raise DatasetError(f"{dst}: holds data made by {writer.meta['source'].get('kind')!r}; "
                                   "import into another directory")
            from tqdm import tqdm

            for task in tqdm(names, desc="import", unit="task", disable=not sys.stderr.isatty()):
                added += import_task(task, src, frames_dir, writer, allow_pickle, log=log)
    except BaseException:
        if created and added == 0:        # leave no empty data set behind; finished tasks stay (resumable)
            shutil.rmtree(dst, ignore_errors=True)
        raise
    from .check import format_task_table

    log(f"imported {added} new episode(s)")
    log(format_task_table(open_dataset(dst)))
    return added


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.data.import_upstream",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="folder with upstream's <task>.pt files")
    parser.add_argument("dst", help="dataset directory to create or extend")
    parser.add_argument("--frames", default=None,
                        help="folder with <task>/*shard*.pt or <task>-<i>.png (default: SRC)")
    parser.add_argument("--tasks", default=None,
                        help="'all' or comma-separated task names (default: every task in SRC)")
    parser.add_argument("--size", type=int, default=None,
                        help="frame size to store (default: the shards' size, or 128 for strips)")
    parser.add_argument("--trust-pickle", "--allow-pickle", dest="trust_pickle", action="store_true",
                        help="fully unpickle .pt files: this runs whatever code a file carries, so only for "
                             "files you trust (default: tensors and plain values only)")
    args = parser.parse_args(argv)
    try:
        import_upstream(args.src, args.dst, args.frames, args.tasks, args.size, args.trust_pickle)
    except (DatasetError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
