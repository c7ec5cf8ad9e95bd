"""The quickstart pipeline end to end at tiny sizes: collect -> tokenizer -> dynamics -> report -> demo.

The same code path as `make quickstart`, shortened (tiny preset, 16x16 frames, two short tasks, a few
steps). The demo stage is started for real and must answer HTTP before the test stops it.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quickstart_cmd(data: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "quickstart", "--recipe", "tiny",
            "--tasks", "cartpole-swingup,reacher-easy", "--episodes", "3", "--episode-steps", "40",
            "--tokenizer-steps", "12", "--dynamics-steps", "12", "--eval-every", "6", "--eval-sequences", "4",
            "--data", str(data), "--out", str(out), *map(str, extra)]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the pipeline exited ({proc.returncode}) before the demo answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except OSError:
            time.sleep(1)
    raise AssertionError(f"no answer from {url} within {timeout:.0f}s")


@pytest.mark.slow     # the whole pipeline: `make test` runs it, `make test-fast` does not
def test_quickstart_pipeline_end_to_end(tmp_path, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "runs"
    port = free_port()
    log = tmp_path / "quickstart.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(quickstart_cmd(data, out, "--port", port), cwd=ROOT, env=ENV, stdout=f,
                                stderr=subprocess.STDOUT, text=True)
        try:
            status = wait_for_http(f"http://127.0.0.1:{port}/", proc, timeout=900)
        finally:
            proc.terminate()
            try:
                stopped = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                stopped = None
    text = log.read_text()
    assert status == 200, text[-3000:]
    # SIGTERM stops the pipeline itself (128 + 15) as soon as the demo has shut down.
    assert stopped == 143, (stopped, text[-3000:])
    # Stopping the pipeline stops the demo it started (no orphaned server keeps the port).
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    for stage in ("1/5 collect", "2/5 train the tokenizer", "3/5 train the dynamics", "4/5 report", "5/5 the demo"):
        assert stage in text, f"stage {stage!r} missing from the log:\n{text[-3000:]}"

    # Every stage left its products: data set, two finished runs, curves, rollout GIFs, the report.
    assert json.loads((data / "meta.json").read_text())["num_episodes"] == 6
    for kind in ("tokenizer", "dynamics"):
        done = json.loads((out / kind / "done.json").read_text())
        assert done["step"] == 12 and done["eval"], done
        assert (out / kind / "curves.png").stat().st_size > 0
    gifs = sorted((out / "dynamics" / "images").glob("*.gif"))
    assert gifs, "no rollout GIF"
    report = (out / "report.md").read_text()
    dyn_eval = json.loads((out / "dynamics" / "done.json").read_text())["eval"]
    assert f"{dyn_eval['psnr_h4']:.2f}" in report and f"{dyn_eval['floor_h4']:.2f}" in report
    assert "repeat-last-frame" in report

    # dreamer4_torch.eval spread re-runs the trainer's evaluation: with the trainer's window
    # count and noise seed it reproduces the logged gains.
    from dreamer4_torch.eval import spread as dynamics_eval_spread
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert dynamics_eval_spread.main([str(out / "dynamics"), "--sequences", "4", "--seeds", "1234,7"]) == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in buf.getvalue().splitlines()
            if line.startswith("| 4 |")]
    assert [r[1] for r in rows] == ["1234", "7", "mean ± sd"], buf.getvalue()
    assert rows[0][2] == f"{dyn_eval['gain_h1']:+.2f}" and rows[0][3] == f"{dyn_eval['gain_h4']:+.2f}"
    mean = rows[2][3].split(" ± ")
    assert float(mean[1]) >= 0 and min(float(rows[0][3]), float(rows[1][3])) - 0.01 <= float(mean[0])
    with pytest.raises(SystemExit, match="not a run directory"):
        dynamics_eval_spread.main([str(out)])
    # --sampling-steps replaces the recorded K (4) in the evaluation; K must be a power of two <= k_max.
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert dynamics_eval_spread.main([str(out / "dynamics"), "--sequences", "4", "--sampling-steps", "1"]) == 0
    assert "K = 1," in buf.getvalue() and "| 4 | 1234 |" in buf.getvalue(), buf.getvalue()
    with pytest.raises(SystemExit, match="power of two"):
        dynamics_eval_spread.main([str(out / "dynamics"), "--sampling-steps", "3"])
    # --data evaluates on another data set: the same one given explicitly reproduces the default (its own
    # held-out split), --episodes all spreads the windows over every episode (other windows: another floor).
    by_episodes = {}
    for extra in ([], ["--data", str(data)], ["--data", str(data), "--episodes", "all"]):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert dynamics_eval_spread.main([str(out / "dynamics"), "--sequences", "4", *extra]) == 0
        by_episodes[len(extra)] = [[c.strip() for c in line.strip("|").split("|")]
                                   for line in buf.getvalue().splitlines() if line.startswith("| 4 |")][0]
    assert by_episodes[2] == by_episodes[0]
    assert by_episodes[4][6] != by_episodes[0][6], by_episodes                  # floor h1
    with pytest.raises(SystemExit, match="--data"):
        dynamics_eval_spread.main([str(out / "dynamics"), "--data", str(tmp_path / "nothing")])
    # --per-task adds a row per task (the pooled row first, as without it); --actions zero replaces what
    # every evaluation batch carries (the 12-step model's action encoder output layer starts at std 1e-3
    # and the printed gains do not move, so the batches are checked, not the numbers; replace_actions
    # itself is tested in test_eval.py).
    given = []
    real_replace = dynamics_eval_spread.replace_actions

    def spy(batch, mode):
        replaced = real_replace(batch, mode)
        given.append((mode, bool(np.any(batch["actions"])), bool(np.any(replaced["actions"]))))
        return replaced

    monkeypatch.setattr(dynamics_eval_spread, "replace_actions", spy)
    rows = {}
    for actions in ("recorded", "zero"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert dynamics_eval_spread.main([str(out / "dynamics"), "--sequences", "4", "--per-task",
                                              "--actions", actions]) == 0
        assert f"{actions} actions" in buf.getvalue(), buf.getvalue()
        rows[actions] = [[c.strip() for c in line.strip("|").split("|")] for line in buf.getvalue().splitlines()
                         if line.startswith("| ") and line.split("|")[2].strip().isdigit()]
    recorded, zero = rows["recorded"], rows["zero"]
    assert [r[0] for r in recorded] == ["all", "cartpole-swingup", "reacher-easy"], recorded
    assert sum(int(r[1]) for r in recorded[1:]) == int(recorded[0][1]) == 4
    assert recorded[0][3] == f"{dyn_eval['gain_h1']:+.2f}"                  # the pooled row is the trainer's
    assert recorded[0][-2] == f"{dyn_eval['tokenizer_h1'] - dyn_eval['floor_h1']:+.2f}", recorded[0]
    assert [r[:3] + r[-6:] for r in zero] == [r[:3] + r[-6:] for r in recorded]
    assert {g for g in given if g[0] == "recorded"} == {("recorded", True, True)}, given
    assert {g for g in given if g[0] == "zero"} == {("zero", True, False)}, given
    assert len(given) == 2 * 3                                              # one batch per row

    # dreamer4_torch.eval one-step: one-step latent errors per task and split. Its copy column is
    # recomputed here from the tokenizer: the mean squared change of the code from the last context frame
    # to the next, over the same evenly spaced held-out windows.
    from dreamer4_torch.eval import one_step as dynamics_one_step
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert dynamics_one_step.main([str(out / "dynamics"), "--windows", "5", "--context", "2"]) == 0
    table = {(r[0], r[1]): r[2:] for r in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in buf.getvalue().splitlines() if line.startswith("| "))
             if r[0] in ("held-out", "train")}
    tasks = ("cartpole-swingup", "reacher-easy", "all")
    assert set(table) == {(s, t) for s in ("held-out", "train") for t in tasks}, buf.getvalue()
    assert all(float(v) >= 0 for row in table.values() for v in row[1:]), buf.getvalue()
    import torch
    from dreamer4_torch.checkpoint import load_model
    from dreamer4_torch.train.common import to_video
    from shared.data.windows import WindowSampler, split_episodes
    tok = load_model(out / "tokenizer" / "checkpoints" / "latest", kind="tokenizer")
    windows = WindowSampler(data, 3, episodes=split_episodes(data, 1, 0)[1])
    picked = np.linspace(0, len(windows) - 1, min(5, len(windows))).round().astype(np.int64)
    with torch.no_grad():
        z = tok.encode(to_video(torch.from_numpy(windows.read(picked)["frames"]), "cpu")).float()
    copy = float((z[:, 2] - z[:, 1]).pow(2).mean())
    assert table[("held-out", "all")][0] == str(len(picked))
    assert abs(float(table[("held-out", "all")][3]) - copy) < 1e-4, (copy, buf.getvalue())

    # dreamer4_torch.eval attention: one row per (time layer, head), weights that sum to one over the
    # new frame, its previous frame, the one before and the older ones (here 3 frames: no older ones).
    from dreamer4_torch.eval import attention as dynamics_attention
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert dynamics_attention.main([str(out / "dynamics"), "--windows", "3", "--context", "2"]) == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in buf.getvalue().splitlines()
            if line.startswith("| ") and not line.startswith("| layer")]
    dyn_cfg = load_model(out / "dynamics" / "checkpoints" / "latest", kind="dynamics").config.transformer
    assert [(int(r[0]), int(r[1])) for r in rows] == [(i, h) for i in range(dyn_cfg.depth) if dyn_cfg.has_time(i)
                                                      for h in range(dyn_cfg.n_heads)], buf.getvalue()
    for r in rows:
        assert abs(sum(float(v) for v in r[2:]) - 1.0) < 0.02 and float(r[5]) == 0.0, buf.getvalue()

    # Re-running skips the finished stages (and, with --no-demo, returns after the report).
    again = subprocess.run(quickstart_cmd(data, out, "--no-demo"), cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tokenizer: already trained (12 steps)" in again.stdout
    assert "dynamics: already trained (12 steps)" in again.stdout
    assert "5/5" not in again.stdout

    # make agent at the tiny recipe: finetuning, the policy in the real tasks, the report; then resumable.
    agent_cmd = [sys.executable, "-m", "quickstart.agent", "--recipe", "tiny", "--data", str(data), "--out", str(out),
                 "--steps", "8", "--episodes", "2", "--episode-steps", "10", "--eval-every", "4"]
    r = subprocess.run(agent_cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = (out / "agent_report.md").read_text()
    for task in ("cartpole-swingup", "reacher-easy"):
        assert f"| {task} |" in table and (out / "agent" / "videos" / f"policy_{task}.gif").exists()
    assert "heldout_action_mse_1" in table
    r = subprocess.run(agent_cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "bc: already trained (8 steps)" in r.stdout and "already evaluated" in r.stdout


def test_quickstart_help_names_the_recipes():
    r = subprocess.run([sys.executable, "-m", "quickstart", "--help"], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "--gpu" in r.stdout and "dmc128" in r.stdout and "dmc64" in r.stdout and "tiny" in r.stdout
    assert "--tokenizer-minutes" in r.stdout and "0 = no cap" in r.stdout


def test_agent_data_collects_the_agent_pipeline(tmp_path, monkeypatch):
    """--agent-data: the recipe's agent tasks, policy and directories reach the collector and trainers;
    the agent stage's defaults are the same directories."""
    from quickstart import agent, pipeline
    commands = []

    def stop_after_collect(cmd, *a, **k):
        commands.append([str(c) for c in cmd])
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "run", stop_after_collect)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        pipeline.main(["--agent-data", "--no-demo"])
    collect = commands[0]
    assert collect[collect.index("--tasks") + 1] == "cartpole-swingup,cheetah-run,cup-catch,finger-spin,reacher-easy"
    assert collect[collect.index("--policy") + 1] == "controller-heavy"
    assert collect[collect.index("--out") + 1] == "data/agent"
    with pytest.raises(SystemExit, match="runs/agent/tokenizer/checkpoints/latest does not exist.*--agent-data"):
        agent.main([])


