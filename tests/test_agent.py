"""Agent finetuning: the config and parameter table, agent tokens under the paper's mask, loading a
pretrained checkpoint, the multi-token targets, the policy distribution and the symexp two-hot reward
(checked against formulas written out here), the BC and reward losses (against explicit loops)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import dreamer4_torch as dt
import dreamer4_torch.agent as ta
from shared.agent import (agent_config, mtp_targets, new_parameter_names, reward_bins, symexp, symlog,
                          two_hot_reference)
from shared.config import ConfigError, config_from_json, config_to_json, replace
from shared.io import CheckpointError
from shared.params import param_table
from shared.recipes import get_preset

TINY = get_preset("tiny")
BASE = TINY.dynamics
AGENT = agent_config(BASE, 5)


def _inputs(cfg, seed=0, B=2, T=6):
    g = torch.Generator().manual_seed(seed)
    packed = torch.randn(B, T, cfg.n_spatial, cfg.d_spatial, generator=g)
    sig = torch.randint(0, cfg.k_max + 1, (B, T), generator=g)
    stp = torch.randint(0, cfg.e_max + 1, (B, T), generator=g)
    actions = torch.rand(B, T, cfg.action_dim, generator=g) * 2 - 1
    return packed, sig, stp, actions


# ------------------------------------------------------------------ config and parameter table

def test_agent_config_and_table():
    assert AGENT.space_mode == "wm_agent" and AGENT.n_tasks == 5 and AGENT.agent_heads
    assert config_from_json(config_to_json(AGENT)) == AGENT
    base_table, agent_table = param_table(BASE), param_table(AGENT)
    # the pretrained parameters come first, unchanged, so their initial draws are the base model's
    assert agent_table[:len(base_table)] == base_table
    new = new_parameter_names(AGENT)
    assert new[0] == "task_embed.weight" and len(new) == len(agent_table) - len(base_table)
    L = AGENT.mtp_length
    assert sum(n.startswith("policy_head.out.") and n.endswith(".weight") for n in new) == L
    assert {tuple(p.shape) for p in agent_table if p.name.startswith("reward_head.out.")} == \
        {(AGENT.reward_bins, BASE.transformer.d_model), (AGENT.reward_bins,)}


def test_old_dynamics_config_json_loads_without_agent_keys():
    text = config_to_json(BASE)
    for key in ("n_tasks", "agent_heads", "mtp_length", "reward_bins"):
        assert f'"{key}"' in text
        text = "\n".join(line for line in text.splitlines() if f'"{key}"' not in line)
    assert config_from_json(text) == BASE


@pytest.mark.parametrize("changes, message", [
    (dict(n_agent=2, n_tasks=3), "n_agent=1"),
    (dict(n_agent=0, agent_heads=True), "n_agent=1"),
    (dict(n_tasks=-1), "n_tasks"),
    (dict(mtp_length=0), "mtp_length"),
    (dict(reward_bins=1), "reward_bins"),
])
def test_bad_agent_config(changes, message):
    with pytest.raises(ConfigError, match=message):
        replace(BASE, **changes)


# ------------------------------------------------------------------ agent tokens and the mask

def test_agent_tokens_do_not_change_frame_predictions_of_a_pretrained_model(tmp_path):
    torch.manual_seed(0)
    pretrained = dt.Dynamics(BASE).eval()
    dt.save_model(pretrained, tmp_path / "dyn")
    torch.manual_seed(1)
    agent = dt.load_for_agent(tmp_path / "dyn", AGENT).eval()
    for name, p in pretrained.named_parameters():
        assert torch.equal(p, dict(agent.named_parameters())[name]), name
    packed, sig, stp, actions = _inputs(BASE)
    with torch.no_grad():
        x_base, _ = pretrained(packed, signal_idx=sig, step_idx=stp, actions=actions)
        for task_ids in ([0, 0], [3, 4]):
            x_agent, h = agent(packed, signal_idx=sig, step_idx=stp, actions=actions, task_ids=torch.tensor(task_ids))
            assert torch.equal(x_agent, x_base)          # bit-identical
        assert h.shape == (2, 6, 1, BASE.transformer.d_model)


def test_agent_sees_the_frames_only_under_the_paper_mask():
    torch.manual_seed(0)
    agent = dt.Dynamics(AGENT).eval()
    isolated = dt.Dynamics(replace(AGENT, space_mode="wm_agent_isolated")).eval()
    isolated.load_state_dict(agent.state_dict())
    packed, sig, stp, actions = _inputs(AGENT)
    other = packed.clone()
    other[:, -1] += 1.0                                   # change the last frame only
    ids = torch.tensor([1, 2])
    with torch.no_grad():
        _, h1 = agent(packed, signal_idx=sig, step_idx=stp, actions=actions, task_ids=ids)
        _, h2 = agent(other, signal_idx=sig, step_idx=stp, actions=actions, task_ids=ids)
        _, h3 = agent(packed, signal_idx=sig, step_idx=stp, actions=actions, task_ids=torch.tensor([0, 2]))
        _, i1 = isolated(packed, signal_idx=sig, step_idx=stp, actions=actions, task_ids=ids)
        _, i2 = isolated(other, signal_idx=sig, step_idx=stp, actions=actions, task_ids=ids)
    assert torch.equal(h1[:, :-1], h2[:, :-1])             # causal in time
    assert (h1[:, -1] - h2[:, -1]).abs().max() > 1e-3      # the agent sees its frame
    assert (h1[0] - h3[0]).abs().max() > 1e-3 and torch.equal(h1[1], h3[1])    # and its task
    assert torch.equal(i1, i2)                             # isolated: the agent sees no frame


def test_load_for_agent_refuses_other_checkpoints(tmp_path):
    dt.save_model(dt.Tokenizer(TINY.tokenizer), tmp_path / "tok")
    with pytest.raises(CheckpointError, match="tokenizer checkpoint"):
        dt.load_for_agent(tmp_path / "tok", AGENT)
    dt.save_model(dt.Dynamics(replace(BASE, action_dim=8)), tmp_path / "dyn8")
    with pytest.raises(CheckpointError, match="action_dim"):
        dt.load_for_agent(tmp_path / "dyn8", AGENT)
    # an agent checkpoint starts the same agent model (resuming a finetuning run)
    model = dt.Dynamics(AGENT)
    dt.save_model(model, tmp_path / "agent")
    again = dt.load_for_agent(tmp_path / "agent", AGENT)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="another shape"):
        dt.load_for_agent(tmp_path / "agent", agent_config(BASE, 7))


def test_task_ids_are_checked():
    model = dt.Dynamics(AGENT)
    packed, sig, stp, _ = _inputs(AGENT)
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, 4\]"):
        model(packed, signal_idx=sig, step_idx=stp, task_ids=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="shape"):
        model(packed, signal_idx=sig, step_idx=stp, task_ids=torch.tensor([0]))
    with pytest.raises(ValueError, match="not both"):
        model(packed, signal_idx=sig, step_idx=stp, task_ids=torch.tensor([0, 1]),
              agent_tokens=torch.zeros(2, 6, 1, AGENT.transformer.d_model))
    with pytest.raises(ValueError, match="no task embedding"):
        dt.Dynamics(BASE)(packed, signal_idx=sig, step_idx=stp, task_ids=torch.tensor([0, 1]))


# ------------------------------------------------------------------ targets, distribution, two-hot

def test_mtp_targets_by_hand():
    idx, valid = mtp_targets(4, 2)
    np.testing.assert_array_equal(idx, [[1, 2], [2, 3], [3, 3], [3, 3]])
    np.testing.assert_array_equal(valid, [[True, True], [True, True], [True, False], [False, False]])


def test_gaussian_functions_against_formulas():
    rng = np.random.default_rng(0)
    mean, mean_q = np.tanh(rng.normal(size=(2, 5))), np.tanh(rng.normal(size=(2, 5)))
    std, std_q = rng.uniform(0.05, 1, (2, 5)), rng.uniform(0.05, 1, (2, 5))
    a = rng.uniform(-1, 1, (2, 5))
    mask = np.array([1, 1, 1, 0, 0.0])
    pdf = np.exp(-((a - mean) ** 2) / (2 * std ** 2)) / (std * np.sqrt(2 * np.pi))
    t = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    np.testing.assert_allclose(ta.gaussian_log_prob(t(mean), t(std), t(a), t(mask)).numpy(),
                               (np.log(pdf) * mask).sum(-1), rtol=1e-10)
    np.testing.assert_allclose(ta.gaussian_entropy(t(std), t(mask)).numpy(),
                               (np.log(std * np.sqrt(2 * np.pi * np.e)) * mask).sum(-1), rtol=1e-10)
    kl = 0.5 * (np.log(std_q ** 2 / std ** 2) + (std ** 2 + (mean - mean_q) ** 2) / std_q ** 2 - 1)
    np.testing.assert_allclose(ta.gaussian_kl(t(mean), t(std), t(mean_q), t(std_q), t(mask)).numpy(),
                               (kl * mask).sum(-1), rtol=1e-10)
    assert torch.allclose(ta.gaussian_kl(t(mean), t(std), t(mean), t(std)), torch.zeros(2, dtype=torch.float64))
    # sampling: clipped into [-1, 1], padded dimensions 0
    s = ta.sample_action(t(mean), t(std), t(rng.normal(0, 10, (2, 5))), t(mask))
    assert s.abs().max() <= 1 and (s[:, 3:] == 0).all() and (s[:, :3].abs() == 1).any()


def test_two_hot_against_the_reference_loop():
    bins = reward_bins(255)
    assert bins[0] == -20 and bins[-1] == 20 and bins[127] == 0
    values = np.array([0.0, 0.3, -0.3, 1.0, 7.5, -123.4, 1e10, -1e10, float(symexp(bins[5]))], np.float32)
    got = ta.two_hot(torch.from_numpy(values), torch.from_numpy(bins)).numpy()
    want = two_hot_reference(values, bins)
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)
    assert got[0, 127] == 1.0 and got[6, -1] == 1.0 and got[7, 0] == 1.0
    # the expected value of a two-hot distribution gives the value back (inside the range)
    back = ta.reward_mean(torch.log(torch.from_numpy(got).clamp_min(1e-30)), torch.from_numpy(bins)).numpy()
    np.testing.assert_allclose(back[:6], values[:6], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(symexp(symlog(values[:6])), values[:6], rtol=1e-6)


# ------------------------------------------------------------------ the losses, by explicit loops

def test_agent_loss_against_explicit_loops():
    rng = np.random.default_rng(3)
    B, T, L, A, K = 2, 5, 3, 4, 7
    mean = np.tanh(rng.normal(size=(B, T, L, A)))
    std = rng.uniform(0.1, 1, (B, T, L, A))
    logits = rng.normal(size=(B, T, L, K))
    actions = rng.uniform(-1, 1, (B, T, A))
    act_mask = np.ones((B, T, A))
    act_mask[:, :, 3] = 0
    act_mask[:, 0] = 0
    rewards = rng.exponential(1.0, (B, T))
    pw = np.array([1.0, 0.0])
    t = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    model = SimpleNamespace(config=SimpleNamespace(mtp_length=L), policy=lambda h: (t(mean), t(std)),
                            reward_logits=lambda h: t(logits))
    bc, reward, metrics = ta.agent_loss(model, torch.zeros(B, T, 1, 8), t(actions), t(act_mask), t(rewards),
                                        policy_weight=t(pw))
    bins = reward_bins(K)
    logp_sum = ce_sum = 0.0
    n_bc = n_r = 0
    for b in range(B):
        for i in range(T):
            for n in range(1, L + 1):
                if i + n >= T:
                    continue
                j = i + n
                m = act_mask[b, j]
                z = (actions[b, j] - mean[b, i, n - 1]) / std[b, i, n - 1]
                lp = (m * (-0.5 * z ** 2 - np.log(std[b, i, n - 1]) - 0.5 * math.log(2 * math.pi))).sum()
                logp_sum += pw[b] * lp
                n_bc += pw[b]
                log_sm = logits[b, i, n - 1] - np.log(np.exp(logits[b, i, n - 1]).sum())
                ce_sum += -(two_hot_reference(rewards[b, j], bins) * log_sm).sum()
                n_r += 1
    assert bc.item() == pytest.approx(-logp_sum / n_bc, rel=1e-6)
    assert reward.item() == pytest.approx(ce_sum / n_r, rel=1e-6)
    # distance 3 of frame 0 targets row 3; only clip 0 counts for the policy
    want = ((mean[0, :2, 2, :3] - actions[0, 3:5, :3]) ** 2).sum() / 6
    assert metrics["action_mse_3"].item() == pytest.approx(want, rel=1e-6)


def test_padded_action_dimensions_are_never_trained():
    torch.manual_seed(0)
    model = dt.Dynamics(AGENT)
    packed, sig, stp, actions = _inputs(AGENT, T=10)
    mask = torch.zeros(2, 10, AGENT.action_dim)
    mask[:, 1:, :3] = 1
    actions = actions * mask
    rewards = torch.rand(2, 10)
    _, h = model(packed, signal_idx=sig, step_idx=stp, actions=actions, act_mask=mask, task_ids=torch.tensor([0, 1]))
    bc, _, _ = ta.agent_loss(model, h, actions, mask, rewards)
    bc.backward()
    A = AGENT.action_dim
    for n in range(AGENT.mtp_length):
        g = model.policy_head.out[n].weight.grad
        assert g[:3].abs().max() > 0 and g[A:A + 3].abs().max() > 0          # mean and std of real dims
        assert (g[3:A] == 0).all() and (g[A + 3:] == 0).all()               # padded dims: no gradient


def test_relevant_episodes_are_each_tasks_better_half():
    from shared.agent import relevant_episodes
    returns = np.array([1.0, 5.0, 3.0, 10.0, 0.0, 0.0, 2.0, 7.0])
    task_ids = np.array([0, 0, 0, 0, 4, 4, 4, 4])
    # task 0 among rows 0..3: median 4 -> rows 1, 3; task 4 among rows 4, 6, 7 (5 held out): median 2 -> 6, 7
    np.testing.assert_array_equal(relevant_episodes(returns, task_ids, np.array([0, 1, 2, 3, 4, 6, 7]), 0.5),
                                  [1, 3, 6, 7])
    np.testing.assert_array_equal(relevant_episodes(returns, task_ids, np.arange(8), 0.0), np.arange(8))


@pytest.mark.parametrize("window_mode", ["slide", "roll"])
def test_policy_runner_equals_plain_forwards(window_mode):
    """The closed-loop agent state (dreamer4_torch.eval.policy.PolicyRunner) gives, at every frame, the
    policy of one plain forward: "slide", over that frame and the `context` frames before it; "roll"
    (cached), over the whole history with each frame seeing itself and `context` frames before it."""
    from dreamer4_torch.eval.policy import PolicyRunner
    from shared.shortcut import context_labels
    cfg = agent_config(replace(BASE, transformer__time_rope=True), 5)
    torch.manual_seed(0)
    model = dt.Dynamics(cfg).eval()
    B, T, C = 2, 9, 3
    packed, _, _, actions = _inputs(cfg, seed=1, B=B, T=T)
    task_ids = np.array([1, 4])
    masks = torch.from_numpy(np.stack([shared_mask(t) for t in task_ids]))
    actions = actions * masks[:, None]
    runner = PolicyRunner(model, task_ids, C, window_mode)
    sig, stp = context_labels(cfg.k_max)
    for t in range(T):
        mean, std = runner.observe(packed[:, t], None if t == 0 else actions[:, t])
        lo = max(0, t - C) if window_mode == "slide" else 0
        a = actions[:, lo:t + 1].clone()
        m = masks[:, None].expand(B, t + 1 - lo, -1).clone()
        if lo == 0:
            a[:, 0], m[:, 0] = 0, 0
        with torch.no_grad():
            _, h = model(packed[:, lo:t + 1], signal_idx=torch.full((B, t + 1 - lo), sig),
                         step_idx=torch.full((B, t + 1 - lo), stp), actions=a, act_mask=m,
                         task_ids=torch.from_numpy(task_ids), time_window=C if window_mode == "roll" else None)
            want_mean, want_std = model.policy(h[:, -1:])
        torch.testing.assert_close(mean, want_mean[:, 0, 0] * masks, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(std, want_std[:, 0, 0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="roll"):
        PolicyRunner(dt.Dynamics(AGENT), task_ids, C, "roll")          # additive time positions: slide only


def shared_mask(task_id):
    from shared.data.tasks import action_mask
    return action_mask(int(task_id))
