"""Optimizer and training parity: torch.optim.AdamW + clip_grad_norm_ vs dreamer4_jax.train.

- The optimizer alone: identical gradients fed to both for ten steps, clipping active, weight decay on
  the policy's parameters: parameters and the first step's updates.
- One training step and then ten on the same batches (same keep masks / shortcut draws / noise, same
  dropout masks), through dreamer4_jax.train.Trainer and a plain torch loop with the same param
  groups: parameters <= 1e-4 after step 1 and after step 10, and the loss of every step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import dreamer4_jax as dj
import dreamer4_torch as dt
from dreamer4_jax.train import OptimizerConfig, Trainer, make_optimizer
from dreamer4_torch.train.optim import decay_groups
from dreamer4_torch.train.optim import make_optimizer as torch_make_optimizer
from shared.config import replace
from shared.recipes import get_preset
from shared.params import param_table
from shared.shortcut import draw_shortcut_indices

from .helpers import compare, derive_seed, dropout_source, pair

PARAM_TOL = 1e-4
TINY = get_preset("tiny")


def torch_optimizer(model: torch.nn.Module, opt: OptimizerConfig) -> torch.optim.AdamW:
    """torch's AdamW on the torch trainer's param groups (decay_groups) under the JAX config's decay policy."""
    return torch.optim.AdamW(decay_groups(model, opt.weight_decay, opt.decay), lr=opt.lr, betas=(opt.b1, opt.b2),
                             eps=opt.eps)


