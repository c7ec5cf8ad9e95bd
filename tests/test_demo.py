"""The Gradio demo: served over HTTP and driven with gradio_client; start-up errors; session logic."""

import types

import numpy as np
import pytest
import torch
from PIL import Image

from demo.backend import StartupError, load_backend
from demo.data import DatasetSource, NoDataSource
from demo.app import AppOptions, Sessions
from demo.session import Session, checked_number, comparison_grid, open_loop, side_by_side_gif
from dreamer4_torch import Dynamics, Tokenizer, save_model
from shared.config import replace
from shared.recipes import get_preset

from .demo_utils import DemoServer, make_checkpoints, make_dataset, run_demo

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def server(checkpoints):
    tok, dyn = checkpoints
    srv = DemoServer("--tokenizer", tok, "--dynamics", dyn)
    yield srv
    srv.stop()


def image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def step(client, action0: float, dims: int = 16):
    return client.predict(*([action0] + [0.0] * (dims - 1)), api_name="/step")


# --------------------------------------------------------------------------- served app

def test_client_reset_and_step_different_actions_give_different_frames(server):
    c = gradio_client.Client(server.url, verbose=False)
    start, status = c.predict(-1, api_name="/reset")
    assert "frame 0" in status
    frames = {}
    for name, a in (("push", 1.0), ("push again", 1.0), ("pull", -1.0)):
        c.predict(7, api_name="/reset")                # same start frame and noise every time
        frames[name] = image(step(c, a)[0])
    assert frames["push"].shape == (512, 512, 3)       # 16x16 frames upscaled 32x
    assert np.array_equal(frames["push"], frames["push again"])     # deterministic under a seed
    assert not np.array_equal(frames["push"], frames["pull"])       # the action changes the frame
    second, status = step(c, 1.0)
    assert "frame 2" in status and not np.array_equal(image(second), frames["push"])


def test_sessions_keep_their_own_state(server):
    a = gradio_client.Client(server.url, verbose=False)
    b = gradio_client.Client(server.url, verbose=False)
    a.predict(3, api_name="/reset")
    b.predict(3, api_name="/reset")
    fa = [image(step(a, 0.5)[0]) for _ in range(3)]
    fb, status_b = step(b, 0.5)
    assert "frame 1" in status_b and np.array_equal(image(fb), fa[0])   # b did not move with a
    _, status_a = step(a, 0.5)
    assert "frame 4" in status_a


def test_api_lists_the_playable_endpoints(server):
    names = gradio_client.Client(server.url, verbose=False).view_api(print_info=False, return_format="dict")
    assert {"/reset", "/step", "/set_task", "/open_loop"} <= set(names["named_endpoints"])


# Values a client can send that the page's widgets never would. Each must come back as an error and
# change nothing (a NaN action once stayed in the smoothed action and blackened the session's frames).
HOSTILE_ACTIONS = [float("nan"), float("inf"), -float("inf"), 1.5, -1e300, "loud", [0.1], {"a": 1}]
HOSTILE_CALLS = [
    *[("/step", (0.0, bad, *[0.0] * 14)) for bad in HOSTILE_ACTIONS],
    *[("/reset", (bad,)) for bad in (float("nan"), float("inf"), -2, 2**40, "seed", [1])],
    *[("/set_task", (bad,)) for bad in ("no-such-task", "", 7, None, ["walker-walk"])],
    ("/set_agent", (True,)),                                  # this model has no agent heads
    ("/set_agent", ("yes",)),
    ("/open_loop", ("walker-walk", "random", 2, 5, "2", 8)),  # no data set behind this server
]


@pytest.fixture
def nan_speaking_client(monkeypatch):
    """gradio_client's httpx refuses to put NaN or infinity into JSON; a hand-written client can (Python's
    json writes them as bare NaN/Infinity, which the server's parser reads). Let ours do the same."""
    import json

    import gradio_client.client as gc
    post = gc.httpx.post

    def lenient_post(url, *args, json=None, headers=None, **kwargs):
        if json is None:
            return post(url, *args, headers=headers, **kwargs)
        return post(url, *args, content=dumps(json), headers={**(headers or {}), "content-type": "application/json"},
                    **kwargs)
    dumps = json.dumps
    monkeypatch.setattr(gc.httpx, "post", lenient_post)


