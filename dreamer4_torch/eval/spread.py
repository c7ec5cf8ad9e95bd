"""How much a dynamics run's evaluation moves with the held-out windows and the sampling noise.

The trainer evaluates open-loop rollouts on a fixed set of held-out windows with one fixed draw of
starting noise, so that every evaluation of a run is comparable with the others. This script
re-runs exactly that evaluation (`DynamicsTask.evaluate`) on one checkpoint for several window
counts and several noise seeds and prints the gain over the repeat-last-frame floor at each horizon,
with the mean and standard deviation over the seeds for each window count:

    python -m dreamer4_torch.eval spread runs/quickstart/dynamics --sequences 48,96 --seeds 1234,1,2,3

`--sampling-steps K` evaluates with K shortcut steps per frame instead of the run's recorded K (the
trainer's default is 4); K = 1 gives the model's single-step mean prediction from pure noise.

Two ablations say what the gain is made of. `--actions shuffled` gives every window the recorded
actions of another held-out window of the same task (half that task's windows away), `--actions
zero` all-zero actions (no force), so the difference from `--actions recorded` (the default) is what
the model takes from the actions it is given. `--per-task` adds a row per task: the pooled gain is an
MSE average, and the task with the lowest floor PSNR (the most motion) weighs the most in it.
`--episodes train` evaluates on one *training* episode per task (the one with the lowest index in the
train split) instead of the held-out episodes: a model that scores far better there than on held-out
episodes has fitted its training episodes rather than the dynamics (one episode per side, so read it
per task and beside the floor and the tokenizer's bound, which differ between episodes).
`--data DIR --episodes all` evaluates on every episode of another data set, for example a test set
collected with another seed (`python -m shared.data.collect --tasks ... --episodes 4 --seed 7 --out
DIR`): runs trained on different data sets (other episode counts, other held-out draws) are then
compared on the same windows, which no model has trained on.
The last columns bound what any dynamics model can gain: "tokenizer gain" is the gain of the
tokenizer's reconstruction of the true future frames, which a model's decoded prediction cannot
beat by more than the decoder's luck.

Paths recorded in the run's options.json (data, tokenizer) are resolved against --root (default:
the current directory, where the training command ran). Nothing in the run directory is written.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from dreamer4_torch.eval.runs import checked_checkpoint, load_dynamics, load_tokenizer, recorded_options, run_parser
from shared.data.tasks import task_name


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: {flag} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise SystemExit(f"error: {flag} is empty")
    return values


ACTION_MODES = ("recorded", "shuffled", "zero")


def replace_actions(batch: dict, mode: str) -> dict:
    """The batch of windows (`WindowSampler.read`) with its actions replaced as `--actions` says; the
    action masks (the task's real dimensions) stay. "shuffled" rolls the windows of each task by half
    their number, so every window gets another window's actions of the same task."""
    if mode == "recorded":
        return batch
    out = dict(batch)
    if mode == "zero":
        out["actions"] = np.zeros_like(batch["actions"])
        return out
    if mode != "shuffled":
        raise ValueError(f"--actions must be one of {', '.join(ACTION_MODES)}, got {mode!r}")
    task_ids = np.asarray(batch["task_id"])
    order = np.arange(len(task_ids))
    for t in np.unique(task_ids):
        rows = np.flatnonzero(task_ids == t)
        if len(rows) < 2:
            raise SystemExit(f"error: --actions shuffled needs at least 2 held-out windows of every task; "
                             f"{task_name(int(t))} has {len(rows)} (raise --sequences)")
        order[rows] = np.roll(rows, len(rows) // 2)
    out["actions"] = batch["actions"][order]
    return out


def one_train_episode_per_task(dataset, train_episodes) -> np.ndarray:
    """Per task, the training episode (rows `train_episodes` of the episode table: the trainers' split)
    with the lowest index: rows of the episode table, sorted."""
    train = np.asarray(train_episodes, np.int64)
    table = dataset.episodes
    picked = []
    for t in np.unique(table["task_id"][train]):
        rows = train[table["task_id"][train] == t]
        picked.append(rows[np.argmin(table["index"][rows])])
    return np.sort(np.asarray(picked, np.int64))


class _ActionOverride:
    """Wraps the evaluation's WindowSampler so that its batches carry replaced actions."""

    def __init__(self, sampler, mode: str):
        self.sampler, self.mode = sampler, mode

    def read(self, indices):
        return replace_actions(self.sampler.read(indices), self.mode)


def build_parser():
    ap = run_parser("python -m dreamer4_torch.eval spread", __doc__)
    ap.add_argument("--sequences", default="48",
                    help="comma-separated numbers of held-out windows, one evaluation each (default 48)")
    ap.add_argument("--seeds", default="1234",
                    help="comma-separated seeds of the starting noise, one row each (default 1234, the trainer's)")
    ap.add_argument("--sampling-steps", type=int, default=None,
                    help="shortcut steps K per generated frame, in place of the run's recorded --eval-sampling-steps "
                         "(default: the recorded K)")
    ap.add_argument("--actions", choices=ACTION_MODES, default="recorded",
                    help="actions given to the rollouts: the recorded ones, another held-out window's of the "
                         "same task (shuffled), or all zero (default: recorded)")
    ap.add_argument("--per-task", action="store_true",
                    help="a row per task besides the pooled one (default: the pooled row only)")
    ap.add_argument("--episodes", choices=("heldout", "train", "all"), default="heldout",
                    help="evaluate on the held-out episodes (the trainer's evaluation), on one training "
                         "episode per task, or on every episode (with --data: a test set); default heldout")
    ap.add_argument("--data", type=Path, default=None,
                    help="data set to evaluate on in place of the run's recorded one (its own train / held-out "
                         "split applies; --episodes all takes every episode; default: the run's recorded data set)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sequences, seeds = _ints(args.sequences, "--sequences"), _ints(args.seeds, "--seeds")
    ckpt = checked_checkpoint(args)

    from dreamer4_torch.train import distributed as D
    from dreamer4_torch.train.dynamics import EVAL_HORIZONS, DynamicsTask
    from shared.data.format import DatasetError

    options = dataclasses.replace(recorded_options(args), out=str(args.run), cache_latents=False, workers=0,
                                  device="cpu")
    if args.data is not None:
        options = dataclasses.replace(options, data=str(args.data))
    data_name = "--data" if args.data is not None else f"the run's data set (resolved against --root {args.root})"
    if args.sampling_steps is not None:      # DynamicsTask checks it against the model's k_max
        options = dataclasses.replace(options, eval_sampling_steps=args.sampling_steps)
    load_tokenizer(args, options, config_only=True)      # DynamicsTask loads it; a clearer error first
    weights = load_dynamics(ckpt).state_dict()
    world = D.init("cpu")

    def build_task(n: int) -> DynamicsTask:
        try:
            task = DynamicsTask(dataclasses.replace(options, eval_sequences=n), world)
        except DatasetError as e:
            raise SystemExit(f"error: {data_name}: {e}") from None
        task.model.load_state_dict(weights)
        return task

    task = build_task(sequences[0])          # bad input stops here, before the table starts
    horizons = [h for h in EVAL_HORIZONS if h <= options.eval_horizon]
    head = (["task"] if args.per_task else []) + ["windows", "seed"] + [f"gain h{h}" for h in horizons] + \
        [f"floor h{h}" for h in horizons[:2]] + [f"copy-latent gain h{h}" for h in horizons[:2]] + \
        [f"tokenizer gain h{h}" for h in horizons[:2]]
    print(f"{args.run}, checkpoint {args.checkpoint}; K = {options.eval_sampling_steps}, context "
          f"{options.eval_context}, {args.actions} actions, {args.episodes} episodes of {options.data}; gains "
          "in dB over the repeat-last-frame floor\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for i, n in enumerate(sequences):
        if i:
            task = build_task(n)
        if args.episodes != "heldout":
            from shared.data.windows import WindowSampler
            dataset = task.eval_sampler.dataset
            episodes = (one_train_episode_per_task(dataset, task.train_eps) if args.episodes == "train"
                        else np.arange(len(dataset.episodes), dtype=np.int64))
            task.eval_sampler = WindowSampler(dataset, task.eval_sampler.window, episodes=episodes)
            task.eval_windows = task.eval_sampler.evenly_spaced(n)
        windows = task.eval_windows
        groups = [("all", windows)]
        if args.per_task:
            episodes, _ = task.eval_sampler.locate(windows)
            ids = task.eval_sampler.dataset.episodes["task_id"][episodes]
            groups += [(task_name(int(t)), windows[ids == t]) for t in np.unique(ids)]
        task.eval_sampler = _ActionOverride(task.eval_sampler, args.actions)
        for name, group in groups:
            task.eval_windows = group
            first = [name] if args.per_task else []
            gains = []
            for seed in seeds:
                task.eval_noise_seed = seed
                s, _, _ = task.evaluate(0, task.model)
                gains.append([s[f"gain_h{h}"] for h in horizons])
                cells = first + [str(len(group)), str(seed)] + [f"{s[f'gain_h{h}']:+.2f}" for h in horizons] + \
                    [f"{s[f'floor_h{h}']:.2f}" for h in horizons[:2]] + \
                    [f"{s[f'copy_latent_h{h}'] - s[f'floor_h{h}']:+.2f}" for h in horizons[:2]] + \
                    [f"{s[f'tokenizer_h{h}'] - s[f'floor_h{h}']:+.2f}" for h in horizons[:2]]
                print("| " + " | ".join(cells) + " |", flush=True)
            if len(seeds) > 1:
                g = np.asarray(gains)
                cells = first + [str(len(group)), "mean ± sd"] + \
                    [f"{m:+.2f} ± {sd:.2f}" for m, sd in zip(g.mean(0), g.std(0))]
                cells += [""] * (len(head) - len(cells))
                print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
