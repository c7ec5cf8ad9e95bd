"""Windows: never across episodes, aligned, uniform over valid windows, seeded; the split."""

import numpy as np
import pytest

from shared.data.format import DatasetError, open_dataset
from shared.data.tasks import TASK_IDS, action_mask
from shared.data.windows import WindowSampler, split_episodes

from .conftest import synthetic_actions, write_synthetic


def test_windows_enumerate_every_valid_window_once(synthetic):
    path, episodes = synthetic
    window = 6
    sampler = WindowSampler(path, window)
    expected = [(e, s) for e, (_, length) in enumerate(episodes) for s in range(length - window + 1)]
    assert len(sampler) == len(expected)  # the 5-frame episode has none
    assert [sampler.window_at(i) for i in range(len(sampler))] == expected
    with pytest.raises(IndexError):
        sampler.window_at(len(sampler))


def test_evenly_spaced_windows(synthetic):
    path, _ = synthetic
    sampler = WindowSampler(path, 6)
    last = len(sampler) - 1
    assert sampler.evenly_spaced(1).tolist() == [0]
    assert sampler.evenly_spaced(3).tolist() == [0, round(last / 2), last]
    # more than there are: every window once, in order
    assert sampler.evenly_spaced(len(sampler) + 5).tolist() == list(range(len(sampler)))


def test_window_contents_and_alignment(synthetic):
    path, episodes = synthetic
    sampler = WindowSampler(path, 7, seed=3)
    batch = sampler.read(np.arange(len(sampler)))
    B = len(sampler)
    assert batch["frames"].shape == (B, 7, 3, 8, 8) and batch["frames"].dtype == np.uint8
    assert batch["actions"].shape == batch["action_mask"].shape == (B, 7, 16)
    assert batch["rewards"].shape == (B, 7)
    for key in ("task_id", "episode", "start"):
        assert batch[key].shape == (B,) and batch[key].dtype == np.int64
    for b in range(B):
        e, start = batch["episode"][b], batch["start"][b]
        task = episodes[e][0]
        frames = batch["frames"][b]
        # one episode, consecutive frames: channel 0 is the episode, channel 1 the frame index
        assert (frames[:, 0] == e).all()
        assert frames[:, 1, 0, 0].tolist() == list(range(start, start + 7))
        # the action stored with frame t is the action that produced frame t
        assert np.array_equal(batch["actions"][b], synthetic_actions(task, e, start + 7)[start:])
        assert batch["task_id"][b] == TASK_IDS[task]
        mask = np.tile(action_mask(task), (7, 1))
        if start == 0:
            mask[0] = 0  # the first frame of an episode has no action
        assert np.array_equal(batch["action_mask"][b], mask)
        assert batch["rewards"][b, 0] == (0 if start == 0 else pytest.approx(start / 1000 + e))


def test_sampling_is_uniform_over_windows_and_seeded(synthetic):
    path, _ = synthetic
    sampler = WindowSampler(path, 10, seed=0)
    n = len(sampler)
    draws = 40000
    index_of = {sampler.window_at(i): i for i in range(n)}
    counts = np.zeros(n)
    for _ in range(draws // 1000):
        batch = sampler.sample(1000)
        for e, s in zip(batch["episode"].tolist(), batch["start"].tolist()):
            counts[index_of[(e, s)]] += 1
    expected = draws / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < n + 6 * np.sqrt(2 * n)  # chi-square with n-1 dof, far in its tail otherwise
    a, b = WindowSampler(path, 10, seed=5), WindowSampler(path, 10, seed=5)
    assert all(np.array_equal(a.sample(8)["start"], b.sample(8)["start"]) for _ in range(3))
    assert not np.array_equal(WindowSampler(path, 10, seed=6).sample(64)["start"],
                              WindowSampler(path, 10, seed=5).sample(64)["start"])


def test_episode_selection_and_errors(synthetic):
    path, episodes = synthetic
    sampler = WindowSampler(open_dataset(path), 4, episodes=[1, 3])
    assert set(sampler.read(np.arange(len(sampler)))["episode"].tolist()) == {1, 3}
    with pytest.raises(DatasetError, match="none of the 1 selected episodes has 6 frames"):
        WindowSampler(path, 6, episodes=[2])
    with pytest.raises(ValueError, match="episode ids must be in"):
        WindowSampler(path, 4, episodes=[99])
    with pytest.raises(ValueError, match="window must be a positive integer"):
        WindowSampler(path, 0)


def test_split_episodes(tmp_path):
    path = write_synthetic(tmp_path / "ds", [("walker-walk", 3)] * 5 + [("hopper-hop", 3)] * 4
                           + [("acrobot-swingup", 3)])
    ds = open_dataset(path)
    train, held = split_episodes(ds, holdout_per_task=1, seed=0)
    tasks = ds.episodes["task_id"]
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(10))
    # one held out per task, but never the only episode of a task
    assert sorted(tasks[held].tolist()) == sorted([TASK_IDS["walker-walk"], TASK_IDS["hopper-hop"]])
    again = split_episodes(path, holdout_per_task=1, seed=0)
    assert np.array_equal(again[1], held)
    assert any(not np.array_equal(split_episodes(ds, 1, seed=s)[1], held) for s in range(1, 6))
    _, half = split_episodes(ds, holdout_per_task=0.5, seed=0)
    assert len(half) == 3 + 2  # 2.5 rounds up to 3 for walker, 2 for hopper, 0 for acrobot
    assert len(split_episodes(ds, holdout_per_task=0)[1]) == 0
    with pytest.raises(ValueError, match="holdout_per_task"):
        split_episodes(ds, holdout_per_task=1.5)
