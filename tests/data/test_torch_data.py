"""dreamer4_torch.data: the window Dataset, DataLoader workers, distributed shards, exact resume."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dreamer4_torch.data import DistributedWindowSampler, WindowDataset
from shared.data.windows import WindowSampler


def test_items_are_the_windows(synthetic):
    path, _ = synthetic
    dataset = WindowDataset(path, window=5)
    reference = WindowSampler(path, 5)
    assert len(dataset) == len(reference)
    for index in (0, 7, len(dataset) - 1):
        item, expected = dataset[index], reference.read([index])
        assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (5, 3, 8, 8)
        assert item["task_id"].dtype == torch.int64 and item["task_id"].ndim == 0
        for key, value in expected.items():
            assert np.array_equal(item[key].numpy(), value[0]), key


def test_pickled_dataset_is_small(synthetic):
    path, _ = synthetic
    dataset = WindowDataset(path, window=5)
    blob = pickle.dumps(dataset)
    assert len(blob) < 10_000  # the path and the window index, never the arrays
    assert np.array_equal(pickle.loads(blob)[3]["frames"], dataset[3]["frames"])


def test_ranks_get_disjoint_shards_each_epoch(synthetic):
    path, _ = synthetic
    dataset = WindowDataset(path, window=3)
    n = len(dataset)
    samplers = [DistributedWindowSampler(dataset, num_replicas=3, rank=r, seed=1) for r in range(3)]
    for epoch in (0, 1):
        shards = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        assert all(len(shard) == n // 3 for shard in shards)
        flat = sum(shards, [])
        assert len(set(flat)) == len(flat) and set(flat) <= set(range(n))
        if epoch == 0:
            first_epoch = shards
    assert shards != first_epoch  # a new permutation every epoch
    with pytest.raises(ValueError, match="rank 3 is not in"):
        DistributedWindowSampler(dataset, num_replicas=3, rank=3)


def _loader(dataset, sampler, num_workers):
    # Spawned workers receive the pickled dataset and open the memory maps themselves (spawn,
    # not fork: JAX may already run threads in this test process). Persistent workers still
    # take the sampler's indices afresh each epoch, and read ahead of what the loop consumes.
    return DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=num_workers,
                      drop_last=True, multiprocessing_context="spawn" if num_workers else None,
                      persistent_workers=num_workers > 0)


def test_resume_continues_at_exactly_the_next_batch(synthetic):
    path, _ = synthetic
    dataset = WindowDataset(path, window=4)
    sampler = DistributedWindowSampler(dataset, num_replicas=2, rank=1, seed=7)
    seen, saved = [], None
    loader = _loader(dataset, sampler, num_workers=2)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            seen.append((epoch, batch["episode"].tolist(), batch["start"].tolist()))
            sampler.advance(len(batch["frames"]))
            if epoch == 0 and i == 2:
                saved = (len(seen), dict(sampler.state_dict()))
    assert saved is not None and len(seen) > saved[0] + 2

    # a new process would rebuild everything from the same arguments, then load the state
    resumed = DistributedWindowSampler(WindowDataset(path, window=4), num_replicas=2, rank=1, seed=7)
    resumed.load_state_dict(saved[1])
    replay = []
    loader = _loader(dataset, resumed, num_workers=0)
    for epoch in range(saved[1]["epoch"], 2):
        resumed.set_epoch(epoch)
        for batch in loader:
            replay.append((epoch, batch["episode"].tolist(), batch["start"].tolist()))
            resumed.advance(len(batch["frames"]))
    assert replay == seen[saved[0]:]

    other = DistributedWindowSampler(dataset, num_replicas=4, rank=1, seed=7)
    with pytest.raises(ValueError, match="num_replicas=2"):
        other.load_state_dict(saved[1])
