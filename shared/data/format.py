"""The dataset on disk: a directory of flat binary arrays plus one JSON file of metadata.

    DIR/meta.json      format name and version, resolution, alignment convention, tasks and
                       counts, how the data was made, and the episode table (one column per
                       field). Rewritten atomically after every appended episode: it is the
                       commit record, and rows beyond its `num_frames` do not exist.
    DIR/frames.u8      uint8   (N, 3, H, W)  frames, channel-first, row-major
    DIR/actions.f32    float32 (N, 16)       actions in [-1, 1], zero-padded past the task's size
    DIR/rewards.f32    float32 (N,)          rewards (sum over the action repeat)
    DIR/states.f32     float32 (N, 32)       optional: each frame's physical state, the task's
                                             dm_control observation flattened in its key order
                                             (positions, angles as cos/sin where they wrap,
                                             velocities, ...), zero-padded past the task's size;
                                             `tasks[name]` in meta.json names the dimensions

All little-endian, no headers, so each file can be memory-mapped and a window of consecutive
frames is one contiguous read of exactly its own bytes. N is the total number of frames; the
episodes are consecutive row ranges (the table's `start` and `length`).

Alignment (upstream's): row t of an episode holds frame t, the action that produced frame t
(the action taken at frame t - 1) and the reward of that transition. Row 0 of every episode has
no action: zeros, and `action_mask` is 0 there; its reward is 0.

Episode table columns: task_id (index into shared.data.tasks.TASK_NAMES), index (the episode's
number within its task, e.g. for resuming a collection), start, length, seed (-1 if unknown),
return (sum of rewards), policy (behaviour policy kind), policy_params (dict), and CRC-32s of
the episode's bytes in each array (frames_crc, actions_crc, rewards_crc, and states_crc when the
data set has states) for `check`. Data sets made before states were recorded have no states
array and no states_crc column; they load as before (`Dataset.states` is None).
"""

from __future__ import annotations

import fcntl
import json
import os
import zlib
from pathlib import Path
import numpy as np

from .tasks import ACTION_PAD, STATE_PAD, TASK_IDS, TASK_NAMES, action_masks, get_task

FORMAT_NAME = "dreamer4-dmc"
FORMAT_VERSION = 1
META_FILE = "meta.json"
LOCK_FILE = ".writer.lock"

ALIGNMENT = (
    "row t of an episode holds frame t, the action that produced frame t (taken at frame t-1) "
    "and the reward of that transition; row 0 of every episode has a zero action "
    "(action_mask 0) and reward 0")

# name -> (file, dtype); the row shape of frames depends on the resolution. Every data set has
# ARRAYS; OPTIONAL_ARRAYS are there when meta.json's "arrays" lists them.
ARRAYS = {
    "frames": ("frames.u8", np.dtype("|u1")),
    "actions": ("actions.f32", np.dtype("<f4")),
    "rewards": ("rewards.f32", np.dtype("<f4")),
}
OPTIONAL_ARRAYS = {
    "states": ("states.f32", np.dtype("<f4")),
}
ALL_ARRAYS = {**ARRAYS, **OPTIONAL_ARRAYS}

EPISODE_DTYPE = np.dtype([
    ("task_id", np.int64), ("index", np.int64), ("start", np.int64), ("length", np.int64),
    ("seed", np.int64), ("return", np.float64), ("policy", "U16"),
    ("frames_crc", np.uint32), ("actions_crc", np.uint32), ("rewards_crc", np.uint32),
])


class DatasetError(ValueError):
    """A dataset is missing, truncated, corrupt, of another format version, or being misused;
    the message names the file and what is wrong."""


def _row_shape(name: str, height: int, width: int) -> tuple[int, ...]:
    return {"frames": (3, height, width), "actions": (ACTION_PAD,), "rewards": (),
            "states": (STATE_PAD,)}[name]


