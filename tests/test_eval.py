"""dreamer4_torch.eval: the evaluations of a trained run, their parts, and the command line.

The evaluations end to end on a trained run are tested in test_quickstart.py, on the tiny run it trains.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dreamer4_torch.eval", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)


def test_eval_spread_replaces_actions_within_each_task():
    """eval spread --actions: shuffled gives every window the recorded actions of another
    window of the same task; zero gives zeros; the action masks and everything else stay."""
    import numpy as np
    from dreamer4_torch.eval.spread import replace_actions

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
    """eval spread --episodes train: per task the training episode of lowest index, never a
    held-out one."""
    import numpy as np
    from dreamer4_torch.eval.spread import one_train_episode_per_task
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
    """eval.attention.time_attention_probs are the weights the module itself applies: with them, the
    values and the output projection give the module's causal output (QK-norm, grouped kv heads,
    soft-capping and RoPE on)."""
    import numpy as np
    from dreamer4_torch.eval.attention import time_attention_probs
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
    from dreamer4_torch.eval.attention import newest_frame_attention
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


# ---- the command line


def test_every_option_of_every_evaluation_is_explained():
    from dreamer4_torch.eval import __main__ as cli
    from dreamer4_torch.eval import attention, one_step, spread

    for module in (cli, spread, one_step, attention):
        parser = module.build_parser()
        unexplained = [a.dest for a in parser._actions if not (a.help or "").strip()]
        assert not unexplained, (module.__name__, unexplained)


def test_cli_help_lists_the_commands():
    result = run_eval("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m dreamer4_torch.eval")
    commands = [line.split()[0] for line in result.stdout.split("commands:\n")[1].splitlines()
                if line.startswith("  ") and not line.startswith("   ")]
    assert commands == ["spread", "one-step", "probe", "policy", "attention"], result.stdout


def test_cli_passes_help_to_the_command():
    result = run_eval("one-step", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m dreamer4_torch.eval one-step")
    for option in ("--windows", "--context", "--seed", "--checkpoint", "--root", "--threads"):
        assert option in result.stdout


def test_cli_rejects_an_unknown_command():
    result = run_eval("spraed", "runs/x")
    assert result.returncode == 2
    assert "invalid choice: 'spraed'" in result.stderr and "Traceback" not in result.stderr


def test_cli_missing_run_directory_is_one_clear_line(tmp_path):
    missing = tmp_path / "no_such_run"
    result = run_eval("spread", str(missing))
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: no run directory {missing}"
    assert result.stdout == ""


@pytest.fixture
def untrained_run(tmp_path):
    """A dynamics run directory with a checkpoint and a tokenizer (random tiny models) whose recorded
    data set does not exist."""
    from dreamer4_torch import Dynamics, Tokenizer, save_model
    from shared.recipes import get_preset
    from shared.train_options import DynamicsOptions, options_to_json

    preset = get_preset("tiny")
    torch.manual_seed(0)
    save_model(Tokenizer(preset.tokenizer), tmp_path / "tok")
    run = tmp_path / "run"
    save_model(Dynamics(preset.dynamics), run / "checkpoints" / "latest")
    options = DynamicsOptions(preset="tiny", data="no_data", tokenizer="tok", out=str(run))
    (run / "options.json").write_text(options_to_json(options))
    return tmp_path, run


@pytest.mark.parametrize("command", ["spread", "one_step", "attention"])
def test_bad_runs_stop_with_a_clear_error(untrained_run, command, tmp_path):
    import importlib
    main = importlib.import_module(f"dreamer4_torch.eval.{command}").main
    root, run = untrained_run
    with pytest.raises(SystemExit, match=r"^error: the run's data set \(resolved against --root .*no_data"):
        main([str(run), "--root", str(root)])
    with pytest.raises(SystemExit, match=r"^error: no checkpoint .*step_7"):
        main([str(run), "--root", str(root), "--checkpoint", "step_7"])
    with pytest.raises(SystemExit, match=r"^error: the run's tokenizer .*tok"):
        main([str(run)])                        # --root defaults to the current directory: no tok there
    with pytest.raises(SystemExit, match=r"^error: .* is not a run directory \(no options\.json\)"):
        main([str(root / "tok"), "--root", str(root)])


def test_spread_bad_data_stops_with_a_clear_error(untrained_run, tmp_path):
    from dreamer4_torch.eval.spread import main
    root, run = untrained_run
    with pytest.raises(SystemExit, match=r"^error: --data: .*nothing"):
        main([str(run), "--root", str(root), "--data", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match=r"^error: --seeds takes comma-separated integers"):
        main([str(run), "--root", str(root), "--seeds", "1,x"])


def test_eval_imports_nothing_above_the_backend():
    """Layering: shared -> backends -> convert -> applications -> benchmarks; the evaluations are part of
    the torch backend, so none of their imports (the ones inside functions included) reaches above it."""
    import ast
    # tqdm: a core dependency; PIL: in the `data` extra, which the policy evaluation's environments need
    allowed = {"shared", "dreamer4_torch", "numpy", "torch", "tqdm", "PIL"}
    found = {}
    for path in sorted((ROOT / "dreamer4_torch" / "eval").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in allowed and top not in sys.stdlib_module_names:
                    found.setdefault(path.name, []).append(name)
    assert not found, found
