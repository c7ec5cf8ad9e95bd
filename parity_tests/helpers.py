"""Shared machinery of the parity suite: paired torch/JAX modules with equal random weights, shared
random draws, and the comparison that reports the worst tensor.

Direction "torch->jax": the random weights are drawn in PyTorch and converted to JAX with
convert.torch_jax; "jax->torch": drawn in JAX and converted to PyTorch. Either way the conversion is
the table-derived one (name join + kernel transpose), so every test also checks the converter.

Relative error of a tensor: max |jax - torch| / max(max |torch|, max |jax|) (0 when both are zero).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Callable, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from convert.torch_jax import jax_to_torch_state, torch_to_jax_state
from dreamer4_jax.init import named_params
from shared.params import ParamSpec, transformer_params

DIRECTIONS = ("torch->jax", "jax->torch")

# Set by conftest.py: the run's base seed (fresh each run unless PARITY_SEED is given).
SEED: int = 0
# group -> direction -> (worst relative error, tensor name); printed at the end of the session.
RESULTS: dict[str, dict[str, tuple[float, str]]] = {}
# (group, direction, error, tensor) measured by the running test; conftest.py attaches them to the test's
# report, so that the summary also covers tests run in pytest-xdist workers.
MEASURED: list[tuple[str, str, float, str]] = []


def record(group: str, direction: str, error: float, tensor: str) -> None:
    """Keep the worst error seen for (group, direction)."""
    prev = RESULTS.setdefault(group, {}).get(direction)
    if prev is None or error > prev[0]:
        RESULTS[group][direction] = (error, tensor)


def derive_seed(*parts) -> int:
    """A 31-bit seed from the run's base seed and any strings/ints naming the use."""
    words = [SEED] + [zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    denom = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    diff = np.abs(a - b).max(initial=0.0)
    if not np.isfinite(diff):
        return math.inf
    return 0.0 if denom == 0.0 else float(diff / denom)


def to_np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").float().numpy()
    return np.asarray(jax.device_get(x), dtype=np.float32)


def compare(group: str, direction: str, pairs: Mapping[str, tuple], tol: float) -> float:
    """pairs: name -> (jax value, torch value). Records the worst error and fails above `tol` with the
    worst tensor's name, its error and the seed."""
    jax_side = {name: to_np(a) for name, (a, _) in pairs.items()}
    torch_side = {name: to_np(b) for name, (_, b) in pairs.items()}
    chex.assert_trees_all_equal_shapes(jax_side, torch_side, custom_message=(
        f"{group} [{direction}]: JAX (tree 0) vs torch (tree 1); seed {SEED}; rerun with PARITY_SEED={SEED}"))
    errs = {name: rel_err(jax_side[name], torch_side[name]) for name in pairs}
    worst = max(errs, key=errs.get)
    MEASURED.append((group, direction, errs[worst], worst))
    assert errs[worst] <= tol, (
        f"{group} [{direction}]: worst tensor {worst}: relative error {errs[worst]:.3e} > {tol:.0e} "
        f"({len(errs)} tensors compared; seed {SEED}; rerun with PARITY_SEED={SEED})")
    return errs[worst]


# ------------------------------------------------------------------ random weights in either backend

def _draw(spec: ParamSpec, normal: Callable[[tuple], np.ndarray], uniform: Callable[[tuple], np.ndarray],
          shape: tuple) -> np.ndarray:
    """Parity weights: the table's initializer, except that zero-initialised tensors get linear-style
    uniform values, norm scales 1 + 0.1 N(0, 1), and tiny normal inits at least std 0.02 — so that no
    path of the model is switched off (a zero head would make every upstream gradient zero)."""
    bound = 1.0 / math.sqrt(spec.fan_in) if spec.fan_in > 0 else 0.1
    if spec.init in ("linear_uniform", "zeros"):
        return bound * uniform(shape)
    if spec.init == "ones":
        return 1.0 + 0.1 * normal(shape)
    if spec.init == "normal":
        return max(spec.std, 0.02) * normal(shape)
    raise ValueError(spec.init)


def randomize_torch(module: torch.nn.Module, table: Sequence[ParamSpec], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for spec in table:
            p = params[spec.name]
            value = _draw(spec, lambda s: torch.randn(s, generator=g),
                          lambda s: torch.rand(s, generator=g) * 2 - 1, tuple(p.shape))
            p.copy_(value)


def randomize_jax(module: nnx.Module, table: Sequence[ParamSpec], seed: int) -> None:
    """The same rule with jax.random draws (one normal and one uniform call for the whole table, sliced
    in order, so a new model size costs two compilations rather than one per parameter shape)."""
    params = named_params(module)
    total = sum(int(np.prod(params["/".join(spec.jax_path)].shape)) for spec in table)
    k_n, k_u = jax.random.split(jax.random.key(seed))
    normals = np.asarray(jax.random.normal(k_n, (total,)))
    uniforms = np.asarray(jax.random.uniform(k_u, (total,), minval=-1.0))
    offset = 0
    for spec in table:
        var = params["/".join(spec.jax_path)]
        shape, n = tuple(var.shape), int(np.prod(var.shape))
        window = slice(offset, offset + n)
        value = _draw(spec, lambda s: normals[window].reshape(s), lambda s: uniforms[window].reshape(s), shape)
        var.set_value(jnp.asarray(value, jnp.float32))
        offset += n


def jax_params(module: nnx.Module) -> dict[str, jax.Array]:
    return {name: var[...] for name, var in named_params(module).items()}


def set_jax_params(module: nnx.Module, flat: Mapping[str, np.ndarray]) -> None:
    params = named_params(module)
    chex.assert_trees_all_equal_shapes(jax_params(module), dict(flat))
    for name, value in flat.items():
        params[name].set_value(jnp.asarray(value))


def pair(torch_module: torch.nn.Module, jax_module: nnx.Module, table: Sequence[ParamSpec], direction: str,
         seed: int):
    """Give both modules the same random weights, drawn in the direction's source backend."""
    if direction == "torch->jax":
        randomize_torch(torch_module, table, seed)
        state = {k: v for k, v in torch_module.state_dict().items() if k in {p.name for p in table}}
        set_jax_params(jax_module, torch_to_jax_state(state, table))
    elif direction == "jax->torch":
        randomize_jax(jax_module, table, seed)
        torch_module.load_state_dict(jax_to_torch_state(jax_params(jax_module), table), strict=False)
        missing = {p.name for p in table} - set(dict(torch_module.named_parameters()))
        assert not missing, missing
    else:
        raise ValueError(direction)
    return torch_module, jax_module


def block_table(tf, prefix: str) -> list[ParamSpec]:
    """The parameter-table rows of one block of a transformer built from `tf`, named relative to it:
    e.g. prefix "layers.0.space." gives attn.qkv.weight, attn.qkv.bias, ..."""
    full = "x." + prefix
    rows = [dataclasses.replace(p, name=p.name[len(full):]) for p in transformer_params("x", tf)
            if p.name.startswith(full)]
    assert rows, prefix
    return rows


class DropoutSource:
    """A dropout source (site, shape) -> keep mask that is a pure function of (seed, site, shape), so both
    backends receive identical masks. Equal seeds and rates make equal (hashable) sources, so a JAX
    model using one keeps the same static structure, and its compiled functions are reused."""

    def __init__(self, seed: int, rate: float):
        self.seed, self.rate = int(seed), float(rate)

    def __call__(self, site: str, shape: tuple) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(site.encode()), *shape])
        return rng.random(shape) >= self.rate

    def __eq__(self, other) -> bool:
        return isinstance(other, DropoutSource) and (other.seed, other.rate) == (self.seed, self.rate)

    def __hash__(self) -> int:
        return hash((DropoutSource, self.seed, self.rate))


def dropout_source(seed: int, rate: float) -> DropoutSource:
    return DropoutSource(seed, rate)
