"""Native JAX checkpoints: a directory with `config.json` and an orbax tree of the parameters.

    DIR/config.json      the shared model config (with its format version), as in PyTorch checkpoints
    DIR/params/          orbax (StandardCheckpointHandler) tree: {NNX path parts...: array}, one leaf per
                         row of the parameter table, e.g. params['encoder']['transformer']['layers']['0']
                         ['space']['attn']['qkv']['kernel'] with shape (in, out)
    DIR/<name>/          further orbax trees (training state) when saved from training
    DIR/<file>           further files (training metadata) when saved from training

Writes are atomic (shared.io.atomic_directory); loading validates the config against the stored
tree's metadata before reading any array and names every missing, unexpected or mis-shaped parameter.

In-memory "state" of a JAX model: a flat dict {'/'-joined NNX path: array}, the keys being
'/'.join(ParamSpec.jax_path) for every row of shared.params.param_table(cfg).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.agent import check_agent_start
from shared.config import DynamicsConfig, ModelConfig, TokenizerConfig
from shared.io import CheckpointError, atomic_directory, read_config, write_config
from shared.params import check_parameters, param_table

from .dynamics import Dynamics
from .init import jax_name, named_params
from .tokenizer import Tokenizer

PARAMS_DIR = "params"

Model = Union[Tokenizer, Dynamics]
PathLike = Union[str, os.PathLike]


def _orbax():
    import orbax.checkpoint as ocp
    # orbax logs every save/restore at INFO level through absl; keep library use quiet.
    logging.getLogger("absl").setLevel(logging.WARNING)
    return ocp


def build_model(cfg: ModelConfig, *, rngs: Optional[nnx.Rngs] = None) -> Model:
    if isinstance(cfg, TokenizerConfig):
        return Tokenizer(cfg, rngs=rngs)
    if isinstance(cfg, DynamicsConfig):
        return Dynamics(cfg, rngs=rngs)
    raise TypeError(f"expected a TokenizerConfig or DynamicsConfig, got {type(cfg).__name__}")


def model_state(model: nnx.Module) -> dict[str, jax.Array]:
    """The parameters of a model as a flat {'/'-joined NNX path: array} dict."""
    return {name: var[...] for name, var in named_params(model).items()}


def _is_float(dtype) -> bool:
    return jnp.issubdtype(np.dtype(dtype), jnp.floating)


def check_state_against_config(shapes: Mapping[str, tuple], dtypes: Mapping[str, Any], cfg: ModelConfig,
                               source: str) -> None:
    """Raise CheckpointError naming every missing, unexpected, mis-shaped or non-float tensor.

    shapes/dtypes: {'/'-joined NNX path: shape / dtype} of the state being checked."""
    table = {jax_name(p): p.jax_shape for p in param_table(cfg)}
    not_float = [f"{n} has dtype {dtypes[n]}, expected a floating-point array"
                 for n in table if n in shapes and not _is_float(dtypes[n])]
    check_parameters(table, shapes, what=f"{source} ({cfg.kind} config)", error=CheckpointError,
                     extra_problems=not_float)


def check_state(state: Mapping[str, Any], cfg: ModelConfig, source: str = "state") -> None:
    check_state_against_config({n: tuple(np.shape(v)) for n, v in state.items()},
                               {n: np.asarray(v).dtype if not hasattr(v, "dtype") else v.dtype
                                for n, v in state.items()}, cfg, source)


def set_model_state(model: Model, state: Mapping[str, Any], source: str = "state") -> Model:
    """Load a flat {'/'-joined NNX path: array} state into `model` (strict: every parameter, matching
    shapes, nothing extra). Arrays keep their dtype (a float16/bfloat16 state makes a model of that dtype)."""
    check_state(state, model.config, source)
    params = named_params(model)
    for name, value in state.items():
        params[name].set_value(jnp.asarray(value))
    return model


def nest_flat(flat: Mapping[str, Any]) -> dict:
    """{'a/b/c': x} -> {'a': {'b': {'c': x}}}: the nested form orbax stores."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def flatten_nested(tree: Any) -> dict[str, Any]:
    """The inverse of nest_flat: a nested tree -> {'/'-joined path: leaf}."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf for path, leaf in leaves}


def _checkpointer(ocp):
    """A synchronous orbax checkpointer for plain pytrees of arrays (save returns when written)."""
    return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def save_tree(directory: PathLike, tree: Any) -> None:
    """Write a pytree of arrays as an orbax tree at `directory` (which must not exist) and wait for it."""
    ocp = _orbax()
    with _checkpointer(ocp) as ckptr:
        ckptr.save(Path(directory).absolute(), tree)


def tree_metadata(directory: PathLike) -> dict[str, tuple[tuple, Any]]:
    """{'/'-joined path: (shape, dtype)} of an orbax tree, read without loading any array."""
    ocp = _orbax()
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is missing")
    try:
        with _checkpointer(ocp) as ckptr:
            meta = ckptr.metadata(directory.absolute()).item_metadata
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for a bad tree
        raise CheckpointError(f"{directory} is not a readable orbax tree (truncated or corrupt?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    tree = getattr(meta, "tree", meta)
    out = {n: (tuple(m.shape), m.dtype) for n, m in flatten_nested(tree).items()
           if hasattr(m, "shape") and hasattr(m, "dtype")}
    if not out:
        raise CheckpointError(f"{directory} is not a readable orbax tree: no arrays found (truncated or corrupt?)")
    return out


def restore_tree(directory: PathLike, target: Any) -> Any:
    """Read an orbax tree into the structure of `target` (a pytree of jax.ShapeDtypeStruct with shardings)."""
    ocp = _orbax()
    directory = Path(directory)
    try:
        with _checkpointer(ocp) as ckptr:
            return ckptr.restore(directory.absolute(), target)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read the orbax tree {directory} (truncated or corrupt?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def save_state(path: PathLike, cfg: ModelConfig, state: Mapping[str, Any], *,
               extra: Optional[dict[str, bytes]] = None, trees: Optional[dict[str, Any]] = None) -> Path:
    """Write `path/config.json` and the orbax tree `path/params` of a flat state, atomically (replacing
    `path`). `trees` maps further directory names to pytrees saved with orbax; `extra` maps file names
    to bytes."""
    check_state(state, cfg, "state")
    path = Path(path)
    reserved = {PARAMS_DIR, "config.json"}
    for name in list(extra or {}) + list(trees or {}):
        if name in reserved or "/" in name or name.startswith("."):
            raise ValueError(f"cannot store an extra entry named {name!r} in a checkpoint")
    with atomic_directory(path) as tmp:
        write_config(tmp, cfg)
        save_tree(tmp / PARAMS_DIR, nest_flat({n: np.asarray(jax.device_get(v)) for n, v in state.items()}))
        for name, tree in (trees or {}).items():
            save_tree(tmp / name, tree)
        for name, data in (extra or {}).items():
            (tmp / name).write_bytes(data)
    return path


def save_model(model: Model, path: PathLike, *, extra: Optional[dict[str, bytes]] = None,
               trees: Optional[dict[str, Any]] = None) -> Path:
    """Write `path/config.json` and `path/params` (orbax) atomically (replacing `path`)."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, (TokenizerConfig, DynamicsConfig)) or not isinstance(model, nnx.Module):
        raise TypeError("save_model expects a dreamer4_jax Tokenizer or Dynamics")
    return save_state(path, cfg, model_state(model), extra=extra, trees=trees)


