"""Helpers for the demo tests: tiny random checkpoints, a small in-memory data set, a demo server."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from demo.backend import randomize_for_display
from demo.process import DemoServer, free_port  # noqa: F401 - the tests' server helper lives with the demo
from dreamer4_torch import Dynamics, Tokenizer, save_model
from shared.recipes import get_preset

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoints(directory: Path, preset: str = "tiny", seed: int = 0) -> tuple[str, str]:
    """Random tokenizer and dynamics checkpoints of a preset; the dynamics heads get visible weights
    (a freshly initialised model predicts zeros and ignores actions)."""
    p = get_preset(preset)
    torch.manual_seed(seed)
    tok, dyn = Tokenizer(p.tokenizer), Dynamics(p.dynamics)
    randomize_for_display(dyn, seed)
    tok_dir, dyn_dir = directory / "tokenizer", directory / "dynamics"
    save_model(tok, tok_dir)
    save_model(dyn, dyn_dir)
    return str(tok_dir), str(dyn_dir)


def make_dataset(directory: Path, size: int = 16, lengths=(12, 10, 9, 11), seed: int = 0) -> str:
    """A small data set in the collector's format: cartpole-swingup (1-d actions) and reacher-easy
    (2-d), two episodes each, frames of a moving blob, random actions (row 0 zero)."""
    from shared.data.format import DatasetWriter
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    path = directory / "data"
    with DatasetWriter(path, size, size, {"kind": "demo-test"}) as writer:
        for e, (task, dims) in enumerate([("cartpole-swingup", 1), ("cartpole-swingup", 1), ("reacher-easy", 2),
                                          ("reacher-easy", 2)]):
            L = lengths[e]
            frames = np.zeros((L, 3, size, size), np.uint8)
            for t in range(L):
                cx, cy = 0.5 + 0.3 * np.sin((t + 5 * e) / 3), 0.5 + 0.3 * np.cos((t + 5 * e) / 4)
                blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 20)
                frames[t] = (255 * np.stack([blob, 1 - blob, 0.5 * blob])).astype(np.uint8)
            actions = np.zeros((L, 16), np.float32)
            actions[1:, :dims] = rng.uniform(-1, 1, (L - 1, dims))
            writer.append(task, e, seed=e, policy="random", policy_params={}, frames=frames, actions=actions,
                          rewards=np.zeros(L, np.float32))
    return str(path)


def run_demo(*args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run `python -m demo ARGS` to completion (for start-up errors)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "demo", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)
