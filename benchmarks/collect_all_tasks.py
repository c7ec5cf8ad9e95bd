"""Collect episodes of every one of the 30 tasks and print per-task frames/s and returns.

    python -m benchmarks.collect_all_tasks                      # one 64x64 episode per task
    python -m benchmarks.collect_all_tasks --episodes 4 --out data/all64

Runs in this process, one task after the other, so frames/s is this process's rate for that
task (physics, rendering and policy); frames per CPU-second (all threads of the process, Mesa's
rasteriser included) is also printed, because it does not depend on what else the machine runs.
Episodes are the collector's own (same seeds, policies and dataset layout as `python -m
shared.data.collect --workers 1`) and are written to a dataset, checked at the end. One markdown
table row per task.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.data.policies import POLICY_MODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collect_all_tasks",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels (default 64)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes per task (default 1)")
    parser.add_argument("--policy", default="mixed", choices=POLICY_MODES,
                        help="the collector's behaviour policy, as `python -m shared.data.collect --policy` "
                             "(default mixed)")
    parser.add_argument("--seed", type=int, default=0, help="collector base seed (default 0)")
    parser.add_argument("--tasks", default="all", help="'all' (default) or comma-separated task names")
    parser.add_argument("--out", default=None, help="keep the dataset in this directory (default: a temporary one)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    from shared.data.check import find_problems
    from shared.data.collect import CollectConfig, record_episode
    from shared.data.format import DatasetWriter, open_dataset
    from shared.data.render import configure_gl
    from shared.data.tasks import make_env, resolve_tasks

    backend = configure_gl()
    config = CollectConfig(size=args.size, policy=args.policy, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "all_tasks"
        print(f"# {args.episodes} episode(s) of {config.episode_steps} steps per task at "
              f"{args.size}x{args.size}, policy {args.policy}, MUJOCO_GL={backend}, one process")
        print("| task | build s | frames/s | frames/cpu-s | mean return | min return | max return | policies |")
        print("|---|---|---|---|---|---|---|---|")
        rates = []
        with DatasetWriter(out, args.size, args.size, config.source()) as writer:
            for task in resolve_tasks(args.tasks):
                start = time.perf_counter()
                env = make_env(task, seed=0, size=args.size, **config.render_options)
                build = time.perf_counter() - start
                returns, kinds, frames, seconds, cpu_seconds = [], [], 0, 0.0, 0.0
                for index in range(args.episodes):
                    start, cpu_start = time.perf_counter(), time.process_time()
                    record = record_episode(env, task, index, config)
                    seconds += time.perf_counter() - start
                    cpu_seconds += time.process_time() - cpu_start
                    frames += len(record["frames"])
                    returns.append(float(record["rewards"].sum()))
                    kinds.append(record["policy"])
                    if not writer.has_episode(task, index):
                        writer.append(task, index, record["seed"], record["policy"],
                                      record["policy_params"], record["frames"],
                                      record["actions"], record["rewards"])
                env.close()
                rates.append(frames / seconds)
                print(f"| {task} | {build:.2f} | {frames / seconds:.0f} | {frames / cpu_seconds:.0f} | "
                      f"{np.mean(returns):.1f} | {min(returns):.1f} | {max(returns):.1f} | "
                      f"{', '.join(kinds)} |", flush=True)
        dataset = open_dataset(out)
        problems = find_problems(dataset)
        print(f"\n{len(rates)} tasks, median {np.median(rates):.0f} frames/s; dataset "
              f"{out}: {dataset.num_episodes} episodes, {dataset.num_frames} frames, "
              f"check: {'OK' if not problems else problems}")
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
