import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

# Tiny runs: the tiny preset (16x16 frames), short episodes, no DataLoader workers unless asked.
FAST = ["--preset", "tiny", "--workers", "0", "--log-every", "1", "--eval-every", "1000", "--ckpt-every", "1000",
        "--eval-sequences", "4", "--no-tensorboard"]


def train_cmd(kind: str, *args, nproc: int = 1) -> list[str]:
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "dreamer4_torch.train", kind, *map(str, args)]
    return [sys.executable, "-m", "dreamer4_torch.train", kind, *map(str, args)]


def run(cmd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 episodes of 2 tasks at 16x16, 40 agent steps each (1 episode per task is held out)."""
    from shared.data.collect import CollectConfig, collect
    path = tmp_path_factory.mktemp("train_data") / "ds"
    collect("cartpole-swingup,reacher-easy", 3, path, CollectConfig(size=16, episode_steps=40), workers=1,
            progress=False, log=lambda *a, **k: None)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_data, tmp_path_factory) -> Path:
    """A briefly trained tiny tokenizer checkpoint (with its options.json)."""
    out = tmp_path_factory.mktemp("tok_run") / "run"
    r = run(train_cmd("tokenizer", "--data", tiny_data, "--out", out, "--steps", 30, *FAST))
    assert r.returncode == 0, r.stderr
    return out / "checkpoints" / "latest"


@pytest.fixture(scope="session")
def tiny_dynamics(tiny_data, tiny_tokenizer, tmp_path_factory) -> Path:
    """A briefly trained tiny dynamics checkpoint on tiny_tokenizer (the start of behaviour cloning)."""
    out = tmp_path_factory.mktemp("dyn_run") / "run"
    r = run(train_cmd("dynamics", "--data", tiny_data, "--out", out, "--tokenizer", tiny_tokenizer, "--steps", 30,
                      *FAST))
    assert r.returncode == 0, r.stderr
    return out / "checkpoints" / "latest"
