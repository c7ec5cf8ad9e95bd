"""The JAX sampler: upstream's semantics (uncached), and KV-cached generation equal to it to fp32 rounding.

Mirrors tests/test_sampler.py (the PyTorch sampler); torch vs JAX rollouts live in parity_tests/test_sampler.py.
"""

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from dreamer4_jax import Dynamics, Tokenizer  # noqa: E402
from dreamer4_jax.layers import KVCache, add_positions, time_attention_mask  # noqa: E402
from dreamer4_jax.sampler import Sampler, rollout  # noqa: E402
from shared.config import replace  # noqa: E402
from shared.recipes import get_preset  # noqa: E402

PAPER_TF = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1,
                transformer__logit_softcap=30.0, transformer__time_rope=True)
TOL = 1e-5


def make_dynamics(preset="tiny", **changes):
    cfg = get_preset(preset).dynamics
    cfg = replace(cfg, **changes) if changes else cfg
    dyn = Dynamics(cfg, rngs=nnx.Rngs(0)).eval()
    # The zero-initialised head (and the tiny action head) would make every prediction trivial;
    # scale them so predictions are O(1) and depend visibly on context and actions.
    k1, k2 = jax.random.split(jax.random.key(0))
    w = dyn.flow_x_head.kernel
    w.set_value(jax.random.normal(k1, w.shape) / math.sqrt(w.shape[0]))
    fc2 = dyn.action_encoder.fc2.kernel
    fc2.set_value(0.05 * jax.random.normal(k2, fc2.shape))
    return dyn


def inputs(dyn, B=2, C=3, H=8, seed=1):
    c = dyn.config
    rng = np.random.default_rng(seed)
    ctx = (rng.random((B, C, c.n_spatial, c.d_spatial)) * 2 - 1).astype(np.float32)
    actions = (rng.random((B, C + H, c.action_dim)) * 2 - 1).astype(np.float32)
    noise = rng.standard_normal((B, H, c.n_spatial, c.d_spatial)).astype(np.float32)
    return jnp.asarray(ctx), jnp.asarray(actions), jnp.asarray(noise)


def maxdiff(a, b) -> float:
    return float(jnp.abs(jnp.asarray(a) - jnp.asarray(b)).max())


