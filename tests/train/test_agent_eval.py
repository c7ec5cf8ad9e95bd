"""End to end: behaviour cloning on the tiny world model, then its policy in the real tasks
(python -m dreamer4_torch.eval policy): the table, the JSON, the videos, repeatability, clear errors."""

import json
import subprocess
import sys

import pytest

from .conftest import ENV, FAST, ROOT, run, train_cmd

pytestmark = pytest.mark.slow


def policy_cmd(*args):
    return [sys.executable, "-m", "dreamer4_torch.eval", "policy", *map(str, args)]


@pytest.fixture(scope="module")
def bc_run(tiny_data, tiny_tokenizer, tiny_dynamics, tmp_path_factory):
    out = tmp_path_factory.mktemp("bc") / "run"
    r = run(train_cmd("bc", "--data", tiny_data, "--out", out, "--tokenizer", tiny_tokenizer, "--dynamics",
                      tiny_dynamics, "--steps", 20, *FAST))
    assert r.returncode == 0, r.stderr[-3000:]
    # the pretrained run's latent cache holds this tokenizer's latents of this data set: read, not rebuilt
    assert f"latent cache {tiny_dynamics.parent.parent / 'latents'} is up to date" in r.stdout, r.stdout[-2000:]
    assert not (out / "latents").exists()
    return out


def test_policy_evaluation_in_the_real_tasks(bc_run, tmp_path):
    args = ["--episodes", 2, "--episode-steps", 12, "--quiet"]
    r = subprocess.run(policy_cmd(bc_run, *args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cartpole-swingup" in r.stdout and "reacher-easy" in r.stdout and "data best" in r.stdout
    result = json.loads((bc_run / "policy_eval.json").read_text())
    assert result["episode_steps"] == 12 and result["window"] == "slide" and not result["sample"]
    for task in ("cartpole-swingup", "reacher-easy"):
        entry = result["tasks"][task]
        assert entry["agent"]["n"] == 2 and len(entry["random"]["returns"]) == 2
        assert all(r >= 0 for r in entry["agent"]["returns"] + entry["random"]["returns"])   # DMC rewards in [0, 1]
        assert entry["data"] is None            # the data set's episodes are 40 steps, not 12
        assert (bc_run / "videos" / f"policy_{task}.gif").stat().st_size > 0
    # the same seeds give the same returns; another seed other episodes
    again = tmp_path / "again.json"
    r = subprocess.run(policy_cmd(bc_run, *args, "--videos", 0, "--out", again), cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(again.read_text())["tasks"] == result["tasks"]
    # the data set's own episode length: its returns are listed
    r = subprocess.run(policy_cmd(bc_run, "--episodes", 1, "--quiet", "--no-random", "--videos", 0, "--tasks",
                                  "reacher-easy", "--out", tmp_path / "full.json"),
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    full = json.loads((tmp_path / "full.json").read_text())
    assert full["episode_steps"] == 40 and full["tasks"]["reacher-easy"]["data"]["n"] == 3
    assert list(full["tasks"]) == ["reacher-easy"] and "random" not in full["tasks"]["reacher-easy"]


def test_policy_evaluation_errors(bc_run, tiny_dynamics, tmp_path):
    r = subprocess.run(policy_cmd(tiny_dynamics.parent.parent, "--episodes", 1), cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "without agent heads" in r.stderr and "train bc" in r.stderr
    for bad, message in ((["--episodes", 0], "--episodes"), (["--tasks", "walker-wlak"], "did you mean"),
                         (["--window", "roll"], "--window")):
        r = subprocess.run(policy_cmd(bc_run, *bad, "--out", tmp_path / "x.json"), cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and message in r.stderr, (bad, r.stderr[-2000:])
    assert not (tmp_path / "x.json").exists()
