"""Returns of the collector's behaviour-policy families on some tasks, without rendering.

    python experiments/policy_returns.py --tasks cup-catch,finger-spin --episodes 10

For each task and each family (uniform, noise, oscillator, controller as `shared.data.policies`
draws them, plus `clean`: the task controller at gain 1 without noise) plays N full episodes
(500 agent steps, action repeat 2, rewards summed as the collector sums them; only the frames
are missing) and prints mean, std, min and max of the returns as a markdown table. Episode i of a
task starts from the collector's seed for (task, i) (`episode_seed`), so rewards equal those of
a collected episode with the same start and actions; the policies' own seeds are this script's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.data.collect import episode_seed  # noqa: E402
from shared.data.policies import CONTROLLERS, KINDS, ControllerPolicy, policy_of_kind  # noqa: E402
from shared.data.tasks import ACTION_REPEAT, EPISODE_STEPS, TASK_IDS, get_task, resolve_tasks  # noqa: E402


class _Physics:
    """What a policy reads of an environment: `.physics`."""

    def __init__(self, dm_env):
        self.physics = dm_env.physics


def play(dm_env, policy, seed: int, steps: int) -> float:
    spec = dm_env.action_spec()
    low, high = np.asarray(spec.minimum, np.float64), np.asarray(spec.maximum, np.float64)
    dm_env.task.random.seed(int(seed))
    dm_env.reset()
    holder, total = _Physics(dm_env), 0.0
    for t in range(steps):
        action = np.asarray(policy(holder, t), np.float64)
        scaled = low + (np.clip(action, -1, 1) + 1) * 0.5 * (high - low)
        reward = 0.0
        for _ in range(ACTION_REPEAT):
            reward += float(dm_env.step(scaled).reward)
        total += float(np.float32(reward))
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task and family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=EPISODE_STEPS)
    args = parser.parse_args(argv)
    from shared.data.env import build_dm_env

    print("| task | family | mean | std | min | max |\n|---|---|---|---|---|---|")
    for task in resolve_tasks(args.tasks):
        spec = get_task(task)
        dm_env = build_dm_env(spec, 0)
        agent_dt = spec.control_timestep * ACTION_REPEAT
        families = list(KINDS) + (["clean"] if task in CONTROLLERS else [])
        for f, family in enumerate(families):
            if family == "controller" and task not in CONTROLLERS:
                continue
            started, returns = time.perf_counter(), []
            for i in range(args.episodes):
                rng = np.random.default_rng(
                    np.random.SeedSequence([args.seed, TASK_IDS[task], i, 100 + f]))
                if family == "clean":
                    policy = ControllerPolicy(spec.action_dim, rng, CONTROLLERS[task], "clean")
                    policy.params.update(noise_scale=0.0, gain=1.0)
                else:
                    policy = policy_of_kind(family, task, spec.action_dim, agent_dt, rng)
                returns.append(play(dm_env, policy, episode_seed(args.seed, task, i), args.steps))
            r = np.array(returns)
            print(f"| {task} | {family} | {r.mean():.1f} | {r.std():.1f} | {r.min():.1f} | "
                  f"{r.max():.1f} |", flush=True)
            print(f"  ({family}: {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