def upstream_reference(dyn, ctx, actions, act_mask, H, K, C, noise):
    """Upstream's demo loop, written out independently: a window of the last C latents recomputed in
    full for every Euler step, context labelled (k_max - 1, e_max), the window's first action zeroed,
    the newest action producing the new frame."""
    k_max = dyn.config.k_max
    e_max = int(math.log2(k_max))
    B, C0 = ctx.shape[:2]
    z_hist = [ctx[:, t] for t in range(C0)]
    a_hist = [None if actions is None else actions[:, t] for t in range(C0)]
    out = []
    for h in range(H):
        a_hist.append(None if actions is None else actions[:, C0 + h])
        g = len(z_hist)
        s = max(0, g - C)
        past = jnp.stack(z_hist[s:g], axis=1)
        t = past.shape[1]
        acts = None
        if actions is not None:
            acts = np.zeros((B, t + 1, actions.shape[-1]), np.float32)
            if t >= 1:
                acts[:, 1:] = np.stack([np.asarray(a) for a in a_hist[s + 1:s + t + 1]], axis=1)
            acts = jnp.asarray(acts)
        step_idx = np.full((B, t + 1), e_max, dtype=np.int32)
        step_idx[:, -1] = int(math.log2(K))
        signal_idx = np.full((B, t + 1), k_max - 1, dtype=np.int32)
        z = noise[:, h]
        for i in range(K):
            signal_idx[:, -1] = i * (k_max // K)
            x1 = dyn(jnp.concatenate([past, z[:, None]], axis=1), signal_idx=jnp.asarray(signal_idx),
                     step_idx=jnp.asarray(step_idx), actions=acts, act_mask=act_mask)[0][:, -1]
            b = (x1.astype(jnp.float32) - z.astype(jnp.float32)) / max(1e-4, 1.0 - i / K)
            z = (z.astype(jnp.float32) + b * (1.0 / K)).astype(z.dtype)
        z_hist.append(z)
        out.append(z)
    return jnp.stack(out, axis=1)


# --------------------------------------------------------------------------- upstream semantics

# A window longer than the rollout (C = None or 24) is covered by the cache tests below and by torch's test
@pytest.mark.parametrize("K,C,with_actions", [(4, 4, True), (1, 2, False), (8, 3, True)])
def test_uncached_sampler_is_upstreams_loop(K, C, with_actions):
    dyn = make_dynamics()
    ctx, actions, noise = inputs(dyn, H=7)
    mask = jnp.zeros(16).at[:3].set(1.0)
    acts = actions if with_actions else None
    m = mask if with_actions else None
    ref = upstream_reference(dyn, ctx, acts, m, 7, K, C, noise)
    got = rollout(dyn, ctx, acts, m, 7, n_steps=K, noise=noise, use_cache=False, context_length=C)
    assert got.shape == (2, 7, 2, 16) and float(jnp.abs(ref).mean()) > 0.1
    assert maxdiff(got, ref) <= 1e-6


def test_actions_align_with_the_frames_they_produce():
    """actions[:, C + h] produces predicted frame h: changing it leaves frames < h untouched; row 0 of
    the window never matters (it is zeroed, as in training windows)."""
    dyn = make_dynamics()
    ctx, actions, noise = inputs(dyn, C=3, H=5)
    base = rollout(dyn, ctx, actions, None, 5, n_steps=2, noise=noise)
    changed = actions.at[:, 3 + 2].multiply(-1.0)
    other = rollout(dyn, ctx, changed, None, 5, n_steps=2, noise=noise)
    assert maxdiff(base[:, :2], other[:, :2]) == 0.0 and maxdiff(base[:, 2], other[:, 2]) > 1e-3
    first = actions.at[:, 0].set(0.7)
    assert maxdiff(rollout(dyn, ctx, first, None, 5, n_steps=2, noise=noise), base) == 0.0


def test_noised_context_uses_the_noisy_label_and_injected_noise():
    dyn = make_dynamics()
    ctx, actions, noise = inputs(dyn, H=3)
    eps = jax.random.normal(jax.random.key(5), (2, 6, *ctx.shape[2:]))
    kw = dict(n_steps=2, noise=noise, context_mode="noised")
    a = rollout(dyn, ctx, actions, None, 3, context_noise=eps, **kw)
    b = rollout(dyn, ctx, actions, None, 3, context_noise=np.asarray(eps), **kw)      # numpy works too
    c = rollout(dyn, ctx, actions, None, 3, context_noise=-eps, **kw)
    clean = rollout(dyn, ctx, actions, None, 3, n_steps=2, noise=noise)
    assert maxdiff(a, b) == 0.0 and maxdiff(a, c) > 1e-3 and maxdiff(a, clean) > 1e-3
    s = Sampler(dyn, context_mode="noised", tau_ctx=0.9)
    assert s.context_signal_idx == 7 and s.context_tau == 7 / 8
    with pytest.raises(ValueError, match="tau_ctx must lie in"):
        Sampler(dyn, context_mode="noised", tau_ctx=1.0)


def test_keys_and_noise_functions_reproduce_and_inputs_are_checked():
    dyn = make_dynamics()
    ctx, actions, _ = inputs(dyn, H=3)
    kw = dict(context_mode="noised", context_length=2)
    a = rollout(dyn, ctx, actions, None, 3, noise=jax.random.key(3), **kw)
    b = rollout(dyn, ctx, actions, None, 3, noise=jax.random.key(3), use_cache=False, **kw)
    c = rollout(dyn, ctx, actions, None, 3, noise=3, **kw)                 # an int seed is that key
    d = rollout(dyn, ctx, actions, None, 3, noise=jax.random.key(4), **kw)
    assert maxdiff(a, b) <= TOL and maxdiff(a, c) == 0.0 and maxdiff(a, d) > 1e-3
    # A noise function is asked for the starting noise first, then the context noise (torch's order).
    rng = np.random.default_rng(0)
    start = rng.standard_normal((2, 3, 2, 16)).astype(np.float32)
    eps = rng.standard_normal((2, 6, 2, 16)).astype(np.float32)
    fn_rng = np.random.default_rng(0)
    via_fn = rollout(dyn, ctx, actions, None, 3, noise=lambda shape: fn_rng.standard_normal(shape), **kw)
    assert maxdiff(via_fn, rollout(dyn, ctx, actions, None, 3, noise=start, context_noise=eps, **kw)) == 0.0
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3, 2, 16\).*no per-step noise axis"):
        rollout(dyn, ctx, actions, None, 3, n_steps=4, noise=jnp.zeros((2, 3, 4, 2, 16)))
    with pytest.raises(ValueError, match=r"actions must have shape \(B, C \+ H, A\) = \(2, 6, 16\)"):
        rollout(dyn, ctx, actions[:, :5], None, 3)
    with pytest.raises(ValueError, match="power of two in \\[1, 8\\]"):
        rollout(dyn, ctx, actions, None, 3, n_steps=3)
    with pytest.raises(ValueError, match="window_mode='roll'.*time_rope"):
        rollout(dyn, ctx, actions, None, 3, window_mode="roll")
    with pytest.raises(ValueError, match="context_mode must be one of"):
        rollout(dyn, ctx, actions, None, 3, context_mode="clean")
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        rollout(dyn, ctx, actions, None, 0)
    with pytest.raises(TypeError, match="noise must be None, an array"):
        rollout(dyn, ctx, actions, None, 3, noise="gaussian")
    with pytest.raises(ValueError, match=r"context_noise must have shape \(2, 6, 2, 16\)"):
        rollout(dyn, ctx, actions, None, 3, noise=0, context_mode="noised", context_noise=jnp.zeros((2, 5, 2, 16)))
    with pytest.raises(ValueError, match="act_mask given without actions"):
        rollout(dyn, ctx, None, jnp.ones(16), 3, noise=0)