def load_state(path: PathLike, sharding: Optional[jax.sharding.Sharding] = None
               ) -> tuple[ModelConfig, dict[str, jax.Array]]:
    """Read and validate a native JAX checkpoint: (config, flat state). Arrays keep their stored dtype
    and are placed with `sharding` (default: the first local device)."""
    path = Path(path)
    cfg = read_config(path)
    params_dir = path / PARAMS_DIR
    meta = tree_metadata(params_dir)
    check_state_against_config({n: s for n, (s, _) in meta.items()}, {n: d for n, (_, d) in meta.items()},
                               cfg, str(params_dir))
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = nest_flat({n: jax.ShapeDtypeStruct(s, d, sharding=sharding) for n, (s, d) in meta.items()})
    state = flatten_nested(restore_tree(params_dir, target))
    return cfg, state


def load_model(path: PathLike, kind: Optional[str] = None, *, rngs: Optional[nnx.Rngs] = None) -> Model:
    """Load a native JAX checkpoint directory into a Tokenizer or Dynamics (eval mode).

    `kind` ("tokenizer" or "dynamics") makes loading a checkpoint of the other kind an error. `rngs`
    seeds the model's dropout/MAE streams for later training (default nnx.Rngs(0))."""
    path = Path(path)
    cfg = read_config(path)
    if kind is not None and cfg.kind != kind:
        raise CheckpointError(f"{path} holds a {cfg.kind} checkpoint, but a {kind} checkpoint was expected")
    cfg, state = load_state(path)
    model = build_model(cfg, rngs=rngs)
    set_model_state(model, state, str(path / PARAMS_DIR))
    return model.eval()


def load_for_agent(path: PathLike, finetune: DynamicsConfig, *, rngs: Optional[nnx.Rngs] = None) -> Dynamics:
    """A dynamics checkpoint in the agent-finetuning model `finetune` (shared.agent.agent_config):
    every stored parameter is loaded, the ones the checkpoint lacks (task embedding, heads) keep their
    table initialisation (`rngs`, default nnx.Rngs(0)). Training mode."""
    path = Path(path)
    check_agent_start(read_config(path), finetune, str(path))
    _, state = load_state(path)
    model = Dynamics(finetune, rngs=nnx.Rngs(0) if rngs is None else rngs)
    set_model_state(model, {**model_state(model), **state}, str(path / PARAMS_DIR))
    return model
