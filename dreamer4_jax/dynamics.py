"""Action-conditioned dynamics model predicting clean packed latents (x-prediction) for shortcut forcing.

The Flax NNX mirror of dreamer4_torch/dynamics.py.
Token order per frame: [action, signal, step, spatial x n_spatial, register x n_register, agent x n_agent].
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.agent import POLICY_STD_MAX, POLICY_STD_MIN
from shared.config import DynamicsConfig
from shared.layout import Modality, dynamics_layout, space_mask
from shared.positions import position_table

from .contracts import check_dtype, check_shape
from .init import build_checked
from .layers import BlockCausalTransformer, KVCache, Module, RMSNorm, add_positions, host_zeros, linear


def pack(z: jax.Array, packing_factor: int) -> jax.Array:
    """(B, T, L, Db) -> (B, T, L/k, k*Db) by a plain reshape (latents k*i .. k*i+k-1 are concatenated)."""
    B, T, L, D = z.shape
    if L % packing_factor:
        raise ValueError(f"cannot pack {L} latents with packing_factor={packing_factor}")
    return z.reshape(B, T, L // packing_factor, packing_factor * D)


def unpack(packed: jax.Array, packing_factor: int) -> jax.Array:
    """Inverse of pack: (B, T, S, k*Db) -> (B, T, S*k, Db)."""
    B, T, S, DK = packed.shape
    if DK % packing_factor:
        raise ValueError(f"cannot unpack width {DK} with packing_factor={packing_factor}")
    return packed.reshape(B, T, S * packing_factor, DK // packing_factor)


class ActionEncoder(Module):
    """Continuous actions (B, T, A) in [-1, 1] -> one token per frame; no actions -> the learned base."""

    def __init__(self, d_model: int, action_dim: int, rngs: nnx.Rngs):
        self.action_dim = action_dim
        self.base = nnx.Param(host_zeros(None, (d_model,)))
        self.fc1 = linear(action_dim, 2 * d_model, rngs)
        self.fc2 = linear(2 * d_model, d_model, rngs)

    def __call__(self, actions: Optional[jax.Array], act_mask: Optional[jax.Array],
                 batch: int, frames: int) -> jax.Array:
        """-> (B, T, 1, D): fc2(silu(fc1(clamp(actions * act_mask, -1, 1)))) + base."""
        if actions is None:
            return jnp.broadcast_to(self.base[...][None, None, None, :], (batch, frames, 1, self.base.shape[0]))
        x = actions if act_mask is None else actions * act_mask
        x = jnp.clip(x, -1.0, 1.0)
        return (self.fc2(jax.nn.silu(self.fc1(x))) + self.base[...])[:, :, None, :]


class AgentHead(Module):
    """h (B, T, 1, D) -> (B, T, L, width): RMSNorm, Linear(D, D), SiLU, then one output layer per
    distance n = 1..L (multi-token prediction; shared.agent)."""

    def __init__(self, d_model: int, width: int, length: int, rngs: nnx.Rngs):
        self.norm = RMSNorm(d_model)
        self.fc = linear(d_model, d_model, rngs)
        self.out = nnx.List([linear(d_model, width, rngs) for _ in range(length)])

    def __call__(self, h: jax.Array) -> jax.Array:
        x = jax.nn.silu(self.fc(self.norm(h[:, :, 0])))
        return jnp.stack([layer(x) for layer in self.out], axis=2)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class Dynamics(Module):
    """The dynamics model. `rngs` supplies the `params` stream (initialisation) and the `dropout` stream
    used in training mode (a plain nnx.Rngs(seed) serves both)."""

    def __init__(self, cfg: DynamicsConfig, *, rngs: Optional[nnx.Rngs] = None):
        cfg.validate()
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.config = cfg
        tf = cfg.transformer
        self.layout = dynamics_layout(cfg)
        # (start, stop) of the spatial / agent slots; torch keeps slice objects, which are unhashable
        # before Python 3.12 and so cannot be static attributes of an NNX graph.
        spatial, agent = self.layout.slice(Modality.SPATIAL), self.layout.slice(Modality.AGENT)
        self.spatial_slice = (spatial.start, spatial.stop)
        self.agent_slice = (agent.start, agent.stop)
        self.spatial_proj = linear(cfg.d_spatial, tf.d_model, rngs)
        self.register_tokens = nnx.Param(host_zeros(None, (cfg.n_register, tf.d_model)))
        self.action_encoder = ActionEncoder(tf.d_model, cfg.action_dim, rngs)
        self.step_embed = nnx.Embed(cfg.n_step_bins, tf.d_model, embedding_init=host_zeros,
                                    rngs=rngs)
        self.signal_embed = nnx.Embed(cfg.k_max + 1, tf.d_model, embedding_init=host_zeros,
                                      rngs=rngs)
        self.transformer = BlockCausalTransformer(tf, space_mask(self.layout, cfg.space_mode), rngs=rngs)
        self.flow_x_head = linear(tf.d_model, cfg.d_spatial, rngs)
        if cfg.n_tasks:
            self.task_embed = nnx.Embed(cfg.n_tasks, tf.d_model, embedding_init=host_zeros, rngs=rngs)
        if cfg.agent_heads:
            self.policy_head = AgentHead(tf.d_model, 2 * cfg.action_dim, cfg.mtp_length, rngs)
            self.reward_head = AgentHead(tf.d_model, cfg.reward_bins, cfg.mtp_length, rngs)
        self.deterministic = False      # training mode, as a fresh torch module
        build_checked(self, cfg, rngs)

    @property
    def training(self) -> bool:
        return not self.deterministic

    def pack(self, z: jax.Array) -> jax.Array:
        return pack(z, self.config.packing_factor)

    def unpack(self, packed: jax.Array) -> jax.Array:
        return unpack(packed, self.config.packing_factor)

    def check_inputs(self, packed, signal_idx, step_idx, actions, act_mask, agent_tokens, task_ids=None):
        c = self.config
        check_shape("packed latents", packed, ("B", "T", c.n_spatial, c.d_spatial))
        B, T = packed.shape[:2]
        for name, idx, hi in (("signal_idx", signal_idx, c.k_max), ("step_idx", step_idx, c.e_max)):
            check_dtype(name, idx, int, f"an integer array of shape ({B}, {T})")
            check_shape(name, idx, (B, T))
            if _is_concrete(idx) and idx.size:
                lo_v, hi_v = int(np.min(idx)), int(np.max(idx))
                if lo_v < 0 or hi_v > hi:
                    raise ValueError(f"{name} values must lie in [0, {hi}], got [{lo_v}, {hi_v}]")
        if actions is not None:
            check_shape("actions", actions, (B, T, c.action_dim), " (zero-padded)")
        if act_mask is not None and actions is None:
            raise ValueError("act_mask given without actions")
        if agent_tokens is not None:
            check_shape("agent_tokens", agent_tokens, (B, T, c.n_agent, c.transformer.d_model))
        if task_ids is not None:
            if not c.n_tasks:
                raise ValueError("task_ids given, but this dynamics model has no task embedding (dynamics.n_tasks=0)")
            if agent_tokens is not None:
                raise ValueError("give task_ids or agent_tokens, not both")
            check_dtype("task_ids", task_ids, int, f"an integer array of shape ({B},)")
            check_shape("task_ids", task_ids, (B,))
            if _is_concrete(task_ids) and B:
                lo_v, hi_v = int(np.min(task_ids)), int(np.max(task_ids))
                if lo_v < 0 or hi_v >= c.n_tasks:
                    raise ValueError(f"task_ids must lie in [0, {c.n_tasks - 1}], got [{lo_v}, {hi_v}]")

    def agent_inputs(self, task_ids: jax.Array, frames: int) -> jax.Array:
        """(B,) task ids -> the agent tokens (B, frames, 1, D): each task's embedding at every frame."""
        e = self.task_embed(jnp.asarray(task_ids))
        return jnp.broadcast_to(e[:, None, None, :], (e.shape[0], frames, 1, e.shape[-1]))

    def policy(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Agent output h (B, T, 1, D) -> the action distributions of distances 1..L: (mean, std), each
        (B, T, L, action_dim); mean = tanh(.), std in [POLICY_STD_MIN, POLICY_STD_MAX] (shared.agent)."""
        raw_mean, raw_std = jnp.split(self.policy_head(h).astype(jnp.float32), 2, axis=-1)
        return jnp.tanh(raw_mean), POLICY_STD_MIN + (POLICY_STD_MAX - POLICY_STD_MIN) * jax.nn.sigmoid(raw_std)

    def reward_logits(self, h: jax.Array) -> jax.Array:
        """Agent output h (B, T, 1, D) -> reward logits (B, T, L, reward_bins) of distances 1..L."""
        return self.reward_head(h).astype(jnp.float32)

    def tokens(self, packed, signal_idx, step_idx, actions=None, act_mask=None, agent_tokens=None):
        """Assemble the (B, T, S, D) input tokens (before positions)."""
        B, T = packed.shape[:2]
        c, D = self.config, self.config.transformer.d_model
        parts = [
            self.action_encoder(actions, act_mask, B, T),
            self.signal_embed(jnp.asarray(signal_idx))[:, :, None],
            self.step_embed(jnp.asarray(step_idx))[:, :, None],
            self.spatial_proj(packed),
            jnp.broadcast_to(self.register_tokens[...][None, None], (B, T, c.n_register, D)),
        ]
        if c.n_agent:
            if agent_tokens is None:
                agent_tokens = jnp.zeros((B, T, c.n_agent, D), packed.dtype)
            parts.append(agent_tokens)
        dtype = parts[3].dtype
        return jnp.concatenate([jnp.asarray(p).astype(dtype) for p in parts], axis=2)

    def new_cache(self, start: int = 0) -> KVCache:
        """An empty time-attention KV cache for generation (see dreamer4_jax.sampler)."""
        return self.transformer.new_cache(start)

    def __call__(self, packed: jax.Array, *, signal_idx: jax.Array, step_idx: jax.Array,
                 actions: Optional[jax.Array] = None, act_mask: Optional[jax.Array] = None,
                 agent_tokens: Optional[jax.Array] = None, task_ids: Optional[jax.Array] = None,
                 cache: Optional[KVCache] = None, commit: int = 0, time_window: Optional[int] = None,
                 outputs_from: int = 0):
        """Predict clean packed latents.

        packed (B, T, n_spatial, d_spatial) noisy latents; signal_idx, step_idx (B, T) integers
        (tau = signal_idx / k_max, d = 2^-step_idx); actions (B, T, action_dim) with the action that
        produced frame t at t; act_mask broadcastable to actions (1 = real dimension);
        agent_tokens (B, T, n_agent, D) or None (zeros); or, with a task embedding (n_tasks > 0),
        task_ids (B,) integers: each task's embedding in the agent slot of every frame.
        Generation only: with `cache` the T frames follow the cached frames (time positions continue
        from cache.end) and the first `commit` of them are added to the cache; `time_window` limits how
        many earlier frames each frame sees; only frames `outputs_from`.. are predicted
        (BlockCausalTransformer.__call__). The cache is Python state updated in place, so this call is
        eager; a compiled step uses generation_tables + prepared_pass (dreamer4_jax.sampler).
        Returns (x1_hat (B, T, n_spatial, d_spatial), h (B, T, n_agent, D) or None).
        """
        packed = jnp.asarray(packed)
        self.check_inputs(packed, signal_idx, step_idx, actions, act_mask, agent_tokens, task_ids)
        if task_ids is not None:
            agent_tokens = self.agent_inputs(task_ids, packed.shape[1])
        x = self.tokens(packed, signal_idx, step_idx, actions, act_mask, agent_tokens)
        tf = self.config.transformer
        if cache is None and time_window is None and not outputs_from:
            return self.heads(self.transformer(add_positions(x, tf)))
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a dreamer4_jax KVCache (model.new_cache()), got {type(cache).__name__}")
        positions, rope, mask = self.generation_tables(x.shape[1], x.dtype, cache, commit, time_window, outputs_from)
        out = self.prepared_pass(x, positions, rope, mask, None if cache is None else cache.layers, commit,
                                 outputs_from)
        if cache is not None:
            cache.length += commit
        return out

    def heads(self, x: jax.Array):
        """Transformer output (B, T, S, D) -> (x1_hat (B, T, n_spatial, d_spatial), h or None)."""
        x1_hat = self.flow_x_head(x[:, :, slice(*self.spatial_slice)])
        h = x[:, :, slice(*self.agent_slice)] if self.config.n_agent else None
        return x1_hat, h

    def generation_tables(self, n_frames: int, dtype, cache: Optional[KVCache], commit: int,
                          time_window: Optional[int], outputs_from: int):
        """Check a cached/windowed call of `n_frames` frames that follow `cache` and compute its tables:
        (additive positions (T, S, D) numpy float32, time-RoPE cos/sin or None, numpy time mask or None)."""
        tf = self.config.transformer
        rope, mask = self.transformer.prepare(n_frames, dtype, cache, commit, time_window, outputs_from)
        positions = position_table(n_frames, self.layout.n_tokens, tf.d_model, scale=tf.scale_pos_embeds,
                                   time=not tf.time_rope, frame_offset=cache.end if cache is not None else 0)
        return positions, rope, mask

    def prepared_pass(self, tokens: jax.Array, positions, rope, mask: Optional[np.ndarray], caches, commit: int,
                      outputs_from: int):
        """The cached/windowed forward on assembled tokens and the tables of generation_tables: traceable
        (`caches` are LayerKV objects whose arrays may be tracers, `mask` a static numpy array), so a sampler
        can jit it with the cached arrays as inputs and outputs (dreamer4_jax.sampler). Commits into `caches`;
        the caller updates the cache's frame count."""
        x = tokens + jnp.asarray(positions, dtype=tokens.dtype)[None]
        return self.heads(self.transformer.run(x, rope, mask, caches, commit, outputs_from))
