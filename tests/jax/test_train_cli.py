"""End-to-end tests of `python -m dreamer4_jax.train` (tiny preset, CPU): a tokenizer and a dynamics
model trained through the CLI, a killed (SIGKILL) and a stopped (SIGTERM) run resumed with exactly the
losses of the uninterrupted run, `--help`, and the error for a PyTorch tokenizer."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.train.conftest import tiny_data  # noqa: F401 - the torch trainer tests' data set fixture

pytest.importorskip("jax")
import chex  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# Small runs: 16x16 frames, short episodes, nothing evaluated or saved except where a test asks.
FAST = ["--preset", "tiny", "--log-every", "1", "--eval-every", "1000", "--ckpt-every", "1000",
        "--eval-sequences", "2"]
DYN_FAST = ["--eval-context", "1", "--eval-horizon", "1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # One persistent compilation cache for every trainer process of this module (it only saves time).
    cache = tmp_path_factory.mktemp("xla_cache")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def cli(kind, *args) -> list[str]:
    return [sys.executable, "-m", "dreamer4_jax.train", kind, *map(str, args)]


def run(cmd, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def train_losses(run_dir: Path) -> list[tuple[int, str]]:
    """(step, loss as float hex) of every train record of metrics.jsonl, in file order."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train" in record:
            out.append((record["step"], float(record["train"]["loss"]).hex()))
    return out


