"""The benchmark scripts run end to end at the tiny preset and print well-formed tables.

They measure speed, which tests never judge (benchmarks/RESULTS.md holds the numbers); this only
keeps the scripts from breaking as the code under them changes.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import frame_linears, sampler_speed
from dreamer4_torch.prepack import available as prepack_available


def table_rows(text: str) -> list[list[str]]:
    """Data rows of the markdown tables in text (header and separator rows dropped)."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r] for r in rows if not set(r[0].strip()) <= {"-"} and r[0].strip() not in
            ("preset", "backend")]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The scripts set torch's thread count (--threads); give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_frame_linears_table(capsys):
    assert frame_linears.main(["--presets", "tiny", "--threads", "1", "--repeats", "2"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 1
    preset, threads, n_rows, matrices, mb, ms, gbps, packed_ms, packed_gbps, read_gbps = rows[0]
    assert (preset, threads) == ("tiny", "1")
    assert int(n_rows) > 0 and int(matrices) > 0
    assert float(mb) > 0 and float(ms) > 0 and float(gbps) > 0 and float(read_gbps) > 0
    if prepack_available():
        assert float(packed_ms) > 0 and float(packed_gbps) > 0
    else:
        assert (packed_ms, packed_gbps) == ("n/a", "n/a")


def test_frame_linears_rejects_an_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        frame_linears.main(["--presets", "dmc256"])
    assert "unknown preset 'dmc256'" in capsys.readouterr().err


def test_sampler_speed_table(capsys):
    assert sampler_speed.main(["--presets", "tiny", "--contexts", "4", "--steps", "2", "--roll", "4:2",
                               "--frames", "1", "--warmup", "1", "--threads", "1"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [("torch", "tiny", "slide", "4", "2"),
                                                              ("torch", "tiny", "roll", "4", "2")]
    for r in rows:
        assert all(float(v.rstrip("x")) > 0 for v in r[5:])


def test_eval_spread_replaces_actions_within_each_task():
    """dynamics_eval_spread --actions: shuffled gives every window the recorded actions of another
    window of the same task; zero gives zeros; the action masks and everything else stay."""
    import numpy as np
    from benchmarks.dynamics_eval_spread import replace_actions

    task_id = np.array([3, 3, 7, 3, 7, 7, 7])
    actions = np.arange(7 * 2 * 4, dtype=np.float32).reshape(7, 2, 4)       # every window unique
    mask = np.ones((7, 2, 4), np.float32)
    frames = np.zeros((7, 2, 3, 4, 4), np.uint8)
    batch = {"actions": actions, "action_mask": mask, "task_id": task_id, "frames": frames}
    assert replace_actions(batch, "recorded") is batch
    shuffled = replace_actions(batch, "shuffled")
    assert shuffled["action_mask"] is mask and shuffled["frames"] is frames
    for i in range(7):
        # which window's actions window i now carries
        (src,) = [j for j in range(7) if np.array_equal(shuffled["actions"][i], actions[j])]
        assert src != i and task_id[src] == task_id[i], (i, src)
    # a permutation: every window's actions are used once
    assert sorted(float(a[0, 0]) for a in shuffled["actions"]) == sorted(float(a[0, 0]) for a in actions)
    assert not replace_actions(batch, "zero")["actions"].any()
    assert batch["actions"] is actions and actions.any()                    # the input is not modified
    with pytest.raises(SystemExit, match="at least 2 held-out windows"):
        replace_actions({**batch, "task_id": np.array([3, 3, 3, 3, 3, 3, 7])}, "shuffled")
    with pytest.raises(ValueError, match="--actions"):
        replace_actions(batch, "random")


def test_eval_spread_train_episodes_are_one_per_task_and_not_held_out(tmp_path):
    """dynamics_eval_spread --episodes train: per task the training episode of lowest index, never a
    held-out one."""
    import numpy as np
    from benchmarks.dynamics_eval_spread import one_train_episode_per_task
    from shared.data.format import DatasetWriter, open_dataset
    from shared.data.windows import split_episodes

    with DatasetWriter(tmp_path / "data", 8, 8, {"kind": "test"}) as writer:
        for task, index in [("reacher-easy", 4), ("cartpole-swingup", 2), ("reacher-easy", 1), ("cartpole-swingup", 0),
                            ("reacher-easy", 7), ("cartpole-swingup", 5), ("reacher-easy", 3)]:
            writer.append(task, index, seed=index, policy="random", policy_params={},
                          frames=np.zeros((6, 3, 8, 8), np.uint8), actions=np.zeros((6, 16), np.float32),
                          rewards=np.zeros(6, np.float32))
    data = open_dataset(tmp_path / "data")
    train, held = split_episodes(data, holdout_per_task=1, seed=0)
    picked = one_train_episode_per_task(data, train)
    table = data.episodes
    assert len(picked) == 2 and not set(picked) & set(held)
    for row in picked:
        same_task = train[table["task_id"][train] == table["task_id"][row]]
        assert table["index"][row] == table["index"][same_task].min()
    assert sorted(table["task_id"][picked]) == sorted(np.unique(table["task_id"]))


def test_time_attention_probs_reproduce_the_attention_output():
    """dynamics_attention.time_attention_probs are the weights the module itself applies: with them, the
    values and the output projection give the module's causal output (QK-norm, grouped kv heads,
    soft-capping and RoPE on)."""
    import numpy as np
    from benchmarks.dynamics_attention import time_attention_probs
    from dreamer4_torch.layers import Attention, rope_tables
    from shared.config import TransformerConfig

    tf = TransformerConfig(d_model=32, n_heads=4, depth=1, qk_norm=True, n_kv_heads=2, logit_softcap=5.0,
                           time_rope=True)
    torch.manual_seed(0)
    attn = Attention(tf).eval()
    x = torch.randn(3, 6, 32)
    rope = rope_tables(np.arange(6), tf.head_dim, tf.rope_base, "cpu", torch.float32)
    with torch.no_grad():
        probs = time_attention_probs(attn, x, rope)
        _, _, v = attn.project(x, rope)
        v = v.repeat_interleave(2, dim=1)
        mine = attn.out((probs @ v).transpose(1, 2).reshape(3, 6, 32))
        theirs = attn(x, causal=True, rope=rope)
    assert probs.shape == (3, 4, 6, 6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, 6))
    assert float(probs.triu(1).abs().max()) == 0.0                          # causal
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_newest_frame_attention_is_uniform_without_queries():
    """With every time-attention query projection zeroed the logits are all zero, so the new frame's
    weight is spread evenly over the T frames it sees, in every layer and head."""
    from benchmarks.dynamics_attention import newest_frame_attention
    from dreamer4_torch.dynamics import Dynamics
    from shared.recipes import get_preset

    torch.manual_seed(0)
    model = Dynamics(get_preset("tiny").dynamics)
    d = model.config.transformer.d_model
    with torch.no_grad():
        for layer in model.transformer.layers:
            layer.time.attn.qkv.weight[:d] = 0.0
            layer.time.attn.qkv.bias[:d] = 0.0
    c = model.config
    w = newest_frame_attention(model, torch.randn(2, 5, c.n_spatial, c.d_spatial))
    assert w.shape == (c.transformer.depth, c.transformer.n_heads, 5)
    np_w = torch.from_numpy(w)
    torch.testing.assert_close(np_w, torch.full_like(np_w, 0.2))
