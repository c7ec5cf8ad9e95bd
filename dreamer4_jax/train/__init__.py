"""Training in JAX: the Python API (Trainer and its jit train step, optim.py's optimizer) and the CLI

    python -m dreamer4_jax.train tokenizer --preset tiny --data DATA --out runs/jtok
    python -m dreamer4_jax.train dynamics --preset tiny --data DATA --tokenizer runs/jtok/checkpoints/latest \\
        --out runs/jdyn

with the torch trainer's option names and run directory (runner.py)."""

from .optim import (OptimizerConfig, clip_grad_norm_like_torch, decay_mask, make_optimizer, optimizer_labels,
                    orthogonalise, scale_by_muon, warmup_cosine)
from .trainer import (TRAIN_STATE_DIR, TRAIN_STATE_FILE, TrainState, Trainer, apply_gradients, draw_keep_mask,
                      jit_train_step, make_mesh, train_step)

__all__ = [
    "OptimizerConfig", "clip_grad_norm_like_torch", "decay_mask", "make_optimizer", "optimizer_labels",
    "orthogonalise", "scale_by_muon", "warmup_cosine",
    "TRAIN_STATE_DIR", "TRAIN_STATE_FILE", "TrainState", "Trainer", "apply_gradients", "draw_keep_mask",
    "jit_train_step", "make_mesh", "train_step",
]
