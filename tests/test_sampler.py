"""The sampler: upstream's semantics (uncached), and KV-cached generation equal to it to fp32 rounding."""

import math

import pytest
import torch

from dreamer4_torch import Dynamics, Tokenizer
from dreamer4_torch.layers import add_positions
from dreamer4_torch.sampler import Sampler, rollout
from shared.config import replace
from shared.recipes import get_preset

PAPER_TF = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1, transformer__logit_softcap=30.0,
                transformer__time_rope=True)
TOL = 1e-5


def make_dynamics(preset="tiny", **changes):
    cfg = get_preset(preset).dynamics
    cfg = replace(cfg, **changes) if changes else cfg
    torch.manual_seed(0)
    dyn = Dynamics(cfg).eval()
    with torch.no_grad():
        # The zero-initialised head (and the tiny action head) would make every prediction trivial;
        # scale them so predictions are O(1) and depend visibly on context and actions.
        w = dyn.flow_x_head.weight
        w.normal_(0, 1.0 / math.sqrt(w.shape[1]))
        dyn.action_encoder.fc2.weight.normal_(0, 0.05)
    return dyn


def inputs(dyn, B=2, C=3, H=8, seed=1):
    c = dyn.config
    g = torch.Generator().manual_seed(seed)
    ctx = torch.rand(B, C, c.n_spatial, c.d_spatial, generator=g) * 2 - 1
    actions = torch.rand(B, C + H, c.action_dim, generator=g) * 2 - 1
    noise = torch.randn(B, H, c.n_spatial, c.d_spatial, generator=g)
    return ctx, actions, noise


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
        past = torch.stack(z_hist[s:g], dim=1)
        t = past.shape[1]
        acts = None
        if actions is not None:
            acts = torch.zeros(B, t + 1, actions.shape[-1])
            if t >= 1:
                acts[:, 1:] = torch.stack(a_hist[s + 1:s + t + 1], dim=1)
        step_idx = torch.full((B, t + 1), e_max, dtype=torch.long)
        step_idx[:, -1] = int(math.log2(K))
        signal_idx = torch.full((B, t + 1), k_max - 1, dtype=torch.long)
        z = noise[:, h]
        for i in range(K):
            signal_idx[:, -1] = i * (k_max // K)
            with torch.no_grad():
                x1 = dyn(torch.cat([past, z[:, None]], dim=1), signal_idx=signal_idx, step_idx=step_idx,
                         actions=acts, act_mask=act_mask)[0][:, -1]
            b = (x1.float() - z.float()) / max(1e-4, 1.0 - i / K)
            z = (z.float() + b * (1.0 / K)).to(z.dtype)
        z_hist.append(z)
        out.append(z)
    return torch.stack(out, dim=1)


# --------------------------------------------------------------------------- upstream semantics

@pytest.mark.parametrize("K,C,with_actions", [(2, 24, True), (4, 4, True), (1, 2, False), (8, 3, True)])
def test_uncached_sampler_is_upstreams_loop(K, C, with_actions):
    dyn = make_dynamics()
    ctx, actions, noise = inputs(dyn, H=7)
    mask = torch.zeros(16)
    mask[:3] = 1
    acts = actions if with_actions else None
    m = mask if with_actions else None
    ref = upstream_reference(dyn, ctx, acts, m, 7, K, C, noise)
    # Bit-exact against the loop with plain nn.Linear; the default oneDNN-prepacked Linears compute the
    # same maps with a different summation order (dreamer4_torch.prepack), so they agree to rounding.
    got = rollout(dyn, ctx, acts, m, 7, n_steps=K, noise=noise, use_cache=False, context_length=C, prepack=False)
    assert torch.equal(got, ref)
    fast = rollout(dyn, ctx, acts, m, 7, n_steps=K, noise=noise, use_cache=False, context_length=C)
    assert torch.allclose(fast, ref, rtol=0, atol=1e-5), (fast - ref).abs().max()


def test_actions_align_with_the_frames_they_produce():
    """actions[:, C + h] produces predicted frame h: changing it leaves frames < h untouched; row 0 of
    the window never matters (it is zeroed, as in training windows)."""
    dyn = make_dynamics()
    ctx, actions, noise = inputs(dyn, C=3, H=5)
    base = rollout(dyn, ctx, actions, None, 5, n_steps=2, noise=noise)
    changed = actions.clone()
    changed[:, 3 + 2] = -changed[:, 3 + 2]
    other = rollout(dyn, ctx, changed, None, 5, n_steps=2, noise=noise)
    assert torch.equal(base[:, :2], other[:, :2]) and not torch.allclose(base[:, 2], other[:, 2])
    first = actions.clone()
    first[:, 0] = 0.7
    assert torch.equal(rollout(dyn, ctx, first, None, 5, n_steps=2, noise=noise), base)


def test_noised_context_uses_the_noisy_label_and_injected_noise():
    dyn = make_dynamics()
    ctx, actions, noise = inputs(dyn, H=3)
    eps = torch.randn(2, 6, *ctx.shape[2:])
    a = rollout(dyn, ctx, actions, None, 3, n_steps=2, noise=noise, context_mode="noised", context_noise=eps)
    b = rollout(dyn, ctx, actions, None, 3, n_steps=2, noise=noise, context_mode="noised", context_noise=eps)
    c = rollout(dyn, ctx, actions, None, 3, n_steps=2, noise=noise, context_mode="noised", context_noise=-eps)
    clean = rollout(dyn, ctx, actions, None, 3, n_steps=2, noise=noise)
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, clean)
    s = Sampler(dyn, context_mode="noised", tau_ctx=0.9)
    assert s.context_signal_idx == 7 and s.context_tau == 7 / 8


