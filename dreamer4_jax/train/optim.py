"""The JAX trainer's optimizer: torch's AdamW (or Muon + AdamW) and gradient clipping, in optax, with the
torch runner's warm-up + cosine learning rate.

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


## The learning rate

With `total_steps` > 0 the learning rate of update n (from 0) is lr * warmup_cosine(n): a linear
warm-up from lr / warmup_steps to lr over `warmup_steps` updates, then a cosine decay to
lr * min_lr_ratio at `total_steps` (the torch trainer's LambdaLR(warmup_cosine), which sets update n's
rate before it is taken). `total_steps` 0 (the default) keeps lr constant, as the Python API always did.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shared.config import ModelConfig
from shared.optim import (MUON_MOMENTUM, NEWTON_SCHULZ, NEWTON_SCHULZ_EPS, NEWTON_SCHULZ_STEPS, OPTIMIZERS,
                          muon_lr_scale)
from shared.params import DECAY_POLICIES, decays, hidden_matrix_names, param_table

from ..init import jax_name


def path_key(k) -> str:
    """One part of a pytree path (a dict key, sequence index or attribute) as a string."""
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def param_name(path) -> str:
    """The '/'-joined NNX path of a parameter leaf of an nnx.State (its trailing "value" dropped)."""
    keys = [path_key(k) for k in path]
    return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)

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
    warmup_steps: int = 0
    total_steps: int = 0           # 0: constant lr; else the warm-up + cosine schedule (module docstring)
    min_lr_ratio: float = 1.0

    def validate(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"optimizer kind must be one of {OPTIMIZERS}, got {self.kind!r}")
        if self.decay not in DECAY_POLICIES:
            raise ValueError(f"optimizer decay policy must be one of {DECAY_POLICIES}, got {self.decay!r}")
        if not (self.lr > 0 and 0 <= self.b1 < 1 and 0 <= self.b2 < 1 and self.eps >= 0 and self.weight_decay >= 0):
            raise ValueError(f"invalid optimizer settings {self}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if not (self.warmup_steps >= 0 and self.total_steps >= 0 and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"invalid learning-rate schedule (warmup_steps {self.warmup_steps}, total_steps "
                             f"{self.total_steps}, min_lr_ratio {self.min_lr_ratio})")

    def learning_rate(self):
        """lr, or with total_steps > 0 the schedule count -> lr * warmup_cosine(count) (optax calls it with
        the number of updates taken so far)."""
        if self.total_steps == 0:
            return self.lr
        return lambda count: self.lr * warmup_cosine(count, self.total_steps, self.warmup_steps, self.min_lr_ratio)


def warmup_cosine(step, total: int, warmup: int, min_ratio: float) -> jax.Array:
    """Learning-rate multiplier of update `step` (from 0): linear warm-up from 1/warmup to 1, then cosine
    decay to min_ratio at `total` (dreamer4_torch.train.runner.warmup_cosine, traceable)."""
    step = jnp.asarray(step, jnp.float32)
    progress = jnp.minimum(1.0, (step - warmup) / max(1, total - warmup))
    cosine = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    if warmup == 0:
        return cosine
    return jnp.where(step < warmup, (step + 1) / warmup, cosine)


def _per_param(params: nnx.State, cfg: ModelConfig, value_of):
    """A pytree shaped like `params` (an nnx.State of the model's Params) of value_of(ParamSpec)."""
    by_name = {jax_name(p): value_of(p) for p in param_table(cfg)}
    return jax.tree_util.tree_map_with_path(lambda path, _: by_name[param_name(path)], params)


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
    lr = opt.learning_rate()
    tx = optax.adamw(learning_rate=lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, eps_root=0.0,
                     weight_decay=opt.weight_decay, mask=mask)
    if opt.kind == "muon":
        # Muon's matrices always decay (torch's MuonAdamW group does), the others by the policy.
        muon = optax.chain(scale_by_muon(), optax.add_decayed_weights(opt.weight_decay),
                           optax.scale_by_learning_rate(lr))
        tx = optax.multi_transform({"muon": muon, "adamw": tx},
                                   functools.partial(optimizer_labels, cfg=cfg))
    if opt.max_grad_norm is None:
        return tx
    return optax.chain(clip_grad_norm_like_torch(opt.max_grad_norm), tx)

