"""Typed training options of the trainer CLIs. Every field is a command-line flag (`--field-name`) with its help text;
the resolved options are written to `RUN_DIR/options.json` at start.

Defaults that depend on the model size come from the preset's recipe (`shared.recipes`, the
`TOKENIZER` / `DYNAMICS` training recipe of the module named by --preset) and are applied by
`resolve` where the user did not give a value (fields left as None).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from shared.config import ConfigError
from shared.optim import OPTIMIZERS
from shared.recipes import get_preset, get_recipe


def opt(default, help: str, **kw):  # noqa: A002 - mirrors argparse
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class CommonOptions:
    data: str = opt(None, "dataset directory written by `python -m shared.data.collect`", required=True)
    out: str = opt(None, "run directory (options, metrics, checkpoints, images)", required=True)
    preset: str = opt("dmc64", "model sizes and recipe defaults: tiny, dmc64 or dmc128")
    model_config: Optional[str] = opt(None, "JSON model config (config.json format) replacing the preset's")
    steps: Optional[int] = opt(None, "optimizer steps to train for (recipe default per preset)")
    max_minutes: float = opt(0.0, "stop (saving a checkpoint) after this many minutes of training; 0 = no limit")
    batch_size: Optional[int] = opt(None, "sequences per micro-batch per process")
    frames: Optional[int] = opt(None, "frames per training sequence")
    grad_accum: int = opt(1, "micro-batches accumulated per optimizer step (DDP syncs only on the last)")
    optimizer: Optional[str] = opt(None, "adamw, or muon: Muon for the transformer's hidden matrices and AdamW for the "
                                   "rest, same lr and schedule (optim.py; DDP only); recipe default per preset",
                                   choices=list(OPTIMIZERS))
    lr: Optional[float] = opt(None, "peak learning rate (AdamW, and Muon's RMS-matched lr)")
    warmup_steps: Optional[int] = opt(None, "linear warm-up steps before the cosine decay")
    min_lr_ratio: float = opt(0.1, "the cosine schedule decays to lr * min_lr_ratio at the last step")
    weight_decay: float = opt(0.01, "decoupled weight decay (matrices only; not norms, biases, embeddings)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.95, "AdamW beta2")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this value; 0 disables")
    ema_decay: Optional[float] = opt(None, "keep an exponential moving average of the weights with this decay "
                                     "(warmed up as min(decay, (1 + n) / (10 + n)) at step n); evaluation and the "
                                     "checkpoints' model.safetensors use it. 0 = off; recipe default per preset")
    seed: int = opt(0, "seed of every random draw (data order, masks, noise, dropout)")
    device: str = opt("auto", "cuda, cpu or auto (cuda when available); one GPU per process under torchrun")
    precision: str = opt("auto", "fp32 or bf16 autocast; auto = bf16 on CUDA, fp32 on CPU", choices=["auto", "fp32", "bf16"])
    compile: bool = opt(False, "torch.compile the model")
    parallel: str = opt("ddp", "data parallelism across processes: ddp, or fsdp (FSDP2 fully_shard)", choices=["ddp", "fsdp"])
    workers: int = opt(2, "DataLoader worker processes per training process")
    holdout_per_task: int = opt(1, "episodes per task held out for evaluation")
    log_every: int = opt(25, "log training metrics every N steps")
    eval_every: Optional[int] = opt(None, "evaluate on held-out episodes every N steps (and at the end); recipe "
                                    "default per preset")
    eval_sequences: Optional[int] = opt(None, "held-out sequences per evaluation (recipe default per preset)")
    ckpt_every: int = opt(500, "write a checkpoint every N steps (and at the end or on SIGTERM/SIGINT)")
    keep_checkpoints: int = opt(2, "step checkpoints kept on disk (the newest ones; `latest` always points at one)")
    resume: bool = opt(False, "continue exactly from RUN_DIR/checkpoints/latest")
    tensorboard: bool = opt(True, "write TensorBoard event files to RUN_DIR/tb")
    wandb: str = opt("off", "Weights & Biases logging: off, offline or online", choices=["off", "offline", "online"])
    wandb_project: str = opt("dreamer4", "wandb project name")
    deterministic: bool = opt(False, "torch.use_deterministic_algorithms (slower; exact repeatability on GPU)")


@dataclass
class TokenizerOptions(CommonOptions):
    mse_on: Optional[str] = opt(None, "reconstruction MSE over 'masked' patches (upstream) or 'all' patches",
                                choices=["masked", "all"])
    contrast_weight: Optional[float] = opt(None, "weight each squared reconstruction error by 1 + C * |value - "
                                           "its patch's mean of that channel|, so thin bodies count (recipe "
                                           "default per preset; 0 = plain MSE)")
    mae_p_max: Optional[float] = opt(None, "override the config's maximum MAE drop probability")
    lpips_alexnet: Optional[str] = opt(None, "torchvision AlexNet state dict (.pth) for the LPIPS term")
    lpips_lin: Optional[str] = opt(None, "LPIPS linear-layer weights (.pth, lin0..lin4) for the LPIPS term")
    lpips_weight: float = opt(0.2, "weight of the LPIPS term (when its weights are given)")


@dataclass
class DynamicsOptions(CommonOptions):
    tokenizer: str = opt(None, "trained tokenizer checkpoint directory (frozen)", required=True)
    cache_latents: bool = opt(True, "encode the whole data set once into RUN_DIR/latents and train from it")
    bootstrap_start: Optional[int] = opt(None, "step from which bootstrap (shortcut) rows are used")
    bootstrap_fraction: Optional[float] = opt(None, "fraction of each batch used as bootstrap rows (recipe "
                                              "default per preset)")
    unconditional_fraction: float = opt(0.0, "fraction of sequences trained without actions (base token only)")
    eval_context: int = opt(8, "context frames of the evaluation rollouts")
    eval_horizon: int = opt(16, "frames generated open-loop in evaluation")
    eval_sampling_steps: int = opt(4, "shortcut steps K per generated frame in evaluation")


@dataclass
class AgentOptions(DynamicsOptions):
    dynamics: str = opt(None, "pretrained dynamics checkpoint directory (trained on --tokenizer) to finetune",
                        required=True)
    bc_weight: Optional[float] = opt(None, "weight of the behaviour-cloning loss (the video loss has weight 1)")
    reward_weight: Optional[float] = opt(None, "weight of the reward loss")
    relevant_quantile: Optional[float] = opt(None, "task-relevant episodes, from which the BC half of each batch is "
                                             "drawn: return >= this quantile of their task's training-episode "
                                             "returns (0.5: the median)")
    mtp_length: int = opt(8, "multi-token prediction: actions and rewards predicted 1..L steps ahead")


def build_parser(cls, prog: str, description: str,
                 offered: Optional[Mapping[str, Optional[str]]] = None) -> argparse.ArgumentParser:
    """A parser with a flag per field of `cls`, or, for a trainer that supports only some (the JAX one),
    per field named in `offered`, whose value (when not None) replaces the field's help text; the other
    fields keep their defaults."""
    if offered is not None:
        unknown = set(offered) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        if offered is not None and f.name not in offered:
            continue
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        help_text = meta.pop("help", "")
        if offered is not None and offered[f.name] is not None:
            help_text = offered[f.name]
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
            continue
        base = {"int": int, "float": float, "str": str, "Optional[int]": int, "Optional[float]": float,
                "Optional[str]": str}[kind]
        parser.add_argument(flag, dest=f.name, type=base, default=f.default, help=help_text, **meta)
    return parser


def resolve(options, kind: str):
    """Fill None fields from the training recipe of `kind` ('tokenizer' or 'dynamics') in the recipe
    named by --preset; validate ranges. Returns the same object."""
    try:
        recipe = get_recipe(options.preset)
    except ConfigError as e:
        raise SystemExit(f"error: --preset: {e}") from None
    recipe = recipe.training(kind)
    for name, value in recipe.option_defaults().items():
        if getattr(options, name, "missing") is None:
            setattr(options, name, value)
    checks = [("steps", options.steps > 0), ("batch_size", options.batch_size > 0), ("frames", options.frames > 0),
              ("grad_accum", options.grad_accum > 0), ("lr", options.lr > 0), ("warmup_steps", options.warmup_steps >= 0),
              ("log_every", options.log_every > 0), ("eval_every", options.eval_every > 0),
              ("ckpt_every", options.ckpt_every > 0), ("keep_checkpoints", options.keep_checkpoints > 0),
              ("eval_sequences", options.eval_sequences > 0), ("workers", options.workers >= 0),
              ("ema_decay", 0.0 <= options.ema_decay < 1.0)]
    if hasattr(options, "contrast_weight"):
        checks.append(("contrast_weight", options.contrast_weight >= 0))
    if hasattr(options, "bootstrap_fraction"):
        checks.append(("bootstrap_fraction", 0.0 <= options.bootstrap_fraction < 1.0))
    if hasattr(options, "relevant_quantile"):
        checks += [("relevant_quantile", 0.0 <= options.relevant_quantile < 1.0), ("bc_weight", options.bc_weight >= 0),
                   ("reward_weight", options.reward_weight >= 0), ("mtp_length", options.mtp_length >= 1),
                   ("batch_size", options.batch_size >= 2)]
    for name, ok in checks:
        if not ok:
            raise SystemExit(f"error: --{name.replace('_', '-')} has an invalid value {getattr(options, name)!r}")
    if options.optimizer == "muon" and options.parallel == "fsdp":
        raise SystemExit("error: --optimizer muon orthogonalises whole matrices, which --parallel fsdp shards "
                         "across ranks; use --parallel ddp or --optimizer adamw")
    return options


def options_to_json(options, fields: Optional[Iterable[str]] = None) -> str:
    """The options as JSON (RUN_DIR/options.json); `fields`: only these (the ones a trainer offers)."""
    data = dataclasses.asdict(options)
    if fields is not None:
        data = {name: data[name] for name in fields}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def options_from_json(cls, path: Path):
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


# -- Framework-free pieces of a trainer's set-up (the JAX trainer uses them; they hold no tensor).

# Options a resumed run may change: they do not alter what the next steps compute.
RESUME_MAY_CHANGE = frozenset({"resume", "max_minutes", "steps", "workers", "log_every", "eval_every", "ckpt_every",
                               "keep_checkpoints", "tensorboard", "wandb"})


def resume_changes(options, saved: Mapping[str, Any], fields: Optional[Iterable[str]] = None) -> list[str]:
    """The options (of `fields`, default all) that differ from the run's recorded options.json `saved`
    and may not change on --resume, as "--name old -> new"."""
    now = dataclasses.asdict(options)
    names = now if fields is None else list(fields)
    return [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now[k]!r}" for k in names
            if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k]]


def tokenizer_config_from(options):
    """The tokenizer config of a run: --model-config's, or the preset's; --mae-p-max applied; recording
    the clip length it trains on (--frames), by which encode/decode chunk longer clips."""
    from shared.config import TokenizerConfig, config_from_json, replace
    if options.model_config:
        cfg = config_from_json(Path(options.model_config).read_text())
        if not isinstance(cfg, TokenizerConfig):
            raise SystemExit(f"error: --model-config {options.model_config} is a {cfg.kind} config, not a tokenizer")
    else:
        cfg = get_preset(options.preset).tokenizer
    if options.mae_p_max is not None:
        cfg = replace(cfg, mae_p_max=options.mae_p_max, mae_p_min=min(cfg.mae_p_min, options.mae_p_max))
    return replace(cfg, clip_frames=options.frames)


def dynamics_config_from(options, tokenizer_cfg):
    """The dynamics config of a run on `tokenizer_cfg`: --model-config's, or the preset's sized to the
    tokenizer; checked against the tokenizer and --eval-sampling-steps before any training."""
    from shared.config import DynamicsConfig, check_compatible, config_from_json, dynamics_for_tokenizer
    from shared.shortcut import inference_plan
    if options.model_config:
        cfg = config_from_json(Path(options.model_config).read_text())
        if not isinstance(cfg, DynamicsConfig):
            raise SystemExit(f"error: --model-config {options.model_config} is a {cfg.kind} config, not dynamics")
    else:
        cfg = dynamics_for_tokenizer(tokenizer_cfg, get_preset(options.preset).dynamics)
    try:
        check_compatible(tokenizer_cfg, cfg)
    except ValueError as e:
        raise SystemExit(f"error: --tokenizer {options.tokenizer} does not fit the dynamics model: {e}") from e
    try:
        inference_plan(cfg.k_max, options.eval_sampling_steps)
    except ValueError as e:
        raise SystemExit(f"error: --eval-sampling-steps: {e}") from None
    return cfg


def check_frame_size(dataset, cfg, path: str) -> None:
    """The data set's frames must be the (tokenizer) config's size."""
    if (dataset.height, dataset.width) != (cfg.image_height, cfg.image_width) or cfg.channels != 3:
        raise SystemExit(f"error: {path} holds {dataset.height}x{dataset.width} frames but the model expects "
                         f"{cfg.image_height}x{cfg.image_width} (preset/config); collect data with "
                         f"--size {cfg.image_height} or choose a matching preset")
