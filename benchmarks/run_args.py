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
    from dreamer4_torch.train.options import DynamicsOptions, options_from_json
    recorded = options_from_json(DynamicsOptions, args.run / "options.json")
    return dataclasses.replace(recorded, data=str(args.root / recorded.data),
                               tokenizer=str(args.root / recorded.tokenizer))
