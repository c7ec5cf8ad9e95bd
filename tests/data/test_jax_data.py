"""dreamer4_jax.data: batches per step, split over processes and devices, resumable by step."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dreamer4_jax.data import WindowBatches
from shared.data.windows import WindowSampler

ROOT = Path(__file__).resolve().parents[2]


def test_batches_are_a_function_of_the_step(synthetic):
    path, _ = synthetic
    batches = WindowBatches(path, window=4, global_batch_size=6, seed=3)
    first = [next(batches) for _ in range(4)]
    assert first[0]["frames"].shape == (6, 4, 3, 8, 8) and first[0]["frames"].dtype == np.uint8
    assert first[0]["task_id"].dtype == np.int32
    state = {**batches.state_dict(), "step": 2}
    resumed = WindowBatches(path, window=4, global_batch_size=6, seed=3, prefetch=0)
    resumed.load_state_dict(state)
    for expected in first[2:]:
        got = next(resumed)
        for key in expected:
            assert np.array_equal(np.asarray(got[key]), np.asarray(expected[key])), key
    restarted = WindowBatches(path, window=4, global_batch_size=6, seed=3, start_step=3)
    assert np.array_equal(np.asarray(next(restarted)["start"]), np.asarray(first[3]["start"]))
    reference = WindowSampler(path, 4).read(batches.global_indices(1))
    assert np.array_equal(np.asarray(first[1]["frames"]), reference["frames"])
    with pytest.raises(ValueError, match="seed=3"):
        WindowBatches(path, window=4, global_batch_size=6, seed=4).load_state_dict(state)
    batches.close()


def test_processes_read_disjoint_parts_of_the_global_batch(synthetic):
    path, _ = synthetic
    parts = [WindowBatches(path, window=4, global_batch_size=8, seed=0, output="per_device",
                           process_index=p, process_count=2, prefetch=0) for p in range(2)]
    local = [next(part) for part in parts]
    assert local[0]["frames"].shape[:2] == (1, 4)  # (local devices, per device)
    whole = WindowSampler(path, 4).read(parts[0].global_indices(0))
    for key in whole:
        joined = np.concatenate([local[0][key][0], local[1][key][0]])
        assert np.array_equal(joined, whole[key]), key
    with pytest.raises(ValueError, match="multiple of process_count"):
        WindowBatches(path, window=4, global_batch_size=7, process_index=0, process_count=2)


def test_global_arrays_are_sharded_over_local_devices(synthetic):
    path, _ = synthetic
    code = textwrap.dedent(f"""
        import numpy as np, jax
        from dreamer4_jax.data import WindowBatches
        assert jax.local_device_count() == 2
        batch = next(WindowBatches({str(path)!r}, window=4, global_batch_size=6, seed=0))
        frames = batch["frames"]
        assert frames.shape == (6, 4, 3, 8, 8), frames.shape
        shards = sorted(frames.addressable_shards, key=lambda s: s.index[0].start)
        assert [s.data.shape[0] for s in shards] == [3, 3]
        assert len({{s.device for s in shards}}) == 2
        per_device = next(WindowBatches({str(path)!r}, window=4, global_batch_size=6, seed=0,
                                        output="per_device"))
        assert per_device["frames"].shape == (2, 3, 4, 3, 8, 8)
        assert np.array_equal(np.asarray(frames).reshape(2, 3, 4, 3, 8, 8), per_device["frames"])
        print("ok")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
