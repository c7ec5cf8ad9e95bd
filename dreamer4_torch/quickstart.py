"""From nothing to a playable world model: collect, train the tokenizer, train the dynamics, evaluate,
and open the demo. Every stage is resumable: re-running skips what is finished and continues what was
interrupted.

    python -m dreamer4_torch.quickstart                 # CPU recipe: dmc64, 5 tasks, ~40 minutes
    python -m dreamer4_torch.quickstart --gpu           # GPU recipe: dmc128 (upstream's sizes), more data
    python -m dreamer4_torch.quickstart --no-demo       # stop after the report

Outputs: DATA_DIR (the data set), RUN_DIR/{tokenizer,dynamics} (training runs: checkpoints, curves,
images, GIFs), RUN_DIR/report.md (the PSNR tables), then the demo on http://localhost:PORT.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.recipes import get_recipe

# Visually different tasks with a lot of motion (camera-tracked bodies, swinging poles, spinning finger).
CPU_TASKS = "cheetah-run,walker-walk,hopper-hop,finger-spin,cartpole-swingup"


@dataclass(frozen=True)
class Recipe:
    preset: str
    tasks: str
    episodes: int
    tokenizer_minutes: float
    dynamics_minutes: float
    tokenizer_steps: int
    dynamics_steps: int
    eval_every: int                  # tokenizer evaluations
    dynamics_eval_every: int
    eval_sequences: int              # held-out clips / windows per evaluation, each trainer
    extra_tokenizer: tuple = ()
    extra_dynamics: tuple = ()


def _steps(preset: str, kind: str) -> int:
    """The trainer recipe's step count (shared.recipes), which sets its lr schedule."""
    return get_recipe(preset).training(kind).steps


RECIPES = {
    # 30 episodes per task: with 10 the dynamics model fits its training episodes and not held-out ones
    # (benchmarks/RESULTS.md, "Training seeds, 4x the steps, 10x the frames" and "Three times the episodes")
    # 96 held-out windows (about 19 per held-out episode): with 48 the dynamics gain moves by +-0.15 dB over
    # noise draws (RESULTS.md, "The weights' moving average"); every 500 steps, each evaluation (~20 s on
    # the CPU) comes out of the stage's 20 minutes.
    "cpu": Recipe(preset="dmc64", tasks=CPU_TASKS, episodes=30, tokenizer_minutes=16.0, dynamics_minutes=20.0,
                  tokenizer_steps=_steps("dmc64", "tokenizer"), dynamics_steps=_steps("dmc64", "dynamics"),
                  eval_every=250, dynamics_eval_every=500, eval_sequences=96),
    "gpu": Recipe(preset="dmc128", tasks="all", episodes=20, tokenizer_minutes=240.0, dynamics_minutes=240.0,
                  tokenizer_steps=_steps("dmc128", "tokenizer"), dynamics_steps=_steps("dmc128", "dynamics"),
                  eval_every=5000, dynamics_eval_every=5000, eval_sequences=96),
}


def say(message: str) -> None:
    print(f"\n=== {message}", flush=True)


STOP_GRACE_SECONDS = 120.0     # how long a stage may take to save and exit after SIGTERM/SIGINT


def wait_for_stage(child: subprocess.Popen) -> int:
    """Wait for a stage; SIGTERM/SIGINT to the pipeline is passed on to it once (trainers save a
    checkpoint and exit, the demo shuts down; a second SIGINT would make a trainer abandon its final
    checkpoint), the stage gets STOP_GRACE_SECONDS to exit and is killed after that, and then the
    pipeline exits with 128 + the signal number, so that nothing is left running.

    The handler only records the signal and forwards it: waiting for the child inside it would
    contend with the wait below for the child's exit status and never see it."""
    stop: dict = {}

    def handler(signum, frame):
        if not stop:
            stop.update(signum=signum, deadline=time.monotonic() + STOP_GRACE_SECONDS)
            if child.returncode is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                returncode = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop and time.monotonic() > stop["deadline"]:
                    child.kill()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if stop:
        raise SystemExit(128 + stop["signum"])
    return returncode


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    # Its own session: a Ctrl-C in the terminal reaches only this process, which passes it on once.
    returncode = wait_for_stage(subprocess.Popen(cmd, start_new_session=True))
    if returncode != 0:
        raise SystemExit(f"quickstart: stage failed (exit code {returncode}); fix the problem above and "
                         "re-run the same command: finished stages are skipped, interrupted ones resume")


