"""Record episodes of the 30 DMControl tasks into a dataset directory.

    python -m shared.data.collect --tasks walker-walk,cheetah-run --episodes 10 --size 64 --out data/dmc64
    python -m shared.data.collect --tasks all --episodes 240 --out data/dmc128 --workers 16

Each (task, episode index) pair is one job with its own seed, derived from --seed, so an episode
is the same whichever worker records it and whenever. Finished episodes are appended to the
dataset in job order (task order, then index) and committed one by one, so an interrupted run
resumes where it stopped when re-run with the same command, and gives the same dataset as an
uninterrupted run; asking for more episodes or tasks later appends only the missing ones.

Per-task return statistics are printed at the end (and by `python -m shared.data.check`).
Rendering is headless: MUJOCO_GL is kept if set, else EGL is used if it works, else OSMesa; if
neither works the error says what to install.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .format import DatasetError, DatasetWriter, open_dataset
from .policies import POLICY_MODES, make_policy
from .tasks import (ACTION_PAD, ACTION_REPEAT, DEFAULT_SIZE, EPISODE_STEPS, STATE_PAD, TASK_IDS,
                    get_task, resolve_tasks)


@dataclass(frozen=True)
class CollectConfig:
    """Everything that determines the content of an episode besides (task, index)."""

    size: int = DEFAULT_SIZE
    policy: str = "mixed"
    seed: int = 0
    episode_steps: int = EPISODE_STEPS
    supersample: int = 2
    shadows: bool = False
    reflections: bool = False

    def validate(self) -> None:
        if self.size < 1:
            raise ValueError(f"--size must be positive, got {self.size}")
        if self.policy not in POLICY_MODES:
            raise ValueError(f"--policy must be one of {', '.join(POLICY_MODES)}, got {self.policy!r}")
        if self.episode_steps < 1:
            raise ValueError(f"--episode-steps must be positive, got {self.episode_steps}")
        if self.supersample < 1:
            raise ValueError(f"--supersample must be positive, got {self.supersample}")

    def source(self) -> dict:
        return {"kind": "collect", **asdict(self), "action_repeat": ACTION_REPEAT}

    @property
    def render_options(self) -> dict:
        return dict(supersample=self.supersample, shadows=self.shadows, reflections=self.reflections)


def episode_seed(seed: int, task: str, index: int) -> int:
    """The environment seed of episode `index` of `task` (a 31-bit integer)."""
    state = np.random.SeedSequence([int(seed), TASK_IDS[task], int(index), 0]).generate_state(1)
    return int(state[0] >> 1)


def record_episode(env, task: str, index: int, config: CollectConfig) -> dict:
    """Play one episode in `env` (a TaskEnv of `task`) and return its arrays in dataset layout."""
    spec = get_task(task)
    seed = episode_seed(config.seed, task, index)
    policy_rng = np.random.default_rng(
        np.random.SeedSequence([int(config.seed), TASK_IDS[task], int(index), 1]))
    agent_dt = spec.control_timestep * ACTION_REPEAT
    policy = make_policy(config.policy, task, spec.action_dim, agent_dt, policy_rng)
    length = config.episode_steps + 1
    frames = np.empty((length, 3, config.size, config.size), np.uint8)
    actions = np.zeros((length, ACTION_PAD), np.float32)
    rewards = np.zeros(length, np.float32)
    states = np.zeros((length, STATE_PAD), np.float32)
    state_names = env.state_names
    frames[0] = env.reset(seed)
    states[0, :len(state_names)] = env.state()
    for t in range(1, length):
        action = policy(env, t - 1)
        frames[t], rewards[t] = env.step(action)
        states[t, :len(state_names)] = env.state()
        actions[t, :spec.action_dim] = action
    return {"task": task, "index": index, "seed": seed, "policy": policy.kind,
            "policy_params": policy.params, "frames": frames, "actions": actions,
            "rewards": rewards, "states": states, "state_names": state_names}


# --- workers ----------------------------------------------------------------------------------
_worker_config: CollectConfig | None = None
_worker_envs: "OrderedDict[str, object]" = OrderedDict()
_MAX_OPEN_ENVS = 3


def _init_worker(config: CollectConfig) -> None:
    global _worker_config
    _worker_config = config


def _env_for(task: str, config: CollectConfig):
    from .tasks import make_env

    if task in _worker_envs:
        _worker_envs.move_to_end(task)
        return _worker_envs[task]
    while len(_worker_envs) >= _MAX_OPEN_ENVS:
        _, old = _worker_envs.popitem(last=False)
        old.close()
    env = make_env(task, seed=0, size=config.size, **config.render_options)
    _worker_envs[task] = env
    return env


def _record_job(job: tuple[str, int]) -> dict:
    task, index = job
    start = time.perf_counter()
    record = record_episode(_env_for(task, _worker_config), task, index, _worker_config)
    record["seconds"] = time.perf_counter() - start
    return record


def _close_worker_envs() -> None:
    while _worker_envs:
        _worker_envs.popitem()[1].close()


# --- driver -----------------------------------------------------------------------------------
_CONTENT_FIELDS = ("policy", "seed", "episode_steps", "supersample", "shadows", "reflections")


def _check_same_source(path: Path, existing: dict, config: CollectConfig) -> None:
    if existing.get("kind") != "collect":
        raise DatasetError(f"{path}: was made by {existing.get('kind')!r}, not by collect; "
                           "collect into another directory")
    wanted = config.source()
    for field in _CONTENT_FIELDS:
        if existing.get(field) != wanted[field]:
            raise DatasetError(
                f"{path}: was collected with {field}={existing.get(field)!r}, this run asks for "
                f"{field}={wanted[field]!r}; use the same options to resume or extend it, or "
                "another --out")


def collect(tasks, episodes: int, out: str | os.PathLike, config: CollectConfig = CollectConfig(),
            workers: int = 1, progress: bool = True, log=print) -> dict:
    """Record `episodes` episodes of each task in `tasks` ("all", "a,b" or a list) into `out`,
    skipping episodes already there. Returns {"new_episodes", "new_frames", "seconds"}."""
    from .render import configure_gl

    config.validate()
    names = resolve_tasks(tasks)
    if episodes < 0:
        raise ValueError(f"--episodes must be >= 0, got {episodes}")
    backend = configure_gl()
    out = Path(out)
    with DatasetWriter(out, config.size, config.size, config.source(), states=True) as writer:
        _check_same_source(out, writer.meta["source"], config)
        if not writer.has_states:
            log(f"note: {out} was collected before states were recorded; its new episodes have "
                "no states either (collect into a new directory to have them)")
        jobs = [(task, i) for task in names for i in range(episodes)
                if not writer.has_episode(task, i)]
        done = len(names) * episodes - len(jobs)
        log(f"collect: {len(names)} task(s) x {episodes} episode(s) into {out} at "
            f"{config.size}x{config.size}, policy {config.policy}, seed {config.seed}, "
            f"MUJOCO_GL={backend}; {done} already there, {len(jobs)} to record")
        frames_per_episode = config.episode_steps + 1
        started = time.perf_counter()
        new_episodes = 0
        bar = None
        if progress and jobs:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs) * frames_per_episode, unit="frame", unit_scale=True,
                       desc="collect", dynamic_ncols=True)
        try:
            for record in _run_jobs(jobs, config, workers):
                states = ({"states": record["states"], "state_names": record["state_names"]}
                          if writer.has_states else {})
                writer.append(record["task"], record["index"], record["seed"], record["policy"],
                              record["policy_params"], record["frames"], record["actions"],
                              record["rewards"], **states)
                new_episodes += 1
                if bar is not None:
                    bar.update(frames_per_episode)
                    bar.set_postfix_str(f"{record['task']} #{record['index']} "
                                        f"return {float(record['rewards'].sum()):.1f}")
        except KeyboardInterrupt:
            log(f"\ninterrupted after {new_episodes} new episode(s); they are saved. Re-run the "
                "same command to resume.")
            raise
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
    new_frames = new_episodes * frames_per_episode
    if new_episodes:
        log(f"recorded {new_episodes} episode(s), {new_frames} frames in {seconds:.1f} s "
            f"({new_frames / max(seconds, 1e-9):.0f} frames/s with {workers} worker(s))")
    from .check import format_task_table

    log(format_task_table(open_dataset(out)))
    return {"new_episodes": new_episodes, "new_frames": new_frames, "seconds": seconds}


def _run_jobs(jobs, config: CollectConfig, workers: int):
    """Yield episode records in job order, recorded in this process or in `workers` processes."""
    if not jobs:
        return
    if workers <= 1:
        _init_worker(config)
        try:
            for job in jobs:
                yield _record_job(job)
        finally:
            _close_worker_envs()
        return
    # spawn, not fork: a forked child would inherit the parent's OpenGL and thread state.
    context = mp.get_context("spawn")
    with context.Pool(min(workers, len(jobs)), initializer=_init_worker,
                      initargs=(config,)) as pool:
        yield from pool.imap(_record_job, jobs)


def main(argv=None) -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    parser = argparse.ArgumentParser(prog="python -m shared.data.collect", description=__doc__,
                                     formatter_class=Formatter)
    parser.add_argument("--tasks", required=True, default=argparse.SUPPRESS,
                        help="'all' or comma-separated task names, e.g. walker-walk,cheetah-run")
    parser.add_argument("--episodes", type=int, required=True, default=argparse.SUPPRESS,
                        help="episodes per task (indices 0..N-1; those already in --out are skipped)")
    parser.add_argument("--out", required=True, default=argparse.SUPPRESS,
                        help="dataset directory (created if missing)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help="frame height and width in pixels")
    parser.add_argument("--policy", choices=POLICY_MODES, default="mixed",
                        help="behaviour: 'random' uniform actions, 'noise' temporally correlated "
                        "noise at random scales, 'mixed' a per-episode draw of uniform, noise, "
                        "oscillators and simple task controllers with noise (the controllers of "
                        "the first data sets only, so old seeds give the same episodes), "
                        "'controller-heavy' the same draw with 70%% controller episodes and every "
                        "controller (cup-catch, finger-spin, cheetah-run too): data whose returns "
                        "reach the reward, for behaviour cloning and agents")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes recording episodes in parallel (1: in this process; "
                        "default: the number of CPUs)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; episode seeds and policies derive from it")
    parser.add_argument("--episode-steps", type=int, default=EPISODE_STEPS,
                        help="agent steps per episode; the data set's definition is 500, change "
                        "it only for quick tests")
    parser.add_argument("--supersample", type=int, default=2,
                        help="render at size x this and average blocks (anti-aliasing); 1 is "
                        "fastest and aliased")
    parser.add_argument("--shadows", action="store_true",
                        help="render shadows (about 3x slower on a CPU)")
    parser.add_argument("--reflections", action="store_true", help="render floor reflections")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    config = CollectConfig(size=args.size, policy=args.policy, seed=args.seed,
                           episode_steps=args.episode_steps, supersample=args.supersample,
                           shadows=args.shadows, reflections=args.reflections)
    try:
        collect(args.tasks, args.episodes, args.out, config, workers=args.workers,
                progress=not args.quiet)
    except KeyboardInterrupt:
        return 130
    except (ValueError, KeyError, RuntimeError) as error:  # includes DatasetError, TaskBuildError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
