"""Each block alone, torch vs JAX on the same weights and inputs (fp32): relative error <= 1e-5.

RMSNorm, the SwiGLU MLP, space attention in every mask mode, time attention (latents-only and all
slots), a layer with and without time attention — each also with the paper's options (QK-norm, GQA,
logit soft-cap, time RoPE) where they apply, and the layer with injected dropout in training mode.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from flax import nnx

import dreamer4_jax.layers as jl
import dreamer4_torch.layers as tl
from shared.config import TransformerConfig
from shared.recipes import get_preset
from shared.layout import dynamics_layout, space_mask, tokenizer_layout

from .helpers import block_table, compare, derive_seed, dropout_source, pair

TOL = 1e-5
TINY = get_preset("tiny")
TF = TransformerConfig(d_model=32, n_heads=4, depth=2, time_every=1)
PAPER = dict(qk_norm=True, final_norm=True, n_kv_heads=2, logit_softcap=5.0, time_rope=True)
TOK_LAYOUT = tokenizer_layout(TINY.tokenizer)           # 4 latents + 16 patches
DYN_LAYOUT = dynamics_layout(TINY.dynamics)             # action, signal, step, 2 spatial, 2 registers, 1 agent


def tf_for(paper: bool, **changes) -> TransformerConfig:
    return dataclasses.replace(TF, **(PAPER if paper else {}), **changes)


def inputs(seed: int, *shape) -> tuple[np.ndarray, torch.Tensor]:
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return x, torch.from_numpy(x.copy())


def ropes(tf: TransformerConfig, frames: int):
    """(torch rope, jax rope) tables from the same shared angles, or (None, None)."""
    if not tf.time_rope:
        return None, None
    pos = np.arange(frames)
    return (tl.rope_tables(pos, tf.head_dim, tf.rope_base, "cpu", torch.float32),
            jl.rope_tables(pos, tf.head_dim, tf.rope_base))


# module-level jitted appliers (one compile per block structure and shape, shared by both directions)
_apply = nnx.jit(lambda m, x: m(x))
_apply_rope = nnx.jit(lambda m, x, rope: m(x, rope))


def test_rmsnorm(direction, seed):
    table = block_table(TF, "layers.0.norm1.")
    t, j = pair(tl.RMSNorm(32), jl.RMSNorm(32), table, direction, seed)
    xn, xt = inputs(seed, 2, 3, 5, 32)
    with torch.no_grad():
        compare("block: RMSNorm", direction, {"out": (_apply(j, xn), t(xt))}, TOL)


def test_mlp(direction, seed):
    table = block_table(TF, "layers.0.mlp.")
    t, j = pair(tl.MLP(TF).eval(), jl.MLP(TF, nnx.Rngs(0)).eval(), table, direction, seed)
    xn, xt = inputs(seed, 2, 3, 5, 32)
    with torch.no_grad():
        compare("block: MLP", direction, {"out": (_apply(j, xn), t(xt))}, TOL)


@pytest.mark.parametrize("mode", ["encoder", "decoder", "wm_agent_isolated", "wm_agent"])
@pytest.mark.parametrize("paper", [False, True], ids=["upstream", "paper"])
def test_space_attention(direction, seed, mode, paper):
    layout = TOK_LAYOUT if mode in ("encoder", "decoder") else DYN_LAYOUT
    mask = space_mask(layout, mode)
    tf = tf_for(paper)
    table = block_table(tf, "layers.0.space.")
    t, j = pair(tl.SpaceAttention(tf, mask).eval(), jl.SpaceAttention(tf, mask, nnx.Rngs(0)).eval(),
                table, direction, seed)
    xn, xt = inputs(seed, 2, 3, layout.n_tokens, 32)
    with torch.no_grad():
        compare(f"block: space attention ({mode})", direction, {"out": (_apply(j, xn), t(xt))}, TOL)


@pytest.mark.parametrize("slots", ["latents_only", "all_slots"])
@pytest.mark.parametrize("paper", [False, True], ids=["upstream", "paper"])
def test_time_attention(direction, seed, slots, paper):
    tf = tf_for(paper)
    n_time = 4 if slots == "latents_only" else None
    table = block_table(tf, "layers.0.time.")
    t, j = pair(tl.TimeAttention(tf, n_time).eval(), jl.TimeAttention(tf, n_time, nnx.Rngs(0)).eval(),
                table, direction, seed)
    xn, xt = inputs(seed, 2, 5, 9, 32)
    rope_t, rope_j = ropes(tf, 5)
    with torch.no_grad():
        out_t = t(xt, rope_t)
    out_j = _apply_rope(j, xn, rope_j)
    compare(f"block: time attention ({slots})", direction, {"out": (out_j, out_t)}, TOL)
    if n_time is not None:      # the quirk: the block returns its input at the non-latent slots
        assert np.array_equal(np.asarray(out_j[:, :, n_time:]), xn[:, :, n_time:])


@pytest.mark.parametrize("time", ["with_time", "without_time"])
@pytest.mark.parametrize("variant", ["upstream", "paper", "dropout"])
def test_layer(direction, seed, time, variant):
    """A whole pre-norm layer; "dropout": training mode, tokenizer-style latents-only time attention,
    every dropout site (residual, MLP, attention probabilities) fed the same keep masks."""
    tf = tf_for(variant == "paper", time_every=1 if time == "with_time" else 2,
                dropout=0.25 if variant == "dropout" else 0.0)
    mask = space_mask(TOK_LAYOUT, "encoder")
    n_time = 4 if variant == "dropout" else None
    table = block_table(tf, "layers.0.")
    t = tl.BlockCausalLayer(tf, mask, 0, n_time)
    j = jl.BlockCausalLayer(tf, mask, 0, n_time, rngs=nnx.Rngs(0))
    t, j = pair(t, j, table, direction, seed)
    assert t.has_time == j.has_time == (time == "with_time")
    if variant == "dropout":
        source = dropout_source(derive_seed("layer dropout"), 0.25)
        tl.set_dropout_source(t, source)
        jl.set_dropout_source(j, source)
        t.train(), j.train()
    else:
        t.eval(), j.eval()
    xn, xt = inputs(seed, 2, 3, TOK_LAYOUT.n_tokens, 32)
    rope_t, rope_j = ropes(tf, 3)
    with torch.no_grad():
        out_t = t(xt, rope_t)
    out_j = _apply_rope(j, xn, rope_j)
    compare(f"block: layer ({time.replace('_', ' ')})", direction, {"out": (out_j, out_t)}, TOL)


def test_fully_masked_row_matches_torch_sdpa(direction, seed):
    """The project's masks never have a query row with no allowed key (shared.layout asserts it), but
    the behaviour is defined anyway: such a row outputs zeros before the out projection, as torch's
    SDPA does (not NaN, not a uniform average)."""
    mask = space_mask(DYN_LAYOUT, "wm_agent_isolated")
    mask[1] = False
    table = block_table(TF, "layers.0.space.")
    t, j = pair(tl.SpaceAttention(TF, mask).eval(), jl.SpaceAttention(TF, mask, nnx.Rngs(0)).eval(),
                table, direction, seed)
    xn, xt = inputs(seed, 2, 3, DYN_LAYOUT.n_tokens, 32)
    with torch.no_grad():
        out_t = t(xt)
    out_j = _apply(j, xn)
    assert np.isfinite(np.asarray(out_j)).all()
    bias = np.asarray(j.attn.out.bias[...])
    np.testing.assert_allclose(np.asarray(out_j)[:, :, 1], np.broadcast_to(bias, (2, 3, 32)), rtol=0, atol=0)
    compare("block: space attention (a fully masked row)", direction, {"out": (out_j, out_t)}, TOL)
