"""End-to-end tests of the trainers (tiny preset, CPU, gloo)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import ENV, FAST, ROOT, run, train_cmd

pytestmark = pytest.mark.slow     # trainer subprocesses (torchrun, DDP/FSDP, resume): `make test` runs it, `make test-fast` does not


def losses(run_dir: Path, key: str = "loss") -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train" in rec:
            out[rec["step"]] = rec["train"][key]
    return out


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "latest" / "model.safetensors"))


def differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def extra_args(kind, tokenizer, dynamics=None):
    if kind == "bc":
        return ["--tokenizer", tokenizer, "--dynamics", dynamics]
    return ["--tokenizer", tokenizer] if kind == "dynamics" else []


@pytest.fixture
def start(request, tiny_tokenizer):
    """The checkpoint arguments of a trainer `kind`: bc also needs a trained dynamics model."""
    def args(kind):
        dynamics = request.getfixturevalue("tiny_dynamics") if kind == "bc" else None
        return extra_args(kind, tiny_tokenizer, dynamics)
    return args


@pytest.mark.parametrize("kind", ["tokenizer", "dynamics", "bc"])
def test_two_rank_ddp_averages_gradients(kind, tiny_data, start, tmp_path):
    steps = 12
    common = ["--data", tiny_data, "--steps", steps, "--batch-size", 2, *start(kind), *FAST]
    ddp = tmp_path / "ddp"
    r = run(train_cmd(kind, "--out", ddp, *common, nproc=2))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "2 process(es)" in r.stdout
    state = torch.load(ddp / "checkpoints" / "latest" / "training_state.pt", weights_only=True)
    digests = state["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]          # replicas identical after training

    # The same run with each rank training alone on its shard (upstream's multi-GPU dynamics bug).
    alone = []
    for rank in (0, 1):
        out = tmp_path / f"alone{rank}"
        r = subprocess.run([sys.executable, str(Path(__file__).parent / "alone.py"), str(rank), "2", kind,
                            "--out", str(out), *map(str, common)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-4000:]
        alone.append(weights(out))
    assert differ(alone[0], alone[1])                               # the shards really differ
    assert differ(weights(ddp), alone[0]) and differ(weights(ddp), alone[1])
    train = losses(ddp)
    assert max(train) == steps


@pytest.mark.parametrize("kind", ["tokenizer", "dynamics", "bc"])
def test_loss_decreases(kind, tiny_data, start, tmp_path):
    out = tmp_path / "run"
    r = run(train_cmd(kind, "--data", tiny_data, "--out", out, "--steps", 60, *start(kind), *FAST, "--eval-every", 60))
    assert r.returncode == 0, r.stderr[-4000:]
    key = {"tokenizer": "mse", "dynamics": "flow_mse", "bc": "loss"}[kind]
    series = losses(out, key)
    first = sum(series[s] for s in range(1, 6)) / 5
    last = sum(series[s] for s in range(56, 61)) / 5
    if kind == "bc":       # negative log-likelihoods (nats): their sum must fall, not shrink by a factor
        assert last < first - 0.5, (first, last)
    else:
        assert last < 0.7 * first, (first, last)
    evals = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert evals and evals[-1]["step"] == 60
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images, "no evaluation images written"
    if kind != "tokenizer":
        assert {"psnr_h1", "floor_h1", "gain_h4", "tokenizer_h4", "copy_latent_h4", "psnr_all"} <= set(evals[-1]["eval"])
        assert any(n.endswith(".gif") for n in images)
    if kind == "bc":
        assert {"heldout_bc", "heldout_action_mse_1", "heldout_action_mse_8", "heldout_reward_abs_err_1"} <= \
            set(evals[-1]["eval"])
        assert {"bc", "reward", "video_loss", "action_mse_8", "reward_abs_err_1"} <= set(
            next(json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in l)["train"])
        cfg = json.loads((out / "checkpoints" / "latest" / "config.json").read_text())
        assert cfg["space_mode"] == "wm_agent" and cfg["n_tasks"] == 30 and cfg["agent_heads"]


@pytest.mark.parametrize("kind,optimizer,ema", [("tokenizer", "adamw", 0.0), ("dynamics", "adamw", 0.0),
                                              ("dynamics", "muon", 0.9), ("bc", "muon", 0.9)])
def test_interrupted_run_resumes_exactly(kind, optimizer, ema, tiny_data, start, tmp_path):
    steps = 150
    common = ["--data", tiny_data, "--steps", steps, "--workers", 1, *start(kind), *FAST,
              "--workers", "1", "--optimizer", optimizer, "--ema-decay", ema]
    full = tmp_path / "full"
    r = run(train_cmd(kind, "--out", full, *common))
    assert r.returncode == 0, r.stderr[-4000:]

    part = tmp_path / "part"
    proc = subprocess.Popen(train_cmd(kind, "--out", part, *common), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = part / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count('"train"') >= 5:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-4000:]
    stopped = max(losses(part))
    assert 5 <= stopped < steps, "the run was not interrupted"
    assert f"stopped after step {stopped}" in stdout
    r = run(train_cmd(kind, "--out", part, *common, "--resume"))
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = losses(full), losses(part)
    assert max(b) == steps
    for s in range(stopped + 1, steps + 1):
        assert a[s] == b[s], f"step {s}: {a[s]} != {b[s]} after resuming at {stopped}"
    assert not differ(weights(full), weights(part))     # with EMA: the averages (the raw weights give the losses)


def test_tokenizer_checkpoints_record_their_clip_length(tiny_tokenizer, tmp_path):
    import shutil
    from dreamer4_torch import load_model
    from dreamer4_torch.train.common import tokenizer_clip_frames
    frames = json.loads((Path(tiny_tokenizer) / "options.json").read_text())["frames"]
    assert frames > 1
    assert load_model(tiny_tokenizer).config.clip_frames == frames
    assert tokenizer_clip_frames(tiny_tokenizer) == frames
    # a checkpoint written before the config held the clip length: the run's options.json tells it
    old = tmp_path / "old"
    shutil.copytree(tiny_tokenizer, old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["clip_frames"]
    (old / "config.json").write_text(json.dumps(cfg))
    (old / "options.json").write_text(json.dumps({"frames": frames + 1}))
    assert load_model(old).config.clip_frames is None and tokenizer_clip_frames(old) == frames + 1
    (old / "options.json").unlink()
    assert tokenizer_clip_frames(old) is None


def test_checkpoints_hold_the_weights_average(tiny_data, tiny_tokenizer, tmp_path):
    out = tmp_path / "ema"
    r = run(train_cmd("dynamics", "--data", tiny_data, "--tokenizer", tiny_tokenizer, "--out", out, "--steps", 2,
                      *FAST, "--ckpt-every", 1, "--keep-checkpoints", 3, "--ema-decay", 0.8))
    assert r.returncode == 0, r.stderr[-4000:]
    assert "EMA 0.8" in r.stdout

    def saved(step):
        path = out / "checkpoints" / f"step_{step:07d}"
        training = torch.load(path / "training_state.pt", weights_only=True)
        return load_file(str(path / "model.safetensors")), training["model"], training["ema_updates"]

    (avg1, raw1, n1), (avg2, raw2, n2) = saved(1), saved(2)
    assert (n1, n2) == (1, 2)
    assert differ(avg2, raw2)
    beta = min(0.8, 3 / 12)                       # the warm-up at update 2
    for k in avg2:
        torch.testing.assert_close(avg2[k], beta * avg1[k] + (1 - beta) * raw2[k], rtol=1e-6, atol=1e-7)
    # an average run cannot be resumed without it, nor a plain run with one
    r = run(train_cmd("dynamics", "--data", tiny_data, "--tokenizer", tiny_tokenizer, "--out", out, "--steps", 3,
                      *FAST, "--resume"))
    assert r.returncode != 0 and "--ema-decay 0.8 -> 0.0" in r.stderr, r.stderr[-2000:]


def test_clear_errors(tiny_data, tiny_tokenizer, tmp_path):
    r = run(train_cmd("tokenizer", "--data", tmp_path / "nowhere", "--out", tmp_path / "a", *FAST))
    assert r.returncode != 0 and "does not exist" in r.stderr and "shared.data.collect" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run(train_cmd("tokenizer", "--data", tmp_path / "empty", "--out", tmp_path / "b", *FAST))
    assert r.returncode != 0 and "meta.json" in r.stderr
    r = run(train_cmd("tokenizer", "--data", tiny_data, "--out", tmp_path / "c", *FAST, "--preset", "dmc64"))
    assert r.returncode != 0 and "holds 16x16 frames but the model expects 64x64" in r.stderr
    # a dynamics checkpoint where the tokenizer belongs
    from dreamer4_torch import Dynamics, save_model
    from shared.recipes import get_preset
    save_model(Dynamics(get_preset("tiny").dynamics), tmp_path / "dyn")
    r = run(train_cmd("dynamics", "--data", tiny_data, "--out", tmp_path / "d", "--tokenizer", tmp_path / "dyn", *FAST))
    assert r.returncode != 0 and "holds a dynamics checkpoint, but a tokenizer checkpoint was expected" in r.stderr
    r = run(train_cmd("dynamics", "--data", tiny_data, "--out", tmp_path / "e", "--tokenizer", tmp_path / "none", *FAST))
    assert r.returncode != 0 and "--tokenizer" in r.stderr and "does not exist" in r.stderr
    # a number of evaluation sampling steps the shortcut grid does not have: refused before training
    r = run(train_cmd("dynamics", "--data", tiny_data, "--out", tmp_path / "g", "--tokenizer", tiny_tokenizer,
                      "--eval-sampling-steps", 3, *FAST))
    assert r.returncode != 0 and "--eval-sampling-steps" in r.stderr and "power of two" in r.stderr, r.stderr
    assert "step 1/" not in r.stdout
    # a dynamics config whose latents do not match the tokenizer
    cfg = json.loads((Path(tiny_tokenizer) / "config.json").read_text())
    from shared.config import config_to_json, replace
    bad = replace(get_preset("tiny").dynamics, n_latents=6, d_bottleneck=cfg["d_bottleneck"])
    (tmp_path / "dyn.json").write_text(config_to_json(bad))
    r = run(train_cmd("dynamics", "--data", tiny_data, "--out", tmp_path / "f", "--tokenizer", tiny_tokenizer,
                      "--model-config", tmp_path / "dyn.json", *FAST))
    assert r.returncode != 0 and "does not fit the dynamics model" in r.stderr and "n_latents=4" in r.stderr
    # behaviour cloning: --dynamics must be a dynamics checkpoint on this tokenizer, the batch two halves
    r = run(train_cmd("bc", "--data", tiny_data, "--out", tmp_path / "h", "--tokenizer", tiny_tokenizer,
                      "--dynamics", tiny_tokenizer, *FAST))
    assert r.returncode != 0 and "--dynamics" in r.stderr and "holds a tokenizer checkpoint" in r.stderr, r.stderr
    r = run(train_cmd("bc", "--data", tiny_data, "--out", tmp_path / "i", "--tokenizer", tiny_tokenizer,
                      "--dynamics", tmp_path / "dyn", "--batch-size", 1, *FAST))
    assert r.returncode != 0 and "--batch-size" in r.stderr
    save_model(Dynamics(replace(get_preset("tiny").dynamics, n_latents=8)), tmp_path / "dyn8")
    r = run(train_cmd("bc", "--data", tiny_data, "--out", tmp_path / "j", "--tokenizer", tiny_tokenizer,
                      "--dynamics", tmp_path / "dyn8", *FAST))
    assert r.returncode != 0 and "--dynamics" in r.stderr and "n_latents" in r.stderr, r.stderr
    assert not any((tmp_path / d / "checkpoints").exists() for d in "hij")


def test_non_finite_loss_stops_with_a_clear_error(tiny_data, tmp_path):
    r = run(train_cmd("tokenizer", "--data", tiny_data, "--out", tmp_path / "run", "--steps", 20, "--lr", 1e30,
                      "--warmup-steps", 0, "--grad-clip", 0, *FAST))
    assert r.returncode == 1
    assert "non-finite loss or gradient at step" in r.stderr and "Lower --lr" in r.stderr


def test_resume_and_rerun_guards(tiny_data, tmp_path):
    out = tmp_path / "run"
    r = run(train_cmd("tokenizer", "--data", tiny_data, "--out", out, "--resume", *FAST))
    assert r.returncode != 0 and "options.json" in r.stderr
    r = run(train_cmd("tokenizer", "--data", tiny_data, "--out", out, "--steps", 3, *FAST))
    assert r.returncode == 0, r.stderr
    r = run(train_cmd("tokenizer", "--data", tiny_data, "--out", out, "--steps", 3, *FAST))
    assert r.returncode != 0 and "already holds a run; pass --resume" in r.stderr
    r = run(train_cmd("tokenizer", "--data", tiny_data, "--out", out, "--steps", 3, "--lr", 0.5, "--resume", *FAST))
    assert r.returncode != 0 and "--lr" in r.stderr


def test_muon_across_two_ranks_and_its_guards(tiny_data, tiny_tokenizer, tmp_path):
    out = tmp_path / "muon"
    common = ["--data", tiny_data, "--tokenizer", tiny_tokenizer, "--batch-size", 2, *FAST]
    r = run(train_cmd("dynamics", "--out", out, "--steps", 6, "--optimizer", "muon", *common, nproc=2))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    digests = torch.load(out / "checkpoints" / "latest" / "training_state.pt", weights_only=True)["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]          # the orthogonalised updates agree across ranks
    assert json.loads((out / "options.json").read_text())["optimizer"] == "muon"
    # Muon trains differently from AdamW (the option is not ignored).
    adamw = tmp_path / "adamw"
    r = run(train_cmd("dynamics", "--out", adamw, "--steps", 6, "--optimizer", "adamw", *common, nproc=2))
    assert r.returncode == 0, r.stderr[-4000:]
    assert differ(weights(out), weights(adamw))
    r = run(train_cmd("dynamics", "--out", out, "--steps", 8, "--optimizer", "adamw", "--resume", *common, nproc=2))
    assert r.returncode != 0 and "--optimizer 'muon' -> 'adamw'" in r.stderr, r.stderr[-2000:]
    r = run(train_cmd("dynamics", "--out", tmp_path / "fsdp", "--steps", 2, "--optimizer", "muon", "--parallel", "fsdp",
                      *common))
    assert r.returncode != 0 and "--optimizer muon" in r.stderr and "--parallel fsdp" in r.stderr
    assert not (tmp_path / "fsdp" / "checkpoints").exists()


def test_help_lists_every_option():
    r = subprocess.run([sys.executable, "-m", "dreamer4_torch.train", "dynamics", "--help"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ("--tokenizer", "--cache-latents", "--bootstrap-start", "--unconditional-fraction", "--parallel",
                 "--resume", "--max-minutes", "--wandb", "--optimizer"):
        assert flag in r.stdout
    r = subprocess.run([sys.executable, "-m", "dreamer4_torch.train"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "tokenizer" in r.stderr


def test_fsdp_matches_ddp_and_resumes(tiny_data, tmp_path):
    common = ["--data", tiny_data, "--batch-size", 2, "--ema-decay", 0.5, *FAST]     # the averages sharded, too
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    r = run(train_cmd("tokenizer", "--out", ddp, "--steps", 8, *common, nproc=2))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(train_cmd("tokenizer", "--out", fsdp, "--steps", 8, "--parallel", "fsdp", "--max-minutes", 1e-9,
                      *common, nproc=2))                     # stops (and saves) right after step 1
    assert r.returncode == 0, r.stderr[-3000:]
    assert max(losses(fsdp)) == 1
    r = run(train_cmd("tokenizer", "--out", fsdp, "--steps", 8, "--parallel", "fsdp", "--resume", *common, nproc=2))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = losses(ddp), losses(fsdp)
    for s in range(1, 9):
        assert b[s] == pytest.approx(a[s], rel=1e-5), s
    wa, wb = weights(ddp), weights(fsdp)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5


def test_a_tokenizer_checkpoint_without_clip_length_resumes():
    from dataclasses import replace
    from dreamer4_torch.train.runner import predates_clip_frames
    from shared import get_preset
    p = get_preset("tiny")
    run_cfg = replace(p.tokenizer, clip_frames=4)
    assert predates_clip_frames(replace(p.tokenizer, clip_frames=None), run_cfg)
    assert not predates_clip_frames(replace(p.tokenizer, clip_frames=2), run_cfg)          # another clip length
    assert not predates_clip_frames(replace(p.tokenizer, clip_frames=None, patch_size=2), run_cfg)
    assert not predates_clip_frames(p.dynamics, p.dynamics)
