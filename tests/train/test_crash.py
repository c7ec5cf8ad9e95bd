"""Crashes at any moment: a training run SIGKILLed again and again -- while it steps and while it writes
checkpoints -- always leaves `checkpoints/latest` naming a whole checkpoint that loads, and `--resume`
continues with the uninterrupted run's losses, bit for bit. The same for the data collector."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dreamer4_torch import load_model

from .conftest import ENV, FAST, ROOT, run, train_cmd

pytestmark = pytest.mark.slow


def logged_losses(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last logged value of each step (a resumed run logs some steps again; a line cut by the
    kill is skipped)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "train" in rec:
            out[rec["step"]] = rec["train"]["loss"]
    return out


def train_lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text().count('"train"') if path.exists() else 0


def test_a_run_killed_at_random_moments_resumes_to_the_uninterrupted_losses(tiny_data, tmp_path):
    steps, kills = 40, 6
    common = ["--data", tiny_data, "--steps", steps, *FAST, "--ckpt-every", 2]   # a checkpoint every 2 steps
    full = tmp_path / "full"
    r = run(train_cmd("tokenizer", "--out", full, *common))
    assert r.returncode == 0, r.stderr[-3000:]

    part = tmp_path / "part"
    rng = np.random.default_rng(0)
    found, latest_steps = [], []
    for k in range(kills):
        resume = ["--resume"] if (part / "checkpoints" / "latest").exists() else []
        before = train_lines(part)
        proc = subprocess.Popen(train_cmd("tokenizer", "--out", part, *common, *resume), cwd=ROOT, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while train_lines(part) <= before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)                                   # wait until it steps
        assert proc.poll() is None, f"kill {k}: the run ended before it was killed: {proc.stderr.read()[-2000:]}"
        time.sleep(rng.uniform(0.0, 0.8))                      # then anywhere: a step, a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        latest = part / "checkpoints" / "latest"
        if not latest.exists():
            continue
        target = latest.resolve()
        assert target.is_dir(), f"kill {k}: latest names {target}, which is missing"
        load_model(latest, kind="tokenizer")                   # whole: config, weights ...
        torch.load(target / "training_state.pt", map_location="cpu", weights_only=True)   # ... and state
        latest_steps.append(int(target.name.split("_")[-1]))
        found.append(sorted(p.name for p in (part / "checkpoints").iterdir()))
    print("latest after each kill:", latest_steps)
    assert len(latest_steps) >= kills - 1 and latest_steps == sorted(latest_steps), latest_steps
    assert latest_steps[-1] < steps, "the run finished before the last kill"

    r = run(train_cmd("tokenizer", "--out", part, *common, "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = logged_losses(full), logged_losses(part)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    wa = load_file(str(full / "checkpoints" / "latest" / "model.safetensors"))
    wb = load_file(str(part / "checkpoints" / "latest" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_collector_killed_at_random_moments_keeps_every_committed_episode(tmp_path):
    """The collector's data set, killed while it writes: `check` accepts it after every kill, and a re-run
    adds the missing episodes, giving exactly the data set an uninterrupted collection gives."""
    from shared.data import check
    from shared.data.format import open_dataset
    args = ["--tasks", "cartpole-swingup,reacher-easy", "--episodes", "12", "--size", "16", "--episode-steps", "100",
            "--workers", "1", "--quiet"]
    full = tmp_path / "full"
    r = subprocess.run([sys.executable, "-m", "shared.data.collect", *args, "--out", str(full)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    part = tmp_path / "part"
    rng = np.random.default_rng(1)
    counts = []
    def committed() -> int:
        try:
            return open_dataset(part).num_episodes
        except Exception:                                     # not created yet
            return 0
    for k in range(4):
        before = committed()
        proc = subprocess.Popen([sys.executable, "-m", "shared.data.collect", *args, "--out", str(part)], cwd=ROOT,
                                env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while committed() <= before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)                                   # wait until it commits an episode
        assert proc.poll() is None, f"kill {k}: the collection ended before it was killed"
        time.sleep(rng.uniform(0.0, 0.3))                      # then anywhere in the next episodes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (part / "meta.json").exists():
            assert check.main([str(part)]) == 0, f"kill {k}: check refuses the data set"
            counts.append(len(open_dataset(part).episodes))
    r = subprocess.run([sys.executable, "-m", "shared.data.collect", *args, "--out", str(part)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    print("episodes after each kill:", counts)
    a, b = open_dataset(full), open_dataset(part)
    assert a.num_episodes == b.num_episodes == 24 and counts == sorted(counts), counts
    where = {(int(e["task_id"]), int(e["index"])): i for i, e in enumerate(a.episodes)}
    for j, e in enumerate(b.episodes):                        # the same episodes, perhaps in another order
        i = where[(int(e["task_id"]), int(e["index"]))]
        assert e["seed"] == a.episodes["seed"][i]
        for name in ("frames", "actions", "rewards"):
            assert np.array_equal(getattr(a, name)[a.episode_rows(i)], getattr(b, name)[b.episode_rows(j)]), name
