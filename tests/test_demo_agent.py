"""The demo's agent mode: the policy head of an agent-finetuned model drives a session, in the world
model and in the real task beside it (demo.agent)."""

import numpy as np
import pytest
import torch
from PIL import Image

from demo.backend import load_backend, randomize_for_display
from demo.data import NoDataSource
from demo.session import Session
from dreamer4_torch import Dynamics, Tokenizer, save_model
from dreamer4_torch.eval.policy import PolicyRunner
from shared.agent import agent_config
from shared.data.tasks import TASK_IDS, make_env
from shared.recipes import get_preset

from .demo_utils import DemoServer, make_checkpoints

gradio_client = pytest.importorskip("gradio_client")

CONTEXT = 4


@pytest.fixture(scope="module")
def agent_checkpoints(tmp_path_factory):
    """A tiny tokenizer and an agent model (random weights; the policy head's output layer scaled up so
    that its actions are far from zero and differ from frame to frame)."""
    directory = tmp_path_factory.mktemp("agent_ckpt")
    p = get_preset("tiny")
    torch.manual_seed(0)
    tok, dyn = Tokenizer(p.tokenizer), Dynamics(agent_config(p.dynamics, 30))
    randomize_for_display(dyn, 0)
    with torch.no_grad():
        dyn.policy_head.out[0].weight.normal_(0.0, 1.0)
    save_model(tok, directory / "tokenizer")
    save_model(dyn, directory / "agent")
    return str(directory / "tokenizer"), str(directory / "agent")


@pytest.fixture(scope="module")
def agent_model(agent_checkpoints):
    return load_backend("torch", *agent_checkpoints)


def test_the_policy_drives_the_world_model_and_the_real_task(agent_model):
    """In agent mode every action is the policy's mean on the imagined frames (checked against a
    PolicyRunner fed the same latents), the sliders are ignored, and beside it the same policy plays
    the real task from its real frames (checked against an environment replayed by hand)."""
    model = agent_model
    assert model.has_agent
    s = Session(model, NoDataSource(16), task="cartpole-swingup", context_length=CONTEXT, seed=3)
    s.set_agent(True)
    real = s.driver.real
    assert real is not None and "real cartpole-swingup" in s.start_note
    s.set_sliders([1.0])
    actions = []
    for _ in range(6):
        s.advance()
        actions.append(s.action.copy())
    assert s.display().shape == (512, 2 * 512 + 16, 3)
    assert "agent drives" in s.status() and "real return" in s.status()
    assert len({round(float(a[0]), 5) for a in actions}) > 1           # the policy, not the slider at +1
    assert all(np.all(a[1:] == 0) for a in actions)                    # cartpole: one action dimension

    # The real side, replayed: same seed, same encoding of every frame, a fresh runner.
    with torch.no_grad():
        runner = PolicyRunner(model.dynamics, np.array([TASK_IDS["cartpole-swingup"]]), CONTEXT)
        total = 0.0
        with make_env("cartpole-swingup", seed=0, size=16) as env:
            frame = env.reset(real.seed)
            action = None
            for t in range(7):
                packed = model.encode(frame[None])[:, -1]
                mean, _ = runner.observe(packed, action)
                action = mean.clamp(-1, 1)
                if t == 6:
                    break
                frame, reward = env.step(action[0, :1].double().numpy())
                total += reward
    assert real.steps == 6 and real.total == pytest.approx(total, abs=1e-9)
    np.testing.assert_array_equal(real.frame, frame)
    np.testing.assert_allclose(real.action, action[0].numpy(), atol=1e-6)

    s.set_agent(False)
    assert s.driver is None and s.display().shape == (512, 512, 3)
    s.set_sliders([1.0])
    for _ in range(60):
        a = s.next_action()
    assert a[0] == pytest.approx(1.0, abs=1e-3)                       # the sliders drive again
    s.close()


def test_the_real_task_steps_from_any_thread(agent_model):
    """The server calls a session from whichever worker thread serves the request: the real episode made
    on one thread steps, renders and closes from others (an EGL context is current on the thread that
    made it; rendering from another one failed with EGL_BAD_ACCESS)."""
    import threading
    s = Session(agent_model, NoDataSource(16), task="cartpole-swingup", context_length=CONTEXT, seed=3)
    s.set_agent(True)
    errors = []

    def advance():
        try:
            s.advance()
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)
    for _ in range(2):
        worker = threading.Thread(target=advance)
        worker.start()
        worker.join()
    assert not errors, errors
    assert s.driver.real.steps == 2
    worker = threading.Thread(target=s.close)
    worker.start()
    worker.join()


