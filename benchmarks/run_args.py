"""Command-line arguments shared by the benchmarks that read a finished dynamics run."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch


def run_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the run directory, --checkpoint, --root and --threads."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="dynamics run directory (holds options.json and checkpoints/)")
    ap.add_argument("--checkpoint", default="latest", help="checkpoint under RUN/checkpoints")
    ap.add_argument("--root", type=Path, default=Path("."),
                    help="directory the run's recorded data and tokenizer paths are relative to")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return ap


def checked_checkpoint(args: argparse.Namespace) -> Path:
    """The checkpoint directory the arguments name (a clear error when there is none); sets the threads."""
    if not (args.run / "options.json").is_file():
        raise SystemExit(f"error: {args.run} is not a run directory (no options.json)")
    ckpt = args.run / "checkpoints" / args.checkpoint
    if not ckpt.exists():
        raise SystemExit(f"error: no checkpoint {ckpt}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return ckpt


def recorded_options(args: argparse.Namespace):
    """The run's recorded DynamicsOptions, with its data and tokenizer paths resolved against --root."""
    from shared.train_options import DynamicsOptions, options_from_json
    recorded = options_from_json(DynamicsOptions, args.run / "options.json")
    return dataclasses.replace(recorded, data=str(args.root / recorded.data),
                               tokenizer=str(args.root / recorded.tokenizer))


def add_window_args(ap: argparse.ArgumentParser, windows: int, windows_help: str, seed_help: str) -> None:
    """--windows, --context and --seed of the scripts that probe a run on evenly spaced windows."""
    ap.add_argument("--windows", type=int, default=windows, help=windows_help)
    ap.add_argument("--context", type=int, default=0, help="context frames (0: the run's --eval-context)")
    ap.add_argument("--seed", type=int, default=1234, help=seed_help)


@dataclasses.dataclass
class OpenedRun:
    options: object          # the run's DynamicsOptions (paths resolved against --root)
    tokenizer: torch.nn.Module
    model: torch.nn.Module   # the dynamics checkpoint
    chunk: int               # frames per tokenizer clip when encoding (train.common.tokenizer_clip_frames)
    dataset: object
    train_episodes: object
    heldout_episodes: object
    context: int             # --context, or the run's --eval-context


def open_run(ap: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, OpenedRun]:
    """Parse argv (a run_parser with add_window_args), check it, and load what the run recorded: its
    tokenizer, the dynamics checkpoint, the data set and its train / held-out split."""
    args = ap.parse_args(argv)
    if args.windows < 1 or args.context < 0:
        raise SystemExit("error: --windows must be >= 1 and --context >= 0")
    ckpt = checked_checkpoint(args)
    from dreamer4_torch.checkpoint import load_model
    from dreamer4_torch.train.common import tokenizer_clip_frames
    from shared.data.format import open_dataset
    from shared.data.windows import split_episodes

    options = recorded_options(args)
    tok_dir = Path(options.tokenizer)
    dataset = open_dataset(Path(options.data))
    train_eps, heldout_eps = split_episodes(dataset, holdout_per_task=options.holdout_per_task, seed=0)
    return args, OpenedRun(options=options, tokenizer=load_model(tok_dir, kind="tokenizer"),
                           model=load_model(ckpt, kind="dynamics"),
                           chunk=tokenizer_clip_frames(tok_dir) or options.frames, dataset=dataset,
                           train_episodes=train_eps, heldout_episodes=heldout_eps,
                           context=args.context or options.eval_context)