def test_generators_reproduce_and_noise_shapes_are_checked():
    dyn = make_dynamics()
    ctx, actions, _ = inputs(dyn, H=3)
    a = rollout(dyn, ctx, actions, None, 3, noise=torch.Generator().manual_seed(3), context_mode="noised")
    b = rollout(dyn, ctx, actions, None, 3, noise=torch.Generator().manual_seed(3), context_mode="noised",
                use_cache=False)
    assert (a - b).abs().max() <= TOL
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3, 2, 16\).*no per-step noise axis"):
        rollout(dyn, ctx, actions, None, 3, n_steps=4, noise=torch.randn(2, 3, 4, 2, 16))
    with pytest.raises(ValueError, match=r"actions must have shape \(B, C \+ H, A\) = \(2, 6, 16\)"):
        rollout(dyn, ctx, actions[:, :5], None, 3)
    with pytest.raises(ValueError, match="power of two in \\[1, 8\\]"):
        rollout(dyn, ctx, actions, None, 3, n_steps=3)
    with pytest.raises(ValueError, match="window_mode='roll'.*time_rope"):
        rollout(dyn, ctx, actions, None, 3, window_mode="roll")


# --------------------------------------------------------------------------- cache parity

def parity(dyn, *, K, C, mode, with_actions, window_mode="slide", B=2, C0=3, H=8):
    ctx, actions, noise = inputs(dyn, B=B, C=C0, H=H)
    acts = actions if with_actions else None
    eps = torch.randn(B, C0 + H, *ctx.shape[2:], generator=torch.Generator().manual_seed(9))
    kw = dict(n_steps=K, noise=noise, context_mode=mode, context_length=C, window_mode=window_mode,
              context_noise=eps if mode == "noised" else None)
    ref = rollout(dyn, ctx, acts, None, H, use_cache=False, **kw)
    got = rollout(dyn, ctx, acts, None, H, use_cache=True, **kw)
    assert ref.abs().mean() > 0.1            # predictions are not trivially zero
    return (got - ref).abs().max().item()


@pytest.mark.parametrize("K", [1, 2, 4, 8])
@pytest.mark.parametrize("mode", ["upstream", "noised"])
@pytest.mark.parametrize("C", [None, 4])           # window never full / sliding after the 2nd frame
@pytest.mark.parametrize("with_actions", [True, False])
def test_cache_parity_tiny(K, mode, C, with_actions):
    assert parity(make_dynamics(), K=K, C=C, mode=mode, with_actions=with_actions) <= TOL


@pytest.mark.parametrize("K,mode,C", [(1, "upstream", 3), (2, "noised", 5), (4, "upstream", 5),
                                      (8, "noised", None), (4, "upstream", None)])
def test_cache_parity_dmc64(K, mode, C):
    assert parity(make_dynamics("dmc64"), K=K, C=C, mode=mode, with_actions=True, B=1, H=7) <= TOL


@pytest.mark.parametrize("K,mode,C,window_mode", [(4, "upstream", 4, "slide"), (2, "noised", None, "slide"),
                                                  (4, "upstream", 4, "roll"), (8, "noised", 3, "roll"),
                                                  (1, "upstream", 2, "roll")])
def test_cache_parity_paper_features(K, mode, C, window_mode):
    dyn = make_dynamics(**PAPER_TF)
    assert parity(dyn, K=K, C=C, mode=mode, with_actions=True, window_mode=window_mode) <= TOL


