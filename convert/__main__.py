"""Command line for the weight converters: `python -m convert {upstream,torch-to-jax,jax-to-torch} --help`."""

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


def _report(direction: str, args: argparse.Namespace, cfg, leftovers: list[str]) -> None:
    from shared.params import count_params
    print(f"wrote {direction} {cfg.kind} checkpoint {args.dst} ({count_params(cfg):,} parameters) from {args.src}")
    if leftovers:
        print(f"note: not converted (backend-specific training state or other files): {', '.join(leftovers)}",
              file=sys.stderr)


def _torch_to_jax(args: argparse.Namespace) -> None:
    from .torch_jax import convert_torch_to_jax
    _report("JAX", args, *convert_torch_to_jax(args.src, args.dst))


def _jax_to_torch(args: argparse.Namespace) -> None:
    from .torch_jax import convert_jax_to_torch
    _report("PyTorch", args, *convert_jax_to_torch(args.src, args.dst))


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

    mapping = ("The mapping comes from the parameter table (shared.params): torch name a.b.weight <-> "
               "NNX path a/b/kernel, linear weights transposed, everything else copied; values keep "
               "their dtype and bits, so torch -> jax -> torch is exact. Strict: a missing, unexpected or "
               "mis-shaped tensor is an error naming it. The config.json travels unchanged; training state "
               "(optimizer, step, RNG) is backend-specific and is not converted.")
    tj = sub.add_parser(
        "torch-to-jax", help="convert a native PyTorch checkpoint directory to a native JAX one",
        description="Read SRC (config.json + model.safetensors) and write DST (config.json + orbax "
                    "params/), atomically. " + mapping)
    tj.add_argument("src", help="native PyTorch checkpoint directory")
    tj.add_argument("dst", help="output JAX checkpoint directory (replaced atomically)")
    tj.set_defaults(func=_torch_to_jax)

    jt = sub.add_parser(
        "jax-to-torch", help="convert a native JAX checkpoint directory to a native PyTorch one",
        description="Read SRC (config.json + orbax params/) and write DST (config.json + "
                    "model.safetensors), atomically. " + mapping)
    jt.add_argument("src", help="native JAX checkpoint directory")
    jt.add_argument("dst", help="output PyTorch checkpoint directory (replaced atomically)")
    jt.set_defaults(func=_jax_to_torch)
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