def torch_step(model, optimizer, opt: OptimizerConfig, loss: torch.Tensor) -> float:
    """backward, clip, step; returns the gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters()]
    if opt.max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, opt.max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    optimizer.step()
    return float(norm)


def param_pairs(cfg, torch_model, jax_model, prefix="param") -> dict:
    """{name: (JAX value, torch value)} in the torch layout."""
    jstate = dj.model_state(jax_model)
    tparams = dict(torch_model.named_parameters())
    out = {}
    for spec in param_table(cfg):
        v = np.asarray(jstate["/".join(spec.jax_path)])
        out[f"{prefix} {spec.name}"] = (v.T if spec.role == "linear_weight" else v, tparams[spec.name])
    return out


def _leaf_name(path) -> str:
    keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)


def _torch_layout(pairs: dict) -> dict:
    return {n: (np.array(a, copy=True), b.detach().clone()) for n, (a, b) in pairs.items()}


@pytest.mark.parametrize("decay,kind,model", [("all", "adamw", "dynamics"), ("weights", "adamw", "dynamics"),
                                              ("weights", "muon", "dynamics"), ("weights", "muon", "tokenizer")])
def test_optimizer_steps_with_decay_and_clipping(direction, seed, decay, kind, model):
    """Same gradients in, same parameters out: AdamW bias correction, eps, decoupled decay on the
    decayed group only, global-norm clipping (active: the gradient norm is well above the limit).
    Gradients span three orders of magnitude between steps. kind "muon": the torch trainer's
    MuonAdamW (Newton-Schulz orthogonalised momentum on the hidden matrices) against the optax chain, on
    the dynamics model and on the tokenizer (its encoder's and decoder's transformers)."""
    import jax
    import optax

    cfg = TINY.dynamics if model == "dynamics" else TINY.tokenizer
    opt = OptimizerConfig(lr=1e-2, b1=0.8, b2=0.95, eps=1e-8, weight_decay=0.3, max_grad_norm=0.5, decay=decay,
                          kind=kind)
    t, j = pair(dt.build_model(cfg), dj.build_model(cfg, rngs=nnx.Rngs(0)), param_table(cfg), direction, seed)
    _, params, _ = nnx.split(j, nnx.Param, ...)
    tx = make_optimizer(opt, cfg)
    opt_state = tx.init(params)
    if kind == "muon":       # the trainer's groups: Muon on the hidden matrices, AdamW by the "weights" policy
        optimizer = torch_make_optimizer(t, "muon", opt.lr, opt.weight_decay, betas=(opt.b1, opt.b2), eps=opt.eps)
    else:
        optimizer = torch_optimizer(t, opt)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p))
    rng = np.random.default_rng(seed)
    tparams = dict(t.named_parameters())
    spec_by_jax_name = {"/".join(spec.jax_path): spec for spec in param_table(cfg)}
    before = _torch_layout(param_pairs(cfg, t, j))
    for step in range(10):
        grads = {spec.name: (rng.normal(size=spec.shape) * 10.0 ** rng.uniform(-2, 1)).astype(np.float32)
                 for spec in param_table(cfg)}
        for name, p in tparams.items():
            p.grad = torch.from_numpy(grads[name].copy())
        norm = torch.nn.utils.clip_grad_norm_(list(tparams.values()), opt.max_grad_norm)
        assert float(norm) > 2 * opt.max_grad_norm                      # clipping is active
        optimizer.step()

        def jax_grad(path, _):
            spec = spec_by_jax_name[_leaf_name(path)]
            g = grads[spec.name]
            return np.ascontiguousarray(g.T) if spec.role == "linear_weight" else g

        updates, opt_state = update(jax.tree_util.tree_map_with_path(jax_grad, params), opt_state, params)
        params = optax.apply_updates(params, updates)
        nnx.update(j, params)
        if step == 0:
            # the update is read back as (p + u) - p in float32, which alone costs up to ulp(|p|) ~ 5e-7
            # against |u| ~ 1e-2: hence 1e-4 here and 1e-5 on the parameters themselves
            after = param_pairs(cfg, t, j)
            compare(f"optimizer ({kind}): first update (decay, clipping)", direction,
                    {n.replace("param", "update"): (after[n][0] - before[n][0], after[n][1].detach() - before[n][1])
                     for n in after}, 1e-4)
    compare(f"optimizer ({kind}): 10 steps (decay, clipping)", direction, param_pairs(cfg, t, j), 1e-5)


def tokenizer_batches(cfg, seed, n):
    rng = np.random.default_rng(seed)
    return [{"video": rng.random((2, 3, cfg.channels, cfg.image_height, cfg.image_width), dtype=np.float32),
             "keep_mask": rng.random((2, 3, cfg.n_patches)) >= rng.uniform(0.2, 0.6)} for _ in range(n)]


def dynamics_batches(cfg, seed, n):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        draw = draw_shortcut_indices(rng, 4, 3, cfg.k_max, n_bootstrap=1)
        z1 = np.tanh(rng.normal(size=(4, 3, cfg.n_spatial, cfg.d_spatial))).astype(np.float32)
        out.append({"z1": z1, "signal_idx": draw.signal_idx, "step_idx": draw.step_idx, "n_bootstrap": 1,
                    "noise": rng.normal(size=z1.shape).astype(np.float32),
                    "actions": rng.uniform(-1, 1, (4, 3, cfg.action_dim)).astype(np.float32),
                    "act_mask": np.ones(cfg.action_dim, np.float32)})
    return out


def torch_loss(kind, cfg, model, batch):
    tt = torch.from_numpy
    if kind == "tokenizer":
        out = model(tt(batch["video"]), keep_mask=tt(batch["keep_mask"]))
        return dt.tokenizer_loss(out, image_shape=(cfg.channels, cfg.image_height, cfg.image_width),
                                 patch_size=cfg.patch_size)[0]
    return dt.shortcut_loss(model, tt(batch["z1"]), signal_idx=tt(batch["signal_idx"]),
                            step_idx=tt(batch["step_idx"]), noise=tt(batch["noise"]),
                            n_bootstrap=batch["n_bootstrap"], k_max=cfg.k_max, actions=tt(batch["actions"]),
                            act_mask=tt(batch["act_mask"]))[0]


@pytest.mark.parametrize("kind", ["tokenizer", "dynamics"])
def test_ten_training_steps(direction, seed, kind):
    """eps is 1e-6 here rather than torch's default 1e-8: the key part of every qkv bias has an exactly
    zero gradient (adding q.b_k to a whole row of logits does not change the softmax), so its computed
    gradient is rounding noise (~1e-10) that differs between any two implementations, and Adam with
    eps 1e-8 turns that noise into steps of ~lr/10 that no parity test can match. The optimizer itself
    is compared at eps 1e-8 above, on identical gradients."""
    if kind == "tokenizer":   # dropout on, masks injected; decay on linear weights only
        cfg = replace(TINY.tokenizer, transformer__dropout=0.1)
        opt = OptimizerConfig(lr=1e-3, eps=1e-6, weight_decay=0.1, max_grad_norm=0.05, decay="weights")
        batches = tokenizer_batches(cfg, seed, 10)
    else:                     # bootstrap rows in every batch; decay everywhere (upstream)
        cfg = TINY.dynamics
        opt = OptimizerConfig(lr=1e-3, eps=1e-6, weight_decay=0.1, max_grad_norm=0.05, decay="all")
        batches = dynamics_batches(cfg, seed, 10)
    t, j = pair(dt.build_model(cfg), dj.build_model(cfg, rngs=nnx.Rngs(0)), param_table(cfg), direction, seed)
    if cfg.transformer.dropout:
        source = dropout_source(derive_seed("training dropout"), cfg.transformer.dropout)
        dt.set_dropout_source(t, source)
        dj.set_dropout_source(j, source)
    t.train()
    optimizer = torch_optimizer(t, opt)
    import jax
    trainer = Trainer(j, opt, devices=jax.devices()[:1])
    records = {}
    for step, batch in enumerate(batches, start=1):
        loss_t = torch_loss(kind, cfg, t, batch)
        value_t = float(loss_t.detach())
        norm_t = torch_step(t, optimizer, opt, loss_t)
        metrics = trainer.train_step(batch)
        records[f"loss step {step}"] = (np.float32(metrics["loss"]), np.float32(value_t))
        records[f"grad norm step {step}"] = (np.float32(metrics["grad_norm"]), np.float32(norm_t))
        if step == 1:
            assert norm_t > opt.max_grad_norm                           # clipping is active
            compare(f"training: {kind} after 1 step", direction, param_pairs(cfg, t, trainer.sync_model()),
                    PARAM_TOL)
    compare(f"training: {kind} after 10 steps", direction, param_pairs(cfg, t, trainer.sync_model()), PARAM_TOL)
    compare(f"training: {kind} losses and gradient norms", direction, records, PARAM_TOL)