def _row_bytes(name: str, height: int, width: int) -> int:
    return int(np.prod(_row_shape(name, height, width), dtype=np.int64)) * ALL_ARRAYS[name][1].itemsize


def _array_spec(name: str, height: int, width: int) -> dict:
    """meta.json's entry for array `name`."""
    file, dtype = ALL_ARRAYS[name]
    return {"file": file, "dtype": dtype.str, "row_shape": list(_row_shape(name, height, width))}


def array_names(meta: dict) -> tuple[str, ...]:
    """The arrays a data set holds: ARRAYS, then the optional ones its meta.json lists."""
    return tuple(ARRAYS) + tuple(name for name in OPTIONAL_ARRAYS if name in meta["arrays"])


def _table_dtype(names) -> np.dtype:
    """The episode table's array columns for a data set holding arrays `names`."""
    return np.dtype(EPISODE_DTYPE.descr + [(f"{name}_crc", np.uint32) for name in names
                                           if name in OPTIONAL_ARRAYS])


def _episode_columns(names) -> tuple[str, ...]:
    return _table_dtype(names).names + ("policy_params",)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_meta(path: Path, meta: dict) -> None:
    """Write meta.json so that readers see either the old or the new file, never a part:
    temporary file, fsync, rename, fsync of the directory."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(_dump_meta(meta))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _dump_meta(meta: dict) -> str:
    """Indented JSON, but each episode column on one line (the table can have 10^4 rows)."""
    episodes = meta.get("episodes")
    if episodes is None:
        return json.dumps(meta, indent=1) + "\n"
    head = json.dumps({k: v for k, v in meta.items() if k != "episodes"}, indent=1)
    columns = ",\n".join(f'  "{name}": {json.dumps(values)}' for name, values in episodes.items())
    return head[:-2] + ',\n "episodes": {\n' + columns + "\n }\n}\n"


def _new_meta(height: int, width: int, source: dict, states: bool) -> dict:
    names = tuple(ARRAYS) + (("states",) if states else ())
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "alignment": ALIGNMENT,
        "height": int(height),
        "width": int(width),
        "action_pad": ACTION_PAD,
        "arrays": {name: _array_spec(name, height, width) for name in names},
        "num_frames": 0,
        "num_episodes": 0,
        "tasks": {},
        "source": source,
        "episodes": {name: [] for name in _episode_columns(names)},
    }


def _require(cond: bool, path: Path, message: str) -> None:
    if not cond:
        raise DatasetError(f"{path}: {message}")


def read_meta(path: str | os.PathLike) -> dict:
    """Load and validate DIR/meta.json (not the arrays). Raises DatasetError."""
    path = Path(path)
    _require(path.is_dir(), path, "no such dataset directory")
    meta_path = path / META_FILE
    _require(meta_path.is_file(), meta_path,
             "missing: not a dataset directory")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{meta_path}: not valid JSON ({error}); the file is truncated or "
                           "corrupt") from error
    _require(isinstance(meta, dict) and meta.get("format") == FORMAT_NAME, meta_path,
             f"not a {FORMAT_NAME} dataset (format = {meta.get('format')!r})"
             if isinstance(meta, dict) else "not a JSON object")
    version = meta.get("format_version")
    _require(isinstance(version, int), meta_path, f"format_version must be an integer, got {version!r}")
    _require(version <= FORMAT_VERSION, meta_path,
             f"format version {version} is newer than this code reads ({FORMAT_VERSION}); update")
    _require(version == FORMAT_VERSION, meta_path,
             f"format version {version} is not supported (this code reads {FORMAT_VERSION})")
    for key, kind in [("height", int), ("width", int), ("action_pad", int), ("num_frames", int),
                      ("num_episodes", int), ("tasks", dict), ("episodes", dict), ("arrays", dict)]:
        _require(isinstance(meta.get(key), kind), meta_path,
                 f"field {key!r} is missing or not of type {kind.__name__}")
    _require(meta["action_pad"] == ACTION_PAD, meta_path,
             f"action_pad is {meta['action_pad']}, this code uses {ACTION_PAD}")
    unknown = sorted(set(meta["arrays"]) - set(ALL_ARRAYS))
    _require(not unknown, meta_path, f"unknown arrays {unknown} (this code reads {sorted(ALL_ARRAYS)})")
    names = array_names(meta)
    for name in names:
        spec = meta["arrays"].get(name, {})
        expected = _array_spec(name, meta["height"], meta["width"])
        _require(spec == expected, meta_path, f"arrays.{name} is {spec}, expected {expected}")
    for name, info in meta["tasks"].items():
        _require(name in TASK_IDS, meta_path, f"unknown task {name!r} in tasks")
        _require(info.get("task_id") == TASK_IDS[name], meta_path,
                 f"task {name!r} has id {info.get('task_id')}, the registry says {TASK_IDS[name]}")
        if "states" in names:
            state_names = info.get("state_names")
            _require(isinstance(state_names, list) and 0 < len(state_names) <= STATE_PAD
                     and info.get("state_dim") == len(state_names), meta_path,
                     f"task {name!r}: a data set with states needs state_dim and its {STATE_PAD} or "
                     f"fewer state_names, got {info.get('state_dim')!r} and {state_names!r}")
    columns = meta["episodes"]
    expected_columns = _episode_columns(names)
    _require(set(columns) == set(expected_columns), meta_path,
             f"episode table columns are {sorted(columns)}, expected {sorted(expected_columns)}")
    lengths = {name: len(values) for name, values in columns.items()}
    _require(set(lengths.values()) == {meta["num_episodes"]}, meta_path,
             f"episode table columns have lengths {lengths}, num_episodes is {meta['num_episodes']}")
    return meta


def _episode_table(meta: dict, meta_path: Path) -> np.ndarray:
    columns = meta["episodes"]
    dtype = _table_dtype(array_names(meta))
    table = np.zeros(meta["num_episodes"], dtype)
    try:
        for name in dtype.names:
            table[name] = columns[name]
    except (ValueError, TypeError, OverflowError) as error:
        raise DatasetError(f"{meta_path}: bad value in the episode table: {error}") from error
    lengths, starts = table["length"], table["start"]
    _require(bool(np.all(lengths >= 1)), meta_path, "an episode has length < 1")
    expected_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(table) else starts
    bad = np.flatnonzero(starts != expected_starts)
    _require(bad.size == 0, meta_path,
             f"episode {bad[0] if bad.size else ''} does not start where the previous one ends")
    _require(int(lengths.sum()) == meta["num_frames"], meta_path,
             f"episode lengths sum to {int(lengths.sum())}, num_frames is {meta['num_frames']}")
    _require(bool(np.all((table["task_id"] >= 0) & (table["task_id"] < len(TASK_NAMES)))),
             meta_path, "an episode has a task id outside the registry")
    keys = table["task_id"] * (1 << 32) + table["index"]
    _require(np.unique(keys).size == keys.size, meta_path, "two episodes share (task, index)")
    return table


class Dataset:
    """A dataset opened for reading. Arrays are read-only memory maps.

    Attributes:
      path, meta (the parsed meta.json), tasks (names present, canonical order), task_ids,
      height, width, num_frames, num_episodes,
      episodes: structured array (num_episodes,) with fields task_id, index, start, length,
        seed, return, policy, frames_crc, actions_crc, rewards_crc,
      frames (N, 3, H, W) uint8, actions (N, 16) float32, rewards (N,) float32,
      states (N, 32) float32 or None (data sets recorded without states; `state_names(task)`),
      arrays: the names of the arrays it holds (ARRAYS, plus "states" when it has them),
      uncommitted_bytes: per array, bytes past the committed rows (left by an interrupted
        collection; the next `collect` run into this directory removes them).

    Pickling a Dataset stores only its path (DataLoader workers reopen the maps themselves).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.episodes = _episode_table(self.meta, self.path / META_FILE)
        self.height, self.width = self.meta["height"], self.meta["width"]
        self.num_frames, self.num_episodes = self.meta["num_frames"], self.meta["num_episodes"]
        present = set(self.episodes["task_id"].tolist())
        self.task_ids = [i for i in range(len(TASK_NAMES)) if i in present]
        self.tasks = [TASK_NAMES[i] for i in self.task_ids]
        self.uncommitted_bytes = {}
        self.arrays = array_names(self.meta)
        self.states = None
        for name in self.arrays:
            setattr(self, name, self._map(name, *ALL_ARRAYS[name]))
        self._frame_episode = None

    def _map(self, name: str, file: str, dtype: np.dtype) -> np.ndarray:
        file_path = self.path / file
        shape = (self.num_frames,) + _row_shape(name, self.height, self.width)
        needed = self.num_frames * _row_bytes(name, self.height, self.width)
        _require(file_path.is_file(), file_path, "missing")
        size = file_path.stat().st_size
        _require(size >= needed, file_path,
                 f"truncated: {size} bytes, the {self.num_frames} committed rows need {needed}")
        self.uncommitted_bytes[name] = size - needed
        if self.num_frames == 0:
            return np.zeros(shape, dtype)
        return np.memmap(file_path, dtype=dtype, mode="r", shape=shape)

    # --- per-episode and per-frame views ---------------------------------------------------
    def episode_rows(self, episode: int) -> slice:
        start, length = int(self.episodes["start"][episode]), int(self.episodes["length"][episode])
        return slice(start, start + length)

    @property
    def frame_episode(self) -> np.ndarray:
        """(N,) int64: the episode of every row."""
        if self._frame_episode is None:
            self._frame_episode = np.repeat(np.arange(self.num_episodes), self.episodes["length"])
        return self._frame_episode

    @property
    def frame_task_id(self) -> np.ndarray:
        """(N,) int64: the task id of every row."""
        return self.episodes["task_id"][self.frame_episode]

    @property
    def has_action(self) -> np.ndarray:
        """(N,) bool: false on the first row of every episode."""
        flags = np.ones(self.num_frames, bool)
        flags[self.episodes["start"]] = False
        return flags

    def state_names(self, task: str | int) -> list[str]:
        """The names of task `task`'s state dimensions (its first len(...) columns of `states`),
        e.g. ['position[0]', 'position[1]', ...]. A DatasetError when the data set has no states
        or not that task."""
        name = TASK_NAMES[int(task)] if isinstance(task, (int, np.integer)) else str(task)
        if self.states is None:
            raise DatasetError(f"{self.path}: recorded without states (collected before they were "
                               "recorded, or imported); collect the data again to have them")
        if name not in self.meta["tasks"]:
            raise DatasetError(f"{self.path}: has no task {name!r} (it has {', '.join(self.tasks)})")
        return list(self.meta["tasks"][name]["state_names"])

    @staticmethod
    def action_mask(task_id: int) -> np.ndarray:
        """(16,) float32: 1 on the real action dimensions of task `task_id`."""
        return _ACTION_MASKS[int(task_id)].copy()

    def __getstate__(self):
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return (f"Dataset({str(self.path)!r}: {self.num_episodes} episodes, {self.num_frames} "
                f"frames at {self.height}x{self.width}, {len(self.tasks)} tasks)")


