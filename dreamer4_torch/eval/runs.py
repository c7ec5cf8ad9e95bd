"""Command-line arguments and loading shared by the evaluations that read a finished dynamics run."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch


def run_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A parser with the run directory, --checkpoint, --root and --threads."""
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="dynamics run directory (holds options.json and checkpoints/)")
    ap.add_argument("--checkpoint", default="latest",
                    help="checkpoint directory name under RUN/checkpoints (default: latest)")
    ap.add_argument("--root", type=Path, default=Path("."),
                    help="directory the run's recorded data and tokenizer paths are relative to (default: the "
                         "current directory, where the training command ran)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    return ap


def checked_checkpoint(args: argparse.Namespace) -> Path:
    """The checkpoint directory the arguments name (a clear error when there is none); sets the threads."""
    if not args.run.is_dir():
        raise SystemExit(f"error: no run directory {args.run}")
    if not (args.run / "options.json").is_file():
        raise SystemExit(f"error: {args.run} is not a run directory (no options.json)")
    ckpt = args.run / "checkpoints" / args.checkpoint
    if not ckpt.exists():
        raise SystemExit(f"error: no checkpoint {ckpt}")
    if args.threads < 0:
        raise SystemExit(f"error: --threads must be >= 0, got {args.threads}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return ckpt


def recorded_options(args: argparse.Namespace):
    """The run's recorded DynamicsOptions, with its data and tokenizer paths resolved against --root."""
    from shared.train_options import DynamicsOptions, options_from_json
    try:
        recorded = options_from_json(DynamicsOptions, args.run / "options.json")
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"error: {args.run / 'options.json'} is not a dynamics run's options: {e}") from None
    if not recorded.tokenizer or not recorded.data:
        raise SystemExit(f"error: {args.run} is not a dynamics run (its options.json names no tokenizer or data)")
    return dataclasses.replace(recorded, data=str(args.root / recorded.data),
                               tokenizer=str(args.root / recorded.tokenizer))


def load_dynamics(ckpt: Path):
    """The dynamics model of a checkpoint directory; a clear error when it is not one."""
    from dreamer4_torch.checkpoint import load_model
    from shared.io import CheckpointError
    try:
        return load_model(ckpt, kind="dynamics")
    except CheckpointError as e:
        raise SystemExit(f"error: checkpoint {ckpt}: {e}") from None


def load_tokenizer(args: argparse.Namespace, options, config_only: bool = False):
    """The run's tokenizer (or only its config: a cheap check that it is there); a clear error when the
    recorded path, resolved against --root, holds none."""
    from dreamer4_torch.checkpoint import load_model
    from shared.io import CheckpointError, read_config
    try:
        return read_config(options.tokenizer) if config_only else load_model(options.tokenizer, kind="tokenizer")
    except CheckpointError as e:
        raise SystemExit(f"error: the run's tokenizer (resolved against --root {args.root}): {e}") from None


def window_parser(prog: str, doc: str, windows: int, windows_help: str, seed_help: str) -> argparse.ArgumentParser:
    """A run_parser with --windows, --context and --seed: the evaluations that probe a run on evenly
    spaced windows (`open_run` reads it)."""
    ap = run_parser(prog, doc)
    ap.add_argument("--windows", type=int, default=windows, help=f"{windows_help} (default {windows})")
    ap.add_argument("--context", type=int, default=0,
                    help="clean context frames before the predicted one (default 0: the run's --eval-context)")
    ap.add_argument("--seed", type=int, default=1234, help=f"{seed_help} (default 1234)")
    return ap


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
    """Parse argv (a window_parser), check it, and load what the run recorded: its
    tokenizer, the dynamics checkpoint, the data set and its train / held-out split."""
    args = ap.parse_args(argv)
    if args.windows < 1 or args.context < 0:
        raise SystemExit("error: --windows must be >= 1 and --context >= 0")
    ckpt = checked_checkpoint(args)
    from dreamer4_torch.train.common import tokenizer_clip_frames
    from shared.data.format import DatasetError, open_dataset
    from shared.data.windows import split_episodes

    options = recorded_options(args)
    tok_dir = Path(options.tokenizer)
    tokenizer = load_tokenizer(args, options)
    try:
        dataset = open_dataset(Path(options.data))
    except DatasetError as e:
        raise SystemExit(f"error: the run's data set (resolved against --root {args.root}): {e}") from None
    train_eps, heldout_eps = split_episodes(dataset, holdout_per_task=options.holdout_per_task, seed=0)
    return args, OpenedRun(options=options, tokenizer=tokenizer, model=load_dynamics(ckpt),
                           chunk=tokenizer_clip_frames(tok_dir) or options.frames, dataset=dataset,
                           train_episodes=train_eps, heldout_episodes=heldout_eps,
                           context=args.context or options.eval_context)
