"""The on-disk format: round trip, commit protocol, and clear errors for damaged datasets."""

import json
import pickle

import numpy as np
import pytest

from shared.data import check
from shared.data.format import (FORMAT_VERSION, META_FILE, DatasetError, DatasetWriter,
                                open_dataset)
from shared.data.tasks import STATE_PAD, TASK_IDS, key_state

from .conftest import (SYNTHETIC_SIZE, synthetic_actions, synthetic_frames, synthetic_rewards,
                       write_synthetic)


def test_round_trip(synthetic):
    path, episodes = synthetic
    ds = open_dataset(path)
    assert ds.num_episodes == len(episodes)
    assert ds.num_frames == sum(length for _, length in episodes)
    assert ds.tasks == ["pendulum-swingup", "reacher-easy", "walker-walk"]  # canonical order
    assert ds.meta["format_version"] == FORMAT_VERSION
    assert ds.frames.shape == (ds.num_frames, 3, SYNTHETIC_SIZE, SYNTHETIC_SIZE)
    assert ds.frames.dtype == np.uint8 and ds.actions.dtype == np.float32
    assert isinstance(ds.frames, np.memmap)
    for e, (task, length) in enumerate(episodes):
        row = ds.episodes[e]
        assert row["task_id"] == TASK_IDS[task] and row["length"] == length and row["seed"] == e
        rows = ds.episode_rows(e)
        assert np.array_equal(ds.frames[rows], synthetic_frames(e, length))
        assert np.array_equal(ds.actions[rows], synthetic_actions(task, e, length))
        assert np.array_equal(ds.rewards[rows], synthetic_rewards(e, length))
        assert row["return"] == pytest.approx(synthetic_rewards(e, length).sum(), rel=1e-6)
        assert not ds.has_action[rows.start] and ds.has_action[rows.start + 1:rows.stop].all()
        assert (ds.frame_episode[rows] == e).all()
    assert ds.meta["tasks"]["walker-walk"] == {"task_id": TASK_IDS["walker-walk"],
                                               "action_dim": 6, "episodes": 2, "frames": 35}
    assert check.main([str(path)]) == 0


def test_pickling_a_dataset_stores_only_its_path(synthetic):
    path, _ = synthetic
    ds = open_dataset(path)
    blob = pickle.dumps(ds)
    assert len(blob) < 500
    again = pickle.loads(blob)
    assert np.array_equal(again.frames[:3], ds.frames[:3])


def test_writer_rejects_bad_episodes(tmp_path):
    length = 4
    good = dict(frames=synthetic_frames(0, length), actions=synthetic_actions("walker-walk", 0, length),
                rewards=synthetic_rewards(0, length))
    with DatasetWriter(tmp_path / "ds", SYNTHETIC_SIZE, SYNTHETIC_SIZE, {"kind": "t"}) as writer:
        def append(index=0, **changes):
            arrays = {**good, **changes}
            writer.append("walker-walk", index, seed=0, policy="t", policy_params={}, **arrays)

        with pytest.raises(DatasetError, match="frames must be uint8"):
            append(frames=good["frames"].astype(np.float32))
        with pytest.raises(DatasetError, match="frames must be uint8"):
            append(frames=synthetic_frames(0, length, size=4))
        with pytest.raises(DatasetError, match="actions must be float32"):
            append(actions=good["actions"][:, :6])
        bad = good["actions"].copy()
        bad[0, 0] = 0.5
        with pytest.raises(DatasetError, match="on row 0"):
            append(actions=bad)
        bad = good["actions"].copy()
        bad[2, 7] = 0.5  # walker has 6 action dimensions
        with pytest.raises(DatasetError, match="past dimension 6"):
            append(actions=bad)
        bad = good["actions"].copy()
        bad[2, 0] = np.nan
        with pytest.raises(DatasetError, match="finite"):
            append(actions=bad)
        with pytest.raises(DatasetError, match="0 on row 0"):
            append(rewards=np.ones(length, np.float32))
        append()
        with pytest.raises(DatasetError, match="already in the dataset"):
            append()
    assert open_dataset(tmp_path / "ds").num_episodes == 1