def test_cache_parity_dmc64_paper_features_rolling():
    dyn = make_dynamics("dmc64", **PAPER_TF, transformer__time_every=2)
    assert parity(dyn, K=4, C=4, mode="upstream", with_actions=True, window_mode="roll", B=1, H=7) <= TOL


def test_rolling_window_is_banded_attention_not_the_sliding_window():
    dyn = make_dynamics(**PAPER_TF)
    ctx, actions, noise = inputs(dyn, H=6)
    kw = dict(n_steps=2, noise=noise, context_length=3)
    roll = rollout(dyn, ctx, actions, None, 6, window_mode="roll", **kw)
    slide = rollout(dyn, ctx, actions, None, 6, window_mode="slide", **kw)
    # before the window slides, the two agree; afterwards roll keeps the older frames' influence
    assert torch.allclose(roll[:, 0], slide[:, 0], atol=TOL) and not torch.allclose(roll[:, -1], slide[:, -1])


def test_sampler_cache_holds_the_window_and_follows_option_changes():
    dyn = make_dynamics()
    ctx, actions, noise = inputs(dyn, B=1, C=2, H=10)
    runs = []
    for use_cache in (False, True):
        s = Sampler(dyn, n_steps=2, context_length=4, use_cache=use_cache, history_limit=8)
        s.reset(ctx, actions[:, :2])
        out = []
        for h in range(10):
            if h == 4:
                s.n_steps, s.context_length = 4, 6           # the window grows: rebuilt from history
            if h == 7:
                s.context_length = 3                         # and shrinks
            out.append(s.step(actions[:, 2 + h], noise=noise[:, h]))
            if use_cache:
                assert s.cache.length == min(s.n_frames - 1, s.context_length)
        runs.append(torch.stack(out, 1))
    assert (runs[0] - runs[1]).abs().max() <= TOL
    s = Sampler(dyn)
    with pytest.raises(RuntimeError, match="reset"):
        s.step()
    s.reset(ctx)
    with pytest.raises(ValueError, match="reset without actions"):
        s.step(actions[:, 0])


# --------------------------------------------------------------------------- layer-level cache

@pytest.mark.parametrize("paper", [False, True])
def test_transformer_cache_in_chunks_equals_one_pass(paper):
    """Feeding frames in chunks through the KV cache gives the full block-causal pass, also for the
    tokenizer's latents-only time attention; a rolling cache gives banded (sliding-window) attention."""
    tok = Tokenizer(replace(get_preset("tiny").tokenizer, **(PAPER_TF if paper else {}))).eval()
    tf = tok.decoder.transformer
    torch.manual_seed(0)
    x = add_positions(torch.randn(2, 7, tok.config.n_tokens, 32), tf.config)
    with torch.no_grad():
        full = tf(x)
        cache = tf.new_cache()
        parts = [tf(x[:, a:b], cache=cache, commit=b - a) for a, b in ((0, 3), (3, 4), (4, 7))]
    assert cache.length == 7
    assert (torch.cat(parts, 1) - full).abs().max() <= TOL
    if paper:     # relative positions: a rolling cache of 2 frames = attention over a band of 2 + 1 frames
        with torch.no_grad():
            banded = tf(x, time_window=2)
            cache = tf.new_cache()
            parts = []
            for t in range(7):
                parts.append(tf(x[:, t:t + 1], cache=cache, commit=1))
                cache.drop_oldest(cache.length - 2)
        assert (torch.cat(parts, 1) - banded).abs().max() <= TOL
        assert not torch.allclose(banded, full)


@pytest.mark.parametrize("time_every", [1, 2])
def test_outputs_from_skips_context_work_without_changing_the_new_frames(time_every):
    """Frames that are only committed stop once the last time-attention layer has their keys/values;
    the frames after them come out as in the full pass (also with layers after the last time layer)."""
    dyn = make_dynamics(transformer__depth=3, transformer__time_every=time_every)
    ctx, actions, _ = inputs(dyn, B=2, C=6)
    sig = torch.full((2, 6), 7)
    stp = torch.full((2, 6), 3)
    with torch.no_grad():
        full = dyn(ctx, signal_idx=sig, step_idx=stp, actions=actions[:, :6])[0]
        cache = dyn.new_cache()
        out = dyn(ctx, signal_idx=sig, step_idx=stp, actions=actions[:, :6], cache=cache, commit=4, outputs_from=4)[0]
        with pytest.raises(ValueError, match="outputs_from=5 must lie in"):
            dyn(ctx, signal_idx=sig, step_idx=stp, cache=dyn.new_cache(), commit=4, outputs_from=5)
    assert out.shape == (2, 2, 2, 16) and cache.length == 4
    assert (out - full[:, 4:]).abs().max() <= TOL
