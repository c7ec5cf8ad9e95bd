"""Verify a dataset and print its counts and per-task statistics.

    python -m shared.data.check DIR [--quick]

Checks: meta.json parses and matches this format version; every array file exists and holds
the committed rows; the episode table is consistent; every episode's bytes match the CRC-32s
recorded when it was written (skipped with --quick); actions are finite, in [-1, 1], zero past
the task's action size and on each episode's first row; rewards are finite and 0 on first rows;
states (where recorded) are finite and zero past the task's state size.
Exit status 0 when the dataset is sound, 1 when a problem was found (each problem is printed).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .format import ALL_ARRAYS, Dataset, DatasetError, episode_crcs, open_dataset
from .tasks import TASK_NAMES, get_task


def format_task_table(dataset: Dataset) -> str:
    """Per-task episode and frame counts and return statistics (with a per-policy breakdown)."""
    table = dataset.episodes
    lines = [f"{dataset.path}: {dataset.num_episodes} episodes, {dataset.num_frames} frames, "
             f"{dataset.height}x{dataset.width}, {len(dataset.tasks)} task(s)",
             f"{'id':>2} {'task':<24} {'dim':>3} {'eps':>5} {'frames':>8} {'return mean':>11} "
             f"{'std':>7} {'min':>7} {'max':>7}  mean return by policy"]
    for task_id in dataset.task_ids:
        rows = table[table["task_id"] == task_id]
        returns = rows["return"]
        by_policy = ", ".join(
            f"{kind} {returns[rows['policy'] == kind].mean():.1f} ({int((rows['policy'] == kind).sum())})"
            for kind in sorted(set(rows["policy"].tolist())))
        name = TASK_NAMES[task_id]
        lines.append(f"{task_id:>2} {name:<24} {get_task(name).action_dim:>3} {len(rows):>5} "
                     f"{int(rows['length'].sum()):>8} {returns.mean():>11.1f} {returns.std():>7.1f} "
                     f"{returns.min():>7.1f} {returns.max():>7.1f}  {by_policy}")
    return "\n".join(lines)


def find_problems(dataset: Dataset, verify_checksums: bool = True, progress: bool = False) -> list[str]:
    """Every problem found in an opened dataset, as messages naming file and episode."""
    problems = []
    episodes = range(dataset.num_episodes)
    if progress:
        from tqdm import tqdm

        episodes = tqdm(episodes, desc="check", unit="episode")
    for e in episodes:
        row = dataset.episodes[e]
        task = TASK_NAMES[int(row["task_id"])]
        where = f"episode {e} ({task} #{int(row['index'])})"
        rows = dataset.episode_rows(e)
        if verify_checksums:
            crcs = episode_crcs(dataset, e)
            for name in dataset.arrays:
                if crcs[name] != int(row[f"{name}_crc"]):
                    problems.append(f"{dataset.path / ALL_ARRAYS[name][0]}: {where}: checksum mismatch "
                                    "(the bytes changed after they were written)")
        actions = np.asarray(dataset.actions[rows])
        rewards = np.asarray(dataset.rewards[rows])
        dim = get_task(task).action_dim
        if not np.all(np.isfinite(actions)) or np.any(np.abs(actions) > 1):
            problems.append(f"{where}: actions not finite or outside [-1, 1]")
        elif np.any(actions[:, dim:] != 0) or np.any(actions[0] != 0):
            problems.append(f"{where}: nonzero action past dimension {dim} or on the first row")
        if dataset.states is not None:
            states = np.asarray(dataset.states[rows])
            width = len(dataset.state_names(task))
            if not np.all(np.isfinite(states)) or np.any(states[:, width:] != 0):
                problems.append(f"{where}: states not finite or nonzero past dimension {width}")
        if not np.all(np.isfinite(rewards)) or rewards[0] != 0:
            problems.append(f"{where}: rewards not finite or nonzero on the first row")
        elif abs(float(rewards.sum(dtype=np.float64)) - float(row["return"])) > 1e-3 * max(
                1.0, abs(float(row["return"]))):
            problems.append(f"{where}: rewards sum to {rewards.sum():.3f}, the table says "
                            f"{float(row['return']):.3f}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.data.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="dataset directory")
    parser.add_argument("--quick", action="store_true",
                        help="skip the checksums (which read every byte of the dataset)")
    args = parser.parse_args(argv)
    try:
        dataset = open_dataset(args.path)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_task_table(dataset))
    sizes = {name: getattr(dataset, name).nbytes for name in dataset.arrays}
    print("states: " + ("recorded" if dataset.states is not None else
                        "none (collected before states were recorded, or imported)"))
    print("bytes: " + ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in sizes.items()))
    for name, extra in dataset.uncommitted_bytes.items():
        if extra:
            print(f"note: {dataset.path / ALL_ARRAYS[name][0]} has {extra} bytes past the committed rows "
                  "(left by an interrupted collection, ignored; the next collect run removes them)")
    problems = find_problems(dataset, verify_checksums=not args.quick, progress=sys.stderr.isatty())
    for problem in problems:
        print(f"problem: {problem}")
    print("OK" if not problems else f"{len(problems)} problem(s) found")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