def test_sampler_checks_its_inputs():
    dyn = make_dynamics()
    ctx, actions, noise = inputs(dyn, B=1, C=2, H=2)
    s = Sampler(dyn, key=0)
    with pytest.raises(RuntimeError, match="reset"):
        s.step()
    with pytest.raises(ValueError, match=r"context must be packed latents of shape \(B, C0 >= 1, 2, 16\)"):
        s.reset(ctx[:, :, :, :8])
    with pytest.raises(TypeError, match="context must be a float array"):
        s.reset(jnp.zeros((1, 2, 2, 16), jnp.int32))
    with pytest.raises(ValueError, match=r"actions must have shape \(1, 2, 16\)"):
        s.reset(ctx, actions[:, :2, :8])
    with pytest.raises(ValueError, match=r"act_mask must have shape \(16,\), \(1, 16\) or \(1, 2, 16\)"):
        s.reset(ctx, actions[:, :2], jnp.ones(8))
    s.reset(ctx, actions[:, :2], jnp.ones(16))
    with pytest.raises(ValueError, match="step\\(\\) needs the action"):
        s.step()
    with pytest.raises(ValueError, match=r"noise must have shape \(1, 2, 16\)"):
        s.step(actions[:, 2], noise=noise)
    with pytest.raises(TypeError, match="action must be a float array"):
        s.step(np.zeros((1, 16), np.int64))
    s.reset(ctx)
    with pytest.raises(ValueError, match="reset without actions"):
        s.step(actions[:, 0])
    with pytest.raises(ValueError, match="context_length must be >= 1"):
        s.context_length = 0
    with pytest.raises(ValueError, match="either key or noise_fn"):
        Sampler(dyn, key=0, noise_fn=np.zeros)
    with pytest.raises(TypeError, match="key must be None, an int seed or a jax.random key"):
        Sampler(dyn, key="0")
    with pytest.raises(TypeError, match="dreamer4_jax Dynamics"):
        Sampler(object())
    bad = Sampler(dyn, noise_fn=lambda shape: np.zeros((3,) + shape[1:], np.float32))
    bad.reset(ctx)
    with pytest.raises(ValueError, match=r"noise_fn returned shape \(3, 2, 16\) for a draw of shape \(1, 2, 16\)"):
        bad.step()


