"""Command line for the weight converters: `python -m convert {upstream,...} --help`."""

from __future__ import annotations

import argparse
import sys

from shared.io import CheckpointError


def _upstream(args: argparse.Namespace) -> None:
    from .upstream import import_upstream, load_upstream  # noqa: F401

    dst = import_upstream(args.src, args.dst, tokenizer=args.tokenizer, n_latents=args.n_latents,
                          d_bottleneck=args.d_bottleneck, trust_pickle=args.trust_pickle)
    from dreamer4_torch.checkpoint import load_state
    cfg, state = load_state(dst)
    n = sum(t.numel() for t in state.values())
    print(f"wrote {cfg.kind} checkpoint {dst} ({n:,} parameters, "
          f"scale_pos_embeds={cfg.transformer.scale_pos_embeds})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m convert", description="Convert Dreamer 4 checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "upstream", help="import an upstream (nicklashansen/dreamer4) .pt checkpoint as a native one",
        description="Import an upstream tokenizer or dynamics .pt file (state dict under 'model' or "
                    "'dynamics'; module./_orig_mod. prefixes are stripped; a missing scale_pos_embeds "
                    "means true) into a native PyTorch checkpoint directory (config.json + "
                    "model.safetensors). Loading is strict.")
    up.add_argument("src", help="upstream .pt file")
    up.add_argument("dst", help="output checkpoint directory (replaced atomically)")
    up.add_argument("--tokenizer", metavar="TOK",
                    help="for a dynamics file: the tokenizer it was trained with (native checkpoint "
                         "directory or upstream .pt), which gives n_latents and d_bottleneck")
    up.add_argument("--n-latents", type=int, help="for a dynamics file without --tokenizer: tokenizer latents")
    up.add_argument("--d-bottleneck", type=int, help="for a dynamics file without --tokenizer: bottleneck width")
    up.add_argument("--trust-pickle", action="store_true",
                    help="unpickle arbitrary Python objects (only for files you trust); by default only "
                         "tensors and plain values are read")
    up.set_defaults(func=_upstream)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
