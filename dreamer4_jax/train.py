"""Training in JAX: the optimizer matched to PyTorch's, a jit-compiled data-parallel train step for each
model, and training state that saves into (and resumes from) a native checkpoint directory.

## The optimizer, and how it reproduces torch's

The PyTorch recipe this matches (upstream's, plus optional clipping):

    groups = [{"params": decayed, "weight_decay": wd}, {"params": others, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm); opt.step()

torch's AdamW at step t (t from 1), for a parameter p with gradient g:
    p <- p - lr * wd * p                                   (decoupled decay, decayed group only)
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps)
`make_optimizer` builds the optax chain
    clip_grad_norm_like_torch(max_grad_norm)               (only when max_grad_norm is set)
    optax.adamw(lr, b1, b2, eps, eps_root=0, weight_decay=wd, mask=decay_mask(cfg, policy))
optax.adamw = scale_by_adam (u = m_hat / (sqrt(v_hat) + eps): bias-corrected moments, eps outside the
square root, as torch) -> add_decayed_weights (u + wd * p on the masked leaves) -> scale by -lr, so the
update is p <- p - lr * wd * p - lr * u: torch's step exactly (decay uses the pre-step p in both), up to
float rounding (torch divides sqrt(v) by sqrt(1 - b2^t), optax takes sqrt(v / (1 - b2^t))).
Every hyperparameter is passed explicitly: optax.adamw's default weight decay is 1e-4, torch's 0.01.

torch.nn.utils.clip_grad_norm_ computes the global 2-norm N over all gradients and multiplies every
gradient by min(1, max_norm / (N + 1e-6)); `clip_grad_norm_like_torch` does exactly that (optax's own
clip_by_global_norm divides by N without the 1e-6).

Which parameters decay (`decay` policy; shared.params.decay_names, the same names for both backends):
    "all"      every parameter, as upstream (`AdamW(model.parameters(), weight_decay=0.01)`); the default.
    "weights"  linear weights only (no decay on biases, norm scales, embeddings or learned tokens).

`OptimizerConfig(kind="muon")` is dreamer4_torch.train.optim.MuonAdamW (the torch trainer's
`--optimizer muon`): the hidden matrices (shared.params.hidden_matrix_names) take
    scale_by_muon (m <- 0.95 m + g; u = NS5(g + 0.95 m) * 0.2 sqrt(max(shape))) -> add_decayed_weights(wd)
    -> scale(-lr),
i.e. p <- p - lr * wd * p - lr * u as torch, with the Newton-Schulz iteration NS5 run on the wide
orientation in float32 so that a kernel (in, out) gets the transpose of torch's (out, in) update; every
other parameter takes the AdamW chain above (optax.multi_transform), after the shared clipping.

## The train step

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
from dataclasses import dataclass
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
from shared.optim import (MUON_MOMENTUM, NEWTON_SCHULZ, NEWTON_SCHULZ_EPS, NEWTON_SCHULZ_STEPS, OPTIMIZERS,
                          muon_lr_scale)
from shared.params import DECAY_POLICIES, decays, hidden_matrix_names, param_table
from shared.shortcut import draw_shortcut_indices, n_bootstrap_rows

from .checkpoint import (PARAMS_DIR, build_model, load_state, restore_tree, save_model, set_model_state,
                         tree_metadata)
from .dynamics import Dynamics, pack
from .init import jax_name
from .losses import shortcut_loss, tokenizer_loss
from .tokenizer import Tokenizer

PathLike = Union[str, os.PathLike]
TRAIN_STATE_DIR = "train_state"
TRAIN_STATE_FILE = "train_state.json"
TRAIN_STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptimizerConfig:
    """torch.optim.AdamW(lr, betas, eps, weight_decay) + clip_grad_norm_(max_grad_norm); with kind "muon",
    the transformer's hidden matrices on Muon instead (see the module docstring).

    Defaults are upstream's (lr 1e-4, weight decay 0.01 on every parameter); upstream clips the
    dynamics at 1.0 and does not clip the tokenizer (max_grad_norm None)."""

    lr: float = 1e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    max_grad_norm: Optional[float] = None
    decay: str = "all"
    kind: str = "adamw"

    def validate(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"optimizer kind must be one of {OPTIMIZERS}, got {self.kind!r}")
        if self.decay not in DECAY_POLICIES:
            raise ValueError(f"optimizer decay policy must be one of {DECAY_POLICIES}, got {self.decay!r}")
        if not (self.lr > 0 and 0 <= self.b1 < 1 and 0 <= self.b2 < 1 and self.eps >= 0 and self.weight_decay >= 0):
            raise ValueError(f"invalid optimizer settings {self}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")


def _per_param(params: nnx.State, cfg: ModelConfig, value_of):
    """A pytree shaped like `params` (an nnx.State of the model's Params) of value_of(ParamSpec)."""
    by_name = {jax_name(p): value_of(p) for p in param_table(cfg)}

    def name_of(path) -> str:
        keys = [_key(k) for k in path]
        return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)

    return jax.tree_util.tree_map_with_path(lambda path, _: by_name[name_of(path)], params)


