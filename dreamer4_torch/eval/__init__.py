"""Evaluation of trained runs: what a finished dynamics run has learned, read from its run directory.

    python -m dreamer4_torch.eval spread RUN      # the trainer's rollout evaluation over windows and noise seeds
    python -m dreamer4_torch.eval one-step RUN   # one-frame-ahead latent error against simple predictors
    python -m dreamer4_torch.eval attention RUN  # where the time attention of a new frame looks

Each submodule (`spread`, `one_step`, `attention`) has a `main(argv) -> int` and prints a markdown
table; `runs` holds the run-directory arguments and loading they share. Nothing in the run directory
is written.
"""
