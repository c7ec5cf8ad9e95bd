"""The JAX train step and its state: a jit-compiled data-parallel step for each model, and training state
that saves into (and resumes from) a native checkpoint directory. The optimizer is in optim.py.

`Trainer` holds the model split into (graphdef, params, rest) — `rest` being the model's non-parameter
state (its dropout RNG streams) — plus the optax state and the step, as one `TrainState` pytree, and
runs a jax.jit step over a `jax.sharding.Mesh` of all local devices (axis "data"): the state is
replicated, every batch array is sharded on its leading (batch) axis, and XLA inserts the gradient
all-reduce (the loss is a mean over the global batch). The batch size must divide by the device count.

Random draws other than dropout are made on the host from a numpy Generator, so that a step's inputs
are plain arrays that a test can give to the torch backend too: the tokenizer's MAE keep masks and the
dynamics' shortcut draws (shared.shortcut.draw_shortcut_indices) and noise. `Trainer.save` writes the
model checkpoint plus the training state (TrainState as an orbax tree, and the Generator state,
optimizer settings and step as JSON); `Trainer.restore` resumes it exactly: the next step computes
the same loss, bit for bit, as the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shared.config import ModelConfig, TokenizerConfig
from shared.io import CheckpointError
from shared.params import parameter_problems
from shared.shortcut import BOOTSTRAP_FRACTION, draw_shortcut_indices, n_bootstrap_rows

from ..checkpoint import (PARAMS_DIR, build_model, flatten_nested, load_state, model_state, nest_flat, restore_tree,
                          save_state, set_model_state, tree_metadata)
from ..contracts import check_dtype, check_shape
from ..dynamics import Dynamics, pack
from ..losses import shortcut_loss, tokenizer_loss
from ..tokenizer import Tokenizer, check_video
from .optim import OptimizerConfig, make_optimizer, param_name, path_key

PathLike = Union[str, os.PathLike]
TRAIN_STATE_DIR = "train_state"
TRAIN_STATE_FILE = "train_state.json"
TRAIN_STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Train state and steps
# ---------------------------------------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: optimizer steps taken
    params: Any              # nnx.State of the model's Params
    opt_state: Any           # optax state
    rest: Any                # nnx.State of everything else (dropout / MAE RNG streams)


def _fresh(state):
    """New Variable objects for `state`, owned by the current trace (jax.grad's), so the RNG streams of
    the merged model may advance inside the differentiated function (NNX forbids mutating a Variable
    created at another trace level)."""
    return jax.tree_util.tree_map(lambda x: x, state)


def _tokenizer_loss_fn(graphdef, params, rest, batch, mse_on: str, contrast_weight: float = 0.0):
    model = nnx.merge(graphdef, params, _fresh(rest))
    out = model(batch["video"], keep_mask=batch["keep_mask"])
    c = model.config
    loss, metrics = tokenizer_loss(out, image_shape=(c.channels, c.image_height, c.image_width),
                                   patch_size=c.patch_size, mse_on=mse_on, contrast_weight=contrast_weight)
    return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))


def _dynamics_loss_fn(graphdef, params, rest, batch, n_bootstrap: int):
    model = nnx.merge(graphdef, params, _fresh(rest))
    loss, metrics = shortcut_loss(model, batch["z1"], signal_idx=batch["signal_idx"], step_idx=batch["step_idx"],
                                  noise=batch["noise"], n_bootstrap=n_bootstrap, k_max=model.config.k_max,
                                  actions=batch.get("actions"), act_mask=batch.get("act_mask"))
    return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))


def apply_gradients(tx: optax.GradientTransformation, state: TrainState, grads, rest) -> TrainState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rest=rest)


def train_step(graphdef, tx, state: TrainState, batch: Mapping[str, jax.Array], *, kind: str,
               n_bootstrap: int = 0, mse_on: str = "masked", contrast_weight: float = 0.0):
    """One optimizer step (pure; jit it). batch, for kind="tokenizer": video (B, T, C, H, W), keep_mask
    (B, T, Np) bool; for kind="dynamics": z1 (B, T, n_spatial, d_spatial) packed clean latents,
    signal_idx, step_idx (B, T) int, noise like z1, optional actions (B, T, A) and act_mask.
    Returns (new state, metrics incl. grad_norm before clipping)."""
    if kind == "tokenizer":
        fn = lambda p: _tokenizer_loss_fn(graphdef, p, state.rest, batch, mse_on, contrast_weight)  # noqa: E731
    elif kind == "dynamics":
        fn = lambda p: _dynamics_loss_fn(graphdef, p, state.rest, batch, n_bootstrap)  # noqa: E731
    else:
        raise ValueError(f"kind must be 'tokenizer' or 'dynamics', got {kind!r}")
    (loss, (metrics, rest)), grads = jax.value_and_grad(fn, has_aux=True)(state.params)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return apply_gradients(tx, state, grads, rest), metrics


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "kind", "n_bootstrap", "mse_on", "contrast_weight"),
                   donate_argnames=("state",))
def jit_train_step(state: TrainState, batch, *, graphdef, tx, kind: str, n_bootstrap: int = 0,
                   mse_on: str = "masked", contrast_weight: float = 0.0):
    """train_step under jax.jit; compiled once per (model structure, optimizer, batch shapes, shardings)."""
    return train_step(graphdef, tx, state, batch, kind=kind, n_bootstrap=n_bootstrap, mse_on=mse_on,
                      contrast_weight=contrast_weight)


def make_mesh(devices: Optional[Iterable[jax.Device]] = None) -> Mesh:
    """A 1-d mesh with axis "data" over `devices` (default: all local devices)."""
    devices = list(jax.local_devices() if devices is None else devices)
    return Mesh(np.array(devices), ("data",))


def draw_keep_mask(rng: np.random.Generator, cfg: TokenizerConfig, batch: int, frames: int) -> np.ndarray:
    """(B, T, Np) bool MAE keep mask from a numpy Generator: per (b, t) p ~ U(p_min, p_max), keep each
    patch with probability 1 - p (the distribution of MAE.draw_keep_mask in both backends)."""
    u = rng.random((batch, frames, 1), dtype=np.float32)
    p = cfg.mae_p_min + (cfg.mae_p_max - cfg.mae_p_min) * u
    return rng.random((batch, frames, cfg.n_patches), dtype=np.float32) >= p


# ---------------------------------------------------------------------------------------------
# Saving the train state
# ---------------------------------------------------------------------------------------------

def _flat_leaves(tree) -> tuple[list[str], list[Any], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = ["/".join(path_key(k) for k in path) for path, _ in leaves]
    return names, [leaf for _, leaf in leaves], treedef


def _is_key_array(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _storable(x):
    return jax.random.key_data(x) if _is_key_array(x) else x


def _train_state_tree(state: TrainState) -> dict:
    names, leaves, _ = _flat_leaves(state)
    if len(set(names)) != len(names):
        raise RuntimeError("train-state leaf names are not unique")
    return nest_flat({n: np.asarray(jax.device_get(_storable(x))) for n, x in zip(names, leaves)})


def params_by_name(params: nnx.State) -> dict[str, jax.Array]:
    """An nnx.State of a model's Params as a flat {'/'-joined NNX path: array} state."""
    return {param_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def params_from_names(like: nnx.State, flat: Mapping[str, Any]) -> nnx.State:
    """The inverse of params_by_name: `flat`'s arrays in the structure (and placement) of `like`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jax.device_put(jnp.asarray(flat[param_name(path)], x.dtype), x.sharding), like)


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------

Model = Union[Tokenizer, Dynamics]


class Trainer:
    """Data-parallel training of a Tokenizer or Dynamics over all local devices (or `devices`).

    tokenizer batches: {"video": (B, T, C, H, W) float in [0, 1]}
    dynamics batches:  {"latents": (B, T, n_latents, d_bottleneck) clean tokenizer latents (or "z1":
                        already packed, (B, T, n_spatial, d_spatial)), optional "actions": (B, T, action_dim)
                        and "act_mask": (action_dim,) or like actions}
    Injected draws replace the host draws (parity tests use this): "keep_mask" (B, T, Np) bool for the
    tokenizer; "signal_idx", "step_idx" (B, T), "noise" (like z1) and "n_bootstrap" for the dynamics.

    mse_on: the tokenizer loss ("masked", upstream, or "all"); contrast_weight: its squared errors
    weighted by losses.contrast_weights (0: plain); bootstrap_start: the step from which
    `bootstrap_fraction` (default a quarter) of each dynamics batch are bootstrap rows (upstream 5000;
    default 0, from the start).
    `model` is put in training mode; its dropout sources (set_dropout_source) are kept.
    """

    def __init__(self, model: Model, opt: OptimizerConfig = OptimizerConfig(), *, seed: int = 0,
                 devices: Optional[Iterable[jax.Device]] = None, mse_on: str = "masked",
                 bootstrap_start: int = 0, bootstrap_fraction: float = BOOTSTRAP_FRACTION,
                 contrast_weight: float = 0.0):
        if not isinstance(model, (Tokenizer, Dynamics)):
            raise TypeError("Trainer expects a dreamer4_jax Tokenizer or Dynamics")
        if mse_on not in ("masked", "all"):
            raise ValueError(f"mse_on must be 'masked' or 'all', got {mse_on!r}")
        self.model = model.train()
        self.config: ModelConfig = model.config
        self.kind = self.config.kind
        self.opt = opt
        self.mse_on = mse_on
        if contrast_weight < 0:
            raise ValueError(f"contrast_weight must be >= 0, got {contrast_weight}")
        self.contrast_weight = float(contrast_weight)
        self.bootstrap_start = int(bootstrap_start)
        self.bootstrap_fraction = float(bootstrap_fraction)
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.mesh = make_mesh(devices)
        self.n_devices = self.mesh.devices.size
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.graphdef, params, rest = nnx.split(self.model, nnx.Param, ...)
        self.tx = make_optimizer(opt, self.config)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params), rest=rest)
        self.state: TrainState = jax.device_put(state, self.replicated)

    @property
    def step_count(self) -> int:
        return int(jax.device_get(self.state.step))

    def _shard(self, x):
        x = jnp.asarray(x)
        if x.ndim and x.shape[0] % self.n_devices == 0 and x.shape[0] > 1:
            return jax.device_put(x, NamedSharding(self.mesh, PartitionSpec("data")))
        return jax.device_put(x, self.replicated)

    def prepare(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """The step inputs (host draws added) and the number of bootstrap rows."""
        c = self.config
        if self.kind == "tokenizer":
            required, injected = ["video"], ["keep_mask"]
        else:
            required = ["z1" if "z1" in batch else "latents"]
            injected = ["signal_idx", "step_idx", "noise", "n_bootstrap"]
        missing = [k for k in required if k not in batch]
        given = [k for k in injected if k in batch]
        if missing or (given and len(given) != len(injected)):
            raise ValueError(f"a {self.kind} batch needs {required}" + (f" and, to inject draws, all of {injected}"
                             if given else "") + f"; got keys {sorted(batch)}")
        lead = batch[required[0]]
        if np.shape(lead)[0] % self.n_devices:
            raise ValueError(f"batch size {np.shape(lead)[0]} is not divisible by the {self.n_devices} devices "
                             "of the mesh")
        if self.kind == "tokenizer":
            video = np.asarray(batch["video"])
            check_video(video, c)              # before the float32 cast, which would hide uint8 frames
            video = video.astype(np.float32, copy=False)
            B, T = video.shape[:2]
            keep = batch.get("keep_mask")
            if keep is None:
                keep = draw_keep_mask(self.rng, c, B, T)
            inputs, n_boot = {"video": video, "keep_mask": np.asarray(keep, dtype=bool)}, 0
        else:
            if "z1" in batch:
                z1 = np.asarray(batch["z1"], np.float32)
                check_shape("z1", z1, ("B", "T", c.n_spatial, c.d_spatial))
            else:
                latents = np.asarray(batch["latents"], dtype=np.float32)
                check_shape("latents", latents, ("B", "T", c.n_latents, c.d_bottleneck))
                z1 = pack(latents, c.packing_factor)
            B, T = z1.shape[:2]
            if "signal_idx" in batch:
                signal_idx, step_idx = np.asarray(batch["signal_idx"]), np.asarray(batch["step_idx"])
                check_dtype("signal_idx", signal_idx, int)     # before the int32 cast below would truncate
                check_dtype("step_idx", step_idx, int)
                n_boot = int(batch["n_bootstrap"])
                noise = batch["noise"]
            else:
                n_boot = n_bootstrap_rows(B, self.step_count, self.bootstrap_start, self.bootstrap_fraction)
                draw = draw_shortcut_indices(self.rng, B, T, c.k_max, n_boot)
                signal_idx, step_idx = draw.signal_idx, draw.step_idx
                noise = self.rng.standard_normal(z1.shape, dtype=np.float32)
            inputs = {"z1": z1, "signal_idx": np.asarray(signal_idx, np.int32),
                      "step_idx": np.asarray(step_idx, np.int32), "noise": np.asarray(noise, np.float32)}
            if batch.get("actions") is not None:
                inputs["actions"] = np.asarray(batch["actions"], np.float32)
                check_shape("actions", inputs["actions"], (B, T, c.action_dim))
            if batch.get("act_mask") is not None:
                inputs["act_mask"] = np.asarray(batch["act_mask"], np.float32)
        return inputs, n_boot

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimizer step on `batch`; returns the metrics as floats."""
        inputs, n_boot = self.prepare(batch)
        sharded = {k: self._shard(v) for k, v in inputs.items()}
        self.state, metrics = jit_train_step(self.state, sharded, graphdef=self.graphdef, tx=self.tx, kind=self.kind,
                                             n_bootstrap=n_boot, mse_on=self.mse_on,
                                             contrast_weight=self.contrast_weight)
        out = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if self.kind == "dynamics":
            out["bootstrap_rows"] = float(n_boot)
        return out

    def sync_model(self) -> Model:
        """Write the trained parameters (and RNG state) back into `self.model` and return it."""
        nnx.update(self.model, self.state.params, self.state.rest)
        return self.model

    # -- checkpoints
    def save(self, path: PathLike, extra_state: Optional[Mapping[str, Any]] = None, *,
             weights: Optional[Mapping[str, Any]] = None, files: Optional[Mapping[str, bytes]] = None) -> Path:
        """Write the model checkpoint plus the training state (atomic). `extra_state` is any
        JSON-serialisable dict stored with it (e.g. the data loader's position). `weights` (a flat
        {'/'-joined NNX path: array} state, e.g. a moving average) replaces the trained parameters as the
        checkpoint's model weights (`params/`, what load_model reads); the training state always holds the
        trained ones. `files` maps further file names to their bytes."""
        self.sync_model()
        meta = {
            "format_version": TRAIN_STATE_VERSION, "kind": self.kind, "step": self.step_count,
            "optimizer": dataclasses.asdict(self.opt), "mse_on": self.mse_on,
            "bootstrap_start": self.bootstrap_start, "bootstrap_fraction": self.bootstrap_fraction, "seed": self.seed,
            "numpy_rng": self.rng.bit_generator.state, "extra": dict(extra_state or {}),
        }
        extra = dict(files or {})
        extra[TRAIN_STATE_FILE] = (json.dumps(meta, indent=2, default=int) + "\n").encode()
        return save_state(path, self.config, model_state(self.model) if weights is None else weights,
                          trees={TRAIN_STATE_DIR: _train_state_tree(self.state)}, extra=extra)

    @classmethod
    def restore(cls, path: PathLike, devices: Optional[Iterable[jax.Device]] = None, *,
                opt: Optional[OptimizerConfig] = None) -> "Trainer":
        """Resume a run saved with `save`: same model, optimizer state, step and random streams. `opt`
        replaces the saved optimizer settings (e.g. a longer schedule); its state must have the same
        structure."""
        path = Path(path)
        meta_path = path / TRAIN_STATE_FILE
        if not meta_path.is_file():
            raise CheckpointError(f"{meta_path} is missing: {path} is a model checkpoint without training state")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{meta_path} is not valid JSON: {e}") from e
        if meta.get("format_version") != TRAIN_STATE_VERSION:
            raise CheckpointError(f"{meta_path}: unsupported format_version {meta.get('format_version')!r}")
        cfg, state = load_state(path)
        if cfg.kind != meta.get("kind"):
            raise CheckpointError(f"{meta_path} describes a {meta.get('kind')} run but {path} holds a {cfg.kind}")
        model = set_model_state(build_model(cfg), state, str(path / PARAMS_DIR))
        opt = OptimizerConfig(**meta["optimizer"]) if opt is None else opt
        trainer = cls(model, opt, seed=meta["seed"], devices=devices,
                      mse_on=meta["mse_on"], bootstrap_start=meta["bootstrap_start"],
                      bootstrap_fraction=meta.get("bootstrap_fraction", BOOTSTRAP_FRACTION))
        trainer.rng.bit_generator.state = meta["numpy_rng"]
        trainer.extra_state = meta.get("extra", {})
        trainer.checkpoint_weights = state      # params/: the trained weights, or what `save(weights=)` stored
        trainer.state = trainer._restore_state(path / TRAIN_STATE_DIR)
        if trainer.step_count != meta["step"]:
            raise CheckpointError(f"{path}: train state step {trainer.step_count} != {meta_path} step {meta['step']}")
        trainer.sync_model()
        return trainer

    def _restore_state(self, directory: Path) -> TrainState:
        names, leaves, treedef = _flat_leaves(self.state)
        stored = tree_metadata(directory)
        want = {n: (tuple(np.shape(_storable(x))), np.dtype(_storable(x).dtype)) for n, x in zip(names, leaves)}
        problems = parameter_problems({n: s for n, (s, _) in want.items()}, {n: s for n, (s, _) in stored.items()})
        problems += [f"{n} has dtype {stored[n][1]}, expected {want[n][1]}"
                     for n in want if n in stored and np.dtype(stored[n][1]) != want[n][1]]
        if problems:
            raise CheckpointError(f"{directory} does not match this {self.kind}'s training state: "
                                  + "; ".join(problems[:12]))
        target = nest_flat({n: jax.ShapeDtypeStruct(s, d, sharding=self.replicated) for n, (s, d) in want.items()})
        flat = flatten_nested(restore_tree(directory, target))
        restored = []
        for n, x in zip(names, leaves):
            value = flat[n]
            if _is_key_array(x):
                value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(x))
            restored.append(jax.device_put(value, self.replicated))
        return jax.tree_util.tree_unflatten(treedef, restored)
