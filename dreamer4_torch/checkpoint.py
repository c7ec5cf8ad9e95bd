"""Native PyTorch checkpoints: a directory with `config.json` and `model.safetensors`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shared.agent import check_agent_start
from shared.config import DynamicsConfig, ModelConfig, TokenizerConfig
from shared.io import CheckpointError, atomic_directory, read_config, write_config
from shared.params import check_parameters, param_table

from .dynamics import Dynamics
from .tokenizer import Tokenizer

WEIGHTS_FILE = "model.safetensors"

Model = Union[Tokenizer, Dynamics]


def build_model(cfg: ModelConfig) -> Model:
    if isinstance(cfg, TokenizerConfig):
        return Tokenizer(cfg)
    if isinstance(cfg, DynamicsConfig):
        return Dynamics(cfg)
    raise TypeError(f"expected a TokenizerConfig or DynamicsConfig, got {type(cfg).__name__}")


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of a model (unwrapping DDP/compile), as contiguous CPU fp32-or-native tensors."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return {k: v.detach().to("cpu").contiguous() for k, v in inner.state_dict().items()}


def check_state_against_config(state: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    table = {p.name: p.shape for p in param_table(cfg)}
    not_float = [f"{n} has dtype {state[n].dtype}, expected a floating-point tensor"
                 for n in table if n in state and not state[n].is_floating_point()]
    check_parameters(table, {n: tuple(t.shape) for n, t in state.items()}, what=f"{source} ({cfg.kind} config)",
                     error=CheckpointError, extra_problems=not_float)


def save_model(model: nn.Module, path: Union[str, os.PathLike], extra: Optional[dict[str, bytes]] = None) -> Path:
    """Write `path/config.json` and `path/model.safetensors` atomically (replacing `path`).

    `extra` maps further file names to bytes written into the same directory (training state).
    """
    inner = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    cfg = getattr(inner, "config", None)
    if not isinstance(cfg, (TokenizerConfig, DynamicsConfig)):
        raise TypeError("save_model expects a dreamer4_torch Tokenizer or Dynamics")
    state = model_state(model)
    check_state_against_config(state, cfg, "model")
    path = Path(path)
    with atomic_directory(path) as tmp:
        write_config(tmp, cfg)
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "dreamer4", "kind": cfg.kind})
        for name, data in (extra or {}).items():
            (tmp / name).write_bytes(data)
    return path


def load_state(path: Union[str, os.PathLike]) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    path = Path(path)
    cfg = read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    check_state_against_config(state, cfg, str(weights))
    return cfg, state


def load_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
               kind: Optional[str] = None) -> Model:
    """Load a native checkpoint directory into a Tokenizer or Dynamics (eval mode).

    `kind` ("tokenizer" or "dynamics") makes loading a checkpoint of the other kind an error.
    """
    cfg, state = load_state(path)
    if kind is not None and cfg.kind != kind:
        raise CheckpointError(f"{path} holds a {cfg.kind} checkpoint, but a {kind} checkpoint was expected")
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_for_agent(path: Union[str, os.PathLike], finetune: DynamicsConfig,
                   device: Union[str, torch.device] = "cpu") -> Dynamics:
    """A dynamics checkpoint in the agent-finetuning model `finetune` (shared.agent.agent_config):
    every stored parameter is loaded, the ones the checkpoint lacks (task embedding, heads) keep their
    table initialisation (torch's global RNG). Training mode."""
    cfg, state = load_state(path)
    check_agent_start(cfg, finetune, str(path))
    model = Dynamics(finetune)
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    return model.to(device)
