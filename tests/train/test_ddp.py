"""Ranks that provably agree: a real divergence between DDP replicas stops the run, naming the step and
the tensors that differ (the digest comparison itself, not a stub, is what catches it)."""

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ENV, FAST, ROOT

pytestmark = pytest.mark.slow


def test_a_parameter_nudged_on_one_rank_stops_the_run_naming_the_step_and_tensor(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).parent / "diverge_one_rank.py"), "encoder.patch_proj.weight", "4",
           "tokenizer", "--data", str(tiny_data), "--out", str(out), "--steps", "6", "--batch-size", "2",
           *map(str, FAST), "--ckpt-every", "2"]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0, r.stdout[-2000:]
    assert "parameters differ across ranks at step 4: encoder.patch_proj.weight (replica digests" in r.stderr, \
        r.stderr[-3000:]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["latest", "step_0000002"], names          # step 2 was saved; step 4 was refused
