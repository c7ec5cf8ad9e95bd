"""Training throughput of the real trainers (`python -m dreamer4_torch.train`), as a table.

Collects a small DMControl data set at the preset's resolution (cached under --work), makes a
tokenizer checkpoint for the dynamics runs, runs each trainer for a few steps and reports the
frames/s of the last logging window (start-up, compilation and the one-off latent encoding are
excluded; the encoding speed is reported separately).

    python -m benchmarks.train_speed                      # CPU: tiny and dmc64
    python -m benchmarks.train_speed --cases dmc128       # the upstream-size models (slow on a CPU)
    python -m benchmarks.train_speed --nproc 2            # each trainer under torchrun, 2 processes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.recipes import get_recipe
from shared.recipes import get_preset

ROOT = Path(__file__).resolve().parents[1]

# (preset, trainer, batch_size, frames, steps per logging window)
CASES = {
    "tiny": [("tiny", "tokenizer", 8, 4, 10), ("tiny", "dynamics", 8, 8, 10)],
    "dmc64": [("dmc64", "tokenizer", 32, 1, 10), ("dmc64", "dynamics", 16, 16, 5)],
    "dmc128": [("dmc128", "tokenizer", 1, 8, 1), ("dmc128", "dynamics", 2, 32, 2)],
    # GPU batches: dmc128 at upstream's per-GPU batches (tokenizer 8 x 8, dynamics 24 x 32).
    "dmc64-gpu": [("dmc64", "tokenizer", 64, 4, 20), ("dmc64", "dynamics", 64, 16, 20)],
    "dmc128-gpu": [("dmc128", "tokenizer", 8, 8, 10), ("dmc128", "dynamics", 24, 32, 10)],
}


def sh(cmd, env):
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit(f"command failed: {' '.join(map(str, cmd))}")
    return r


def collect(work: Path, size: int, env) -> Path:
    data = work / f"data{size}"
    if not (data / "meta.json").exists():
        sh([sys.executable, "-m", "shared.data.collect", "--tasks", "walker-walk,cartpole-swingup", "--episodes", "2",
            "--episode-steps", "60", "--size", str(size), "--out", str(data), "--quiet"], env)
    return data


def tokenizer_checkpoint(work: Path, preset: str, frames: int) -> Path:
    import torch
    from dreamer4_torch import Tokenizer, save_model
    path = work / f"tok_{preset}"
    if not (path / "model.safetensors").exists():
        torch.manual_seed(0)
        save_model(Tokenizer(get_preset(preset).tokenizer), path)
        (path / "options.json").write_text(json.dumps({"frames": frames}))
    return path


def run_case(work, preset, kind, batch, frames, window, device, nproc, env, extra=()) -> dict:
    data = collect(work, get_preset(preset).tokenizer.image_height, env)
    out = work / f"run_{preset}_{kind}"
    shutil.rmtree(out, ignore_errors=True)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    cmd = launcher + ["-m", "dreamer4_torch.train", kind, "--preset", preset, "--data", str(data), "--out", str(out),
                      "--steps", str(2 * window), "--log-every", str(window), "--eval-every", "100000",
                      "--ckpt-every", "100000", "--batch-size", str(batch), "--frames", str(frames),
                      "--device", device, "--no-tensorboard", "--holdout-per-task", "1", *extra]
    if kind == "dynamics":
        # the clip length the preset's tokenizer recipe trains on (encoding runs in chunks of it)
        cmd += ["--tokenizer", str(tokenizer_checkpoint(work, preset, frames=get_recipe(preset).tokenizer.frames))]
    t0 = time.time()
    r = sh(cmd, env)
    total = time.time() - t0
    logs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    last = logs[-1]["train"]
    encode = re.findall(r"encode latents: 100%.*?\[(\d+:\d+)<", r.stderr + r.stdout)
    return {"frames_per_s": last["frames_per_s"], "steps_per_s": last["steps_per_s"], "wall": total,
            "encode": encode[-1] if encode else ""}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="tiny,dmc64",
                    help=f"comma-separated: {', '.join(CASES)} (the -gpu cases use GPU-sized batches; "
                         "default tiny,dmc64)")
    ap.add_argument("--device", default="cpu", help="the trainers' --device, e.g. cpu or cuda (default cpu)")
    ap.add_argument("--nproc", type=int, default=1,
                    help="processes per trainer; more than 1 runs the trainers under torchrun (default 1)")
    ap.add_argument("--work", default=None, help="work directory for the data sets and runs (default: a new "
                    "temporary one, kept)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="trainer precision (auto = bf16 autocast on CUDA, fp32 on CPU; default auto)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models (compilation is not timed)")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.nproc < 1:
        ap.error(f"--nproc must be >= 1, got {args.nproc}")
    bad = [c for c in args.cases.split(",") if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {', '.join(bad)}; choose from {', '.join(CASES)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="d4bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    import torch
    extra = ["--precision", args.precision] + (["--compile"] if args.compile else [])
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"# training throughput: {where}, {args.precision}{', compiled' if args.compile else ''}, "
          f"{args.nproc} process(es), torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print("| trainer | preset | batch x frames / process | steps/s | frames/s | one-off latent encoding |")
    print("|---|---|---|---|---|---|")
    for group in args.cases.split(","):
        for preset, kind, batch, frames, window in CASES[group]:
            res = run_case(work, preset, kind, batch, frames, window, args.device, args.nproc, env, extra)
            print(f"| {kind} | {preset} | {batch} x {frames} | {res['steps_per_s']:.3f} | {res['frames_per_s']:.1f} "
                  f"| {res['encode'] or '-'} |", flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
