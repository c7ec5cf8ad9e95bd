"""PyTorch <-> JAX weight conversion, derived from the canonical parameter table (shared.params).

For every table row: the torch name `a.b.c.weight` <-> the NNX path `a/b/c/kernel` (ParamSpec.jax_path
joined by '/'); linear weights are transposed ((out, in) <-> (in, out)); every other tensor is copied
as is. Nothing else is renamed, reshaped or skipped. Conversion is strict: a missing, unexpected or
mis-shaped parameter is an error that names it. Values are copied bit for bit (transposition moves
bytes, it does not round), in their own dtype (float32, float16, bfloat16, float64), so
torch -> jax -> torch and jax -> torch -> jax round trips are exact.

In-memory states: torch `{name: torch.Tensor}` (a state dict) and JAX `{'/'-joined NNX path: array}`
(dreamer4_jax.model_state). Checkpoints: native directories (`config.json` + `model.safetensors`
for torch, `config.json` + orbax `params/` for JAX); the config travels unchanged. Training state
(optimizer moments, step, RNG) is backend-specific and is not converted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch

from shared.config import DynamicsConfig, ModelConfig, TokenizerConfig
from shared.io import CheckpointError
from shared.params import ParamSpec, check_parameters, param_table

PathLike = Union[str, os.PathLike]
TableLike = Union[ModelConfig, Sequence[ParamSpec]]


class ConversionError(CheckpointError):
    """A state does not match the parameter table it is converted with."""


def _table(spec: TableLike) -> list[ParamSpec]:
    if isinstance(spec, (TokenizerConfig, DynamicsConfig)):
        return param_table(spec)
    table = list(spec)
    if not all(isinstance(p, ParamSpec) for p in table):
        raise TypeError("expected a model config or a sequence of shared.params.ParamSpec")
    return table


def jax_name(spec: ParamSpec) -> str:
    return "/".join(spec.jax_path)


# ------------------------------------------------------------------ dtype-preserving array moves

def torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU copy of `t` as numpy, same dtype and bits (bfloat16 via ml_dtypes)."""
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def numpy_to_torch(a: np.ndarray) -> torch.Tensor:
    """A torch tensor with the same dtype and bits as `a` (bfloat16 via ml_dtypes)."""
    a = np.ascontiguousarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def _host(a: Any) -> np.ndarray:
    """A numpy copy of a jax or numpy array (device_get keeps dtype and bits)."""
    if isinstance(a, torch.Tensor):
        raise TypeError("expected a JAX/numpy array in a JAX state, got a torch.Tensor")
    import jax
    return np.asarray(jax.device_get(a))


# ------------------------------------------------------------------ in-memory states

def torch_to_jax_state(state: Mapping[str, torch.Tensor], spec: TableLike) -> dict[str, np.ndarray]:
    """Torch state dict -> flat JAX state {'/'-joined NNX path: numpy array}, strictly by the table."""
    table = _table(spec)
    check_parameters({p.name: p.shape for p in table}, {n: tuple(t.shape) for n, t in state.items()},
                     what="torch state", error=ConversionError)
    out = {}
    for p in table:
        a = torch_to_numpy(state[p.name])
        out[jax_name(p)] = np.ascontiguousarray(a.T) if p.role == "linear_weight" else a
    return out


def jax_to_torch_state(state: Mapping[str, Any], spec: TableLike) -> dict[str, torch.Tensor]:
    """Flat JAX state {'/'-joined NNX path: array} -> torch state dict, strictly by the table."""
    table = _table(spec)
    check_parameters({jax_name(p): p.jax_shape for p in table}, {n: tuple(np.shape(a)) for n, a in state.items()},
                     what="JAX state", error=ConversionError)
    out = {}
    for p in table:
        a = _host(state[jax_name(p)])
        out[p.name] = numpy_to_torch(a.T if p.role == "linear_weight" else a)
    return out


# ------------------------------------------------------------------ models

def torch_to_jax(model: torch.nn.Module, *, rngs=None):
    """A dreamer4_torch Tokenizer/Dynamics -> the equal dreamer4_jax model (same training mode)."""
    from dreamer4_jax.checkpoint import build_model, set_model_state
    from dreamer4_torch.checkpoint import model_state as torch_model_state

    inner = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    cfg = inner.config
    jmodel = build_model(cfg, rngs=rngs)
    set_model_state(jmodel, torch_to_jax_state(torch_model_state(model), cfg), "converted torch model")
    return jmodel.train() if inner.training else jmodel.eval()


def jax_to_torch(model, device: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """A dreamer4_jax Tokenizer/Dynamics -> the equal dreamer4_torch model (same training mode)."""
    from dreamer4_jax.checkpoint import model_state as jax_model_state
    from dreamer4_torch.checkpoint import build_model

    cfg = model.config
    tmodel = build_model(cfg)
    tmodel.load_state_dict(jax_to_torch_state(jax_model_state(model), cfg), strict=True)
    tmodel = tmodel.to(device)
    return tmodel.train() if model.training else tmodel.eval()


# ------------------------------------------------------------------ checkpoint directories

def _leftovers(src: Path, known: set[str]) -> list[str]:
    return sorted(p.name for p in src.iterdir() if p.name not in known and not p.name.startswith("."))


def convert_torch_to_jax(src: PathLike, dst: PathLike) -> tuple[ModelConfig, list[str]]:
    """Native torch checkpoint directory -> native JAX checkpoint directory (atomic, replaces dst).
    Returns (config, names of entries in src that were not converted, e.g. training state)."""
    from dreamer4_jax.checkpoint import save_state
    from dreamer4_torch.checkpoint import WEIGHTS_FILE, load_state

    src = Path(src)
    cfg, state = load_state(src)
    save_state(dst, cfg, torch_to_jax_state(state, cfg))
    return cfg, _leftovers(src, {"config.json", WEIGHTS_FILE})


def convert_jax_to_torch(src: PathLike, dst: PathLike) -> tuple[ModelConfig, list[str]]:
    """Native JAX checkpoint directory -> native torch checkpoint directory (atomic, replaces dst).
    Returns (config, names of entries in src that were not converted, e.g. training state)."""
    from safetensors.torch import save_file

    from dreamer4_jax.checkpoint import PARAMS_DIR, load_state
    from dreamer4_torch.checkpoint import WEIGHTS_FILE, check_state_against_config
    from shared.io import atomic_directory, write_config

    src = Path(src)
    cfg, state = load_state(src)
    tstate = jax_to_torch_state(state, cfg)
    check_state_against_config(tstate, cfg, "converted state")
    with atomic_directory(dst) as tmp:
        write_config(tmp, cfg)
        save_file(tstate, str(tmp / WEIGHTS_FILE), metadata={"format": "dreamer4", "kind": cfg.kind})
    return cfg, _leftovers(src, {"config.json", PARAMS_DIR})
