"""The agent's distributions and losses: the bounded diagonal Gaussian policy, symexp two-hot rewards,
and the behaviour-cloning and reward losses of multi-token prediction.

The JAX mirror of dreamer4_torch/agent.py (shared.agent says what each head predicts and why this
distribution). Every random draw is an input.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from shared.agent import LOG_2PI, mtp_targets, reward_bins


def symlog(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def _masked_sum(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    return (x if mask is None else x * mask).sum(-1)


def gaussian_log_prob(mean, std, action, mask=None) -> jax.Array:
    """log N(action; mean, std^2) summed over the action dimensions where mask is 1: (..., A) -> (...)."""
    z = (action - mean) / std
    return _masked_sum(-0.5 * z * z - jnp.log(std) - 0.5 * LOG_2PI, mask)


def gaussian_entropy(std, mask=None) -> jax.Array:
    """Entropy of the diagonal Gaussian over the masked dimensions: (..., A) -> (...)."""
    return _masked_sum(0.5 * (LOG_2PI + 1.0) + jnp.log(std), mask)


def gaussian_kl(mean_p, std_p, mean_q, std_q, mask=None) -> jax.Array:
    """KL[p || q] of two diagonal Gaussians over the masked dimensions (closed form): (..., A) -> (...)."""
    var_ratio = (std_p / std_q) ** 2
    diff = (mean_p - mean_q) / std_q
    return _masked_sum(0.5 * (var_ratio + diff * diff - 1.0) - jnp.log(std_p / std_q), mask)


def sample_action(mean, std, noise, mask=None) -> jax.Array:
    """mean + std * noise, clipped to [-1, 1], zero on the padded dimensions (noise ~ N(0, 1), given)."""
    a = jnp.clip(mean + std * noise, -1.0, 1.0)
    return a if mask is None else a * mask


def two_hot(values: jax.Array, bins: jax.Array) -> jax.Array:
    """(...) rewards -> (..., K) two-hot weights of symlog(values) over the sorted bins (shared.agent)."""
    K = bins.shape[0]
    y = jnp.clip(symlog(jnp.asarray(values, jnp.float32)), bins[0], bins[-1])
    hi = jnp.clip(jnp.searchsorted(bins, y, side="right"), 1, K - 1)
    lo = hi - 1
    w_hi = jnp.clip((y - bins[lo]) / (bins[hi] - bins[lo]), 0.0, 1.0)
    return (jax.nn.one_hot(lo, K) * (1.0 - w_hi)[..., None] + jax.nn.one_hot(hi, K) * w_hi[..., None])


def reward_mean(logits: jax.Array, bins: jax.Array) -> jax.Array:
    """(..., K) logits -> (...) the predicted reward symexp(sum_k softmax_k bins_k)."""
    return symexp((jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * bins).sum(-1))


def agent_loss(model, h, actions, act_mask, rewards, policy_weight=None, reward_weight=None):
    """Behaviour-cloning and reward losses of the multi-token heads on the agent output (see
    dreamer4_torch.agent.agent_loss). Returns (bc, reward, metrics)."""
    B, T = h.shape[:2]
    L = model.config.mtp_length
    idx, valid_np = mtp_targets(T, L)
    valid = jnp.asarray(valid_np, jnp.float32)
    ones = jnp.ones((B,), jnp.float32)
    pw = (ones if policy_weight is None else jnp.asarray(policy_weight, jnp.float32))[:, None, None] * valid
    rw = (ones if reward_weight is None else jnp.asarray(reward_weight, jnp.float32))[:, None, None] * valid

    mean, std = model.policy(h)
    target_a = jnp.asarray(actions, jnp.float32)[:, idx]
    mask_a = jnp.asarray(act_mask, jnp.float32)[:, idx]
    logp = gaussian_log_prob(mean, std, target_a, mask_a)
    bc = -(logp * pw).sum() / jnp.maximum(pw.sum(), 1.0)

    logits = model.reward_logits(h)
    bins = jnp.asarray(reward_bins(logits.shape[-1]))
    target_r = jnp.asarray(rewards, jnp.float32)[:, idx]
    ce = -(two_hot(target_r, bins) * jax.nn.log_softmax(logits, axis=-1)).sum(-1)
    reward = (ce * rw).sum() / jnp.maximum(rw.sum(), 1.0)

    sg = jax.lax.stop_gradient
    metrics = {"bc": sg(bc), "reward": sg(reward)}
    sq = sg(((mean - target_a) ** 2 * mask_a).sum(-1) * pw)
    dims = mask_a.sum(-1) * pw
    err = sg(jnp.abs(reward_mean(logits, bins) - target_r) * rw)
    for n in range(L):
        metrics[f"action_mse_{n + 1}"] = sq[:, :, n].sum() / jnp.maximum(dims[:, :, n].sum(), 1.0)
        metrics[f"reward_abs_err_{n + 1}"] = err[:, :, n].sum() / jnp.maximum(rw[:, :, n].sum(), 1.0)
    return bc, reward, metrics
