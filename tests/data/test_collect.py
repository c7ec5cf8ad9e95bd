"""The collector end to end: collect -> check -> windows; alignment by replay; resume after a
kill equals an uninterrupted run; parallel workers equal one worker; the policies."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from shared.data import check
from shared.data.collect import CollectConfig, collect, main
from shared.data.format import DatasetError, open_dataset
from shared.data.policies import KINDS, make_policy
from shared.data.tasks import TASK_NAMES, get_task, make_env
from shared.data.windows import WindowSampler

from .conftest import COLLECT_STEPS, COLLECT_TASKS

ROOT = Path(__file__).resolve().parents[2]


def assert_same_dataset(a, b):
    a, b = open_dataset(a), open_dataset(b)
    assert np.array_equal(a.episodes, b.episodes)
    assert a.arrays == b.arrays
    for name in a.arrays:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_collect_check_and_windows(collected, capsys):
    ds = open_dataset(collected)
    assert ds.tasks == COLLECT_TASKS.split(",")
    assert ds.num_episodes == 4 and ds.num_frames == 4 * (COLLECT_STEPS + 1)
    assert ds.frames.shape[1:] == (3, 32, 32)
    assert ds.meta["source"]["episode_steps"] == COLLECT_STEPS
    assert check.main([str(collected)]) == 0
    out = capsys.readouterr().out
    assert "pendulum-swingup" in out and "walker-walk" in out and "OK" in out
    sampler = WindowSampler(ds, 8, seed=0)
    batch = sampler.sample(64)
    for b in range(64):
        e, start = batch["episode"][b], batch["start"][b]
        assert 0 <= start and start + 8 <= ds.episodes["length"][e]  # inside one episode
        rows = slice(ds.episodes["start"][e] + start, ds.episodes["start"][e] + start + 8)
        assert np.array_equal(batch["frames"][b], ds.frames[rows])
        assert np.array_equal(batch["actions"][b], ds.actions[rows])


def test_stored_action_produced_its_frame(collected):
    """Replaying each episode's stored actions from its seed reproduces its frames and rewards:
    the action on row t is the one that produced frame t, and row 0 has none."""
    ds = open_dataset(collected)
    for e in range(ds.num_episodes):
        row = ds.episodes[e]
        spec = get_task(TASK_NAMES[row["task_id"]])
        rows = ds.episode_rows(e)
        frames, actions, rewards = ds.frames[rows], ds.actions[rows], ds.rewards[rows]
        assert not actions[0].any() and rewards[0] == 0
        with make_env(spec.name, seed=0, size=32) as env:
            assert np.array_equal(env.reset(int(row["seed"])), frames[0])
            for t in range(1, len(frames)):
                frame, reward = env.step(actions[t, :spec.action_dim])
                assert np.array_equal(frame, frames[t]), (spec.name, e, t)
                assert np.float32(reward) == rewards[t]


def test_stored_states_are_the_tasks_observations(collected):
    """Row t's state is the dm_control observation after frame t's physics step, flattened in the
    observation's key order: replayed here on a plain suite environment (action repeat 2), not
    through the collector's TaskEnv."""
    from dm_control import suite

    ds = open_dataset(collected)
    assert ds.states is not None and ds.states.shape == (ds.num_frames, 32)
    assert ds.state_names("pendulum-swingup") == ["orientation[0]", "orientation[1]", "velocity[0]"]
    assert len(ds.state_names("walker-walk")) == 24
    flat = lambda obs: np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in obs.values()])
    for e in range(ds.num_episodes):
        row = ds.episodes[e]
        spec = get_task(TASK_NAMES[row["task_id"]])
        rows = ds.episode_rows(e)
        states, actions = ds.states[rows], ds.actions[rows]
        width = len(ds.state_names(spec.name))
        assert not states[:, width:].any()
        env = suite.load(spec.domain, spec.task, task_kwargs={"random": int(row["seed"]),
                                                              "time_limit": float("inf")})
        np.testing.assert_array_equal(states[0, :width], flat(env.reset().observation))
        for t in range(1, len(states)):
            for _ in range(2):
                step = env.step(actions[t, :spec.action_dim].astype(np.float64))
            np.testing.assert_array_equal(states[t, :width], flat(step.observation), err_msg=f"{e} {t}")


def test_extending_a_data_set_without_states_adds_none(collected, tmp_path, capsys):
    """A data set collected before states were recorded is extended without them (and says so)."""
    old = tmp_path / "old"
    from shared.data.format import DatasetWriter
    with DatasetWriter(old, 32, 32, CollectConfig(size=32, episode_steps=COLLECT_STEPS).source()):
        pass
    args = ["--tasks", "walker-walk", "--size", "32", "--out", str(old), "--workers", "1",
            "--episode-steps", str(COLLECT_STEPS), "--quiet", "--episodes", "1"]
    assert main(args) == 0
    assert "collected before states were recorded" in capsys.readouterr().out
    ds = open_dataset(old)
    assert ds.states is None and ds.num_episodes == 1 and check.main([str(old)]) == 0


