"""Helpers for the demo tests: tiny random checkpoints, a small in-memory data set, a demo server."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from demo.backend import randomize_for_display
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(*args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run `python -m demo ARGS` to completion (for start-up errors)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "demo", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


class DemoServer:
    """`python -m demo ARGS --port P` in a subprocess, up once its page answers."""

    def __init__(self, *args, startup_timeout: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"demo-server-{self.port}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "demo", *map(str, args), "--host", "127.0.0.1",
                                      "--port", str(self.port)], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the demo did not answer within {startup_timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
