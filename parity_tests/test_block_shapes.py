"""Property-based shapes for the blocks (hypothesis): batch, frames, tokens, width, heads (and kv heads),
torch vs JAX at relative error <= 1e-5, for arbitrary masks without a fully masked row.

Each example compiles the JAX block anew, so the example counts are kept small; hypothesis draws its
examples from the run's parity seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from flax import nnx
from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings
from hypothesis import strategies as st

import dreamer4_jax.layers as jl
import dreamer4_torch.layers as tl
from shared.config import TransformerConfig

from . import helpers
from .helpers import block_table, compare, pair
from .test_blocks import _apply, _apply_rope, ropes

TOL = 1e-5
SETTINGS = settings(max_examples=6, deadline=None, derandomize=False, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def shapes(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    kv_heads = draw(st.sampled_from([g for g in (1, 2, 4) if heads % g == 0]))
    head_dim = draw(st.sampled_from([2, 4, 8, 16]))
    return dict(batch=draw(st.integers(1, 3)), frames=draw(st.integers(1, 5)), tokens=draw(st.integers(1, 12)),
                heads=heads, kv_heads=kv_heads, head_dim=head_dim, paper=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31 - 1)))


def make_tf(s: dict, **changes) -> TransformerConfig:
    fields = dict(d_model=s["heads"] * s["head_dim"], n_heads=s["heads"], depth=1)
    fields.update(changes)
    tf = TransformerConfig(**fields)
    if s["paper"]:
        tf = dataclasses.replace(tf, qk_norm=True, final_norm=True, n_kv_heads=s["kv_heads"], logit_softcap=4.0, time_rope=True)
    return tf


def describe(s: dict, x: np.ndarray, **more) -> str:
    extra = "".join(f" {k}={v}" for k, v in more.items())
    return (f"x{tuple(x.shape)} heads={s['heads']} kv_heads={s['kv_heads'] if s['paper'] else s['heads']} "
            f"paper={s['paper']}{extra}")


def random_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    mask = rng.random((n, n)) < 0.6
    mask[np.arange(n), np.arange(n)] = True          # every query sees at least itself
    return mask


def x_for(s: dict, tf: TransformerConfig):
    x = np.random.default_rng(s["seed"]).normal(size=(s["batch"], s["frames"], s["tokens"], tf.d_model))
    x = x.astype(np.float32)
    return x, torch.from_numpy(x.copy())


@hypothesis_seed(helpers.derive_seed("shapes-norm-mlp"))
@SETTINGS
@given(s=shapes())
def test_norm_and_mlp_shapes(direction, s):
    tf = make_tf(s)
    d = tf.d_model
    tn, jn = pair(tl.RMSNorm(d), jl.RMSNorm(d), block_table(tf, "layers.0.norm3."), direction, s["seed"])
    tm, jm = pair(tl.MLP(tf).eval(), jl.MLP(tf, nnx.Rngs(0)).eval(), block_table(tf, "layers.0.mlp."),
                  direction, s["seed"] + 1)
    xn, xt = x_for(s, tf)
    with torch.no_grad():
        compare("shapes: RMSNorm + MLP", direction,
                {"rmsnorm " + describe(s, xn): (_apply(jn, xn), tn(xt)), "mlp " + describe(s, xn): (_apply(jm, xn), tm(xt))}, TOL)


@hypothesis_seed(helpers.derive_seed("shapes-space"))
@SETTINGS
@given(s=shapes())
def test_space_attention_shapes(direction, s):
    tf = make_tf(s)
    mask = random_mask(np.random.default_rng(s["seed"]), s["tokens"])
    t, j = pair(tl.SpaceAttention(tf, mask).eval(), jl.SpaceAttention(tf, mask, nnx.Rngs(0)).eval(),
                block_table(tf, "layers.0.space."), direction, s["seed"])
    xn, xt = x_for(s, tf)
    with torch.no_grad():
        compare("shapes: space attention", direction, {"space " + describe(s, xn): (_apply(j, xn), t(xt))}, TOL)


@hypothesis_seed(helpers.derive_seed("shapes-time"))
@SETTINGS
@given(s=shapes(), latents=st.integers(0, 3))
def test_time_attention_shapes(direction, s, latents):
    tf = make_tf(s)
    n_time = min(latents, s["tokens"]) or None
    t, j = pair(tl.TimeAttention(tf, n_time).eval(), jl.TimeAttention(tf, n_time, nnx.Rngs(0)).eval(),
                block_table(tf, "layers.0.time."), direction, s["seed"])
    xn, xt = x_for(s, tf)
    rope_t, rope_j = ropes(tf, s["frames"])
    with torch.no_grad():
        out_t = t(xt, rope_t)
    compare("shapes: time attention", direction,
            {"time " + describe(s, xn, n_time=n_time): (_apply_rope(j, xn, rope_j), out_t)}, TOL)


@hypothesis_seed(helpers.derive_seed("shapes-layer"))
@SETTINGS
@given(s=shapes(), with_time=st.booleans())
def test_layer_shapes(direction, s, with_time):
    tf = make_tf(s, depth=2, time_every=1 if with_time else 2)
    mask = random_mask(np.random.default_rng(s["seed"]), s["tokens"])
    t, j = pair(tl.BlockCausalLayer(tf, mask, 0).eval(), jl.BlockCausalLayer(tf, mask, 0, rngs=nnx.Rngs(0)).eval(),
                block_table(tf, "layers.0."), direction, s["seed"])
    xn, xt = x_for(s, tf)
    rope_t, rope_j = ropes(tf, s["frames"])
    with torch.no_grad():
        out_t = t(xt, rope_t)
    compare("shapes: layer", direction, {"layer " + describe(s, xn, time=with_time): (_apply_rope(j, xn, rope_j), out_t)},
            TOL)