def decay_mask(params: nnx.State, cfg: ModelConfig, policy: str):
    """A pytree of bools shaped like `params`: True = decays."""
    return _per_param(params, cfg, lambda spec: decays(spec, policy))


def optimizer_labels(params: nnx.State, cfg: ModelConfig):
    """"muon" for the hidden matrices (shared.params.hidden_matrix_names), "adamw" for the rest."""
    hidden = hidden_matrix_names(cfg)
    return _per_param(params, cfg, lambda spec: "muon" if spec.name in hidden else "adamw")


def orthogonalise(g: jax.Array) -> jax.Array:
    """Five Newton-Schulz iterations in float32 (dreamer4_torch.train.optim.orthogonalise): a nearly
    semi-orthogonal matrix with g's singular vectors. Computed on the wide orientation, so a kernel
    (in, out) gets exactly the transpose of what torch computes for its (out, in) weight."""
    x = g.astype(jnp.float32)
    x = x / (jnp.linalg.norm(x) + NEWTON_SCHULZ_EPS)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    a, b, c = NEWTON_SCHULZ
    for _ in range(NEWTON_SCHULZ_STEPS):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).astype(g.dtype)


def scale_by_muon(momentum: float = MUON_MOMENTUM) -> optax.GradientTransformation:
    """Muon's direction for matrices: m <- momentum m + g; u = orthogonalise(g + momentum m), scaled by
    shared.optim.muon_lr_scale(shape) (torch's MuonAdamW step before the learning rate)."""

    def init_fn(params):
        return optax.TraceState(trace=jax.tree_util.tree_map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        trace = jax.tree_util.tree_map(lambda g, m: momentum * m + g, updates, state.trace)
        out = jax.tree_util.tree_map(lambda g, m: orthogonalise(g + momentum * m) * muon_lr_scale(g.shape),
                                     updates, trace)
        return out, optax.TraceState(trace=trace)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_grad_norm_like_torch(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: g <- g * min(1, max_norm / (||g||_2 + 1e-6)), global norm."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
        return jax.tree_util.tree_map(lambda g: g * coef.astype(g.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


@functools.lru_cache(maxsize=64)
def make_optimizer(opt: OptimizerConfig, cfg: ModelConfig) -> optax.GradientTransformation:
    """The optax chain that reproduces torch's AdamW + clip_grad_norm_ (see the module docstring), or with
    kind "muon" dreamer4_torch.train.optim.MuonAdamW, for the params (nnx.State) of a model built from
    `cfg`. Cached, so that trainers with equal settings share one transformation object and hence one
    compiled train step."""
    opt.validate()
    mask = functools.partial(decay_mask, cfg=cfg, policy=opt.decay)
    tx = optax.adamw(learning_rate=opt.lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, eps_root=0.0,
                     weight_decay=opt.weight_decay, mask=mask)
    if opt.kind == "muon":
        # Muon's matrices always decay (torch's MuonAdamW group does), the others by the policy.
        muon = optax.chain(scale_by_muon(), optax.add_decayed_weights(opt.weight_decay), optax.scale(-opt.lr))
        tx = optax.multi_transform({"muon": muon, "adamw": tx},
                                   functools.partial(optimizer_labels, cfg=cfg))
    if opt.max_grad_norm is None:
        return tx
    return optax.chain(clip_grad_norm_like_torch(opt.max_grad_norm), tx)


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


def _key(k) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _fresh(state):
    """New Variable objects for `state`, owned by the current trace (jax.grad's), so the RNG streams of
    the merged model may advance inside the differentiated function (NNX forbids mutating a Variable
    created at another trace level)."""
    return jax.tree_util.tree_map(lambda x: x, state)


def _tokenizer_loss_fn(graphdef, params, rest, batch, mse_on: str):
    model = nnx.merge(graphdef, params, _fresh(rest))
    out = model(batch["video"], keep_mask=batch["keep_mask"])
    c = model.config
    loss, metrics = tokenizer_loss(out, image_shape=(c.channels, c.image_height, c.image_width),
                                   patch_size=c.patch_size, mse_on=mse_on)
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
               n_bootstrap: int = 0, mse_on: str = "masked"):
    """One optimizer step (pure; jit it). batch, for kind="tokenizer": video (B, T, C, H, W), keep_mask
    (B, T, Np) bool; for kind="dynamics": z1 (B, T, n_spatial, d_spatial) packed clean latents,
    signal_idx, step_idx (B, T) int, noise like z1, optional actions (B, T, A) and act_mask.
    Returns (new state, metrics incl. grad_norm before clipping)."""
    if kind == "tokenizer":
        fn = lambda p: _tokenizer_loss_fn(graphdef, p, state.rest, batch, mse_on)  # noqa: E731
    elif kind == "dynamics":
        fn = lambda p: _dynamics_loss_fn(graphdef, p, state.rest, batch, n_bootstrap)  # noqa: E731
    else:
        raise ValueError(f"kind must be 'tokenizer' or 'dynamics', got {kind!r}")
    (loss, (metrics, rest)), grads = jax.value_and_grad(fn, has_aux=True)(state.params)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return apply_gradients(tx, state, grads, rest), metrics


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "kind", "n_bootstrap", "mse_on"),
                   donate_argnames=("state",))
def jit_train_step(state: TrainState, batch, *, graphdef, tx, kind: str, n_bootstrap: int = 0,
                   mse_on: str = "masked"):
    """train_step under jax.jit; compiled once per (model structure, optimizer, batch shapes, shardings)."""
    return train_step(graphdef, tx, state, batch, kind=kind, n_bootstrap=n_bootstrap, mse_on=mse_on)


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
    names = ["/".join(_key(k) for k in path) for path, _ in leaves]
    return names, [leaf for _, leaf in leaves], treedef


def _is_key_array(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _storable(x):
    return jax.random.key_data(x) if _is_key_array(x) else x


def _nest(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _flatten_nested(tree) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key(k) for k in path): leaf for path, leaf in leaves}


def _train_state_tree(state: TrainState) -> dict:
    names, leaves, _ = _flat_leaves(state)
    if len(set(names)) != len(names):
        raise RuntimeError("train-state leaf names are not unique")
    return _nest({n: np.asarray(jax.device_get(_storable(x))) for n, x in zip(names, leaves)})


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

    mse_on: the tokenizer loss ("masked", upstream, or "all"); bootstrap_start: the step from which a
    quarter of each dynamics batch are bootstrap rows (upstream 5000; default 0, from the start).
    `model` is put in training mode; its dropout sources (set_dropout_source) are kept.
    """

    def __init__(self, model: Model, opt: OptimizerConfig = OptimizerConfig(), *, seed: int = 0,
                 devices: Optional[Iterable[jax.Device]] = None, mse_on: str = "masked",
                 bootstrap_start: int = 0):
        if not isinstance(model, (Tokenizer, Dynamics)):
            raise TypeError("Trainer expects a dreamer4_jax Tokenizer or Dynamics")
        if mse_on not in ("masked", "all"):
            raise ValueError(f"mse_on must be 'masked' or 'all', got {mse_on!r}")
        self.model = model.train()
        self.config: ModelConfig = model.config
        self.kind = self.config.kind
        self.opt = opt
        self.mse_on = mse_on
        self.bootstrap_start = int(bootstrap_start)
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
            video = np.asarray(batch["video"], dtype=np.float32)
            B, T = video.shape[:2]
            keep = batch.get("keep_mask")
            if keep is None:
                keep = draw_keep_mask(self.rng, c, B, T)
            inputs, n_boot = {"video": video, "keep_mask": np.asarray(keep, dtype=bool)}, 0
        else:
            z1 = pack(np.asarray(batch["latents"], dtype=np.float32), c.packing_factor) \
                if "z1" not in batch else np.asarray(batch["z1"], np.float32)
            B, T = z1.shape[:2]
            if "signal_idx" in batch:
                signal_idx, step_idx = batch["signal_idx"], batch["step_idx"]
                n_boot = int(batch["n_bootstrap"])
                noise = batch["noise"]
            else:
                n_boot = n_bootstrap_rows(B, self.step_count, self.bootstrap_start)
                draw = draw_shortcut_indices(self.rng, B, T, c.k_max, n_boot)
                signal_idx, step_idx = draw.signal_idx, draw.step_idx
                noise = self.rng.standard_normal(z1.shape, dtype=np.float32)
            inputs = {"z1": z1, "signal_idx": np.asarray(signal_idx, np.int32),
                      "step_idx": np.asarray(step_idx, np.int32), "noise": np.asarray(noise, np.float32)}
            for name in ("actions", "act_mask"):
                if batch.get(name) is not None:
                    inputs[name] = np.asarray(batch[name], np.float32)
        return inputs, n_boot

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimizer step on `batch`; returns the metrics as floats."""
        inputs, n_boot = self.prepare(batch)
        sharded = {k: self._shard(v) for k, v in inputs.items()}
        self.state, metrics = jit_train_step(self.state, sharded, graphdef=self.graphdef, tx=self.tx, kind=self.kind,
                                             n_bootstrap=n_boot, mse_on=self.mse_on)
        return {k: float(v) for k, v in jax.device_get(metrics).items()}

    def sync_model(self) -> Model:
        """Write the trained parameters (and RNG state) back into `self.model` and return it."""
        nnx.update(self.model, self.state.params, self.state.rest)
        return self.model

    # -- checkpoints
    def save(self, path: PathLike, extra_state: Optional[Mapping[str, Any]] = None) -> Path:
        """Write the model checkpoint plus the training state (atomic). `extra_state` is any
        JSON-serialisable dict stored with it (e.g. the data loader's position)."""
        self.sync_model()
        meta = {
            "format_version": TRAIN_STATE_VERSION, "kind": self.kind, "step": self.step_count,
            "optimizer": dataclasses.asdict(self.opt), "mse_on": self.mse_on,
            "bootstrap_start": self.bootstrap_start, "seed": self.seed,
            "numpy_rng": self.rng.bit_generator.state, "extra": dict(extra_state or {}),
        }
        return save_model(self.model, path, trees={TRAIN_STATE_DIR: _train_state_tree(self.state)},
                          extra={TRAIN_STATE_FILE: (json.dumps(meta, indent=2, default=int) + "\n").encode()})

    @classmethod
    def restore(cls, path: PathLike, devices: Optional[Iterable[jax.Device]] = None) -> "Trainer":
        """Resume a run saved with `save`: same model, optimizer state, step and random streams."""
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
        trainer = cls(model, OptimizerConfig(**meta["optimizer"]), seed=meta["seed"], devices=devices,
                      mse_on=meta["mse_on"], bootstrap_start=meta["bootstrap_start"])
        trainer.rng.bit_generator.state = meta["numpy_rng"]
        trainer.extra_state = meta.get("extra", {})
        trainer.state = trainer._restore_state(path / TRAIN_STATE_DIR)
        if trainer.step_count != meta["step"]:
            raise CheckpointError(f"{path}: train state step {trainer.step_count} != {meta_path} step {meta['step']}")
        trainer.sync_model()
        return trainer

    def _restore_state(self, directory: Path) -> TrainState:
        names, leaves, treedef = _flat_leaves(self.state)
        stored = tree_metadata(directory)
        want = {n: (tuple(np.shape(_storable(x))), np.dtype(_storable(x).dtype)) for n, x in zip(names, leaves)}
        problems = [f"missing {n}" for n in want if n not in stored]
        problems += [f"unexpected {n}" for n in stored if n not in want]
        problems += [f"{n} has shape {stored[n][0]} dtype {stored[n][1]}, expected {want[n][0]} {want[n][1]}"
                     for n in want if n in stored and (tuple(stored[n][0]), np.dtype(stored[n][1])) != want[n]]
        if problems:
            raise CheckpointError(f"{directory} does not match this {self.kind}'s training state: "
                                  + "; ".join(problems[:12]))
        target = _nest({n: jax.ShapeDtypeStruct(s, d, sharding=self.replicated) for n, (s, d) in want.items()})
        flat = _flatten_nested(restore_tree(directory, target))
        restored = []
        for n, x in zip(names, leaves):
            value = flat[n]
            if _is_key_array(x):
                value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(x))
            restored.append(jax.device_put(value, self.replicated))
        return jax.tree_util.tree_unflatten(treedef, restored)
