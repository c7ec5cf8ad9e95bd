"""`python -m dreamer4_torch.eval COMMAND [RUN] [options]`: one evaluation of a trained run.

`python -m dreamer4_torch.eval COMMAND --help` explains that command's options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap

# command -> (module under dreamer4_torch.eval, what it prints)
COMMANDS = {
    "spread": ("spread", "the trainer's open-loop rollout evaluation repeated over window counts and noise "
                         "seeds, with action ablations, per task, or on another data set"),
    "one-step": ("one_step", "one-frame-ahead latent error of the model against repeating the last latent "
                             "and a linear AR(2), on held-out and training windows"),
    "probe": ("probe", "R² of a linear probe from a frame's tokenizer latents to its physical state, per task "
                       "and state dimension, on held-out episodes (a data set with recorded states)"),
    "policy": ("policy", "a behaviour-cloned run's policy acting in the real DMControl tasks, closed loop: return per "
                         "task (mean ± standard error) beside a uniform-random policy and the data set's episodes"),
    "attention": ("attention", "per layer and head, the time-attention weight a new frame puts on itself, "
                               "the previous frame, the one before and older frames"),
}


def build_parser() -> argparse.ArgumentParser:
    listing = "\n".join(textwrap.fill(what, 100, initial_indent=f"  {name:<11}", subsequent_indent=" " * 13)
                        for name, (_, what) in COMMANDS.items())
    ap = argparse.ArgumentParser(prog="python -m dreamer4_torch.eval", description=__doc__,
                                 epilog="commands:\n" + listing,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=list(COMMANDS), metavar="COMMAND",
                    help=f"the evaluation to run: {', '.join(COMMANDS)} (listed below)")
    ap.add_argument("args", nargs=argparse.REMAINDER, metavar="...",
                    help="the command's arguments: the run directory and options (COMMAND --help lists them)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"dreamer4_torch.eval.{COMMANDS[args.command][0]}")
    return module.main(args.args)


if __name__ == "__main__":
    sys.exit(main())
