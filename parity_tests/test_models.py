"""Whole models, torch vs JAX on the same weights and inputs (fp32): relative error <= 1e-4.

Tokenizer encode (with and without an MAE keep mask) and decode (also of a clip longer than
clip_frames, in chunks), and the dynamics forward (actions,
agent tokens, every signal/step index), at the `tiny` and `dmc64` presets, plus `tiny` with the
paper's options. The position tables differ by up to ~6e-5 between the backends at large positions
(torch computes them with torch ops, JAX takes shared.positions'), hence the model-level tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import dreamer4_jax as dj
import dreamer4_torch as dt
from shared.config import replace
from shared.recipes import get_preset
from shared.params import param_table

from .helpers import compare, pair

TOL = 1e-4
PAPER = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1, transformer__logit_softcap=20.0,
             transformer__time_rope=True, transformer__time_every=2)

_encode = nnx.jit(lambda m, v, keep: m.encode(v, keep))
_decode = nnx.jit(lambda m, z: m.decode(z))
_dynamics = nnx.jit(lambda m, p, s, e, a, g: m(p, signal_idx=s, step_idx=e, actions=a, agent_tokens=g))


def configs(kind: str):
    out = []
    for preset in ("tiny", "dmc64"):
        p = get_preset(preset)
        out.append(pytest.param(p.tokenizer if kind == "tokenizer" else p.dynamics, id=preset))
    p = get_preset("tiny")
    out.append(pytest.param(replace(p.tokenizer if kind == "tokenizer" else p.dynamics, **PAPER), id="tiny-paper"))
    if kind == "tokenizer":
        out.append(pytest.param(replace(p.tokenizer, bottleneck_norm=True), id="tiny-bottleneck-norm"))
    return out


def group_name(kind: str, cfg) -> str:
    tf = cfg.transformer
    preset = "dmc64" if tf.d_model in (128, 192) else "tiny"
    return f"model: {kind} ({preset}{', paper options' if tf.qk_norm else ''})"


def paired_model(cfg, direction, seed):
    t, j = pair(dt.build_model(cfg), dj.build_model(cfg, rngs=nnx.Rngs(0)), param_table(cfg), direction, seed)
    return t.eval(), j.eval()


@pytest.mark.parametrize("cfg", configs("tokenizer"))
def test_tokenizer_encode_decode(direction, seed, cfg):
    t, j = paired_model(cfg, direction, seed)
    rng = np.random.default_rng(seed)
    B, T = 2, 4
    video = rng.random((B, T, cfg.channels, cfg.image_height, cfg.image_width), dtype=np.float32)
    keep = rng.random((B, T, cfg.n_patches)) >= 0.4
    z_lat = np.tanh(rng.normal(size=(B, T, cfg.n_latents, cfg.d_bottleneck))).astype(np.float32)
    with torch.no_grad():
        zt = t.encode(torch.from_numpy(video))
        zt_masked = t.encode(torch.from_numpy(video), keep_mask=torch.from_numpy(keep))
        dec_t = t.decode(torch.from_numpy(z_lat))
    group = group_name("tokenizer", cfg)
    compare(group, direction, {
        "encode z": (_encode(j, video, None), zt),
        "encode z (MAE keep mask)": (_encode(j, video, keep), zt_masked),
        "decode video": (_decode(j, z_lat), dec_t),
    }, TOL)


def test_tokenizer_chunked_encode_decode(direction, seed):
    """A clip longer than clip_frames: both backends encode and decode it chunk by chunk."""
    cfg = replace(get_preset("tiny").tokenizer, clip_frames=3)
    t, j = paired_model(cfg, direction, seed)
    rng = np.random.default_rng(seed)
    video = rng.random((2, 7, cfg.channels, cfg.image_height, cfg.image_width), dtype=np.float32)
    with torch.no_grad():
        zt = t.encode(torch.from_numpy(video))
        dec_t = t.decode(zt)
    zj = _encode(j, video, None)
    compare("model: tokenizer (tiny, clip_frames=3 on 7 frames)", direction, {
        "chunked encode z": (zj, zt),
        "chunked decode video": (_decode(j, zj), dec_t),
    }, TOL)


@pytest.mark.parametrize("cfg", configs("dynamics"))
def test_dynamics_forward(direction, seed, cfg):
    t, j = paired_model(cfg, direction, seed)
    rng = np.random.default_rng(seed)
    B, T = 2, 6
    packed = rng.normal(size=(B, T, cfg.n_spatial, cfg.d_spatial)).astype(np.float32)
    sig = rng.integers(0, cfg.k_max + 1, (B, T))
    stp = rng.integers(0, cfg.e_max + 1, (B, T))
    actions = rng.uniform(-1.2, 1.2, (B, T, cfg.action_dim)).astype(np.float32)
    agent = rng.normal(size=(B, T, cfg.n_agent, cfg.transformer.d_model)).astype(np.float32)
    with torch.no_grad():
        xt, ht = t(torch.from_numpy(packed), signal_idx=torch.from_numpy(sig), step_idx=torch.from_numpy(stp),
                   actions=torch.from_numpy(actions), agent_tokens=torch.from_numpy(agent))
        xt0, ht0 = t(torch.from_numpy(packed), signal_idx=torch.from_numpy(sig), step_idx=torch.from_numpy(stp))
    xj, hj = _dynamics(j, packed, sig.astype(np.int32), stp.astype(np.int32), actions, agent)
    xj0, hj0 = _dynamics(j, packed, sig.astype(np.int32), stp.astype(np.int32), None, None)
    group = group_name("dynamics", cfg)
    compare(group, direction, {"x1_hat": (xj, xt), "h (agent)": (hj, ht),
                               "x1_hat (no actions)": (xj0, xt0), "h (no actions)": (hj0, ht0)}, TOL)