def test_quickstart_options_default_to_the_recipe():
    from quickstart.pipeline import parse_args
    assert parse_args([]).recipe == "dmc64"
    assert parse_args(["--gpu"]).recipe == "dmc128"
    assert parse_args(["--preset", "tiny"]).recipe == "tiny"          # --preset: the old name of --recipe
    args = parse_args([])
    assert (args.tokenizer_minutes, args.dynamics_minutes) == (0.0, 0.0)    # steps, not minutes, by default
    assert args.tokenizer_steps is None and args.dynamics_steps is None     # the recipe's steps


@pytest.mark.parametrize("bad, message", [(["--episodes", "0"], "--episodes"),
                                          (["--preset", "huge"], "--preset"),
                                          (["--recipe", "huge"], "--recipe"),
                                          (["--gpu", "--recipe", "tiny"], "--gpu"),
                                          (["--tokenizer-minutes", "-1"], "--tokenizer-minutes")])
def test_quickstart_rejects_bad_arguments(bad, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", "quickstart", "--data", str(tmp_path / "d"),
                        "--out", str(tmp_path / "r"), *bad], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


def test_report_says_when_a_stage_was_resumed_or_capped(tmp_path):
    from quickstart.report import report
    evals = {"psnr_h4": 20.0, "floor_h4": 21.0, "gain_h4": -1.0, "tokenizer_h4": 22.0, "copy_latent_h4": 23.5}
    tok = {"step": 100, "steps": 100, "reason": "steps", "minutes": 3.0, "resumed_at": 0,
           "eval": {"psnr": 25.0, "psnr_frame_mean": 26.0}}
    dyn = {"step": 900, "steps": 900, "reason": "steps", "minutes": 7.5, "resumed_at": 500, "eval": evals}
    where = dict(recipe="dmc64", tasks=("cheetah-run", "walker-walk"), data_dir=tmp_path / "data")
    text = report(tmp_path, tok, dyn, **where).read_text()
    assert "Recipe `dmc64`" in text and "(cheetah-run,walker-walk)" in text
    assert "tokenizer 100 steps in 3.0 min, dynamics" in text
    assert "dynamics 900 steps (resumed at step 500; 7.5 min since)" in text
    assert "| 4 | 20.00 | 21.00 | -1.00 | 22.00 | 23.50 |" in text
    assert "time cap" not in text
    del dyn["eval"]["copy_latent_h4"]          # a run from before the column existed
    tok.update(step=80, reason="max_minutes")  # stopped by --tokenizer-minutes
    text = report(tmp_path, tok, dyn, **where).read_text()
    assert "| 4 | 20.00 | 21.00 | -1.00 | 22.00 | n/a |" in text
    assert "tokenizer 80 steps in 3.0 min, stopped by the time cap before its 100 steps" in text


