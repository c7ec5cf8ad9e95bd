"""From nothing to a playable world model: collect, train the tokenizer, train the dynamics, evaluate,
and open the demo. Every stage is resumable: re-running skips what is finished and continues what was
interrupted.

    python -m quickstart                       # the dmc64 recipe: 5 tasks, on a CPU (about 40 minutes on two cores)
    python -m quickstart --recipe dmc128       # upstream's sizes on a GPU, all 30 tasks (hours); --gpu for short
    python -m quickstart --recipe tiny         # a smoke test of every stage (tiny models, seconds of training)
    python -m quickstart --no-demo             # stop after the report
    python -m quickstart --agent-data          # the agent's world model (data/agent, runs/agent); then make agent

Each training stage runs its recipe's steps (shared/recipes/), so the same command gives the same model
on a fast machine and on a slow or busy one; --tokenizer-minutes / --dynamics-minutes cap a stage's time
instead (the report then says that the cap stopped it).

Outputs: DATA_DIR (the data set), RUN_DIR/{tokenizer,dynamics} (training runs: checkpoints, curves,
images, GIFs), RUN_DIR/report.md (the PSNR tables), then the demo on http://localhost:PORT.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from shared.data.policies import POLICY_MODES
from shared.recipes import RECIPES, get_recipe

from .report import report
from .stages import run, say, train_stage

DEFAULT_RECIPE = "dmc64"
GPU_RECIPE = "dmc128"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m quickstart", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", "--preset", dest="recipe", default=None, choices=list(RECIPES),
                    help=f"the recipe (shared/recipes/): model sizes, training steps, tasks and episodes "
                         f"(default {DEFAULT_RECIPE}; 'tiny' for a smoke test; --preset is another name for it)")
    ap.add_argument("--gpu", action="store_true", help=f"the GPU recipe: the same as --recipe {GPU_RECIPE} "
                                                       "(upstream's sizes, all 30 tasks, hours of training)")
    ap.add_argument("--data", default=None, help="data set directory (default: the recipe's, e.g. data/quickstart)")
    ap.add_argument("--out", default=None, help="run directory (default: the recipe's, e.g. runs/quickstart)")
    ap.add_argument("--tasks", default=None, help="comma-separated tasks (default: the recipe's)")
    ap.add_argument("--agent-data", action="store_true",
                    help="the agent's world model instead: the recipe's agent tasks, data and run directories "
                         "(dmc64: five tasks with task controllers, 70%% controller episodes, data/agent, "
                         "runs/agent); then `make agent` finetunes it (docs/agents.md)")
    ap.add_argument("--policy", default=None, choices=POLICY_MODES,
                    help="the collector's behaviour (default: the recipe's); controller-heavy for an agent's "
                         "data (docs/agents.md)")
    ap.add_argument("--episodes", type=int, default=None, help="episodes per task (default: the recipe's)")
    ap.add_argument("--episode-steps", type=int, default=None,
                    help="agent steps per episode (default: the recipe's; 500 = a whole episode)")
    ap.add_argument("--tokenizer-steps", type=int, default=None, help="tokenizer training steps (default: the recipe's)")
    ap.add_argument("--dynamics-steps", type=int, default=None, help="dynamics training steps (default: the recipe's)")
    ap.add_argument("--tokenizer-minutes", type=float, default=0.0,
                    help="stop the tokenizer stage after this many minutes even before its steps; 0 = no cap "
                         "(the default: the recipe's steps decide)")
    ap.add_argument("--dynamics-minutes", type=float, default=0.0,
                    help="stop the dynamics stage after this many minutes even before its steps; 0 = no cap "
                         "(the default: the recipe's steps decide)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="evaluate every N training steps and at the end, both trainers (default: the recipe's, "
                         "for dmc64 250 for the tokenizer and 500 for the dynamics)")
    ap.add_argument("--eval-sequences", type=int, default=None,
                    help="held-out sequences per evaluation (default: the recipe's, 96 for dmc64)")
    ap.add_argument("--port", type=int, default=7860, help="demo port")
    ap.add_argument("--no-demo", action="store_true", help="stop after the report instead of serving the demo")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.gpu and args.recipe not in (None, GPU_RECIPE):
        ap.error(f"--gpu means --recipe {GPU_RECIPE}; it contradicts --recipe {args.recipe}")
    args.recipe = GPU_RECIPE if args.gpu else (args.recipe or DEFAULT_RECIPE)
    for name in ("episodes", "episode_steps", "tokenizer_steps", "dynamics_steps", "eval_every", "eval_sequences"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("tokenizer_minutes", "dynamics_minutes"):
        value = getattr(args, name)
        if value < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0 (0 = no cap), got {value}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    recipe = get_recipe(args.recipe)
    pipeline = recipe.pipeline_for(args.agent_data)
    data_dir = Path(args.data or pipeline.data_dir)
    run_dir = Path(args.out or pipeline.run_dir)
    tasks = tuple(t.strip() for t in args.tasks.split(",")) if args.tasks else pipeline.tasks
    episodes = args.episodes or pipeline.episodes_per_task
    episode_steps = args.episode_steps or pipeline.episode_steps
    steps = {"tokenizer": args.tokenizer_steps or recipe.tokenizer.steps,
             "dynamics": args.dynamics_steps or recipe.dynamics.steps}
    minutes = {"tokenizer": args.tokenizer_minutes, "dynamics": args.dynamics_minutes}
    caps = "".join(f"; {kind} capped at {m:g} min" for kind, m in minutes.items() if m > 0)
    t0 = time.time()
    print(f"quickstart: recipe {recipe.name} on {','.join(tasks)} ({episodes} episodes each at "
          f"{recipe.image_size}x{recipe.image_size}); tokenizer {steps['tokenizer']} steps, dynamics "
          f"{steps['dynamics']} steps{caps}; data {data_dir}, runs {run_dir}")

    say("1/5 collect DMControl episodes (MuJoCo on the CPU; resumable)")
    run([sys.executable, "-m", "shared.data.collect", "--tasks", ",".join(tasks), "--episodes", str(episodes),
         "--size", str(recipe.image_size), "--out", str(data_dir), "--episode-steps", str(episode_steps),
         "--policy", args.policy or pipeline.policy])

    def trainer_args(kind: str) -> list[str]:
        training = recipe.training(kind)
        return ["--preset", recipe.preset.name, "--data", str(data_dir), "--steps", str(steps[kind]),
                "--max-minutes", str(minutes[kind]),
                "--eval-every", str(args.eval_every or training.eval_every),
                "--eval-sequences", str(args.eval_sequences or training.eval_sequences)]

    say(f"2/5 train the tokenizer ({steps['tokenizer']} steps)")
    tok = train_stage("tokenizer", run_dir / "tokenizer", trainer_args("tokenizer"))

    say(f"3/5 train the dynamics model ({steps['dynamics']} steps)")
    dyn = train_stage("dynamics", run_dir / "dynamics",
                      [*trainer_args("dynamics"), "--tokenizer", str(run_dir / "tokenizer" / "checkpoints" / "latest")])

    say("4/5 report")
    path = report(run_dir, tok, dyn, recipe=recipe.name, tasks=tasks, data_dir=data_dir)
    print(path.read_text())
    print(f"total {(time.time() - t0) / 60:.1f} minutes")

    if args.no_demo:
        return 0
    say(f"5/5 the demo on http://localhost:{args.port} (Ctrl-C stops it)")
    run([sys.executable, "-m", "demo", "--tokenizer", str(run_dir / "tokenizer"), "--dynamics",
         str(run_dir / "dynamics"), "--data", str(data_dir), "--port", str(args.port)])
    return 0
