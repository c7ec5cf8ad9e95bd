"""Generation, torch vs JAX on the same weights and the same injected noise (fp32): relative error <= 1e-4.

Open-loop rollouts (dreamer4_torch.sampler.rollout vs dreamer4_jax.sampler.rollout) with and without the
KV cache, in both window modes (roll needs the paper's time RoPE) and both context modes, long enough
that the window slides for several frames, with the JAX model calls eager (the default) and compiled; and the step-by-step Sampler with its draws taken from one
torch.Generator in both backends (the JAX sampler's noise_fn), with K and the window changed midway,
which is how the demo's JAX engine reproduces the torch engine's frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import dreamer4_jax as dj
import dreamer4_torch as dt
from dreamer4_jax.sampler import Sampler as JaxSampler
from dreamer4_jax.sampler import rollout as jax_rollout
from dreamer4_torch.sampler import Sampler as TorchSampler
from dreamer4_torch.sampler import rollout as torch_rollout
from shared.config import replace
from shared.recipes import get_preset
from shared.params import param_table

from .helpers import compare, pair, rel_err, to_np

TOL = 1e-4
PAPER = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1,
             transformer__logit_softcap=20.0, transformer__time_rope=True, transformer__time_every=2)


def paired_dynamics(cfg, direction, seed):
    t, j = pair(dt.build_model(cfg), dj.build_model(cfg, rngs=nnx.Rngs(0)), param_table(cfg), direction, seed)
    return t.eval(), j.eval()


CASES = [
    # (id, preset, paper options, window mode, context mode, K, context length, horizon, JAX jit)
    ("tiny-slide-upstream-K4", "tiny", False, "slide", "upstream", 4, 4, 8, False),
    ("tiny-slide-noised-K1", "tiny", False, "slide", "noised", 1, 3, 8, False),
    ("tiny-slide-upstream-K8-full-history", "tiny", False, "slide", "upstream", 8, None, 6, False),
    ("paper-slide-noised-K2", "tiny", True, "slide", "noised", 2, 3, 8, False),
    ("paper-roll-upstream-K4", "tiny", True, "roll", "upstream", 4, 3, 8, False),
    ("paper-roll-noised-K2", "tiny", True, "roll", "noised", 2, 2, 8, False),
    ("dmc64-slide-upstream-K2", "dmc64", False, "slide", "upstream", 2, 3, 5, False),
    ("tiny-slide-noised-K2-jit", "tiny", False, "slide", "noised", 2, 3, 6, True),
    ("paper-roll-upstream-K2-jit-auto", "tiny", True, "roll", "upstream", 2, 2, 6, "auto"),
]


@pytest.mark.parametrize("name,preset,paper,window_mode,context_mode,K,C,H,jit", CASES, ids=[c[0] for c in CASES])
def test_rollout(direction, seed, name, preset, paper, window_mode, context_mode, K, C, H, jit):
    cfg = get_preset(preset).dynamics
    cfg = replace(cfg, **PAPER) if paper else cfg
    t, j = paired_dynamics(cfg, direction, seed)
    rng = np.random.default_rng(seed)
    B, C0 = (2, 3) if preset == "tiny" else (1, 2)
    S, D, A = cfg.n_spatial, cfg.d_spatial, cfg.action_dim
    ctx = np.tanh(rng.normal(size=(B, C0, S, D))).astype(np.float32)
    actions = rng.uniform(-1, 1, (B, C0 + H, A)).astype(np.float32)
    mask = (np.arange(A) < 5).astype(np.float32)
    noise = rng.normal(size=(B, H, S, D)).astype(np.float32)
    eps = rng.normal(size=(B, C0 + H, S, D)).astype(np.float32)
    kw = dict(n_steps=K, context_mode=context_mode, context_length=C, window_mode=window_mode)
    out = {}
    for use_cache in (False, True):
        with torch.no_grad():
            out["torch", use_cache] = torch_rollout(
                t, torch.from_numpy(ctx), torch.from_numpy(actions), torch.from_numpy(mask), H,
                noise=torch.from_numpy(noise), context_noise=torch.from_numpy(eps), use_cache=use_cache, **kw)
        out["jax", use_cache] = jax_rollout(j, ctx, actions, mask, H, noise=noise, context_noise=eps,
                                            use_cache=use_cache, jit=jit, **kw)
    ref = to_np(out["torch", False])
    assert ref.shape == (B, H, S, D) and np.abs(ref).mean() > 0.05        # predictions are not trivial
    group = f"sampler: rollout ({preset}{', paper options' if paper else ''}, {window_mode})"
    compare(group, direction, {
        f"{name} uncached": (out["jax", False], out["torch", False]),
        f"{name} cached": (out["jax", True], out["torch", True]),
        f"{name} JAX cached vs torch uncached": (out["jax", True], out["torch", False]),
    }, TOL)
    # The comparison can fail: other starting noise for one late frame moves JAX's rollout far away.
    other = jax_rollout(j, ctx, actions, mask, H, noise=noise * np.where(np.arange(H) == H - 2, -1.0, 1.0)[None, :, None, None],
                        context_noise=eps, use_cache=True, jit=jit, **kw)
    assert rel_err(to_np(other), ref) > 100 * TOL
    assert rel_err(to_np(other)[:, :H - 2], ref[:, :H - 2]) <= TOL      # ... and only from that frame on


@pytest.mark.parametrize("paper", [False, True], ids=["tiny", "paper-roll"])
def test_sampler_with_one_generator(direction, seed, paper):
    """Both samplers draw every random number themselves (starting noise, then the new context frame's
    eps, per step) from torch.Generators with the same seed: the JAX sampler through noise_fn. K and the
    window change midway, actions are masked by a per-stream mask given at reset."""
    cfg = get_preset("tiny").dynamics
    cfg = replace(cfg, **PAPER) if paper else cfg
    t, j = paired_dynamics(cfg, direction, seed)
    rng = np.random.default_rng(seed)
    B, C0, steps = 2, 2, 9
    ctx = np.tanh(rng.normal(size=(B, C0, cfg.n_spatial, cfg.d_spatial))).astype(np.float32)
    actions = rng.uniform(-1, 1, (B, C0 + steps, cfg.action_dim)).astype(np.float32)
    mask = (rng.random((B, cfg.action_dim)) < 0.5).astype(np.float32)
    window_mode = "roll" if paper else "slide"
    g_torch = torch.Generator().manual_seed(seed)
    g_jax = torch.Generator().manual_seed(seed)
    ts = TorchSampler(t, n_steps=2, context_length=3, context_mode="noised", window_mode=window_mode,
                      generator=g_torch)
    js = JaxSampler(j, n_steps=2, context_length=3, context_mode="noised", window_mode=window_mode,
                    noise_fn=lambda shape: torch.randn(shape, generator=g_jax).numpy())
    ts.reset(torch.from_numpy(ctx), torch.from_numpy(actions[:, :C0]), torch.from_numpy(mask))
    js.reset(ctx, actions[:, :C0], mask)
    zt, zj = [], []
    for h in range(steps):
        if h == 4:
            ts.n_steps = js.n_steps = 4
            ts.context_length = js.context_length = 4
        a = actions[:, C0 + h]
        with torch.no_grad():
            zt.append(ts.step(torch.from_numpy(a)))
        zj.append(js.step(a))
    zt, zj = torch.stack(zt, 1), np.stack([np.asarray(z) for z in zj], 1)
    assert js.cache.length == ts.cache.length and js.n_frames == ts.n_frames == C0 + steps
    group = f"sampler: step-by-step, one generator ({'tiny, paper options, roll' if paper else 'tiny, slide'})"
    compare(group, direction, {"generated frames": (zj, zt)}, TOL)
    # The JAX sampler's draws do matter: another seed gives other frames.
    g_other = torch.Generator().manual_seed(seed + 1)
    js2 = JaxSampler(j, n_steps=2, context_length=3, context_mode="noised", window_mode=window_mode,
                     noise_fn=lambda shape: torch.randn(shape, generator=g_other).numpy())
    js2.reset(ctx, actions[:, :C0], mask)
    assert rel_err(np.asarray(js2.step(actions[:, C0])), to_np(zt[:, 0])) > 100 * TOL