def train_stage(kind: str, out: Path, args: list[str]) -> dict:
    done = out / "done.json"
    if done.exists():
        info = json.loads(done.read_text())
        print(f"{kind}: already trained ({info['step']} steps) in {out}; skipping", flush=True)
        return info
    resume = ["--resume"] if (out / "checkpoints" / "latest").exists() else []
    if resume:
        print(f"{kind}: continuing the interrupted run in {out}", flush=True)
    run([sys.executable, "-m", "dreamer4_torch.train", kind, "--out", str(out), *args, *resume])
    return json.loads(done.read_text())


def _duration(done: dict) -> str:
    """'N steps in M min', saying when the last session resumed an interrupted run (its minutes only)."""
    text = f"{done['step']} steps in {done.get('minutes', 0):.1f} min"
    if done.get("resumed_at"):
        text = f"{done['step']} steps (resumed at step {done['resumed_at']}; {done.get('minutes', 0):.1f} min since)"
    return text


def report(run_dir: Path, tok: dict, dyn: dict, recipe: Recipe, data_dir: Path) -> Path:
    lines = ["# Quickstart report", "",
             f"Preset `{recipe.preset}`, data `{data_dir}` ({recipe.tasks}), "
             f"tokenizer {_duration(tok)}, dynamics {_duration(dyn)}.", "",
             "## Tokenizer (held-out episodes)", "",
             "| full-frame PSNR (pooled MSE) | mean per-frame PSNR |", "|---|---|",
             f"| {tok['eval']['psnr']:.2f} dB | {tok['eval']['psnr_frame_mean']:.2f} dB |", "",
             "## Dynamics: open-loop rollouts from held-out contexts (K = 4)", "",
             "| horizon | model PSNR | repeat-last-frame PSNR | gain | tokenizer reconstruction PSNR "
             "| repeat-last-latent PSNR |",
             "|---|---|---|---|---|---|"]
    e = dyn["eval"]
    for h in (1, 4, 8, 16):
        if f"psnr_h{h}" in e:
            copy = e.get(f"copy_latent_h{h}")        # absent in runs from before it was measured
            lines.append(f"| {h} | {e[f'psnr_h{h}']:.2f} | {e[f'floor_h{h}']:.2f} | {e[f'gain_h{h}']:+.2f} | "
                         f"{e[f'tokenizer_h{h}']:.2f} | {'n/a' if copy is None else f'{copy:.2f}'} |")
    lines += ["", "Repeat-last-frame: the last context frame itself; tokenizer reconstruction: the true future "
              "frames encoded and decoded (what the model could at best reach); repeat-last-latent: the last "
              "context frame's code decoded for every future frame (a dynamics model that does nothing).",
              "", "Curves: `tokenizer/curves.png`, `dynamics/curves.png`; rollout GIFs (ground truth left, "
              "prediction right) and image grids in `dynamics/images/`.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dreamer4_torch.quickstart", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the GPU recipe (dmc128, all 30 tasks, hours of training)")
    ap.add_argument("--data", default=None, help="data set directory (default data/quickstart or data/quickstart128)")
    ap.add_argument("--out", default=None, help="run directory (default runs/quickstart or runs/quickstart128)")
    ap.add_argument("--tasks", default=None, help="comma-separated tasks (default: the recipe's)")
    ap.add_argument("--episodes", type=int, default=None, help="episodes per task (default: the recipe's)")
    ap.add_argument("--episode-steps", type=int, default=500, help="agent steps per episode (500 = the data set's)")
    ap.add_argument("--preset", default=None, choices=["tiny", "dmc64", "dmc128"],
                    help="model preset (default: the recipe's; 'tiny' for a smoke test)")
    ap.add_argument("--tokenizer-minutes", type=float, default=None, help="tokenizer training time budget")
    ap.add_argument("--dynamics-minutes", type=float, default=None, help="dynamics training time budget")
    ap.add_argument("--tokenizer-steps", type=int, default=None, help="tokenizer steps (the budget may stop it earlier)")
    ap.add_argument("--dynamics-steps", type=int, default=None, help="dynamics steps (the budget may stop it earlier)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="evaluate every N training steps and at the end (default: the recipe's, on CPU 250 for "
                         "the tokenizer and 500 for the dynamics)")
    ap.add_argument("--eval-sequences", type=int, default=None,
                    help="held-out sequences per evaluation (default: the recipe's, 96)")
    ap.add_argument("--port", type=int, default=7860, help="demo port")
    ap.add_argument("--no-demo", action="store_true", help="stop after the report instead of serving the demo")
    args = ap.parse_args(argv)
    for name in ("episodes", "episode_steps", "tokenizer_steps", "dynamics_steps", "eval_every", "eval_sequences"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("tokenizer_minutes", "dynamics_minutes"):
        value = getattr(args, name)
        if value is not None and value < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0 (0 = no time limit), got {value}")

    recipe = RECIPES["gpu" if args.gpu else "cpu"]
    preset = args.preset or recipe.preset
    from shared.config import get_preset
    size = get_preset(preset).tokenizer.image_height       # the data set's frames match the model
    suffix = "" if not args.gpu else "128"
    data_dir = Path(args.data or f"data/quickstart{suffix}")
    run_dir = Path(args.out or f"runs/quickstart{suffix}")
    tasks = args.tasks or recipe.tasks
    episodes = args.episodes or recipe.episodes
    tok_minutes = recipe.tokenizer_minutes if args.tokenizer_minutes is None else args.tokenizer_minutes
    dyn_minutes = recipe.dynamics_minutes if args.dynamics_minutes is None else args.dynamics_minutes
    t0 = time.time()
    print(f"quickstart: {preset} on {tasks} ({episodes} episodes each at {size}x{size}); "
          f"budget {tok_minutes:.0f} + {dyn_minutes:.0f} minutes of training; data {data_dir}, runs {run_dir}")

    say("1/5 collect DMControl episodes (MuJoCo on the CPU; resumable)")
    run([sys.executable, "-m", "shared.data.collect", "--tasks", tasks, "--episodes", str(episodes),
         "--size", str(size), "--out", str(data_dir), "--episode-steps", str(args.episode_steps)])

    say(f"2/5 train the tokenizer (about {tok_minutes:.0f} min)")
    common = ["--preset", preset, "--data", str(data_dir),
              "--eval-sequences", str(args.eval_sequences or recipe.eval_sequences)]
    tok = train_stage("tokenizer", run_dir / "tokenizer",
                      [*common, "--eval-every", str(args.eval_every or recipe.eval_every),
                       "--max-minutes", str(tok_minutes),
                       *(["--steps", str(args.tokenizer_steps or recipe.tokenizer_steps)]),
                       *recipe.extra_tokenizer])

    say(f"3/5 train the dynamics model (about {dyn_minutes:.0f} min)")
    dyn = train_stage("dynamics", run_dir / "dynamics",
                      [*common, "--tokenizer", str(run_dir / "tokenizer" / "checkpoints" / "latest"),
                       "--eval-every", str(args.eval_every or recipe.dynamics_eval_every),
                       "--max-minutes", str(dyn_minutes),
                       *(["--steps", str(args.dynamics_steps or recipe.dynamics_steps)]),
                       *recipe.extra_dynamics])

    say("4/5 report")
    path = report(run_dir, tok, dyn, recipe, data_dir)
    print(path.read_text())
    print(f"total {(time.time() - t0) / 60:.1f} minutes")

    if args.no_demo:
        return 0
    say(f"5/5 the demo on http://localhost:{args.port} (Ctrl-C stops it)")
    run([sys.executable, "-m", "demo", "--tokenizer", str(run_dir / "tokenizer"), "--dynamics",
         str(run_dir / "dynamics"), "--data", str(data_dir), "--port", str(args.port)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