_ACTION_MASKS = action_masks()


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open the dataset in directory `path`. Raises DatasetError (naming the file and the
    problem) for a missing, truncated or corrupt meta.json or array file, or a format version
    this code does not read. Checksums are verified by `check`, not here."""
    return Dataset(path)


class DatasetWriter:
    """Appends episodes to a dataset directory, creating it if needed.

    Every `append` writes the episode's rows after the committed ones, flushes them to disk and
    then atomically replaces meta.json: a crash leaves the dataset as of the last finished
    episode (plus ignored bytes, which the next writer truncates). One writer per directory at
    a time (a lock file enforces it).

    Args:
      path: dataset directory.
      height, width: frame size; must match an existing dataset's.
      source: how the data is made (stored in meta.json under "source" when the directory is
        created; for an existing dataset the caller compares it with `meta["source"]`).
      states: whether a new data set records states (an existing one keeps what it has:
        `has_states` says which, and `append` then needs or refuses `states`).
    """

    def __init__(self, path: str | os.PathLike, height: int, width: int, source: dict,
                 states: bool = False):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / LOCK_FILE, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DatasetError(f"{self.path}: another process is writing this dataset") from None
        if (self.path / META_FILE).exists():
            self.meta = read_meta(self.path)
            _episode_table(self.meta, self.path / META_FILE)
            if (self.meta["height"], self.meta["width"]) != (height, width):
                self.close()
                raise DatasetError(
                    f"{self.path}: holds {self.meta['height']}x{self.meta['width']} frames, "
                    f"cannot append {height}x{width}")
        else:
            self.meta = _new_meta(height, width, source, states)
        self.height, self.width = height, width
        self.arrays = array_names(self.meta)
        self.has_states = "states" in self.arrays
        self._files = {}
        for name in self.arrays:
            file_path = self.path / ALL_ARRAYS[name][0]
            committed = self.meta["num_frames"] * _row_bytes(name, height, width)
            if not file_path.exists():
                if committed:
                    self.close()
                    raise DatasetError(f"{file_path}: missing, meta.json has {self.meta['num_frames']} rows")
                file_path.touch()
            size = file_path.stat().st_size
            if size < committed:
                self.close()
                raise DatasetError(f"{file_path}: truncated: {size} bytes, the committed rows "
                                   f"need {committed}")
            handle = open(file_path, "r+b")
            handle.truncate(committed)  # drop rows an interrupted writer never committed
            self._files[name] = handle
        self._keys = set(zip(self.meta["episodes"]["task_id"], self.meta["episodes"]["index"]))
        if not (self.path / META_FILE).exists():
            write_meta(self.path / META_FILE, self.meta)

    def has_episode(self, task: str, index: int) -> bool:
        return (TASK_IDS[task], int(index)) in self._keys

    def append(self, task: str, index: int, seed: int, policy: str, policy_params: dict,
               frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               states: np.ndarray | None = None, state_names: list[str] | None = None) -> None:
        """Append one episode. frames (L, 3, H, W) uint8; actions (L, 16) float32 in [-1, 1],
        zero past the task's action size and on row 0; rewards (L,) float32, 0 on row 0;
        states (L, 32) float32, finite, zero past len(state_names) (when `has_states`; the
        task's state_names must be the same in every episode)."""
        spec = get_task(task)
        where = f"{self.path}: episode {index} of {task}"
        if self.has_episode(task, index):
            raise DatasetError(f"{where} is already in the dataset")
        frames, actions, rewards = np.asarray(frames), np.asarray(actions), np.asarray(rewards)
        length = frames.shape[0] if frames.ndim else 0
        if frames.dtype != np.uint8 or frames.shape != (length, 3, self.height, self.width) or length < 1:
            raise DatasetError(f"{where}: frames must be uint8 (L, 3, {self.height}, {self.width}) "
                               f"with L >= 1, got {frames.dtype} {frames.shape}")
        if actions.dtype != np.float32 or actions.shape != (length, ACTION_PAD):
            raise DatasetError(f"{where}: actions must be float32 ({length}, {ACTION_PAD}), got "
                               f"{actions.dtype} {actions.shape}")
        if rewards.dtype != np.float32 or rewards.shape != (length,):
            raise DatasetError(f"{where}: rewards must be float32 ({length},), got "
                               f"{rewards.dtype} {rewards.shape}")
        if not (np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1.0)):
            raise DatasetError(f"{where}: actions must be finite and in [-1, 1]")
        if np.any(actions[:, spec.action_dim:] != 0) or np.any(actions[0] != 0):
            raise DatasetError(f"{where}: actions must be zero past dimension {spec.action_dim} "
                               "and on row 0 (frame 0 has no action)")
        if not np.all(np.isfinite(rewards)) or rewards[0] != 0:
            raise DatasetError(f"{where}: rewards must be finite and 0 on row 0")
        arrays = {"frames": frames, "actions": actions, "rewards": rewards}
        if self.has_states:
            arrays["states"] = self._checked_states(where, task, length, states, state_names)
        elif states is not None:
            raise DatasetError(f"{where}: this data set was created without states; append "
                               "without them (or collect into a new directory)")
        crcs = {}
        for name, array in arrays.items():
            data = np.ascontiguousarray(array, dtype=ALL_ARRAYS[name][1])
            crcs[name] = zlib.crc32(memoryview(data).cast("B"))
            handle = self._files[name]
            handle.seek(self.meta["num_frames"] * _row_bytes(name, self.height, self.width))
            handle.write(memoryview(data).cast("B"))
            handle.flush()
            os.fsync(handle.fileno())
        row = {"task_id": spec.task_id, "index": int(index), "start": self.meta["num_frames"],
               "length": int(length), "seed": int(seed), "return": float(rewards.sum(dtype=np.float64)),
               "policy": str(policy), "policy_params": policy_params,
               **{f"{name}_crc": crcs[name] for name in self.arrays}}
        for name, value in row.items():
            self.meta["episodes"][name].append(value)
        self.meta["num_frames"] += int(length)
        self.meta["num_episodes"] += 1
        info = self.meta["tasks"].setdefault(task, {"task_id": spec.task_id,
                                                     "action_dim": spec.action_dim,
                                                     "episodes": 0, "frames": 0})
        if self.has_states:
            info.setdefault("state_dim", len(state_names))
            info.setdefault("state_names", list(state_names))
        info["episodes"] += 1
        info["frames"] += int(length)
        self.meta["tasks"] = {name: self.meta["tasks"][name] for name in TASK_NAMES
                              if name in self.meta["tasks"]}
        write_meta(self.path / META_FILE, self.meta)
        self._keys.add((spec.task_id, int(index)))

    def _checked_states(self, where: str, task: str, length: int, states, state_names) -> np.ndarray:
        if states is None or state_names is None:
            raise DatasetError(f"{where}: this data set records states; pass states and state_names")
        states = np.asarray(states)
        names = [str(n) for n in state_names]
        dim = len(names)
        if not 0 < dim <= STATE_PAD:
            raise DatasetError(f"{where}: {dim} state names; a state has 1 to {STATE_PAD} dimensions")
        known = self.meta["tasks"].get(task, {}).get("state_names")
        if known is not None and known != names:
            raise DatasetError(f"{where}: state names {names} differ from the task's earlier "
                               f"episodes' {known}")
        if states.dtype != np.float32 or states.shape != (length, STATE_PAD):
            raise DatasetError(f"{where}: states must be float32 ({length}, {STATE_PAD}), got "
                               f"{states.dtype} {states.shape}")
        if not np.all(np.isfinite(states)) or np.any(states[:, dim:] != 0):
            raise DatasetError(f"{where}: states must be finite and zero past dimension {dim}")
        return states

    def close(self) -> None:
        for handle in getattr(self, "_files", {}).values():
            handle.close()
        self._files = {}
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def episode_crcs(dataset: Dataset, episode: int) -> dict[str, int]:
    """CRC-32 of episode `episode`'s bytes in each array (reads them all)."""
    rows = dataset.episode_rows(episode)
    return {name: zlib.crc32(memoryview(np.ascontiguousarray(getattr(dataset, name)[rows])).cast("B"))
            for name in dataset.arrays}
