"""`python -m dreamer4_torch.train {tokenizer,dynamics,bc} --help`"""

from __future__ import annotations

import sys

from shared.train_options import AgentOptions, DynamicsOptions, TokenizerOptions, build_parser, resolve

USAGE = """usage: python -m dreamer4_torch.train {tokenizer,dynamics,bc} [options]
       torchrun --nproc_per_node=N -m dreamer4_torch.train {tokenizer,dynamics,bc} [options]

  tokenizer   train the causal video tokenizer (masked autoencoding; held-out PSNR)
  dynamics    train the shortcut-forcing dynamics model on a frozen tokenizer's latents
  bc          finetune a trained dynamics model into an agent: task tokens, policy and reward heads,
              behaviour cloning on the task-relevant episodes beside the video loss

Run `python -m dreamer4_torch.train tokenizer --help` for the options."""

TRAINERS = {
    "tokenizer": (TokenizerOptions, "Train the causal video tokenizer."),
    "dynamics": (DynamicsOptions, "Train the dynamics model with shortcut forcing on a frozen tokenizer."),
    "bc": (AgentOptions, "Finetune a trained dynamics model (--dynamics) into an agent: a task embedding in the "
                         "agent token, policy and reward heads predicting 1..L steps ahead, trained by behaviour "
                         "cloning on each task's better episodes while the video loss continues."),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TRAINERS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(USAGE, file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    kind = argv.pop(0)
    cls, description = TRAINERS[kind]
    parser = build_parser(cls, f"python -m dreamer4_torch.train {kind}", description)
    options = resolve(cls(**vars(parser.parse_args(argv))), kind)
    from .main import run
    return run(kind, options)


if __name__ == "__main__":
    sys.exit(main())
