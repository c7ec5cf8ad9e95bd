"""The JAX trainer's options: the torch CLI's (shared.train_options), those the JAX trainer honours.

Each trainer offers the fields named here, under the same flag names and recipe defaults
(shared.train_options.resolve); a value replaces the shared help text where the JAX trainer differs.
Not offered, because the JAX trainer has no such thing: --grad-accum, --device (JAX runs on its
default backend; JAX_PLATFORMS=cpu forces the CPU), --precision (fp32 only), --compile (the step is
always jit-compiled), --parallel (always data parallel over all local devices), --workers (one
prefetch thread), --tensorboard / --wandb / --wandb-project, --deterministic, the LPIPS term and
--cache-latents (the dynamics trainer encodes each batch with the frozen tokenizer).
"""

from __future__ import annotations

from shared.train_options import DynamicsOptions, TokenizerOptions, build_parser, resolve

COMMON = {
    "data": None, "out": "run directory (options.json, metrics.jsonl, checkpoints/)", "preset": None, "model_config": None, "steps": None, "max_minutes": None,
    "batch_size": "sequences per optimizer step, split over all local devices (a multiple of their number)",
    "frames": None,
    "optimizer": "adamw, or muon: Muon for the transformer's hidden matrices and AdamW for the rest, same lr "
                 "and schedule (dreamer4_jax/train/optim.py); recipe default per preset",
    "lr": None, "warmup_steps": None, "min_lr_ratio": None, "weight_decay": None, "beta1": None, "beta2": None,
    "grad_clip": None,
    "ema_decay": "keep an exponential moving average of the weights with this decay (warmed up as "
                 "min(decay, (1 + n) / (10 + n)) at step n); evaluation and the checkpoints' params/ use it, "
                 "the training state keeps the raw weights. 0 = off; recipe default per preset",
    "seed": "seed of every random draw (initial weights, data order, masks, noise, dropout)",
    "holdout_per_task": None, "log_every": None, "eval_every": None, "eval_sequences": None, "ckpt_every": None,
    "keep_checkpoints": None, "resume": None,
}
TOKENIZER = {**COMMON, "mse_on": None, "contrast_weight": None, "mae_p_max": None}
DYNAMICS = {
    **COMMON,
    "tokenizer": "trained JAX tokenizer checkpoint directory (config.json + params/), kept frozen; convert a "
                 "PyTorch one with `python -m convert torch-to-jax SRC DST`",
    "bootstrap_start": None, "bootstrap_fraction": None, "unconditional_fraction": None, "eval_context": None,
    "eval_horizon": None, "eval_sampling_steps": None,
}

NOT_OFFERED = ("The torch trainer's --grad-accum, --device, --precision, --compile, --parallel, --workers, "
               "--tensorboard, --wandb, --deterministic, LPIPS and --cache-latents options have no JAX "
               "counterpart: the step is jit-compiled in fp32 and data parallel over all local devices of JAX's "
               "default backend (JAX_PLATFORMS=cpu forces the CPU).")

TRAINERS = {
    "tokenizer": (TokenizerOptions, TOKENIZER, "Train the causal video tokenizer (JAX). " + NOT_OFFERED),
    "dynamics": (DynamicsOptions, DYNAMICS, "Train the dynamics model with shortcut forcing on a frozen JAX "
                                            "tokenizer (JAX). " + NOT_OFFERED),
}


def parse(kind: str, argv: list[str]):
    """The resolved options of `python -m dreamer4_jax.train KIND ARGV...`."""
    cls, offered, description = TRAINERS[kind]
    parser = build_parser(cls, f"python -m dreamer4_jax.train {kind}", description, offered)
    return resolve(cls(**vars(parser.parse_args(argv))), kind)


def offered(kind: str) -> list[str]:
    """The option fields the JAX `kind` trainer takes (and records in options.json)."""
    return list(TRAINERS[kind][1])