def test_one_writer_at_a_time(tmp_path):
    with DatasetWriter(tmp_path / "ds", 8, 8, {"kind": "t"}):
        with pytest.raises(DatasetError, match="another process is writing"):
            DatasetWriter(tmp_path / "ds", 8, 8, {"kind": "t"})
    with pytest.raises(DatasetError, match="holds 8x8 frames, cannot append 16x16"):
        DatasetWriter(tmp_path / "ds", 16, 16, {"kind": "t"})


def test_uncommitted_rows_are_ignored_then_removed(synthetic):
    """A writer killed between writing an episode's rows and committing meta.json leaves extra
    bytes: readers ignore them and the next writer truncates them."""
    path, episodes = synthetic
    frames_file = path / "frames.u8"
    committed = frames_file.stat().st_size
    with open(frames_file, "ab") as f:
        f.write(b"\xff" * 1000)
    ds = open_dataset(path)
    assert ds.uncommitted_bytes["frames"] == 1000 and ds.num_episodes == len(episodes)
    assert check.main([str(path)]) == 0  # reported as a note, not a problem
    with DatasetWriter(path, SYNTHETIC_SIZE, SYNTHETIC_SIZE, {"kind": "synthetic"}):
        pass
    assert frames_file.stat().st_size == committed


@pytest.mark.parametrize("damage, message", [
    ("truncate_frames", r"frames\.u8: truncated"),
    ("delete_actions", r"actions\.f32: missing"),
    ("truncate_meta", r"meta\.json: not valid JSON"),
    ("delete_meta", r"meta\.json: missing"),
    ("newer_version", r"format version 99 is newer"),
    ("bad_start", r"does not start where the previous one ends"),
    ("wrong_task_id", r"task 'walker-walk' has id 3"),
])
def test_damaged_datasets_give_clear_errors(synthetic, damage, message, capsys):
    path, _ = synthetic
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text())
    if damage == "truncate_frames":
        with open(path / "frames.u8", "r+b") as f:
            f.truncate(f.seek(0, 2) - 10)
    elif damage == "delete_actions":
        (path / "actions.f32").unlink()
    elif damage == "truncate_meta":
        meta_path.write_text(meta_path.read_text()[:200])
    elif damage == "delete_meta":
        meta_path.unlink()
    elif damage == "newer_version":
        meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    elif damage == "bad_start":
        meta["episodes"]["start"][2] += 1
        meta_path.write_text(json.dumps(meta))
    elif damage == "wrong_task_id":
        meta["tasks"]["walker-walk"]["task_id"] = 3
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=message):
        open_dataset(path)
    assert check.main([str(path)]) == 1
    assert "error:" in capsys.readouterr().err


def test_check_finds_flipped_bytes(synthetic, capsys):
    path, _ = synthetic
    ds = open_dataset(path)
    row = ds.episode_rows(3).start + 2  # inside episode 3
    offset = row * 3 * SYNTHETIC_SIZE * SYNTHETIC_SIZE + 5
    with open(path / "frames.u8", "r+b") as f:
        f.seek(offset)
        value = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([value ^ 0x10]))
    assert check.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "frames.u8: episode 3 (reacher-easy #0): checksum mismatch" in out
    assert check.main([str(path), "--quick"]) == 0  # without checksums the flip is invisible


def test_check_finds_bad_values(tmp_path, capsys):
    path = write_synthetic(tmp_path / "ds", [("hopper-hop", 6)])
    with open(path / "actions.f32", "r+b") as f:  # put an action on row 0 behind the writer's back
        f.write(np.float32(0.25).tobytes())
    assert check.main([str(path), "--quick"]) == 1
    assert "nonzero action past dimension 4 or on the first row" in capsys.readouterr().out


def _state_episode(length, dim, value=0.5):
    states = np.zeros((length, STATE_PAD), np.float32)
    states[:, :dim] = value + np.arange(length)[:, None] / 100
    return states


