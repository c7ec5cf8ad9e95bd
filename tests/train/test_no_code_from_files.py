"""No code from files: a hostile pickle (one whose unpickling would run a command) is refused by every
reader of torch-pickled files -- upstream checkpoints, upstream data files, LPIPS weights, a run's
training state -- and runs nothing. `--trust-pickle` is the one way past, and it really does run it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import FAST, ROOT, run, train_cmd


class Payload:
    """Unpickling this calls os.system(command): what a malicious .pt file can carry."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def hostile(tmp_path):
    """hostile(path, obj) saves a torch file whose `payload` entry touches a marker file when unpickled;
    returns the marker's path (which must never appear unless the file is trusted)."""
    marker = tmp_path / "PWNED"

    def write(path: Path, obj: dict) -> Path:
        torch.save({**obj, "payload": Payload(f"touch {marker}")}, path)
        return marker
    return write


def one_line_error(r: subprocess.CompletedProcess, *fragments):
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


def test_upstream_checkpoint_reader(tmp_path, hostile):
    from convert.upstream import read_upstream_file
    from shared.io import CheckpointError
    marker = hostile(tmp_path / "tokenizer_ckpt.pt", {"model": {"w": torch.zeros(2)}, "args": {}})
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        read_upstream_file(tmp_path / "tokenizer_ckpt.pt")
    assert not marker.exists()
    r = subprocess.run([sys.executable, "-m", "convert", "upstream", str(tmp_path / "tokenizer_ckpt.pt"),
                        str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    one_line_error(r, "tokenizer_ckpt.pt", "--trust-pickle")
    assert not marker.exists() and not (tmp_path / "out").exists()
    read_upstream_file(tmp_path / "tokenizer_ckpt.pt", trust_pickle=True)   # the one way past: it runs
    assert marker.exists()


def test_upstream_data_reader(tmp_path, hostile):
    from shared.data.import_upstream import UpstreamError, load_pt
    src = tmp_path / "src"
    src.mkdir()
    marker = hostile(src / "cartpole-swingup.pt", {"episode": torch.zeros(3), "action": torch.zeros(3, 16),
                                                   "reward": torch.zeros(3, 1)})
    with pytest.raises(UpstreamError, match="--trust-pickle"):
        load_pt(src / "cartpole-swingup.pt")
    r = subprocess.run([sys.executable, "-m", "shared.data.import_upstream", str(src), str(tmp_path / "dst")],
                       cwd=ROOT, capture_output=True, text=True)
    one_line_error(r, "cartpole-swingup.pt", "--trust-pickle")
    assert not marker.exists() and not (tmp_path / "dst").exists()
    load_pt(src / "cartpole-swingup.pt", allow_pickle=True)
    assert marker.exists()


def test_lpips_weight_reader(tmp_path, hostile):
    from dreamer4_torch.train.lpips import LPIPS
    marker = hostile(tmp_path / "alexnet.pth", {"features.0.weight": torch.zeros(64, 3, 11, 11)})
    hostile(tmp_path / "lin.pth", {"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)})
    with pytest.raises(ValueError, match="cannot read AlexNet weights from .*alexnet.pth"):
        LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "lin.pth")
    assert not marker.exists()


def test_training_state_of_a_run_to_resume(tmp_path, hostile, tiny_data, tiny_tokenizer):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_tokenizer.parent.parent, run_dir, symlinks=True)
    options = json.loads((run_dir / "options.json").read_text())
    (run_dir / "options.json").write_text(json.dumps({**options, "out": str(run_dir)}))     # the run, moved here
    state_file = (run_dir / "checkpoints" / "latest").resolve() / "training_state.pt"
    good = torch.load(state_file, weights_only=True)
    marker = hostile(state_file, good)
    r = run(train_cmd("tokenizer", "--data", tiny_data, "--out", run_dir, "--steps", 40, "--resume", *FAST))
    one_line_error(r, "training_state.pt", "cannot be read as a training state")
    assert not marker.exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == sorted(
        p.name for p in (tiny_tokenizer.parent.parent / "checkpoints").iterdir())    # nothing new written
