"""The agent's distributions and losses: the bounded diagonal Gaussian policy, symexp two-hot rewards,
and the behaviour-cloning and reward losses of multi-token prediction (shared.agent says what each
head predicts and why this distribution). Every random draw is an input.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from shared.agent import LOG_2PI, mtp_targets, reward_bins


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def _masked_sum(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    return (x if mask is None else x * mask).sum(-1)


def gaussian_log_prob(mean: torch.Tensor, std: torch.Tensor, action: torch.Tensor,
                      mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log N(action; mean, std^2) summed over the action dimensions where mask is 1: (..., A) -> (...)."""
    z = (action - mean) / std
    return _masked_sum(-0.5 * z * z - torch.log(std) - 0.5 * LOG_2PI, mask)


def gaussian_entropy(std: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Entropy of the diagonal Gaussian over the masked dimensions: (..., A) -> (...)."""
    return _masked_sum(0.5 * (LOG_2PI + 1.0) + torch.log(std), mask)


def gaussian_kl(mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """KL[p || q] of two diagonal Gaussians over the masked dimensions (closed form): (..., A) -> (...)."""
    var_ratio = (std_p / std_q) ** 2
    diff = (mean_p - mean_q) / std_q
    return _masked_sum(0.5 * (var_ratio + diff * diff - 1.0) - torch.log(std_p / std_q), mask)


def sample_action(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """mean + std * noise, clipped to [-1, 1], zero on the padded dimensions (noise ~ N(0, 1), given)."""
    a = (mean + std * noise).clamp(-1.0, 1.0)
    return a if mask is None else a * mask


def two_hot(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """(...) rewards -> (..., K) two-hot weights of symlog(values) over the sorted bins (shared.agent)."""
    y = symlog(values.float()).clamp(float(bins[0]), float(bins[-1]))
    hi = torch.searchsorted(bins, y.contiguous(), right=True).clamp(1, bins.numel() - 1)
    lo = hi - 1
    w_hi = ((y - bins[lo]) / (bins[hi] - bins[lo])).clamp(0.0, 1.0)
    out = torch.zeros(*y.shape, bins.numel(), dtype=torch.float32, device=y.device)
    out.scatter_add_(-1, lo[..., None], (1.0 - w_hi)[..., None])
    out.scatter_add_(-1, hi[..., None], w_hi[..., None])
    return out


def reward_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """(..., K) logits -> (...) the predicted reward symexp(sum_k softmax_k bins_k)."""
    return symexp((torch.softmax(logits.float(), dim=-1) * bins).sum(-1))


def agent_loss(model, h: torch.Tensor, actions: torch.Tensor, act_mask: torch.Tensor, rewards: torch.Tensor,
               policy_weight: Optional[torch.Tensor] = None, reward_weight: Optional[torch.Tensor] = None):
    """Behaviour-cloning and reward losses of the multi-token heads on the agent output.

    h (B, T, 1, D) from the dynamics model; actions (B, T, A) and act_mask (B, T, A) as the data set
    stores them (row t: the action that produced frame t, 1 on its real dimensions), rewards (B, T);
    policy_weight, reward_weight (B,) per-clip weights (default 1: every clip). Distance n of frame t
    targets row t + n (shared.agent.mtp_targets); terms past the clip's end are left out.
    bc = -(weighted mean over frames and distances of log pi(a_{t+n} | h_t)), the log-probability
    summed over the real action dimensions; reward = weighted mean cross-entropy of the reward logits
    against the two-hot target.
    Returns (bc, reward, metrics of detached scalars: action_mse_N and reward_abs_err_N per distance).
    """
    B, T = h.shape[:2]
    L = model.config.mtp_length
    idx_np, valid_np = mtp_targets(T, L)
    idx = torch.from_numpy(idx_np).to(h.device)
    valid = torch.from_numpy(valid_np).to(h.device, torch.float32)          # (T, L)
    ones = h.new_ones(B, dtype=torch.float32)
    pw = (ones if policy_weight is None else policy_weight.float())[:, None, None] * valid
    rw = (ones if reward_weight is None else reward_weight.float())[:, None, None] * valid

    mean, std = model.policy(h)                                             # (B, T, L, A)
    target_a = actions.float()[:, idx]                                      # (B, T, L, A)
    mask_a = act_mask.float()[:, idx]
    logp = gaussian_log_prob(mean, std, target_a, mask_a)                    # (B, T, L)
    bc = -(logp * pw).sum() / pw.sum().clamp_min(1.0)

    logits = model.reward_logits(h)                                         # (B, T, L, K)
    bins = torch.from_numpy(reward_bins(logits.shape[-1])).to(h.device)
    target_r = rewards.float()[:, idx]                                      # (B, T, L)
    ce = -(two_hot(target_r, bins) * F.log_softmax(logits, dim=-1)).sum(-1)
    reward = (ce * rw).sum() / rw.sum().clamp_min(1.0)

    metrics = {"bc": bc.detach(), "reward": reward.detach()}
    with torch.no_grad():
        sq = ((mean - target_a) ** 2 * mask_a).sum(-1) * pw                 # (B, T, L)
        dims = mask_a.sum(-1) * pw
        err = (reward_mean(logits, bins) - target_r).abs() * rw
        for n in range(L):
            metrics[f"action_mse_{n + 1}"] = sq[:, :, n].sum() / dims[:, :, n].sum().clamp_min(1.0)
            metrics[f"reward_abs_err_{n + 1}"] = err[:, :, n].sum() / rw[:, :, n].sum().clamp_min(1.0)
    return bc, reward, metrics
