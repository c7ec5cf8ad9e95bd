"""Import of upstream's layout, on small files in that layout written here."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.data import check
from shared.data.format import open_dataset
from shared.data.import_upstream import (UpstreamError, import_upstream, main,
                                         resize_like_upstream)

ROOT = Path(__file__).resolve().parents[2]


def upstream_rows(episode_lengths, action_dim, padded=True, seed=0):
    """Raw rows as upstream stores them: NaN action and reward on each episode's first row."""
    rng = np.random.default_rng(seed)
    n = sum(episode_lengths)
    episode = np.repeat(np.arange(len(episode_lengths)) + 10, episode_lengths)
    action = rng.uniform(-1, 1, (n, 16 if padded else action_dim)).astype(np.float32)
    if padded:
        action[:, action_dim:] = 0
    reward = rng.uniform(0, 2, (n, 1)).astype(np.float32)
    first = np.concatenate([[0], np.cumsum(episode_lengths)[:-1]])
    action[first] = np.nan
    reward[first] = np.nan
    return episode, action, reward


def write_raw(src: Path, task: str, episode, action, reward):
    src.mkdir(parents=True, exist_ok=True)
    torch.save({"episode": torch.from_numpy(episode), "action": torch.from_numpy(action),
                "reward": torch.from_numpy(reward)}, src / f"{task}.pt")


def write_shards(frames_dir: Path, task: str, frames: np.ndarray, shard_size: int):
    folder = frames_dir / task
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(frames), shard_size):
        torch.save({"frames": torch.from_numpy(frames[i:i + shard_size])},
                   folder / f"{task}_shard{i // shard_size:04d}.pt")


def write_strips(frames_dir: Path, task: str, frames: np.ndarray, per_strip: int):
    frames_dir.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(frames), per_strip):
        chunk = frames[i:i + per_strip]  # (n, 3, 224, 224) -> one 224 x 224n RGB image
        strip = chunk.transpose(2, 0, 3, 1).reshape(224, -1, 3)
        Image.fromarray(strip).save(frames_dir / f"{task}-{i // per_strip}.png")


def test_shards_import(tmp_path, capsys):
    src = tmp_path / "src"
    lengths = [7, 5, 9]
    episode, action, reward = upstream_rows(lengths, action_dim=2)
    frames = np.random.default_rng(1).integers(0, 256, (sum(lengths), 3, 16, 16), dtype=np.uint8)
    write_raw(src, "reacher-easy", episode, action, reward)
    write_shards(src, "reacher-easy", frames, shard_size=4)  # episodes straddle shards
    e2, a2, r2 = upstream_rows([6, 6], action_dim=4, padded=False, seed=2)
    write_raw(src, "hopper-hop", e2, a2, r2)
    write_shards(src, "hopper-hop", np.zeros((12, 3, 16, 16), np.uint8), shard_size=5)
    (src / "some-other-task.pt").write_bytes(b"")

    dst = tmp_path / "dst"
    assert main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "ignoring files for unknown tasks: some-other-task" in out
    ds = open_dataset(dst)
    assert ds.tasks == ["reacher-easy", "hopper-hop"] and ds.height == 16
    assert ds.episodes["length"].tolist() == lengths + [6, 6]
    assert ds.episodes["policy"].tolist() == ["upstream"] * 5 and (ds.episodes["seed"] == -1).all()
    reacher = ds.episodes["task_id"] == ds.episodes["task_id"][0]
    rows = slice(0, sum(lengths))
    assert np.array_equal(ds.frames[rows], frames)
    expected_actions = np.nan_to_num(action, nan=0.0)
    expected_rewards = np.nan_to_num(reward[:, 0], nan=0.0)
    assert np.array_equal(ds.actions[rows], expected_actions)
    assert np.array_equal(ds.rewards[rows], expected_rewards)
    assert reacher.sum() == 3
    hopper_rows = slice(sum(lengths), sum(lengths) + 12)
    assert np.array_equal(ds.actions[hopper_rows][:, :4], np.nan_to_num(a2, nan=0.0))
    assert not ds.actions[hopper_rows][:, 4:].any()
    assert check.main([str(dst)]) == 0
    assert main([str(src), str(dst)]) == 0  # a re-run adds nothing
    assert "imported 0 new episode(s)" in capsys.readouterr().out


