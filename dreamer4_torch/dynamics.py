"""Action-conditioned dynamics model predicting clean packed latents (x-prediction) for shortcut forcing.

Token order per frame: [action, signal, step, spatial x n_spatial, register x n_register, agent x n_agent].
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.agent import POLICY_STD_MAX, POLICY_STD_MIN
from shared.config import DynamicsConfig
from shared.layout import Modality, dynamics_layout, space_mask
from shared.values import check_values

from .contracts import value_range
from .init import build_checked
from .layers import BlockCausalTransformer, KVCache, RMSNorm, add_positions


def pack(z: torch.Tensor, packing_factor: int) -> torch.Tensor:
    """(B, T, L, Db) -> (B, T, L/k, k*Db) by a plain reshape (latents k*i .. k*i+k-1 are concatenated)."""
    B, T, L, D = z.shape
    if L % packing_factor:
        raise ValueError(f"cannot pack {L} latents with packing_factor={packing_factor}")
    return z.reshape(B, T, L // packing_factor, packing_factor * D)


def unpack(packed: torch.Tensor, packing_factor: int) -> torch.Tensor:
    """Inverse of pack: (B, T, S, k*Db) -> (B, T, S*k, Db)."""
    B, T, S, DK = packed.shape
    if DK % packing_factor:
        raise ValueError(f"cannot unpack width {DK} with packing_factor={packing_factor}")
    return packed.reshape(B, T, S * packing_factor, DK // packing_factor)


class ActionEncoder(nn.Module):
    """Continuous actions (B, T, A) in [-1, 1] -> one token per frame; no actions -> the learned base."""

    def __init__(self, d_model: int, action_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.base = nn.Parameter(torch.zeros(d_model))
        self.fc1 = nn.Linear(action_dim, 2 * d_model)
        self.fc2 = nn.Linear(2 * d_model, d_model)

    def forward(self, actions: Optional[torch.Tensor], act_mask: Optional[torch.Tensor],
                batch: int, frames: int) -> torch.Tensor:
        """-> (B, T, 1, D): fc2(silu(fc1(clamp(actions * act_mask, -1, 1)))) + base."""
        if actions is None:
            return self.base.view(1, 1, 1, -1).expand(batch, frames, 1, -1)
        x = actions if act_mask is None else actions * act_mask
        x = x.clamp(-1.0, 1.0)
        return (self.fc2(F.silu(self.fc1(x))) + self.base)[:, :, None, :]


class AgentHead(nn.Module):
    """h (B, T, 1, D) -> (B, T, L, width): RMSNorm, Linear(D, D), SiLU, then one output layer per
    distance n = 1..L (multi-token prediction; shared.agent)."""

    def __init__(self, d_model: int, width: int, length: int):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.fc = nn.Linear(d_model, d_model)
        self.out = nn.ModuleList(nn.Linear(d_model, width) for _ in range(length))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.fc(self.norm(h[:, :, 0])))
        return torch.stack([layer(x) for layer in self.out], dim=2)


class Dynamics(nn.Module):
    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        tf = cfg.transformer
        self.layout = dynamics_layout(cfg)
        self.spatial_slice = self.layout.slice(Modality.SPATIAL)
        self.agent_slice = self.layout.slice(Modality.AGENT)
        self.spatial_proj = nn.Linear(cfg.d_spatial, tf.d_model)
        self.register_tokens = nn.Parameter(torch.zeros(cfg.n_register, tf.d_model))
        self.action_encoder = ActionEncoder(tf.d_model, cfg.action_dim)
        self.step_embed = nn.Embedding(cfg.n_step_bins, tf.d_model)
        self.signal_embed = nn.Embedding(cfg.k_max + 1, tf.d_model)
        self.transformer = BlockCausalTransformer(tf, space_mask(self.layout, cfg.space_mode))
        self.flow_x_head = nn.Linear(tf.d_model, cfg.d_spatial)
        if cfg.n_tasks:
            self.task_embed = nn.Embedding(cfg.n_tasks, tf.d_model)
        if cfg.agent_heads:
            self.policy_head = AgentHead(tf.d_model, 2 * cfg.action_dim, cfg.mtp_length)
            self.reward_head = AgentHead(tf.d_model, cfg.reward_bins, cfg.mtp_length)
        build_checked(self, cfg)

    def pack(self, z: torch.Tensor) -> torch.Tensor:
        return pack(z, self.config.packing_factor)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        return unpack(packed, self.config.packing_factor)

    def check_inputs(self, packed, signal_idx, step_idx, actions, act_mask, agent_tokens, task_ids=None):
        c = self.config
        if packed.dim() != 4 or tuple(packed.shape[2:]) != (c.n_spatial, c.d_spatial):
            raise ValueError(f"packed latents must have shape (B, T, {c.n_spatial}, {c.d_spatial}), "
                             f"got {tuple(packed.shape)}")
        B, T = packed.shape[:2]
        for name, idx, hi in (("signal_idx", signal_idx, c.k_max), ("step_idx", step_idx, c.e_max)):
            if not isinstance(idx, torch.Tensor) or idx.is_floating_point():
                raise TypeError(f"{name} must be an integer tensor of shape ({B}, {T})")
            if tuple(idx.shape) != (B, T):
                raise ValueError(f"{name} must have shape ({B}, {T}), got {tuple(idx.shape)}")
            if idx.device.type == "cpu" and not torch.compiler.is_compiling() and idx.numel() and \
                    (int(idx.min()) < 0 or int(idx.max()) > hi):
                raise ValueError(f"{name} values must lie in [0, {hi}], got [{int(idx.min())}, {int(idx.max())}]")
        if actions is not None and tuple(actions.shape) != (B, T, c.action_dim):
            raise ValueError(f"actions must have shape ({B}, {T}, {c.action_dim}) (zero-padded), "
                             f"got {tuple(actions.shape)}")
        if actions is not None and actions.device.type == "cpu" and not torch.compiler.is_compiling():
            check_values("actions", *value_range(actions))      # finite; beyond [-1, 1] is clamped, as upstream
        if act_mask is not None and actions is None:
            raise ValueError("act_mask given without actions")
        if agent_tokens is not None and tuple(agent_tokens.shape) != (B, T, c.n_agent, c.transformer.d_model):
            raise ValueError(f"agent_tokens must have shape ({B}, {T}, {c.n_agent}, {c.transformer.d_model}), "
                             f"got {tuple(agent_tokens.shape)}")
        if task_ids is not None:
            if not c.n_tasks:
                raise ValueError("task_ids given, but this dynamics model has no task embedding (dynamics.n_tasks=0)")
            if agent_tokens is not None:
                raise ValueError("give task_ids or agent_tokens, not both")
            if not isinstance(task_ids, torch.Tensor) or task_ids.is_floating_point() or tuple(task_ids.shape) != (B,):
                raise ValueError(f"task_ids must be an integer tensor of shape ({B},)")
            if task_ids.device.type == "cpu" and not torch.compiler.is_compiling() and B and \
                    (int(task_ids.min()) < 0 or int(task_ids.max()) >= c.n_tasks):
                raise ValueError(f"task_ids must lie in [0, {c.n_tasks - 1}], got "
                                 f"[{int(task_ids.min())}, {int(task_ids.max())}]")

    def agent_inputs(self, task_ids: torch.Tensor, frames: int) -> torch.Tensor:
        """(B,) task ids -> the agent tokens (B, frames, 1, D): each task's embedding at every frame."""
        return self.task_embed(task_ids.long())[:, None, None, :].expand(-1, frames, -1, -1)

    def policy(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent output h (B, T, 1, D) -> the action distributions of distances 1..L: (mean, std), each
        (B, T, L, action_dim); mean = tanh(.), std in [POLICY_STD_MIN, POLICY_STD_MAX] (shared.agent)."""
        out = self.policy_head(h)
        raw_mean, raw_std = out.float().chunk(2, dim=-1)
        return torch.tanh(raw_mean), POLICY_STD_MIN + (POLICY_STD_MAX - POLICY_STD_MIN) * torch.sigmoid(raw_std)

    def reward_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Agent output h (B, T, 1, D) -> reward logits (B, T, L, reward_bins) of distances 1..L."""
        return self.reward_head(h).float()

    def tokens(self, packed, signal_idx, step_idx, actions=None, act_mask=None, agent_tokens=None):
        """Assemble the (B, T, S, D) input tokens (before positions)."""
        B, T = packed.shape[:2]
        c, D = self.config, self.config.transformer.d_model
        parts = [
            self.action_encoder(actions, act_mask, B, T),
            self.signal_embed(signal_idx.long())[:, :, None],
            self.step_embed(step_idx.long())[:, :, None],
            self.spatial_proj(packed),
            self.register_tokens.view(1, 1, c.n_register, D).expand(B, T, -1, -1),
        ]
        if c.n_agent:
            if agent_tokens is None:
                agent_tokens = packed.new_zeros(B, T, c.n_agent, D)
            parts.append(agent_tokens)
        dtype = parts[3].dtype
        return torch.cat([p.to(dtype) for p in parts], dim=2)

    def new_cache(self, start: int = 0) -> KVCache:
        """An empty time-attention KV cache for generation (see dreamer4_torch.sampler)."""
        return self.transformer.new_cache(start)

    def forward(self, packed: torch.Tensor, *, signal_idx: torch.Tensor, step_idx: torch.Tensor,
                actions: Optional[torch.Tensor] = None, act_mask: Optional[torch.Tensor] = None,
                agent_tokens: Optional[torch.Tensor] = None, task_ids: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None, commit: int = 0, time_window: Optional[int] = None,
                outputs_from: int = 0):
        """Predict clean packed latents.

        packed (B, T, n_spatial, d_spatial) noisy latents; signal_idx, step_idx (B, T) integers
        (tau = signal_idx / k_max, d = 2^-step_idx); actions (B, T, action_dim) with the action that
        produced frame t at t; act_mask broadcastable to actions (1 = real dimension);
        agent_tokens (B, T, n_agent, D) or None (zeros); or, with a task embedding (n_tasks > 0),
        task_ids (B,) integers: each task's embedding in the agent slot of every frame.
        Generation only: with `cache` the T frames follow the cached frames (time positions continue
        from cache.end) and the first `commit` of them are added to the cache; `time_window` limits
        how many earlier frames each frame sees; only frames `outputs_from`.. are predicted
        (BlockCausalTransformer.forward).
        Returns (x1_hat (B, T, n_spatial, d_spatial), h (B, T, n_agent, D) or None).
        """
        self.check_inputs(packed, signal_idx, step_idx, actions, act_mask, agent_tokens, task_ids)
        if task_ids is not None:
            agent_tokens = self.agent_inputs(task_ids, packed.shape[1])
        x = self.tokens(packed, signal_idx, step_idx, actions, act_mask, agent_tokens)
        tf = self.config.transformer
        if cache is None and time_window is None and not outputs_from:
            x = self.transformer(add_positions(x, tf))
        else:
            offset = cache.end if cache is not None else 0
            x = self.transformer(add_positions(x, tf, frame_offset=offset), cache=cache, commit=commit,
                                 time_window=time_window, outputs_from=outputs_from)
        x1_hat = self.flow_x_head(x[:, :, self.spatial_slice])
        h = x[:, :, self.agent_slice] if self.config.n_agent else None
        return x1_hat, h
