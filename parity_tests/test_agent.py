"""Agent finetuning, torch vs JAX on the same weights and inputs (fp32).

The agent model (task embedding in the agent slot, `wm_agent` mask, policy and reward heads) forward
at `tiny` and `tiny` with the paper's options: relative error <= 1e-4. The distribution functions
(log-probability, entropy, KL, sampling, two-hot, reward mean) per block: <= 1e-5. The behaviour-cloning
and reward losses with their gradients of every parameter: values <= 1e-5, gradients <= 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import dreamer4_jax as dj
import dreamer4_jax.agent as ja
import dreamer4_torch as dt
import dreamer4_torch.agent as ta
from shared.agent import agent_config, reward_bins
from shared.config import replace
from shared.params import param_table
from shared.recipes import get_preset

from .helpers import compare, pair
from .test_losses import grad_pairs

MODEL_TOL = 1e-4
BLOCK_TOL = 1e-5
GRAD_TOL = 1e-4
PAPER = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1,
             transformer__logit_softcap=20.0, transformer__time_rope=True, transformer__time_every=2)
N_TASKS = 5


def agent_cfg(paper: bool):
    base = get_preset("tiny").dynamics
    return agent_config(replace(base, **PAPER) if paper else base, N_TASKS)


def paired(cfg, direction, seed):
    return pair(dt.build_model(cfg), dj.build_model(cfg, rngs=nnx.Rngs(0)), param_table(cfg), direction, seed)


def inputs(cfg, rng, B=2, T=5):
    packed = rng.normal(size=(B, T, cfg.n_spatial, cfg.d_spatial)).astype(np.float32)
    sig = rng.integers(0, cfg.k_max + 1, (B, T))
    stp = rng.integers(0, cfg.e_max + 1, (B, T))
    actions = rng.uniform(-1, 1, (B, T, cfg.action_dim)).astype(np.float32)
    task_ids = rng.integers(0, cfg.n_tasks, (B,))
    return packed, sig, stp, actions, task_ids


_agent_forward = nnx.jit(lambda m, p, s, e, a, g: (lambda x, h: (x, h, *m.policy(h), m.reward_logits(h)))(
    *m(p, signal_idx=s, step_idx=e, actions=a, task_ids=g)))


@pytest.mark.parametrize("paper", [False, True], ids=["tiny", "tiny-paper"])
def test_agent_model_forward(direction, seed, paper):
    cfg = agent_cfg(paper)
    t, j = paired(cfg, direction, seed)
    t, j = t.eval(), j.eval()
    packed, sig, stp, actions, task_ids = inputs(cfg, np.random.default_rng(seed))
    tt = torch.from_numpy
    with torch.no_grad():
        xt, ht = t(tt(packed), signal_idx=tt(sig), step_idx=tt(stp), actions=tt(actions), task_ids=tt(task_ids))
        mt, st = t.policy(ht)
        rt = t.reward_logits(ht)
    xj, hj, mj, sj, rj = _agent_forward(j, packed, sig.astype(np.int32), stp.astype(np.int32), actions,
                                        task_ids.astype(np.int32))
    compare(f"model: agent ({'tiny, paper options' if paper else 'tiny'})", direction, {
        "x1_hat": (xj, xt), "h (agent)": (hj, ht), "policy mean": (mj, mt), "policy std": (sj, st),
        "reward logits": (rj, rt)}, MODEL_TOL)


def test_distribution_blocks(direction, seed):
    rng = np.random.default_rng(seed)
    shape = (3, 4, 6)
    mean = np.tanh(rng.normal(size=shape)).astype(np.float32)
    std = rng.uniform(0.05, 1.0, shape).astype(np.float32)
    mean_q = np.tanh(rng.normal(size=shape)).astype(np.float32)
    std_q = rng.uniform(0.05, 1.0, shape).astype(np.float32)
    action = rng.uniform(-1, 1, shape).astype(np.float32)
    noise = rng.normal(size=shape).astype(np.float32)
    mask = (np.arange(6) < 4).astype(np.float32)
    bins = reward_bins(255)
    rewards = np.concatenate([rng.normal(0, 3, 20), [0.0, 1.0, -1.0, 1e12, -1e12]]).astype(np.float32)
    logits = rng.normal(size=(25, 255)).astype(np.float32)
    tt = torch.from_numpy
    compare("block: agent distributions", direction, {
        "log_prob": (ja.gaussian_log_prob(mean, std, action, mask), ta.gaussian_log_prob(tt(mean), tt(std), tt(action), tt(mask))),
        "entropy": (ja.gaussian_entropy(std, mask), ta.gaussian_entropy(tt(std), tt(mask))),
        "kl": (ja.gaussian_kl(mean, std, mean_q, std_q, mask),
               ta.gaussian_kl(tt(mean), tt(std), tt(mean_q), tt(std_q), tt(mask))),
        "sample": (ja.sample_action(mean, std, noise, mask), ta.sample_action(tt(mean), tt(std), tt(noise), tt(mask))),
        "two_hot": (ja.two_hot(rewards, bins), ta.two_hot(tt(rewards), tt(bins))),
        "reward_mean": (ja.reward_mean(logits, bins), ta.reward_mean(tt(logits), tt(bins))),
    }, BLOCK_TOL)


@nnx.jit
def _agent_loss_and_grads(model, packed, sig, stp, actions, act_mask, rewards, task_ids, pw):
    def loss_fn(m):
        x, h = m(packed, signal_idx=sig, step_idx=stp, actions=actions, act_mask=act_mask, task_ids=task_ids)
        bc, reward, metrics = dj.agent_loss(m, h, actions, act_mask, rewards, policy_weight=pw)
        return bc + reward + (x ** 2).mean(), (bc, reward, metrics)
    (_, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    return aux, grads


@pytest.mark.parametrize("paper", [False, True], ids=["tiny", "tiny-paper"])
def test_agent_losses_and_gradients(direction, seed, paper):
    cfg = agent_cfg(paper)
    t, j = paired(cfg, direction, seed)
    t, j = t.train(), j.train()
    rng = np.random.default_rng(seed)
    B, T = 3, 10                        # T > mtp_length + 1: every distance has targets, some run past the end
    packed, sig, stp, actions, task_ids = inputs(cfg, rng, B, T)
    act_mask = np.broadcast_to((np.arange(cfg.action_dim) < 6).astype(np.float32), (B, T, cfg.action_dim)).copy()
    act_mask[:, 0] = 0.0
    actions = actions * act_mask
    rewards = rng.exponential(2.0, (B, T)).astype(np.float32)
    pw = np.array([1.0, 0.0, 1.0], np.float32)
    tt = torch.from_numpy
    xt, ht = t(tt(packed), signal_idx=tt(sig), step_idx=tt(stp), actions=tt(actions), act_mask=tt(act_mask),
              task_ids=tt(task_ids))
    bc_t, rew_t, metrics_t = dt.agent_loss(t, ht, tt(actions), tt(act_mask), tt(rewards), policy_weight=tt(pw))
    (bc_t + rew_t + (xt ** 2).mean()).backward()      # a stand-in video term: every parameter gets a gradient
    (bc_j, rew_j, metrics_j), grads = _agent_loss_and_grads(
        j, packed, sig.astype(np.int32), stp.astype(np.int32), actions, act_mask, rewards,
        task_ids.astype(np.int32), pw)
    assert sorted(metrics_j) == sorted(metrics_t)
    group = f"loss: agent BC + reward ({'tiny, paper options' if paper else 'tiny'})"
    compare(group + " (value)", direction, {"bc": (bc_j, bc_t), "reward": (rew_j, rew_t),
                                            **{f"metric {k}": (metrics_j[k], v) for k, v in metrics_t.items()}},
            BLOCK_TOL)
    compare(group + " (gradients)", direction, grad_pairs(cfg, t, grads), GRAD_TOL)