def test_states_round_trip_and_old_data_sets_have_none(tmp_path, synthetic):
    old, _ = synthetic
    assert open_dataset(old).states is None and open_dataset(old).arrays == ("frames", "actions", "rewards")
    with pytest.raises(DatasetError, match="recorded without states"):
        open_dataset(old).state_names("walker-walk")
    names = ["position[0]", "position[1]", "velocity[0]"]
    with DatasetWriter(tmp_path / "ds", SYNTHETIC_SIZE, SYNTHETIC_SIZE, {"kind": "t"}, states=True) as writer:
        for index, length in enumerate((5, 7)):
            writer.append("cartpole-swingup", index, seed=0, policy="t", policy_params={},
                          frames=synthetic_frames(index, length),
                          actions=synthetic_actions("cartpole-swingup", index, length),
                          rewards=synthetic_rewards(index, length),
                          states=_state_episode(length, 3, value=index), state_names=names)
    ds = open_dataset(tmp_path / "ds")
    assert ds.arrays[-1] == "states" and ds.states.shape == (12, STATE_PAD)
    assert ds.state_names("cartpole-swingup") == names
    assert np.array_equal(ds.states[ds.episode_rows(1)], _state_episode(7, 3, value=1))
    assert check.main([str(tmp_path / "ds")]) == 0
    with open(tmp_path / "ds" / "states.f32", "r+b") as f:  # flip a state byte behind the writer
        f.seek(4 * STATE_PAD * 6 + 1)
        f.write(b"\x7f")
    assert check.main([str(tmp_path / "ds")]) == 1


def test_writer_checks_states(tmp_path, synthetic):
    length, names = 4, ["position[0]", "velocity[0]"]
    good = dict(frames=synthetic_frames(0, length), actions=synthetic_actions("pendulum-swingup", 0, length),
                rewards=synthetic_rewards(0, length))
    with DatasetWriter(tmp_path / "ds", SYNTHETIC_SIZE, SYNTHETIC_SIZE, {"kind": "t"}, states=True) as writer:
        def append(index=0, **changes):
            writer.append("pendulum-swingup", index, seed=0, policy="t", policy_params={},
                          **{**good, "states": _state_episode(length, 2), "state_names": names, **changes})

        with pytest.raises(DatasetError, match="pass states and state_names"):
            append(states=None)
        with pytest.raises(DatasetError, match=r"states must be float32 \(4, 32\)"):
            append(states=_state_episode(length, 2)[:, :8])
        with pytest.raises(DatasetError, match="zero past dimension 2"):
            append(states=_state_episode(length, 3))
        bad = _state_episode(length, 2)
        bad[1, 0] = np.inf
        with pytest.raises(DatasetError, match="finite"):
            append(states=bad)
        append()
        with pytest.raises(DatasetError, match="differ from the task's earlier episodes"):
            append(index=1, state_names=["a[0]", "b[0]"])
    with DatasetWriter(synthetic[0], SYNTHETIC_SIZE, SYNTHETIC_SIZE, {"kind": "synthetic"}, states=True) as writer:
        assert not writer.has_states  # an existing data set keeps what it has
        with pytest.raises(DatasetError, match="created without states"):
            writer.append("pendulum-swingup", 99, seed=0, policy="t", policy_params={}, **good,
                          states=_state_episode(length, 2), state_names=names)


def test_meta_with_states_but_no_state_names_is_refused(tmp_path):
    with DatasetWriter(tmp_path / "ds", SYNTHETIC_SIZE, SYNTHETIC_SIZE, {"kind": "t"}, states=True) as writer:
        writer.append("pendulum-swingup", 0, seed=0, policy="t", policy_params={},
                      frames=synthetic_frames(0, 3), actions=synthetic_actions("pendulum-swingup", 0, 3),
                      rewards=synthetic_rewards(0, 3), states=_state_episode(3, 1), state_names=["x[0]"])
    meta_path = tmp_path / "ds" / META_FILE
    meta = json.loads(meta_path.read_text())
    del meta["tasks"]["pendulum-swingup"]["state_names"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="needs state_dim and its 32 or fewer state_names"):
        open_dataset(tmp_path / "ds")
    meta["arrays"]["poses"] = {}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"unknown arrays \['poses'\]"):
        open_dataset(tmp_path / "ds")


def test_key_state_leaves_out_velocities_and_touch():
    names = ["position[0]", "position[1]", "velocity[0]", "touch[0]", "height[0]", "to_target[1]"]
    assert key_state(names) == [0, 1, 4, 5]
