"""Fixtures for the data-layer tests: a synthetic dataset whose every value says where it came
from, and one small dataset really collected from two tasks (session-wide, it takes seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.data.format import DatasetWriter
from shared.data.tasks import ACTION_PAD, get_task

SYNTHETIC_SIZE = 8


def synthetic_frames(episode: int, length: int, size: int = SYNTHETIC_SIZE) -> np.ndarray:
    """Frame t of episode e: channel 0 = e, channel 1 = t % 256, channel 2 = t // 256."""
    frames = np.empty((length, 3, size, size), np.uint8)
    t = np.arange(length)
    frames[:, 0] = episode
    frames[:, 1] = (t % 256)[:, None, None]
    frames[:, 2] = (t // 256)[:, None, None]
    return frames


def synthetic_actions(task: str, episode: int, length: int) -> np.ndarray:
    """Row t >= 1: every real dimension d holds (episode * 1000 + t) / 1e6 + d / 100."""
    dim = get_task(task).action_dim
    actions = np.zeros((length, ACTION_PAD), np.float32)
    t = np.arange(1, length)
    actions[1:, :dim] = ((episode * 1000 + t) / 1e6)[:, None] + np.arange(dim) / 100
    return actions


def synthetic_rewards(episode: int, length: int) -> np.ndarray:
    rewards = np.arange(length, dtype=np.float32) / 1000 + episode
    rewards[0] = 0
    return rewards


def write_synthetic(path, episodes: list[tuple[str, int]], size: int = SYNTHETIC_SIZE):
    """A dataset with the given (task, length) episodes, in order; episode e of the whole
    dataset has the values of synthetic_* with episode=e."""
    counters: dict[str, int] = {}
    with DatasetWriter(path, size, size, {"kind": "synthetic"}) as writer:
        for e, (task, length) in enumerate(episodes):
            index = counters.get(task, 0)
            counters[task] = index + 1
            writer.append(task, index, seed=e, policy="test", policy_params={"e": e},
                          frames=synthetic_frames(e, length, size),
                          actions=synthetic_actions(task, e, length),
                          rewards=synthetic_rewards(e, length))
    return path


@pytest.fixture
def synthetic(tmp_path):
    episodes = [("walker-walk", 30), ("pendulum-swingup", 12), ("walker-walk", 5),
                ("reacher-easy", 20), ("pendulum-swingup", 25)]
    return write_synthetic(tmp_path / "synthetic", episodes), episodes


COLLECT_TASKS = "pendulum-swingup,walker-walk"
COLLECT_STEPS = 20


@pytest.fixture(scope="session")
def collected(tmp_path_factory):
    """2 episodes of 2 tasks at 32x32, 20 agent steps each, recorded in this process."""
    from shared.data.collect import main

    path = tmp_path_factory.mktemp("collected") / "ds"
    status = main(["--tasks", COLLECT_TASKS, "--episodes", "2", "--size", "32", "--out", str(path),
                   "--workers", "1", "--episode-steps", str(COLLECT_STEPS), "--quiet"])
    assert status == 0
    return path
