"""The linear probe (shared.probe) and `python -m dreamer4_torch.eval probe` on a data set with states."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.probe import fit_probe, r2_score


def test_r2_score_by_hand():
    y = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]])
    pred = np.array([[1.5, 1.0], [2.0, 2.0], [3.0, 3.0], [3.5, 4.0]])
    # column 0: residual 0.25 + 0 + 0 + 0.25 = 0.5, total 1.25 + 0.25 + 0.25 + 2.25 = 5 -> 0.9
    r2 = r2_score(y, pred)
    assert r2[0] == pytest.approx(0.9) and np.isnan(r2[1])               # column 1 is constant
    assert r2_score(y[:, :1], np.full((4, 1), 2.5))[0] == pytest.approx(0.0)  # the mean scores 0
    with pytest.raises(ValueError, match="differ in shape"):
        r2_score(y, pred[:, :1])


def test_probe_recovers_a_linear_target_and_not_an_unrelated_one():
    """y0 = a linear function of x plus small noise: held-out R² near its ceiling 1 - noise/var;
    y1 independent of x: R² near 0 (a probe cannot invent what the features do not hold)."""
    rng = np.random.default_rng(0)
    n, d = 2000, 40
    x = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    signal = x @ w
    noise = 0.1 * signal.std() * rng.standard_normal(n)
    y = np.stack([signal + noise, rng.standard_normal(n)], 1)
    groups = np.repeat(np.arange(20), n // 20)
    train, test = groups < 15, groups >= 15
    fit = fit_probe(x[train], y[train], groups[train])
    r2 = r2_score(y[test], fit.predict(x[test]))
    assert 0.97 < r2[0] <= 1 - 0.5 * 0.01 and abs(r2[1]) < 0.05, r2
    with pytest.raises(ValueError, match="at least 2 groups"):
        fit_probe(x, y, np.zeros(n))
    with pytest.raises(ValueError, match="has 3 features"):
        fit.predict(x[:, :3])


def test_probe_strength_is_chosen_by_held_out_groups():
    """About as many rows as features and a noisy target: the unregularised fit chases the noise
    (negative R² on new rows); cross-validation over groups must pick the strength that is best on
    new rows, and the chosen probe must score as well as that strength does."""
    from shared.probe import LAMBDAS

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2400, 300))
    y = x[:, :1] + rng.standard_normal((2400, 1))
    groups = np.repeat(np.arange(240), 10)
    train = groups < 36
    scores = [r2_score(y[~train], fit_probe(x[train], y[train], groups[train], lams=(lam,)).predict(x[~train]))[0]
              for lam in LAMBDAS]
    assert scores[0] < 0 < max(scores)
    fit = fit_probe(x[train], y[train], groups[train])
    assert fit.lam == LAMBDAS[int(np.argmax(scores))]
    assert r2_score(y[~train], fit.predict(x[~train]))[0] == pytest.approx(max(scores))


def _state_data(path, tasks=("cartpole-swingup", "cup-catch"), episodes=4, length=30, size=16):
    """Frames whose grey level is state dimension 0 (a thing one frame shows) and whose dimension 1
    is noise no frame shows."""
    from shared.data.format import DatasetWriter
    from shared.data.tasks import STATE_PAD, get_task

    rng = np.random.default_rng(0)
    with DatasetWriter(path, size, size, {"kind": "test"}, states=True) as writer:
        for task in tasks:
            for index in range(episodes):
                level = rng.uniform(0, 1, length)
                frames = np.broadcast_to((level * 255).astype(np.uint8)[:, None, None, None],
                                         (length, 3, size, size)).copy()
                states = np.zeros((length, STATE_PAD), np.float32)
                states[:, 0] = frames[:, 0, 0, 0] / 255.0
                states[:, 1] = rng.standard_normal(length)
                actions = np.zeros((length, 16), np.float32)
                actions[1:, :get_task(task).action_dim] = 0.1
                rewards = np.zeros(length, np.float32)
                writer.append(task, index, seed=index, policy="test", policy_params={}, frames=frames,
                              actions=actions, rewards=rewards, states=states,
                              state_names=["position[0]", "velocity[0]"])
    return path


def test_probe_command_end_to_end(tmp_path, capsys):
    """On a random tokenizer the grey level is linearly recoverable from the latents and the noise
    dimension is not; the table, the JSON and the errors."""
    import torch
    from dreamer4_torch.checkpoint import save_model
    from dreamer4_torch.eval.__main__ import main
    from dreamer4_torch.tokenizer import Tokenizer
    from shared.config import TokenizerConfig, TransformerConfig

    data = _state_data(tmp_path / "data")
    torch.manual_seed(0)
    cfg = TokenizerConfig(transformer=TransformerConfig(d_model=32, n_heads=2, depth=1),
                          image_height=16, image_width=16, patch_size=8, n_latents=4, d_bottleneck=8)
    save_model(Tokenizer(cfg), tmp_path / "tok")
    out = tmp_path / "probe.json"
    assert main(["probe", "--tokenizer", str(tmp_path / "tok"), "--data", str(data), "--stride", "1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cartpole-swingup" in text and "cup-catch" in text and "position[0]" in text
    saved = json.loads(out.read_text())
    for task in ("cartpole-swingup", "cup-catch"):
        r = saved["tasks"][task]
        assert r["key_state"] == ["position[0]"] and r["heldout_episodes"] == 1 and r["heldout_frames"] == 30
        assert r["r2"][0] > 0.9 and r["key_r2_min"] == pytest.approx(r["r2"][0], abs=1e-4), r
        assert r["r2"][1] < 0.3, r                                 # noise: not in the frames
    # a training run directory: its checkpoints/latest is probed, the JSON is written beside it
    import shutil
    run = tmp_path / "tokrun"
    shutil.copytree(tmp_path / "tok", run / "checkpoints" / "latest")
    (run / "options.json").write_text(json.dumps({"frames": 1}))
    assert main(["probe", "--tokenizer", str(run), "--data", str(data), "--stride", "1"]) == 0
    assert json.loads((run / "probe.json").read_text())["tasks"] == saved["tasks"]
    with pytest.raises(SystemExit, match="has no walker-walk"):
        main(["probe", "--tokenizer", str(tmp_path / "tok"), "--data", str(data), "--tasks", "walker-walk"])
    with pytest.raises(SystemExit, match="recorded without states"):
        from tests.data.conftest import write_synthetic
        old = write_synthetic(tmp_path / "old", [("walker-walk", 5), ("walker-walk", 5)], size=16)
        main(["probe", "--tokenizer", str(tmp_path / "tok"), "--data", str(old)])


def test_free_angle_is_probed_as_cos_and_sin(tmp_path, capsys):
    """Reacher's shoulder winds (its raw angle runs over several turns) while the frames show it
    modulo 2π (red = cos, green = sin): the probe's targets are its cos and sin, which the latents
    of a random tokenizer hold; the raw angle, which no frame shows, is not a target."""
    import torch
    from dreamer4_torch.checkpoint import save_model
    from dreamer4_torch.eval.__main__ import main
    from dreamer4_torch.tokenizer import Tokenizer
    from shared.config import TokenizerConfig, TransformerConfig
    from shared.data.format import DatasetWriter
    from shared.data.tasks import STATE_PAD

    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "data", 16, 16, {"kind": "test"}, states=True) as writer:
        for index in range(4):
            angle = rng.uniform(-3 * np.pi, 3 * np.pi, 30)
            frames = np.zeros((30, 3, 16, 16), np.uint8)
            frames[:, 0] = ((np.cos(angle) + 1) * 127.5).astype(np.uint8)[:, None, None]
            frames[:, 1] = ((np.sin(angle) + 1) * 127.5).astype(np.uint8)[:, None, None]
            states = np.zeros((30, STATE_PAD), np.float32)
            states[:, 0] = angle
            actions = np.zeros((30, 16), np.float32)
            writer.append("reacher-easy", index, seed=index, policy="test", policy_params={}, frames=frames,
                          actions=actions, rewards=np.zeros(30, np.float32), states=states,
                          state_names=["position[0]"])
    torch.manual_seed(0)
    cfg = TokenizerConfig(transformer=TransformerConfig(d_model=32, n_heads=2, depth=1),
                          image_height=16, image_width=16, patch_size=8, n_latents=4, d_bottleneck=8)
    save_model(Tokenizer(cfg), tmp_path / "tok")
    out = tmp_path / "probe.json"
    assert main(["probe", "--tokenizer", str(tmp_path / "tok"), "--data", str(tmp_path / "data"),
                 "--stride", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["tasks"]["reacher-easy"]
    assert r["state_names"] == ["cos position[0]", "sin position[0]"] == r["key_state"]
    assert min(r["r2"]) > 0.9, r
    assert "cos position[0]" in capsys.readouterr().out


def test_agent_output_probe(tmp_path, capsys):
    """--dynamics: the features are the agent output h_t of a window ending at frame t (checked against
    a direct model call), the command writes its JSON beside the run, and a model without agent inputs
    is refused."""
    import torch
    from dreamer4_torch.checkpoint import save_model
    from dreamer4_torch.dynamics import Dynamics
    from dreamer4_torch.eval.__main__ import main
    from dreamer4_torch.eval.probe import episode_agent_outputs
    from dreamer4_torch.tokenizer import Tokenizer
    from shared.agent import agent_config
    from shared.config import DynamicsConfig, TokenizerConfig, TransformerConfig
    from shared.data.format import open_dataset
    from shared.shortcut import context_labels

    data = _state_data(tmp_path / "data", length=12)
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig(transformer=TransformerConfig(d_model=32, n_heads=2, depth=1), image_height=16,
                                    image_width=16, patch_size=8, n_latents=4, d_bottleneck=8))
    base = DynamicsConfig(transformer=TransformerConfig(d_model=32, n_heads=2, depth=2), n_latents=4,
                          d_bottleneck=8, packing_factor=2, n_register=1, n_agent=1, k_max=4)
    agent = Dynamics(agent_config(base, 30)).eval()
    save_model(tok, tmp_path / "tok")
    save_model(agent, tmp_path / "agent")
    save_model(Dynamics(base), tmp_path / "plain")

    ds = open_dataset(data)
    feats = episode_agent_outputs(agent, tok, ds, 1, stride=3, chunk=1, batch=2, window=5)   # frames 0, 3, 6, 9
    assert feats.shape == (4, 32)
    rows = ds.episode_rows(1)
    frames = torch.from_numpy(np.asarray(ds.frames[rows])).float()[None] / 255.0
    with torch.no_grad():
        packed = agent.pack(tok.encode(frames[:, :, None].flatten(0, 1)).unflatten(0, (1, 12))[:, :, 0])
        actions = torch.from_numpy(np.asarray(ds.actions[rows]))[None]
        mask = torch.ones_like(actions)
        mask[:, 0] = 0.0
        mask[..., 1:] = 0.0                                    # cartpole: one action dimension
        signal, step = context_labels(4)
        for row, t in enumerate((0, 3, 6, 9)):
            lo = max(0, t - 4) if t >= 4 else 0
            hi = lo + 5
            _, h = agent(packed[:, lo:hi], signal_idx=torch.full((1, 5), signal), step_idx=torch.full((1, 5), step),
                         actions=actions[:, lo:hi] * mask[:, lo:hi], act_mask=mask[:, lo:hi],
                         task_ids=torch.tensor([int(ds.episodes["task_id"][1])]))
            np.testing.assert_allclose(feats[row], h[0, t - lo, 0].numpy(), rtol=1e-4, atol=1e-5)

    out = tmp_path / "agent_probe.json"
    assert main(["probe", "--tokenizer", str(tmp_path / "tok"), "--data", str(data), "--dynamics",
                 str(tmp_path / "agent"), "--stride", "2", "--out", str(out)]) == 0
    assert "agent output h_t (windows of 16 frames)" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["features"] == "agent_output" and saved["tasks"]["cup-catch"]["heldout_frames"] == 6
    with pytest.raises(SystemExit, match="has no agent token input"):
        main(["probe", "--tokenizer", str(tmp_path / "tok"), "--data", str(data), "--dynamics", str(tmp_path / "plain")])