def test_corrupt_collected_file_gives_a_clear_error(collected, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(collected, copy)
    with open(copy / "rewards.f32", "r+b") as f:
        f.truncate(10)
    with pytest.raises(DatasetError, match=r"rewards\.f32: truncated: 10 bytes"):
        open_dataset(copy)
    assert check.main([str(copy)]) == 1
    assert "rewards.f32: truncated" in capsys.readouterr().err


def test_rerun_skips_and_extends_and_refuses_other_options(collected, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(collected, copy)
    args = ["--tasks", COLLECT_TASKS, "--size", "32", "--out", str(copy), "--workers", "1",
            "--episode-steps", str(COLLECT_STEPS), "--quiet"]
    assert main(args + ["--episodes", "2"]) == 0
    assert "4 already there, 0 to record" in capsys.readouterr().out
    assert_same_dataset(collected, copy)
    assert main(args + ["--episodes", "2", "--policy", "noise"]) == 2
    assert "was collected with policy='mixed', this run asks for policy='noise'" in capsys.readouterr().err
    assert main(args + ["--episodes", "3", "--tasks", "walker-walk"]) == 0
    extended, original = open_dataset(copy), open_dataset(collected)
    assert extended.num_episodes == 5
    assert np.array_equal(extended.episodes[:4], original.episodes)
    assert extended.episodes[4]["index"] == 2
    assert main(["--tasks", "walker-wlak", "--episodes", "1", "--out", str(copy)]) == 2
    assert "did you mean walker-walk" in capsys.readouterr().err


def test_killed_collection_resumes_to_the_uninterrupted_result(tmp_path):
    episodes = 6  # the kill must land after the first commit and before the last
    args = ["--tasks", "cartpole-swingup", "--episodes", str(episodes), "--size", "32",
            "--workers", "1", "--episode-steps", "120", "--seed", "3", "--quiet"]
    reference = tmp_path / "reference"
    assert main(args + ["--out", str(reference)]) == 0

    interrupted = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "shared.data.collect", *args, "--out",
                                str(interrupted)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed, deadline = 0, time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            committed = json.loads((interrupted / "meta.json").read_text())["num_episodes"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            committed = 0
        if committed >= 1:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the collection finished before it could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 1 <= open_dataset(interrupted).num_episodes < episodes
    assert main(args + ["--out", str(interrupted)]) == 0
    assert_same_dataset(reference, interrupted)


def test_parallel_workers_give_the_same_dataset(collected, tmp_path):
    parallel = tmp_path / "parallel"
    collect(COLLECT_TASKS, 2, parallel, CollectConfig(size=32, episode_steps=COLLECT_STEPS),
            workers=2, progress=False, log=lambda *_: None)
    assert_same_dataset(collected, parallel)


@pytest.mark.parametrize("mode", ["random", "noise", "mixed", "controller-heavy"])
def test_policies_give_valid_diverse_actions(mode):
    kinds = set()
    with make_env("reacher-easy", seed=0, size=8, supersample=1) as env:
        env.reset(0)
        for episode in range(24):
            policy = make_policy(mode, "reacher-easy", 2, 0.04, np.random.default_rng(episode))
            kinds.add(policy.kind)
            actions = np.stack([policy(env, t) for t in range(50)])
            assert actions.shape == (50, 2) and actions.dtype == np.float32
            assert np.all(np.abs(actions) <= 1) and actions.std() > 0.01
    assert kinds == {"random": {"uniform"}, "noise": {"noise"}, "mixed": set(KINDS), "controller-heavy": set(KINDS)}[mode]


def test_swingup_controller_reaches_the_reward():
    """The pendulum controller (without noise) swings up and balances: most of the second half
    of an episode is rewarded, which random actions essentially never are."""
    from shared.data.policies import pendulum_swingup

    with make_env("pendulum-swingup", seed=0, size=8, supersample=1) as env:
        env.reset(0)
        rewards = [env.step(np.clip(pendulum_swingup(env.physics), -1, 1))[1] for _ in range(250)]
    assert np.mean(rewards[125:]) > 1.5  # of at most 2 per agent step


@pytest.mark.parametrize("task,controller,floor", [
    ("finger-spin", "finger_spin", 100.0),      # uniform random: about 1 per episode
    ("cheetah-run", "cheetah_run", 100.0),      # uniform random: about 9
    ("cup-catch", "cup_catch", 400.0),          # uniform random: 0
])
def test_the_agent_tasks_controllers_reach_the_reward(task, controller, floor):
    """Each new controller, without noise, earns in one whole episode (500 agent steps) several times
    what random actions earn (docs/experiments.md, 'Which tasks for the agent')."""
    import shared.data.policies as P

    act = getattr(P, controller)
    with make_env(task, seed=0, size=8, supersample=1) as env:
        env.reset(3)
        total = sum(env.step(np.clip(act(env.physics), -1, 1), render=False)[1] for _ in range(500))
    assert total > floor


def test_mixed_draws_only_its_first_controllers_and_controller_heavy_draws_them_all():
    """'mixed' keeps the draws of the data sets collected before the new controllers (cup-catch has
    none under it), 'controller-heavy' uses every controller and draws it most often."""
    from shared.data.policies import CONTROLLERS, MIXED_CONTROLLER_TASKS, policy_of_kind

    assert {"cup-catch", "finger-spin", "cheetah-run"} <= set(CONTROLLERS) - MIXED_CONTROLLER_TASKS
    mixed = {make_policy("mixed", "cup-catch", 2, 0.04, np.random.default_rng(i)).kind for i in range(200)}
    heavy = [make_policy("controller-heavy", "cup-catch", 2, 0.04, np.random.default_rng(i)).kind for i in range(200)]
    assert "controller" not in mixed
    assert 0.6 < heavy.count("controller") / 200 < 0.8
    with pytest.raises(ValueError, match="task 'walker-walk' has no controller"):
        policy_of_kind("controller", "walker-walk", 6, 0.05, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown policy kind 'expert'"):
        policy_of_kind("expert", "cup-catch", 2, 0.04, np.random.default_rng(0))
