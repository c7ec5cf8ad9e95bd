"""Agent finetuning in the JAX backend: a pretrained checkpoint in the agent model predicts the same
frames bit for bit, the agent token sees its frame and task, and the loader refuses other checkpoints."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
from flax import nnx  # noqa: E402

import dreamer4_jax as dj  # noqa: E402
from shared.agent import agent_config, new_parameter_names  # noqa: E402
from shared.io import CheckpointError  # noqa: E402
from shared.recipes import get_preset  # noqa: E402

TINY = get_preset("tiny")
BASE = TINY.dynamics
AGENT = agent_config(BASE, 5)


def _inputs(cfg, B=2, T=6):
    rng = np.random.default_rng(0)
    packed = rng.normal(size=(B, T, cfg.n_spatial, cfg.d_spatial)).astype(np.float32)
    sig = rng.integers(0, cfg.k_max + 1, (B, T)).astype(np.int32)
    stp = rng.integers(0, cfg.e_max + 1, (B, T)).astype(np.int32)
    actions = rng.uniform(-1, 1, (B, T, cfg.action_dim)).astype(np.float32)
    return packed, sig, stp, actions


def test_pretrained_checkpoint_in_the_agent_model(tmp_path):
    pretrained = dj.Dynamics(BASE, rngs=nnx.Rngs(0)).eval()
    dj.save_model(pretrained, tmp_path / "dyn")
    agent = dj.load_for_agent(tmp_path / "dyn", AGENT, rngs=nnx.Rngs(1)).eval()
    base_state, agent_state = dj.model_state(pretrained), dj.model_state(agent)
    for name, value in base_state.items():
        np.testing.assert_array_equal(np.asarray(agent_state[name]), np.asarray(value), err_msg=name)
    assert {n.replace("/", ".").replace("kernel", "weight").replace("embedding", "weight")
            for n in set(agent_state) - set(base_state)} == set(new_parameter_names(AGENT))
    packed, sig, stp, actions = _inputs(BASE)
    x_base, _ = pretrained(packed, signal_idx=sig, step_idx=stp, actions=actions)
    x_a, h_a = agent(packed, signal_idx=sig, step_idx=stp, actions=actions, task_ids=np.array([0, 3], np.int32))
    x_b, h_b = agent(packed, signal_idx=sig, step_idx=stp, actions=actions, task_ids=np.array([4, 3], np.int32))
    np.testing.assert_array_equal(np.asarray(x_a), np.asarray(x_base))
    np.testing.assert_array_equal(np.asarray(x_b), np.asarray(x_base))
    assert np.abs(np.asarray(h_a[0] - h_b[0])).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(h_a[1]), np.asarray(h_b[1]))
    other = packed.copy()
    other[:, -1] += 1.0
    _, h_c = agent(other, signal_idx=sig, step_idx=stp, actions=actions, task_ids=np.array([0, 3], np.int32))
    np.testing.assert_array_equal(np.asarray(h_c[:, :-1]), np.asarray(h_a[:, :-1]))
    assert np.abs(np.asarray(h_c[:, -1] - h_a[:, -1])).max() > 1e-3
    mean, std = agent.policy(h_a)
    assert mean.shape == (2, 6, AGENT.mtp_length, AGENT.action_dim) and float(std.min()) >= 0.05


def test_load_for_agent_refuses_a_tokenizer(tmp_path):
    dj.save_model(dj.Tokenizer(TINY.tokenizer, rngs=nnx.Rngs(0)), tmp_path / "tok")
    with pytest.raises(CheckpointError, match="tokenizer checkpoint"):
        dj.load_for_agent(tmp_path / "tok", AGENT)
    packed, sig, stp, _ = _inputs(AGENT)
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, 4\]"):
        dj.Dynamics(AGENT, rngs=nnx.Rngs(0))(packed, signal_idx=sig, step_idx=stp, task_ids=np.array([0, 9]))