def test_hostile_payloads_get_errors_and_change_nothing(server, nan_speaking_client):
    """Every playable endpoint, sent values outside what the page allows: each call gets an error, the
    server stays up, and neither the attacked session nor a bystander's stream is changed by it."""
    attacked = gradio_client.Client(server.url, verbose=False)
    bystander = gradio_client.Client(server.url, verbose=False)
    reference = gradio_client.Client(server.url, verbose=False)
    for c in (attacked, bystander, reference):
        c.predict(5, api_name="/reset")
    expected = [image(step(reference, 0.5)[0]) for _ in range(2)]
    assert image(step(bystander, 0.5)[0]).tolist() == expected[0].tolist()
    refused, accepted = [], []
    for endpoint, args in HOSTILE_CALLS:
        try:
            attacked.predict(*args, api_name=endpoint)
            accepted.append((endpoint, args))
        except Exception as err:                              # gradio_client raises its AppError (or a ValueError)
            refused.append((endpoint, args, str(err)))
    assert not accepted
    assert server.proc.poll() is None, server.output()
    assert np.array_equal(image(step(bystander, 0.5)[0]), expected[1])
    frame, status = step(attacked, 0.5)                       # as if the hostile calls had never been made
    assert "frame 1" in status and np.array_equal(image(frame), expected[0]), status
    messages = dict(((endpoint, repr(args)), message) for endpoint, args, message in refused)
    assert all(m.strip() for m in messages.values()), refused
    assert "action 2 must be finite" in messages[("/step", repr(HOSTILE_CALLS[0][1]))]
    assert "the seed must be in [-1, 2147483647]" in messages[("/reset", repr((-2,)))]


# --------------------------------------------------------------------------- start-up errors

def one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("python -m demo: error: "), result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_wrong_path_fails_at_start(checkpoints, tmp_path):
    tok, _ = checkpoints
    one_line_error(run_demo("--tokenizer", tok, "--dynamics", tmp_path / "nope"), "--dynamics", "no such file")


def test_checkpoint_of_the_wrong_kind_fails_at_start(checkpoints):
    tok, dyn = checkpoints
    one_line_error(run_demo("--tokenizer", tok, "--dynamics", tok), "--dynamics",
                   "holds a tokenizer checkpoint, but a dynamics checkpoint was expected")


def test_incompatible_pair_fails_at_start(checkpoints, tmp_path):
    tok, _ = checkpoints
    other = replace(get_preset("tiny").dynamics, n_latents=8)
    save_model(Dynamics(other), tmp_path / "dyn8")
    one_line_error(run_demo("--tokenizer", tok, "--dynamics", tmp_path / "dyn8"), "do not fit together",
                   "n_latents")


def test_missing_default_checkpoints_say_what_to_do(tmp_path):
    one_line_error(run_demo("--run-dir", tmp_path / "run"), "no checkpoints given", "--random-weights")
    one_line_error(run_demo("--tokenizer", tmp_path), "give both --tokenizer and --dynamics")


def test_upstream_files_load_and_wrong_upstream_kind_is_named(tmp_path, checkpoints):
    from dreamer4_torch import load_model
    tok, dyn = load_model(checkpoints[0]), load_model(checkpoints[1])
    tok_args = dict(H=16, W=16, C=3, patch=4, d_model=32, n_heads=2, depth=2, n_latents=4, d_bottleneck=8,
                    dropout=0.0, mlp_ratio=4.0, time_every=1, mae_p_min=0.0, mae_p_max=0.5)
    dyn_args = dict(d_model_dyn=32, dyn_depth=2, n_heads=2, dropout=0.0, mlp_ratio=4.0, time_every=1,
                    packing_factor=2, n_register=2, n_agent=1, space_mode="wm_agent_isolated", k_max=8)
    torch.save({"model": {"module." + k: v for k, v in tok.state_dict().items()}, "args": tok_args,
                "scale_pos_embeds": True}, tmp_path / "tok.pt")
    torch.save({"dynamics": dyn.state_dict(), "args": dyn_args, "scale_pos_embeds": True}, tmp_path / "dyn.pt")
    model = load_backend("torch", str(tmp_path / "tok.pt"), str(tmp_path / "dyn.pt"))
    native = load_backend("torch", *checkpoints)
    ctx = model.random_context(np.random.default_rng(0))
    assert np.array_equal(model.decode(ctx), native.decode(ctx))
    with pytest.raises(StartupError, match="holds an upstream tokenizer checkpoint, but a dynamics"):
        load_backend("torch", str(tmp_path / "tok.pt"), str(tmp_path / "tok.pt"))


