"""Both losses with injected draws, torch vs JAX: loss values <= 1e-5, gradients of every parameter <= 1e-4.

The tokenizer loss gets the same MAE keep mask in both backends; the shortcut-forcing loss the same
shared.shortcut draws (with bootstrap rows), noise, actions and action mask. Dropout is switched on
(rate 0.1, training mode) with identical injected keep masks at every site, so the comparison covers
the training-mode forward too.
"""

from __future__ import annotations

import chex
import numpy as np
import pytest
import torch
from flax import nnx

import dreamer4_jax as dj
import dreamer4_torch as dt
from shared.config import replace
from shared.recipes import get_preset
from shared.params import param_table
from shared.shortcut import draw_shortcut_indices

from .helpers import compare, derive_seed, dropout_source, pair

LOSS_TOL = 1e-5
GRAD_TOL = 1e-4
DROPOUT = 0.1
TINY = get_preset("tiny")
PAPER = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1, transformer__logit_softcap=20.0,
             transformer__time_rope=True)


@nnx.jit(static_argnames=("image_shape", "patch_size", "contrast_weight"))
def _tokenizer_loss_and_grads(model, video, keep, image_shape, patch_size, contrast_weight=0.0):
    def loss_fn(m):
        return dj.tokenizer_loss(m(video, keep_mask=keep), image_shape=image_shape, patch_size=patch_size,
                                 contrast_weight=contrast_weight)
    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    return loss, metrics, grads


@nnx.jit(static_argnames=("n_bootstrap", "k_max"))
def _shortcut_loss_and_grads(model, z1, signal_idx, step_idx, noise, actions, act_mask, n_bootstrap, k_max):
    def loss_fn(m):
        return dj.shortcut_loss(m, z1, signal_idx=signal_idx, step_idx=step_idx, noise=noise,
                                n_bootstrap=n_bootstrap, k_max=k_max, actions=actions, act_mask=act_mask)
    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    return loss, metrics, grads


def paired_training_model(cfg, direction, seed, dropout_seed):
    t, j = pair(dt.build_model(cfg), dj.build_model(cfg, rngs=nnx.Rngs(0)), param_table(cfg), direction, seed)
    source = dropout_source(dropout_seed, DROPOUT)
    dt.set_dropout_source(t, source)
    dj.set_dropout_source(j, source)
    return t.train(), j.train()


def grad_pairs(cfg, torch_model, jax_grads) -> dict:
    """{torch name: (JAX gradient, torch gradient)} for every parameter, in the torch layout."""
    flat = {"/".join(str(k) for k in path): v[...] for path, v in nnx.to_flat_state(jax_grads)}
    params = dict(torch_model.named_parameters())
    out = {}
    for spec in param_table(cfg):
        g = np.asarray(flat["/".join(spec.jax_path)])
        assert params[spec.name].grad is not None, f"torch has no gradient for {spec.name}"
        out[f"grad {spec.name}"] = (g.T if spec.role == "linear_weight" else g, params[spec.name].grad)
    return out


@pytest.mark.parametrize("contrast_weight", [0.0, 8.0], ids=["mse", "contrast-weighted"])
def test_tokenizer_loss_and_gradients(direction, seed, contrast_weight):
    cfg = replace(TINY.tokenizer, transformer__dropout=DROPOUT)
    t, j = paired_training_model(cfg, direction, seed, derive_seed("tokenizer loss dropout"))
    rng = np.random.default_rng(seed)
    video = rng.random((2, 3, 3, 16, 16), dtype=np.float32)
    keep = rng.random((2, 3, cfg.n_patches)) >= 0.5
    image_shape = (cfg.channels, cfg.image_height, cfg.image_width)
    loss_t, metrics_t = dt.tokenizer_loss(t(torch.from_numpy(video), keep_mask=torch.from_numpy(keep)),
                                          image_shape=image_shape, patch_size=cfg.patch_size,
                                          contrast_weight=contrast_weight)
    loss_t.backward()
    loss_j, metrics_j, grads = _tokenizer_loss_and_grads(j, video, keep, image_shape, cfg.patch_size,
                                                         contrast_weight)
    compare("loss: tokenizer (value)", direction,
            {"loss": (loss_j, loss_t), **{f"metric {k}": (metrics_j[k], v) for k, v in metrics_t.items()}}, LOSS_TOL)
    compare("loss: tokenizer (gradients)", direction, grad_pairs(cfg, t, grads), GRAD_TOL)


@pytest.mark.parametrize("paper", [False, True], ids=["upstream", "paper"])
def test_shortcut_loss_and_gradients(direction, seed, paper):
    cfg = replace(TINY.dynamics, transformer__dropout=DROPOUT, **(PAPER if paper else {}))
    t, j = paired_training_model(cfg, direction, seed, derive_seed("shortcut loss dropout"))
    rng = np.random.default_rng(seed)
    B, T = 4, 3
    draw = draw_shortcut_indices(rng, B, T, cfg.k_max, n_bootstrap=2)
    assert draw.n_bootstrap == 2 and (draw.step_idx[2:] < cfg.e_max).all()
    z1 = np.tanh(rng.normal(size=(B, T, cfg.n_spatial, cfg.d_spatial))).astype(np.float32)
    noise = rng.normal(size=z1.shape).astype(np.float32)
    actions = rng.uniform(-1, 1, (B, T, cfg.action_dim)).astype(np.float32)
    act_mask = (np.arange(cfg.action_dim) < 6).astype(np.float32)
    tt = torch.from_numpy
    loss_t, metrics_t = dt.shortcut_loss(t, tt(z1), signal_idx=tt(draw.signal_idx), step_idx=tt(draw.step_idx),
                                         noise=tt(noise), n_bootstrap=2, k_max=cfg.k_max, actions=tt(actions),
                                         act_mask=tt(act_mask))
    loss_t.backward()
    loss_j, metrics_j, grads = _shortcut_loss_and_grads(
        j, z1, draw.signal_idx.astype(np.int32), draw.step_idx.astype(np.int32), noise, actions, act_mask,
        2, cfg.k_max)
    chex.assert_trees_all_equal_structs(metrics_j, metrics_t)          # the same metric names
    compare("loss: shortcut forcing (value)", direction,
            {"loss": (loss_j, loss_t), **{f"metric {k}": (metrics_j[k], v) for k, v in metrics_t.items()}}, LOSS_TOL)
    compare("loss: shortcut forcing (gradients)", direction, grad_pairs(cfg, t, grads), GRAD_TOL)
