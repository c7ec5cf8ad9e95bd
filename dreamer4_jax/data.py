"""JAX access to a dataset: batches of windows split over processes and devices, resumable by step.

    batches = WindowBatches("data/dmc64", window=17, global_batch_size=64, seed=0)
    for batch in batches:                  # batch["frames"]: jax.Array uint8 (64, 17, 3, H, W)
        state = train_step(state, batch)   # sharded over the "data" mesh axis
        if time_to_save: checkpoint["data"] = batches.state_dict()   # {"step": ...}

    # resuming: WindowBatches(..., start_step=checkpoint["data"]["step"]) (or load_state_dict)

Batch `s` is a pure function of (dataset, window, global batch size, seed, episodes, s): the
global batch's window indices are drawn uniformly (with replacement) from
numpy.random.default_rng([seed, s]), identically on every process; process p then reads only
rows [p * B_p, (p + 1) * B_p) of it, with B_p = global_batch_size / process_count. So a
restarted run continues with exactly the batch it would have seen, on any number of restarts.

Two output layouts (arrays and dtypes as in shared.data.windows):
  output="global" (default): every field is a jax.Array of global shape (B, ...), sharded
    along the batch axis over a 1-D mesh (axis name "data", default: all devices) with
    jax.make_array_from_process_local_data. Integer fields are int32 (JAX's default width).
  output="per_device": numpy arrays of shape (local devices, B_p / local devices, ...), for
    jax.pmap or a manual device_put; integer fields stay int64.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shared.data.format import Dataset as DiskDataset
from shared.data.windows import WindowSampler

OUTPUTS = ("global", "per_device")


class WindowBatches:
    """Iterator of training batches; see the module docstring.

    Args:
      data: dataset directory or an opened shared.data.format.Dataset.
      window: frames per window (T).
      global_batch_size: windows per step over all processes; divisible by
        process_count * local_device_count.
      seed: seed of the window draws.
      episodes: episode-table rows to draw from (default all).
      start_step: the step of the first batch (to resume).
      output: "global" or "per_device".
      mesh: a 1-D Mesh for output="global" (default: all devices, axis "data").
      process_index, process_count: default jax.process_index() / jax.process_count().
      prefetch: batches read ahead in a background thread (0: none).
    """

    def __init__(self, data: str | os.PathLike | DiskDataset, window: int, global_batch_size: int,
                 seed: int = 0, episodes=None, start_step: int = 0, output: str = "global",
                 mesh: Mesh | None = None, process_index: int | None = None,
                 process_count: int | None = None, prefetch: int = 2):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.windows = WindowSampler(data, window, seed=seed, episodes=episodes)
        self.seed = int(seed)
        self.global_batch_size = int(global_batch_size)
        self.process_index = jax.process_index() if process_index is None else int(process_index)
        self.process_count = jax.process_count() if process_count is None else int(process_count)
        self.output = output
        if output == "global":
            self.mesh = mesh if mesh is not None else Mesh(np.array(jax.devices()), ("data",))
            if len(self.mesh.axis_names) != 1:
                raise ValueError(f"mesh must be 1-D, got axes {self.mesh.axis_names}")
            self.sharding = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names[0]))
            self.local_devices = len([d for d in self.mesh.devices.flat
                                      if d.process_index == self.process_index])
        else:
            self.mesh = self.sharding = None
            self.local_devices = jax.local_device_count()
        per_process = self.global_batch_size // self.process_count
        if (self.global_batch_size % self.process_count
                or per_process % max(1, self.local_devices) or per_process == 0):
            raise ValueError(f"global_batch_size {self.global_batch_size} must be a positive "
                             f"multiple of process_count ({self.process_count}) x local devices "
                             f"({self.local_devices})")
        self.local_batch_size = per_process
        self.step = int(start_step)
        self.prefetch = int(prefetch)
        self._executor = ThreadPoolExecutor(max_workers=1) if self.prefetch > 0 else None
        self._pending: dict[int, object] = {}

    def global_indices(self, step: int) -> np.ndarray:
        """The window indices of the whole global batch of `step`."""
        rng = np.random.default_rng([self.seed, int(step)])
        return self.windows.sample_indices(self.global_batch_size, rng)

    def local_batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of batch `step`, numpy arrays with leading axis B_p."""
        first = self.process_index * self.local_batch_size
        return self.windows.read(self.global_indices(step)[first:first + self.local_batch_size])

    def _format(self, local: dict[str, np.ndarray]):
        if self.output == "per_device":
            n = max(1, self.local_devices)
            return {key: value.reshape((n, value.shape[0] // n) + value.shape[1:])
                    for key, value in local.items()}
        out = {}
        for key, value in local.items():
            if value.dtype == np.int64:
                value = value.astype(np.int32)
            out[key] = jax.make_array_from_process_local_data(self.sharding, value)
        return out

    def _local_batch_ahead(self, step: int) -> dict[str, np.ndarray]:
        if self._executor is None:
            return self.local_batch(step)
        for ahead in range(step, step + self.prefetch + 1):
            if ahead not in self._pending:
                self._pending[ahead] = self._executor.submit(self.local_batch, ahead)
        for old in [s for s in self._pending if s < step]:
            self._pending.pop(old).cancel()
        return self._pending.pop(step).result()

    def __iter__(self):
        return self

    def __next__(self):
        batch = self._format(self._local_batch_ahead(self.step))
        self.step += 1
        return batch

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "global_batch_size": self.global_batch_size,
                "num_windows": len(self.windows)}

    def load_state_dict(self, state: dict) -> None:
        current = {"seed": self.seed, "global_batch_size": self.global_batch_size,
                   "num_windows": len(self.windows)}
        for key, value in current.items():
            if state[key] != value:
                raise ValueError(f"cannot resume: the saved iterator had {key}={state[key]!r}, "
                                 f"this one has {value!r}")
        self.step = int(state["step"])
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
