"""Parameter initialisation and verification against the canonical parameter table (shared.params).

The JAX mirror of dreamer4_torch/init.py. A model's parameters are its `nnx.Param` variables; their
names are the NNX paths joined by '/' (`encoder/transformer/layers/0/space/attn/qkv/kernel`), which
is `'/'.join(ParamSpec.jax_path)` of the table entry, with the shape `ParamSpec.jax_shape`.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.params import ParamSpec, check_parameters, param_table


class ParameterMismatch(ValueError):
    """A model's parameters differ from its config's parameter table."""


def jax_name(spec: ParamSpec) -> str:
    """The '/'-joined NNX path of a table entry."""
    return "/".join(spec.jax_path)


def named_params(model: nnx.Module) -> dict[str, nnx.Param]:
    """{'/'-joined NNX path: Param variable} of every parameter of `model`, in NNX order."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(str(k) for k in path): var for path, var in flat}


def check_against_table(model: nnx.Module, table: list[ParamSpec]) -> None:
    """Raise ParameterMismatch naming every missing, extra or mis-shaped parameter."""
    check_parameters({jax_name(p): p.jax_shape for p in table},
                     {n: tuple(v.shape) for n, v in named_params(model).items()},
                     what="model parameters", error=ParameterMismatch)


def draw_params(table: list[ParamSpec], key: jax.Array) -> dict[str, np.ndarray]:
    """{jax name: float32 array in its JAX shape} drawn from the table initializers.

    All uniform draws come from one jax.random.uniform call and all normal draws from one
    jax.random.normal call (split in table order), so initialising a model compiles two random ops
    instead of one per parameter shape: U(-b, b) = b * U(-1, 1), N(0, s^2) = s * N(0, 1).
    """
    k_uniform, k_normal = jax.random.split(key)
    n_uniform = sum(s.size for s in table if s.init == "linear_uniform")
    n_normal = sum(s.size for s in table if s.init == "normal")
    uniform = np.asarray(jax.random.uniform(k_uniform, (n_uniform,), jnp.float32, -1.0, 1.0))
    normal = np.asarray(jax.random.normal(k_normal, (n_normal,), jnp.float32))
    out: dict[str, np.ndarray] = {}
    iu = ig = 0
    for spec in table:
        shape = spec.jax_shape
        if spec.init == "zeros":
            value = np.zeros(shape, np.float32)
        elif spec.init == "ones":
            value = np.ones(shape, np.float32)
        elif spec.init == "normal":
            value = np.float32(spec.std) * normal[ig: ig + spec.size].reshape(shape)
            ig += spec.size
        elif spec.init == "linear_uniform":
            bound = np.float32(1.0 / math.sqrt(spec.fan_in) if spec.fan_in > 0 else 0.0)
            value = bound * uniform[iu: iu + spec.size].reshape(shape)
            iu += spec.size
        else:
            raise ValueError(f"unknown initializer {spec.init!r} for {spec.name}")
        out[jax_name(spec)] = value.astype(np.float32)
    return out


def init_from_table(model: nnx.Module, table: list[ParamSpec], key: jax.Array) -> None:
    """Draw every parameter from its table initializer (see draw_params)."""
    params = named_params(model)
    for name, value in draw_params(table, key).items():
        var = params[name]
        var.set_value(jnp.asarray(value, dtype=var.dtype))


def build_checked(model: nnx.Module, cfg, rngs: nnx.Rngs, key: Optional[jax.Array] = None) -> None:
    """Check `model` against its config's table and initialise it (key: the `params` stream of rngs)."""
    table = param_table(cfg)
    check_against_table(model, table)
    init_from_table(model, table, rngs.params() if key is None else key)