def test_resize_is_upstreams_bilinear():
    frames = np.random.default_rng(0).integers(0, 256, (3, 3, 224, 224), dtype=np.uint8)
    ours = resize_like_upstream(frames, 128)
    # torch's own result depends on its thread count (on one thread its kernel rounds differently: 427 of
    # these 147,456 values differ by 1); ours is the multi-threaded kernel's, so compare with that one
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        theirs = torch.nn.functional.interpolate(torch.from_numpy(frames).float() / 255.0, size=(128, 128),
                                                 mode="bilinear", align_corners=False)
    finally:
        torch.set_num_threads(threads)
    theirs = (theirs.clamp(0, 1) * 255.0).to(torch.uint8).numpy()
    assert np.array_equal(ours, theirs)


def test_png_strips_import(tmp_path):
    src = tmp_path / "src"
    lengths = [4, 6]
    episode, action, reward = upstream_rows(lengths, action_dim=1)
    frames = np.random.default_rng(3).integers(0, 256, (10, 3, 224, 224), dtype=np.uint8)
    write_raw(src, "pendulum-swingup", episode, action, reward)
    write_strips(tmp_path / "strips", "pendulum-swingup", frames, per_strip=3)
    dst = tmp_path / "dst"
    import_upstream(src, dst, frames_dir=tmp_path / "strips", log=lambda *_: None)
    ds = open_dataset(dst)
    assert ds.height == 128 and ds.num_frames == 10
    assert np.array_equal(ds.frames[:], resize_like_upstream(frames, 128))
    small = tmp_path / "small"
    import_upstream(src, small, frames_dir=tmp_path / "strips", size=32, log=lambda *_: None)
    assert np.array_equal(open_dataset(small).frames[:], resize_like_upstream(frames, 32))


def test_fewer_frames_than_rows_cuts_with_a_warning(tmp_path):
    src = tmp_path / "src"
    episode, action, reward = upstream_rows([5, 5, 5], action_dim=2)
    write_raw(src, "cup-catch", episode, action, reward)
    write_shards(src, "cup-catch", np.zeros((8, 3, 8, 8), np.uint8), shard_size=4)
    messages = []
    import_upstream(src, tmp_path / "dst", log=messages.append)
    assert any("episode 1 is cut to 3 frames" in m for m in messages)
    assert open_dataset(tmp_path / "dst").episodes["length"].tolist() == [5, 3]


def test_bad_upstream_files_give_clear_errors(tmp_path):
    src = tmp_path / "src"
    episode, action, reward = upstream_rows([4, 4], action_dim=2)
    action[6, 0] = np.nan  # inside episode 1, not its first row
    write_raw(src, "finger-spin", episode, action, reward)
    write_shards(src, "finger-spin", np.zeros((8, 3, 8, 8), np.uint8), shard_size=8)
    with pytest.raises(UpstreamError, match=r"finger-spin\.pt: row 6 .*NaN"):
        import_upstream(src, tmp_path / "dst", log=lambda *_: None)
    with pytest.raises(UpstreamError, match="no raw file for task"):
        import_upstream(src, tmp_path / "dst2", tasks="walker-walk", log=lambda *_: None)
    write_raw(src / "x", "walker-walk", *upstream_rows([3], action_dim=6))
    with pytest.raises(UpstreamError, match="no frames for task 'walker-walk'"):
        import_upstream(src / "x", tmp_path / "dst3", log=lambda *_: None)


def test_missing_torch_is_named(tmp_path):
    src = tmp_path / "src"
    write_raw(src, "walker-walk", *upstream_rows([3], action_dim=6))
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'torch':
                    raise ImportError('no torch here')
        sys.meta_path.insert(0, Block())
        from shared.data.import_upstream import main
        sys.exit(main([{str(src)!r}, {str(tmp_path / 'dst')!r}]))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    assert "needs PyTorch, which is not installed" in out.stderr
