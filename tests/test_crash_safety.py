"""Crashes at any moment: a process killed (SIGKILL) while it replaces a directory, or between the two
renames of the fallback path, never leaves the directory missing or half-written for a reader."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from shared.io import CheckpointError, atomic_directory, exchange_paths, read_config, recover_directory

ROOT = Path(__file__).resolve().parents[1]

# Writes version 1, 2, 3, ... of DIR as fast as it can: a 1 MiB file of the version's byte and a json file
# naming the version, written in that order, so that a half-written directory shows as a disagreement.
WRITER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from shared.io import atomic_directory
    path = Path(sys.argv[1])
    version = json.loads((path / "version.json").read_text())["version"] if path.exists() else 0
    while True:
        version += 1
        with atomic_directory(path) as tmp:
            (tmp / "data.bin").write_bytes(bytes([version % 256]) * (1 << 20))
            (tmp / "version.json").write_text(json.dumps({"version": version}))
""")


def read_version(path: Path) -> int:
    """The version a reader sees (after the readers' recovery), checked to be whole."""
    recover_directory(path)
    assert path.is_dir(), f"{path} is missing; siblings: {sorted(p.name for p in path.parent.iterdir())}"
    version = json.loads((path / "version.json").read_text())["version"]
    data = (path / "data.bin").read_bytes()
    assert len(data) == 1 << 20 and data == bytes([version % 256]) * len(data), f"version {version} is not whole"
    return version


@pytest.mark.parametrize("exchange", [True, False], ids=["one-exchange", "two-renames"])
def test_a_writer_killed_at_random_moments_never_leaves_the_directory_missing_or_partial(tmp_path, exchange):
    if exchange and not exchange_paths(tmp_path, tmp_path):   # exchanging a path with itself: a no-op probe
        pytest.skip("this file system cannot exchange two paths in one step; the fallback case covers it")
    path = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not exchange:
        env["DREAMER4_NO_EXCHANGE"] = "1"
    rng = np.random.default_rng(0)
    seen, kills = [], 0
    for _ in range(25):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env, cwd=ROOT)
        time.sleep(0.35 + rng.uniform(0, 0.4))                # import time, then a few replacements
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if path.exists() or any(tmp_path.glob(".ckpt.old-*")):
            seen.append(read_version(path))
    assert kills == 25 and len(seen) >= 20, seen
    assert seen == sorted(seen) and seen[-1] > seen[0], seen   # every run continued from the last whole version


def test_a_crash_between_the_two_renames_is_repaired_by_the_reader(tmp_path, monkeypatch):
    """The fallback's window, hit on purpose: the old copy has been moved aside, the new one not yet in."""
    from dreamer4_torch import Tokenizer, load_model, save_model
    from shared.recipes import get_preset
    path = tmp_path / "tok"
    save_model(Tokenizer(get_preset("tiny").tokenizer), path)
    monkeypatch.setenv("DREAMER4_NO_EXCHANGE", "1")
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):                               # the second rename: the process dies here
            raise KeyboardInterrupt
        return real_rename(src, dst)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        save_model(Tokenizer(get_preset("tiny").tokenizer), path)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not path.exists() and len(list(tmp_path.glob(".tok.old-*"))) == 1
    assert isinstance(load_model(path, kind="tokenizer"), Tokenizer)   # the reader puts the old copy back
    assert path.is_dir() and not list(tmp_path.glob(".tok.old-*"))
    assert read_config(path).kind == "tokenizer"


def test_recovery_leaves_a_present_or_never_written_directory_alone(tmp_path):
    with atomic_directory(tmp_path / "a") as tmp:
        (tmp / "x").write_text("1")
    (tmp_path / ".a.old-zzz").mkdir()                        # a stale leftover beside a present directory
    assert not recover_directory(tmp_path / "a") and (tmp_path / "a" / "x").read_text() == "1"
    assert not recover_directory(tmp_path / "never")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_config(tmp_path / "never")
