"""`python -m dreamer4_jax.train {tokenizer,dynamics} --help`"""

from __future__ import annotations

import sys

from .options import TRAINERS, parse

USAGE = """usage: python -m dreamer4_jax.train {tokenizer,dynamics} [options]

  tokenizer   train the causal video tokenizer (masked autoencoding; held-out PSNR)
  dynamics    train the shortcut-forcing dynamics model on a frozen JAX tokenizer's latents

Data parallel over all local devices of JAX's default backend (JAX_PLATFORMS=cpu forces the CPU).
Run `python -m dreamer4_jax.train tokenizer --help` for the options."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TRAINERS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(USAGE, file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    kind = argv.pop(0)
    options = parse(kind, argv)
    from .runner import run       # after parsing: --help answers without loading JAX's models
    if kind == "tokenizer":
        from .tokenizer import TokenizerTask as TaskClass
    else:
        from .dynamics import DynamicsTask as TaskClass
    return run(TaskClass, options)


if __name__ == "__main__":
    sys.exit(main())