def test_the_imagined_actions_are_the_policys_on_the_imagined_frames(agent_model, monkeypatch):
    """Without MuJoCo the imagination starts as usual; each action equals a PolicyRunner's on the same
    imagined latents and actions, and the imagined return sums the reward head's predictions."""
    import demo.agent
    monkeypatch.setattr(demo.agent, "mujoco_available", lambda: "MuJoCo is not installed (test)")
    model = agent_model
    s = Session(model, NoDataSource(16), task="reacher-easy", context_length=CONTEXT, seed=5)
    frames, starts = [], []
    step, reset = model.sampler_step, model.sampler_reset

    def recording_step(sampler, action):
        frames.append(step(sampler, action))
        return frames[-1]

    def recording_reset(sampler, context, actions, mask):
        starts.append(context)
        return reset(sampler, context, actions, mask)

    monkeypatch.setattr(model, "sampler_step", recording_step)
    monkeypatch.setattr(model, "sampler_reset", recording_reset)
    s.set_agent(True)
    assert s.driver.real is None and "MuJoCo is not installed (test)" in s.status()
    taken = []
    for _ in range(5):
        s.advance()
        taken.append(s.action.copy())
    runner = PolicyRunner(model.dynamics, np.array([TASK_IDS["reacher-easy"]]), CONTEXT)
    rewards = []
    with torch.no_grad():
        mean, _ = runner.observe(starts[-1][:, 0], None)                # a one-frame random start
        for t, z in enumerate(frames):
            np.testing.assert_allclose(taken[t][:2], mean[0, :2].clamp(-1, 1).numpy(), atol=1e-6)
            rewards.append(float(runner.predicted_reward()[0]))
            mean, _ = runner.observe(z[:, 0], torch.from_numpy(taken[t])[None])
    assert s.driver.imagined_return == pytest.approx(sum(rewards), rel=1e-5, abs=1e-6)
    s.close()


def test_agent_mode_needs_agent_heads(tmp_path):
    tok, dyn = make_checkpoints(tmp_path)
    s = Session(load_backend("torch", tok, dyn), NoDataSource(16), task="cartpole-swingup", seed=0)
    assert not s.agent_available
    with pytest.raises(ValueError, match="no agent heads"):
        s.set_agent(True)


def test_served_agent_mode(agent_checkpoints):
    tok, dyn = agent_checkpoints
    srv = DemoServer("--tokenizer", tok, "--dynamics", dyn, "--task", "cartpole-swingup")
    try:
        c = gradio_client.Client(srv.url, verbose=False)
        frame, status = c.predict(True, api_name="/set_agent")[:2]
        assert np.asarray(Image.open(frame)).shape[1] == 2 * 512 + 16 and "agent drives" in status
        frame, status = c.predict(*([0.0] * 16), api_name="/step")[:2]
        assert "real return" in status and "frame 1" in status
    finally:
        srv.stop()


def test_agent_flag_serves_the_run_directorys_agent(tmp_path, agent_checkpoints):
    """--agent takes RUN_DIR/agent; without one it says how to train it; with --tokenizer it is refused."""
    from demo.__main__ import checkpoint_paths, parse_args
    from demo.backend import StartupError
    import shutil
    run = tmp_path / "run"
    shutil.copytree(agent_checkpoints[0], run / "tokenizer")
    with pytest.raises(StartupError, match="no agent model at .*make agent"):
        checkpoint_paths(parse_args(["--run-dir", str(run), "--agent"]))
    shutil.copytree(agent_checkpoints[1], run / "agent")
    assert checkpoint_paths(parse_args(["--run-dir", str(run), "--agent"])) == (str(run / "tokenizer"),
                                                                                str(run / "agent"))
    with pytest.raises(StartupError, match="pass the behaviour-cloning run as --dynamics"):
        checkpoint_paths(parse_args(["--tokenizer", "a", "--dynamics", "b", "--agent"]))


def test_agent_flag_defaults_to_make_agents_run_directory(tmp_path, monkeypatch):
    """Without --run-dir, --agent looks where `make agent` writes (the dmc64 agent pipeline's run_dir) and
    the plain demo where the quickstart writes."""
    from demo.backend import StartupError
    from shared.recipes import get_recipe
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DREAMER4_RUN_DIR", raising=False)
    import importlib
    import demo.__main__ as entry
    importlib.reload(entry)
    for p in ("runs/agent/tokenizer", "runs/agent/agent", "runs/quickstart/tokenizer", "runs/quickstart/dynamics"):
        (tmp_path / p).mkdir(parents=True)
    assert get_recipe("dmc64").agent_pipeline.run_dir == "runs/agent"
    assert entry.checkpoint_paths(entry.parse_args(["--agent"])) == ("runs/agent/tokenizer", "runs/agent/agent")
    assert entry.checkpoint_paths(entry.parse_args([])) == ("runs/quickstart/tokenizer", "runs/quickstart/dynamics")
    (tmp_path / "runs/agent/agent").rmdir()
    with pytest.raises(StartupError, match="no agent model at runs/agent/agent"):
        entry.checkpoint_paths(entry.parse_args(["--agent"]))