def test_the_tokenizer_clip_comes_from_its_config_and_old_checkpoints_from_options_json(tmp_path, checkpoints):
    import json
    import shutil
    from demo.backend import load_models
    from dreamer4_torch import load_model
    tok = load_model(checkpoints[0])
    new_dir = tmp_path / "new"
    save_model(Tokenizer(replace(tok.config, clip_frames=3)), new_dir)
    (new_dir / "options.json").write_text(json.dumps({"frames": 2}))     # the config wins
    assert load_models(str(new_dir), checkpoints[1])[0].config.clip_frames == 3
    old_dir = tmp_path / "old"
    shutil.copytree(checkpoints[0], old_dir)
    cfg = json.loads((old_dir / "config.json").read_text())
    del cfg["clip_frames"]                                                # written before the field
    (old_dir / "config.json").write_text(json.dumps(cfg))
    assert load_models(str(old_dir), checkpoints[1])[0].config.clip_frames is None
    (old_dir / "options.json").write_text(json.dumps({"frames": 2}))
    old = load_backend("torch", str(old_dir), checkpoints[1])
    assert old.tokenizer.config.clip_frames == 2
    frames = (np.random.default_rng(0).random((5, 3, 16, 16)) * 255).astype(np.uint8)
    video = torch.from_numpy(frames).float()[None] / 255
    with torch.no_grad():
        by_hand = torch.cat([tok.encode(video[:, s:s + 2]) for s in (0, 2, 4)], dim=1)
        whole = tok.encode(video)
    packed = old.encode(frames)
    torch.testing.assert_close(packed, old.dynamics.pack(by_hand), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(packed, old.dynamics.pack(whole), atol=1e-4)


# --------------------------------------------------------------------------- sessions and data

@pytest.fixture(scope="module")
def model(checkpoints):
    return load_backend("torch", *checkpoints)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def source(data_dir):
    return DatasetSource.open(data_dir, image_size=(16, 16), action_pad=16)


def test_keys_push_the_selected_dimension_with_upstreams_smoothing(model):
    s = Session(model, NoDataSource(16), task="walker-walk", seed=0)     # 6 action dimensions
    s.select(+1)
    s.key("up", True)
    a1 = s.next_action().copy()
    a2 = s.next_action().copy()
    assert a1[1] == pytest.approx(0.183, abs=1e-6) and a2[1] == pytest.approx(0.183 + 0.817 * 0.183, abs=1e-6)
    assert np.count_nonzero(a1) == 1
    s.key("up", False)
    s.key("down", True)
    assert s.next_action()[1] == pytest.approx(0.817 * a2[1] - 0.183, abs=1e-6)
    s.select(-2)
    assert s.selected_dim == 5                        # cycles over the task's dimensions


@pytest.mark.parametrize("bad, message", [(float("nan"), "action 2 must be finite"), (float("-inf"), "finite"),
                                          (1.5, r"in \[-1, 1\]"), ("loud", "must be a number"),
                                          ([0.1], "must be a number"), (True, "must be a number")])
def test_a_session_refuses_bad_actions_and_keeps_its_own(model, bad, message):
    s = Session(model, NoDataSource(16), task="reacher-easy", seed=0)
    s.set_sliders([0.5, -0.5])
    with pytest.raises(ValueError, match=message):
        s.set_sliders([0.1, bad])
    with pytest.raises(ValueError, match=message.replace("action 2", "action 1")):
        s.set_slider(0, bad)
    assert s.sliders[:2].tolist() == [0.5, -0.5]
    assert np.isfinite(s.next_action()).all() and s.advance().max() > 0


def test_a_session_refuses_bad_settings(model):
    s = Session(model, NoDataSource(16), task="reacher-easy", seed=0)
    for call, message in ((lambda: s.set_steps(3), "one of 1, 2"), (lambda: s.set_steps("2.5"), "one of"),
                          (lambda: s.set_context(0), r"in \[1, 64\]"),
                          (lambda: s.set_context(float("nan")), "finite"), (lambda: s.set_context(2.5), "whole"),
                          (lambda: s.reset("no-such-task"), "unknown task 'no-such-task'; this demo has"),
                          (lambda: s.set_sliders([0.0] * 17), "17 action values"),
                          (lambda: s.set_slider(16, 0.5), "action dimension")):
        with pytest.raises(ValueError, match=message):
            call()
    assert (s.n_steps, s.context_length, s.task) == (2, 16, "reacher-easy")
    s.set_steps("4")
    s.set_context(8.0)
    assert (s.n_steps, s.context_length) == (4, 8)
    assert checked_number("x", "0.25", 0, 1) == 0.25 and checked_number("x", 3.0, 0, 5, integer=True) == 3


def test_sessions_beyond_the_capacity_evict_the_oldest_used(model):
    sessions = Sessions(model, NoDataSource(16), AppOptions(session_capacity=3))
    request = lambda key: types.SimpleNamespace(session_hash=key)   # noqa: E731
    first = {key: sessions.get(request(key)) for key in "abc"}
    assert sessions.get(request("a")) is first["a"]                 # a was used again: b is now the oldest
    sessions.get(request("d"))
    assert list(sessions.sessions) == ["c", "a", "d"]
    assert first["b"].closed and not any(first[k].closed for k in "ac")
    again = sessions.get(request("b"))                              # b comes back as a new session
    assert again is not first["b"] and not again.closed and list(sessions.sessions) == ["a", "d", "b"]
    sessions.close(request("a"))
    assert first["a"].closed and list(sessions.sessions) == ["d", "b"]
    with pytest.raises(RuntimeError, match="without a Gradio session"):
        sessions.get(types.SimpleNamespace(session_hash=None))


def test_reset_starts_from_the_tasks_episodes_and_masks_its_actions(model, source):
    s = Session(model, source, task="reacher-easy", start_frames=3, seed=0)
    assert s.action_dim == 2 and s.sampler.n_frames == 3 and "episode" in s.start_note
    s.set_sliders([0.5, -0.5, 0.9])                   # the third dimension is not reacher's
    for _ in range(60):                              # 0.817^60 < 1e-5
        a = s.next_action()
    assert a[:2] == pytest.approx([0.5, -0.5], abs=1e-3) and a[2] == 0.0
    frame = s.advance()
    assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8 and s.display().shape == (512, 512, 3)
    s.reset("cartpole-swingup")
    assert s.action_dim == 1 and s.sampler.n_frames == 3 and s.frame_index == 0


def test_open_loop_compares_a_heldout_episode(model, source, tmp_path):
    result = open_loop(model, source, "cartpole-swingup", context_frames=2, horizon=6, n_steps=2,
                       context_length=4, seed=0)
    assert result.truth.shape == result.predicted.shape == (6, 16, 16, 3)
    assert result.psnr_model.shape == result.psnr_floor.shape == (6,) and np.isfinite(result.psnr_model).all()
    assert not np.array_equal(result.predicted[0], result.predicted[-1])
    gif = Image.open(side_by_side_gif(result, str(tmp_path / "x.gif")))
    assert gif.n_frames == 8
    assert comparison_grid(result).shape[1] > comparison_grid(result).shape[0]


def test_served_app_with_data_starts_from_episodes_and_runs_the_open_loop_view(checkpoints, data_dir):
    tok, dyn = checkpoints
    srv = DemoServer("--tokenizer", tok, "--dynamics", dyn, "--data", data_dir, "--start-frames", "2")
    try:
        c = gradio_client.Client(srv.url, verbose=False)
        frame, status, *sliders = c.predict("reacher-easy", api_name="/set_task")
        assert "task reacher-easy" in status and "first 2 frame(s)" in status and "action dim 1/2" in status
        gif, grid, plot, summary = c.predict("reacher-easy", "random", 2, 5, "2", 8, api_name="/open_loop")
        assert Image.open(gif).n_frames == 7 and image(grid).shape[0] > 0
        assert "5 predicted" in summary and "mean PSNR" in summary
        series = {row[2] for row in plot["data"]}
        assert len(plot["data"]) == 15 and series == {"model", "repeat last context frame", "tokenizer reconstruction"}
    finally:
        srv.stop()


def test_bad_data_and_task_fail_at_start(checkpoints, data_dir, tmp_path):
    tok, dyn = checkpoints
    one_line_error(run_demo("--tokenizer", tok, "--dynamics", dyn, "--data", tmp_path / "none"), "--data")
    one_line_error(run_demo("--tokenizer", tok, "--dynamics", dyn, "--data", data_dir, "--task", "walker-walk"),
                   "--task walker-walk: not one of the 2 tasks of the data set")


# --------------------------------------------------------------------------- the JAX engine

@pytest.fixture(scope="module")
def jax_model(checkpoints):
    pytest.importorskip("jax")
    return load_backend("jax", *checkpoints)


def test_jax_engine_different_actions_give_different_frames(jax_model):
    from demo.backend import JaxWorldModel
    assert isinstance(jax_model, JaxWorldModel) and "JAX" in jax_model.describe()
    assert "converted from PyTorch" in jax_model.describe()
    frames = {}
    for name, a in (("push", 1.0), ("push again", 1.0), ("pull", -1.0)):
        s = Session(jax_model, NoDataSource(16), task="walker-walk", seed=7, smoothing=0.0)
        s.set_sliders([a])
        frames[name] = [s.advance() for _ in range(3)]
    assert frames["push"][0].shape == (16, 16, 3) and frames["push"][0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(frames["push"], frames["push again"]))
    assert not np.array_equal(frames["push"][0], frames["pull"][0])
    assert not np.array_equal(frames["push"][0], frames["push"][2])      # the world moves


def test_jax_and_torch_engines_show_the_same_world(model, jax_model, source):
    """Same checkpoints, seed and actions: the two engines draw the same noise (a torch.Generator per
    session) and their frames agree up to fp32 rounding (a pixel may round the other way)."""
    runs = {}
    for name, engine in (("torch", model), ("jax", jax_model)):
        s = Session(engine, source, task="reacher-easy", start_frames=2, context_length=3, seed=11)
        s.set_sliders([0.8, -0.3])
        frames = [s.frame] + [s.advance() for _ in range(5)]     # past the 3-frame window: it slides
        s.set_steps(4)
        frames += [s.advance() for _ in range(2)]
        runs[name] = np.stack(frames).astype(int)
    diff = np.abs(runs["torch"] - runs["jax"])
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    assert np.abs(runs["torch"][1:] - runs["torch"][:1]).max() > 10          # and the frames are not static
    clip = source.clip("cartpole-swingup", np.random.default_rng(0), 3)
    actions = np.random.default_rng(1).uniform(-1, 1, (8, 16)).astype(np.float32)
    pred = {name: np.asarray(engine.rollout(engine.encode(clip.frames), actions, source.action_mask("cartpole-swingup"),
                                            5, 2, 4, 3))
            for name, engine in (("torch", model), ("jax", jax_model))}
    assert pred["jax"].shape == (1, 5, 2, 16) and np.abs(pred["torch"] - pred["jax"]).max() <= 1e-4


def test_jax_engine_open_loop_and_native_jax_checkpoints(checkpoints, jax_model, source, tmp_path):
    import dreamer4_jax as dj
    result = open_loop(jax_model, source, "cartpole-swingup", context_frames=2, horizon=6, n_steps=2,
                       context_length=4, seed=0)
    assert result.predicted.shape == (6, 16, 16, 3) and np.isfinite(result.psnr_model).all()
    # native JAX checkpoint directories load without conversion and give the converted engine's frames
    dj.save_model(jax_model.tokenizer, tmp_path / "tok_jax")
    dj.save_model(jax_model.dynamics, tmp_path / "dyn_jax")
    native = load_backend("jax", str(tmp_path / "tok_jax"), str(tmp_path / "dyn_jax"))
    assert "converted" not in native.describe()
    ctx = native.random_context(np.random.default_rng(0))
    assert np.array_equal(native.decode(ctx), jax_model.decode(ctx))
    with pytest.raises(StartupError, match="holds a tokenizer checkpoint, but a dynamics checkpoint was expected"):
        load_backend("jax", str(tmp_path / "tok_jax"), str(tmp_path / "tok_jax"))
    with pytest.raises(StartupError, match="--device cuda applies to the torch backend"):
        load_backend("jax", *checkpoints, device="cuda")


def test_served_app_on_the_jax_backend(checkpoints):
    pytest.importorskip("jax")
    tok, dyn = checkpoints
    srv = DemoServer("--tokenizer", tok, "--dynamics", dyn, "--backend", "jax")
    try:
        assert "JAX" in srv.output()
        c = gradio_client.Client(srv.url, verbose=False)
        frames = []
        for a in (1.0, -1.0):
            c.predict(5, api_name="/reset")
            frames.append(image(step(c, a)[0]))
        assert frames[0].shape == (512, 512, 3) and not np.array_equal(frames[0], frames[1])
    finally:
        srv.stop()