def test_sampler_draws_from_its_key_and_leaves_the_model_mode_alone():
    dyn = make_dynamics()
    ctx, actions, _ = inputs(dyn, B=1, C=2, H=3)
    outs = []
    for key in (jax.random.key(1), jax.random.key(1), jax.random.key(2)):
        s = Sampler(dyn, n_steps=2, context_length=3, key=key, context_mode="noised")
        s.reset(ctx, actions[:, :2])
        outs.append(jnp.stack([s.step(actions[:, 2 + h]) for h in range(3)], 1))
    assert maxdiff(outs[0], outs[1]) == 0.0 and maxdiff(outs[0], outs[2]) > 1e-3
    dyn.train()
    s = Sampler(dyn, key=0)
    s.reset(ctx)
    s.step()
    assert dyn.training                     # generation ran in eval mode and restored training mode
    dyn.eval()


# --------------------------------------------------------------------------- cache parity

def parity(dyn, *, K, C, mode, with_actions, window_mode="slide", B=2, C0=3, H=8):
    ctx, actions, noise = inputs(dyn, B=B, C=C0, H=H)
    acts = actions if with_actions else None
    eps = jax.random.normal(jax.random.key(9), (B, C0 + H, *ctx.shape[2:]))
    kw = dict(n_steps=K, noise=noise, context_mode=mode, context_length=C, window_mode=window_mode,
              context_noise=eps if mode == "noised" else None)
    ref = rollout(dyn, ctx, acts, None, H, use_cache=False, **kw)
    got = rollout(dyn, ctx, acts, None, H, use_cache=True, **kw)
    assert got.shape == (B, H, *ctx.shape[2:])
    assert float(jnp.abs(ref).mean()) > 0.1            # predictions are not trivially zero
    return maxdiff(got, ref)


@pytest.mark.parametrize("K", [1, 2, 4, 8])
@pytest.mark.parametrize("mode", ["upstream", "noised"])
@pytest.mark.parametrize("C", [None, 4])           # window never full / sliding after the 2nd frame
def test_cache_parity_tiny(K, mode, C):
    assert parity(make_dynamics(), K=K, C=C, mode=mode, with_actions=True) <= TOL


@pytest.mark.parametrize("K,mode,C", [(1, "noised", 4), (4, "upstream", 3), (2, "upstream", None)])
def test_cache_parity_tiny_without_actions(K, mode, C):
    assert parity(make_dynamics(), K=K, C=C, mode=mode, with_actions=False) <= TOL


# The JAX sampler at dmc64 (packing 4): two settings; the full matrix runs at tiny here and at dmc64 in
# torch's tests, and parity_tests/test_sampler.py holds JAX to torch at dmc64
@pytest.mark.parametrize("K,mode,C", [(1, "upstream", 3), (2, "noised", 5)])
def test_cache_parity_dmc64(K, mode, C):
    assert parity(make_dynamics("dmc64"), K=K, C=C, mode=mode, with_actions=True, B=1, H=6) <= TOL


@pytest.mark.parametrize("K,mode,C,window_mode", [(4, "upstream", 4, "slide"), (8, "noised", 3, "slide"),
                                                  (4, "upstream", 4, "roll"), (1, "upstream", 2, "roll"),
                                                  (2, "noised", None, "roll")])
def test_cache_parity_paper_features(K, mode, C, window_mode):
    dyn = make_dynamics(**PAPER_TF)
    assert parity(dyn, K=K, C=C, mode=mode, with_actions=True, window_mode=window_mode) <= TOL


def test_cache_parity_dmc64_paper_features_rolling():
    dyn = make_dynamics("dmc64", **PAPER_TF, transformer__time_every=2)
    assert parity(dyn, K=4, C=3, mode="upstream", with_actions=True, window_mode="roll", B=1, H=6) <= TOL


@pytest.mark.parametrize("window_mode", ["slide", "roll"])
def test_cached_rollouts_respond_to_noise_actions_and_context(window_mode):
    """The parity tests compare two paths that could both ignore an input; here the cached path visibly
    depends on the starting noise, the actions, the context noise and the context itself, late in a
    rollout whose window has been sliding for several frames."""
    dyn = make_dynamics(**PAPER_TF)
    ctx, actions, noise = inputs(dyn, H=8)
    eps = jax.random.normal(jax.random.key(9), (2, 11, *ctx.shape[2:]))
    kw = dict(n_steps=2, context_length=3, window_mode=window_mode, context_mode="noised")
    base = rollout(dyn, ctx, actions, None, 8, noise=noise, context_noise=eps, **kw)
    variants = {
        "noise of frame 5": rollout(dyn, ctx, actions, None, 8, noise=noise.at[:, 5].multiply(-1.0),
                                    context_noise=eps, **kw),
        "action of frame 6": rollout(dyn, ctx, actions.at[:, 3 + 6].multiply(-1.0), None, 8, noise=noise,
                                     context_noise=eps, **kw),
        "context noise of frame 4": rollout(dyn, ctx, actions, None, 8, noise=noise,
                                            context_noise=eps.at[:, 3 + 4].multiply(-1.0), **kw),
    }
    for name, other in variants.items():
        assert maxdiff(other[:, -1], base[:, -1]) > 1e-3, name
    # and frames before the changed one are untouched
    assert maxdiff(variants["noise of frame 5"][:, :5], base[:, :5]) == 0.0