def after_last_resume(run_dir: Path) -> tuple[int, list[tuple[int, str]]]:
    """The step the last resume started from and the train records written since."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    starts = [i for i, r in enumerate(lines) if r.get("event") == "resume"]
    assert starts, "no resume recorded in metrics.jsonl"
    resumed_at = lines[starts[-1]]["step"]
    return resumed_at, [(r["step"], float(r["train"]["loss"]).hex()) for r in lines[starts[-1]:] if "train" in r]


def checkpoint_params(run_dir: Path) -> dict:
    from dreamer4_jax import load_state
    return {k: np.asarray(v) for k, v in load_state(run_dir / "checkpoints" / "latest")[1].items()}


def wait_for(predicate, proc, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.02)
    return False


TOK_ARGS = ["--steps", 40, "--ckpt-every", 5, "--eval-every", 40]


@pytest.fixture(scope="module")
def tokenizer_run(tiny_data, env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jax_tok") / "run"
    r = run(cli("tokenizer", "--data", tiny_data, "--out", out, *FAST, *TOK_ARGS), env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out


def test_tokenizer_run_directory(tokenizer_run):
    from dreamer4_jax import Tokenizer, load_model
    options = json.loads((tokenizer_run / "options.json").read_text())
    assert options["steps"] == 40 and options["preset"] == "tiny" and options["frames"] == 4   # the tiny recipe
    assert "precision" not in options and "workers" not in options        # options it does not take
    assert [s for s, _ in train_losses(tokenizer_run)] == list(range(1, 41))
    evals = [json.loads(l) for l in (tokenizer_run / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert [e["step"] for e in evals] == [40] and {"psnr", "mse", "psnr_frame_mean"} <= set(evals[0]["eval"])
    ckpts = tokenizer_run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_0000035", "step_0000040"]   # keep 2
    assert os.readlink(ckpts / "latest") == "step_0000040"
    assert isinstance(load_model(ckpts / "latest", kind="tokenizer"), Tokenizer)
    assert json.loads((tokenizer_run / "done.json").read_text())["reason"] == "steps"
    losses = [float.fromhex(h) for _, h in train_losses(tokenizer_run)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_killed_tokenizer_run_resumes_with_identical_losses(tiny_data, env, tokenizer_run, tmp_path):
    out = tmp_path / "killed"
    cmd = cli("tokenizer", "--data", tiny_data, "--out", out, *FAST, *TOK_ARGS)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    saved = wait_for(lambda: (out / "checkpoints" / "latest").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert saved and proc.returncode == -signal.SIGKILL, "the run ended before its first checkpoint was written"
    assert not (out / "done.json").exists()
    r = run(cmd + ["--resume"], env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    resumed_at, records = after_last_resume(out)
    assert 5 <= resumed_at < 40 and resumed_at % 5 == 0
    full = dict(train_losses(tokenizer_run))
    assert records == [(s, full[s]) for s in range(resumed_at + 1, 41)]
    chex.assert_trees_all_equal(checkpoint_params(tokenizer_run), checkpoint_params(out), strict=True)


DYN_ARGS = ["--steps", 30, "--ckpt-every", 10, "--optimizer", "muon", "--ema-decay", 0.9,
            "--unconditional-fraction", 0.3, "--bootstrap-start", 5]


@pytest.fixture(scope="module")
def dynamics_run(tiny_data, env, tokenizer_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jax_dyn") / "run"
    r = run(cli("dynamics", "--data", tiny_data, "--tokenizer", tokenizer_run / "checkpoints" / "latest", "--out", out,
                *FAST, *DYN_FAST, *DYN_ARGS), env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out


def test_dynamics_run_directory(dynamics_run):
    from dreamer4_jax import Dynamics, load_model
    records = [json.loads(l) for l in (dynamics_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train" in r]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert {"loss", "flow_mse", "grad_norm", "lr", "bootstrap_rows"} <= set(train[0]["train"])
    # step s (from 1) is the update taken at step count s - 1: bootstrap rows from the 6th (--bootstrap-start 5)
    assert [r["train"]["bootstrap_rows"] for r in train[4:6]] == [0.0, 2.0]
    evals = [r for r in records if "eval" in r]
    assert evals[-1]["step"] == 30 and {"psnr_h1", "floor_h1", "tokenizer_h1", "gain_h1", "psnr_all"} \
        <= set(evals[-1]["eval"])
    assert isinstance(load_model(dynamics_run / "checkpoints" / "latest", kind="dynamics"), Dynamics)


def test_stopped_dynamics_run_resumes_with_identical_losses(tiny_data, env, tokenizer_run, dynamics_run, tmp_path):
    out = tmp_path / "stopped"
    cmd = cli("dynamics", "--data", tiny_data, "--tokenizer", tokenizer_run / "checkpoints" / "latest", "--out", out,
              *FAST, *DYN_FAST, *DYN_ARGS)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count('"train"') >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-4000:]
    stopped = max(s for s, _ in train_losses(out))
    assert 3 <= stopped < 30 and f"stopped after step {stopped}" in stdout, stdout[-2000:]
    assert os.readlink(out / "checkpoints" / "latest") == f"step_{stopped:07d}"
    r = run(cmd + ["--resume"], env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    resumed_at, records = after_last_resume(out)
    full = dict(train_losses(dynamics_run))
    assert resumed_at == stopped and records == [(s, full[s]) for s in range(stopped + 1, 31)]
    chex.assert_trees_all_equal(checkpoint_params(dynamics_run), checkpoint_params(out), strict=True)  # the averages


def test_resume_refuses_changed_options(tiny_data, env, tokenizer_run, tmp_path):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(tokenizer_run, out, symlinks=True)
    r = run(cli("tokenizer", "--data", tiny_data, "--out", out, *FAST, *TOK_ARGS, "--lr", 0.5, "--resume"), env)
    assert r.returncode == 1, r.stderr
    assert "--resume with options that change the run:" in r.stderr and "--lr 0.001 -> 0.5" in r.stderr, r.stderr
    r = run(cli("tokenizer", "--data", tiny_data, "--out", out, *FAST, *TOK_ARGS), env)
    assert r.returncode != 0 and "already holds a run; pass --resume" in r.stderr, r.stderr


# Every option of the JAX trainers, written out here: --help must offer exactly these.
COMMON_FLAGS = {"--data", "--out", "--preset", "--model-config", "--steps", "--max-minutes", "--batch-size", "--frames",
                "--optimizer", "--lr", "--warmup-steps", "--min-lr-ratio", "--weight-decay", "--beta1", "--beta2",
                "--grad-clip", "--ema-decay", "--seed", "--holdout-per-task", "--log-every", "--eval-every",
                "--eval-sequences", "--ckpt-every", "--keep-checkpoints", "--resume"}
FLAGS = {"tokenizer": COMMON_FLAGS | {"--mse-on", "--contrast-weight", "--mae-p-max"},
         "dynamics": COMMON_FLAGS | {"--tokenizer", "--bootstrap-start", "--bootstrap-fraction",
                                     "--unconditional-fraction", "--eval-context", "--eval-horizon",
                                     "--eval-sampling-steps"}}


@pytest.mark.parametrize("kind", ["tokenizer", "dynamics"])
def test_help_lists_and_explains_every_option(kind, env):
    r = run(cli(kind, "--help"), env, timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout.split("options:", 1)[1]
    # argparse's help: "  --flag METAVAR   text" (the text on the same line or the next ones)
    entries = {}
    for block in ("\n" + text).split("\n  --")[1:]:
        words = block.split()
        explained = [w for w in words[1:] if not (w.isupper() or w.startswith(("{", "--", "(default:")))]
        entries["--" + words[0].rstrip(",")] = explained
    assert set(entries) == FLAGS[kind], sorted(set(entries) ^ FLAGS[kind])
    for flag in FLAGS[kind]:
        assert len(entries[flag]) >= 3, (flag, entries[flag])
    for absent in ("--precision", "--workers", "--parallel", "--cache-latents", "--grad-accum"):
        assert absent not in text
    assert "have no JAX counterpart" in " ".join(r.stdout.split())


def test_a_torch_tokenizer_is_refused_with_the_conversion_command(tiny_data, env, tmp_path):
    torch = pytest.importorskip("torch")
    from dreamer4_torch import Tokenizer
    from dreamer4_torch.checkpoint import save_model
    from shared.recipes import get_preset
    torch.manual_seed(0)
    save_model(Tokenizer(get_preset("tiny").tokenizer), tmp_path / "torch_tok")
    r = run(cli("dynamics", "--data", tiny_data, "--tokenizer", tmp_path / "torch_tok", "--out", tmp_path / "run", *FAST),
            env, timeout=120)
    assert r.returncode != 0
    assert "is a PyTorch checkpoint" in r.stderr and "python -m convert torch-to-jax" in r.stderr, r.stderr


def test_the_trainer_never_imports_torch(env):
    code = ("import sys, dreamer4_jax.train.__main__, dreamer4_jax.train.runner, dreamer4_jax.train.tokenizer, "
            "dreamer4_jax.train.dynamics\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'dreamer4_torch', 'convert')]\n"
            "assert not bad, bad\nprint('ok')")
    r = run([sys.executable, "-c", code], env, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