CHILD = """
import signal, sys, time
def handler(signum, frame):
    open(sys.argv[1], "a").write("signal\\n")
    if sys.argv[2] == "exit":
        time.sleep(0.5)          # a trainer saving its checkpoint
        sys.exit(0)
signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGINT, handler)
open(sys.argv[1], "a").write("ready\\n")
while True:
    time.sleep(0.05)
"""


@pytest.mark.parametrize("behaviour", ["exit", "ignore"])
def test_a_signal_to_the_pipeline_reaches_the_stage_once(behaviour, tmp_path, monkeypatch):
    """SIGTERM then SIGINT to the pipeline while a stage runs: the stage gets the first one only and
    exits on its own (returncode 0, not killed after the grace period, as when the handler waited for
    the stage itself and never saw it exit); a stage that ignores it is killed after the grace period;
    either way the pipeline exits with 128 + SIGTERM and puts its signal handlers back."""
    import signal
    import threading
    from quickstart import stages

    monkeypatch.setattr(stages, "STOP_GRACE_SECONDS", 20.0 if behaviour == "exit" else 1.0)
    log = tmp_path / "signals.txt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(log), behaviour], start_new_session=True)
    deadline = time.time() + 60
    while not (log.exists() and "ready" in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)

    def send():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGTERM)
    threading.Timer(0.3, send).start()
    try:
        with pytest.raises(SystemExit) as stop:
            stages.wait_for_stage(child)
    finally:
        if child.poll() is None:
            child.kill()
    assert stop.value.code == 128 + signal.SIGTERM
    assert log.read_text().count("signal") == 1, log.read_text()
    assert child.wait(timeout=5) == (0 if behaviour == "exit" else -signal.SIGKILL)
    assert signal.getsignal(signal.SIGTERM) is before