def test_rolling_window_is_banded_attention_not_the_sliding_window():
    dyn = make_dynamics(**PAPER_TF)
    ctx, actions, noise = inputs(dyn, H=6)
    kw = dict(n_steps=2, noise=noise, context_length=3)
    roll = rollout(dyn, ctx, actions, None, 6, window_mode="roll", **kw)
    slide = rollout(dyn, ctx, actions, None, 6, window_mode="slide", **kw)
    # before the window slides, the two agree; afterwards roll keeps the older frames' influence
    assert maxdiff(roll[:, 0], slide[:, 0]) <= TOL and maxdiff(roll[:, -1], slide[:, -1]) > 1e-3


@pytest.mark.parametrize("window_mode", ["slide", "roll"])
def test_sampler_cache_holds_the_window_and_follows_option_changes(window_mode):
    dyn = make_dynamics(**PAPER_TF) if window_mode == "roll" else make_dynamics()
    ctx, actions, noise = inputs(dyn, B=1, C=2, H=9)
    runs = []
    for use_cache in (False, True):
        s = Sampler(dyn, n_steps=2, context_length=4, use_cache=use_cache, history_limit=8,
                    window_mode=window_mode, key=0)
        s.reset(ctx, actions[:, :2])
        out = []
        for h in range(9):
            if h == 4:
                s.n_steps, s.context_length = 4, 6           # the window grows: rebuilt from history
            if h == 6:
                s.context_length = 3                         # and shrinks
            out.append(s.step(actions[:, 2 + h], noise=noise[:, h]))
            if use_cache:
                assert s.cache.length == min(s.n_frames - 1, s.context_length)
                assert s.cache.layers[0].keys.shape[2] == s.cache.length
        runs.append(jnp.stack(out, 1))
    assert maxdiff(runs[0], runs[1]) <= TOL


# --------------------------------------------------------------------------- layer-level cache

@pytest.mark.parametrize("paper", [False, True])
def test_transformer_cache_in_chunks_equals_one_pass(paper):
    """Feeding frames in chunks through the KV cache gives the full block-causal pass, also for the
    tokenizer's latents-only time attention; a rolling cache gives banded (sliding-window) attention."""
    tok = Tokenizer(replace(get_preset("tiny").tokenizer, **(PAPER_TF if paper else {})), rngs=nnx.Rngs(0)).eval()
    tf = tok.decoder.transformer
    x = add_positions(jax.random.normal(jax.random.key(0), (2, 7, tok.config.n_tokens, 32)), tf.config)
    full = tf(x)
    cache = tf.new_cache()
    parts = [tf(x[:, a:b], cache=cache, commit=b - a) for a, b in ((0, 3), (3, 4), (4, 7))]
    assert isinstance(cache, KVCache) and cache.length == 7 and cache.end == 7
    assert maxdiff(jnp.concatenate(parts, 1), full) <= TOL
    if paper:     # relative positions: a rolling cache of 2 frames = attention over a band of 2 + 1 frames
        banded = tf(x, time_window=2)
        cache = tf.new_cache()
        parts = []
        for t in range(7):
            parts.append(tf(x[:, t:t + 1], cache=cache, commit=1))
            cache.drop_oldest(cache.length - 2)
        assert cache.start == 5 and cache.length == 2
        assert maxdiff(jnp.concatenate(parts, 1), banded) <= TOL
        assert maxdiff(banded, full) > 1e-3


@pytest.mark.parametrize("time_every", [1, 2])
def test_outputs_from_skips_context_work_without_changing_the_new_frames(time_every):
    """Frames that are only committed stop once the last time-attention layer has their keys/values;
    the frames after them come out as in the full pass (also with layers after the last time layer)."""
    dyn = make_dynamics(transformer__depth=3, transformer__time_every=time_every)
    ctx, actions, _ = inputs(dyn, B=2, C=6)
    sig = jnp.full((2, 6), 7, jnp.int32)
    stp = jnp.full((2, 6), 3, jnp.int32)
    full = dyn(ctx, signal_idx=sig, step_idx=stp, actions=actions[:, :6])[0]
    cache = dyn.new_cache()
    out = dyn(ctx, signal_idx=sig, step_idx=stp, actions=actions[:, :6], cache=cache, commit=4, outputs_from=4)[0]
    assert out.shape == (2, 2, 2, 16) and cache.length == 4
    assert maxdiff(out, full[:, 4:]) <= TOL
    no_cache = dyn(ctx, signal_idx=sig, step_idx=stp, actions=actions[:, :6], outputs_from=0, time_window=10)[0]
    assert maxdiff(no_cache, full) <= TOL
    with pytest.raises(ValueError, match="outputs_from=5 must lie in"):
        dyn(ctx, signal_idx=sig, step_idx=stp, cache=dyn.new_cache(), commit=4, outputs_from=5)
    with pytest.raises(ValueError, match=r"commit=7 must lie in \[0, 6\]"):
        dyn(ctx, signal_idx=sig, step_idx=stp, cache=dyn.new_cache(), commit=7)
    with pytest.raises(ValueError, match="commit needs a cache"):
        dyn(ctx, signal_idx=sig, step_idx=stp, commit=2, time_window=3)
    with pytest.raises(ValueError, match="the cache has 2 layers, this transformer 3"):
        dyn(ctx, signal_idx=sig, step_idx=stp, cache=KVCache(2), commit=1)
    with pytest.raises(TypeError, match="cache must be a dreamer4_jax KVCache"):
        dyn(ctx, signal_idx=sig, step_idx=stp, cache=[], commit=1)


def test_time_attention_mask():
    assert time_attention_mask(0, 3, 0, 3, None).tolist() == np.tril(np.ones((3, 3), bool)).tolist()
    assert time_attention_mask(4, 1, 1, 4, None) is None                 # a new frame sees the whole cache
    band = time_attention_mask(3, 2, 1, 4, 1)                           # queries 3, 4; keys 1..4
    assert band.tolist() == [[False, True, True, False], [False, False, True, True]]


# --------------------------------------------------------------------------- compiled model calls

@pytest.mark.parametrize("paper,window_mode,mode,K,C", [(False, "slide", "noised", 2, 4), (True, "roll", "upstream", 4, 3),
                                                        (True, "slide", "upstream", 1, None)])
def test_compiled_sampler_equals_the_eager_one(paper, window_mode, mode, K, C):
    """jit=True / "auto" pass the cache's arrays through compiled calls; the frames are the eager sampler's,
    and the settings can be mixed within one stream."""
    dyn = make_dynamics(**PAPER_TF) if paper else make_dynamics()
    ctx, actions, noise = inputs(dyn, H=6)
    eps = jax.random.normal(jax.random.key(9), (2, 9, *ctx.shape[2:]))
    kw = dict(n_steps=K, noise=noise, context_mode=mode, context_length=C, window_mode=window_mode, context_noise=eps)
    ref = rollout(dyn, ctx, actions, None, 6, use_cache=False, **kw)
    for use_cache, jit in ((False, True), (True, True), (True, "auto")):
        assert maxdiff(rollout(dyn, ctx, actions, None, 6, use_cache=use_cache, jit=jit, **kw), ref) <= TOL
    s = Sampler(dyn, n_steps=K, context_length=C, context_mode=mode, window_mode=window_mode, key=0)
    assert s.jit is False
    s.reset(ctx, actions[:, :3], context_noise=eps[:, :3])
    out = []
    for h in range(6):
        s.jit = (False, True, "auto")[h % 3]
        out.append(s.step(actions[:, 3 + h], noise=noise[:, h], context_noise=eps[:, 3 + h]))
    assert maxdiff(jnp.stack(out, 1), ref) <= TOL
    with pytest.raises(ValueError, match="jit must be True, False or 'auto'"):
        s.jit = "always"
