"""Agents inside a world model: behaviour-cloning finetuning, then the policy in the real DMControl
tasks, then a report. It finetunes the world model that `python -m quickstart --agent-data` trains
(the recipe's agent tasks, whose data reaches their rewards: data/agent, runs/agent for dmc64), or any
quickstart run given with --data and --out. Every stage is resumable: re-running skips what is finished.

    python -m quickstart --agent-data --no-demo && python -m quickstart.agent     # make agent
    python -m quickstart.agent --recipe tiny --data D --out R                       # a smoke test

Outputs: RUN_DIR/agent (the finetuning run: checkpoints, curves, held-out action and reward errors),
RUN_DIR/agent/policy_eval.json and videos/, RUN_DIR/agent_report.md (returns per task: the agent, a
uniform-random policy and the data set's episodes). Then `python -m demo --agent --run-dir RUN_DIR`
shows the policy driving.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from shared.recipes import RECIPES, get_recipe

from .pipeline import DEFAULT_RECIPE
from .stages import run, say, train_stage


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m quickstart.agent", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", "--preset", dest="recipe", default=DEFAULT_RECIPE, choices=list(RECIPES),
                    help=f"the recipe the world model was trained with (default {DEFAULT_RECIPE})")
    ap.add_argument("--data", default=None, help="data set directory (default: the recipe's agent data, e.g. "
                                                 "data/agent)")
    ap.add_argument("--out", default=None, help="the world model's run directory, which gets agent/ (default: the "
                                                "recipe's agent run directory, e.g. runs/agent)")
    ap.add_argument("--steps", type=int, default=None, help="finetuning steps (default: the recipe's)")
    ap.add_argument("--episodes", type=int, default=10, help="real episodes per task and policy (default 10)")
    ap.add_argument("--episode-steps", type=int, default=0,
                    help="agent steps per evaluation episode (default: the data set's)")
    ap.add_argument("--eval-every", type=int, default=None, help="held-out evaluation every N steps (default: the "
                                                                 "recipe's)")
    return ap


def report(run_dir: Path, agent_dir: Path, done: dict, result: dict, recipe: str) -> Path:
    """RUN_DIR/agent_report.md: the returns table and where the curves and videos are."""
    lines = [f"# Agent report ({recipe})", "",
             f"Behaviour-cloning finetuning: {done['step']} steps in {agent_dir} ({done.get('minutes', 0):.1f} min). "
             f"Policy: the distance-1 {'sample' if result['sample'] else 'mean'} action, window "
             f"{result['window']} over {result['context']} frames; {result['episode_steps']}-step episodes.", "",
             "| task | agent (mean ± s.e.) | uniform random | data mean | data best | episodes |",
             "|---|---|---|---|---|---|"]
    for task, r in result["tasks"].items():
        cell = lambda s: "–" if s is None else f"{s['mean']:.1f} ± {s['se'] or 0:.1f}"  # noqa: E731
        data = r["data"] or {}
        lines.append(f"| {task} | {cell(r['agent'])} | {cell(r.get('random'))} | "
                     f"{data.get('mean', float('nan')):.1f} | {data.get('best', float('nan')):.1f} | "
                     f"{r['agent']['n']} |")
    held = done.get("eval", {})
    if held:
        lines += ["", "Held-out windows at the end of finetuning: "
                  + ", ".join(f"{k} {held[k]:.3f}" for k in sorted(held) if k.startswith("heldout_") or k == "gain_h4")]
    lines += ["", f"Curves: {agent_dir / 'curves.png'}; videos (observation | what the model saw): "
                  f"{agent_dir / 'videos'}/policy_TASK.gif."]
    path = run_dir / "agent_report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("steps", "episodes", "eval_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got {value}")
    recipe = get_recipe(args.recipe)
    pipeline = recipe.pipeline_for(agent=True)
    data_dir = Path(args.data or pipeline.data_dir)
    run_dir = Path(args.out or pipeline.run_dir)
    tokenizer, dynamics = run_dir / "tokenizer" / "checkpoints" / "latest", run_dir / "dynamics" / "checkpoints" / "latest"
    for path in (tokenizer, dynamics):
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist; train the world model first with "
                             f"`python -m quickstart --recipe {recipe.name} --agent-data --no-demo`"
                             + ("" if args.out is None else f" --out {args.out}"))
    training = recipe.training("bc")
    steps = args.steps or training.steps
    agent_dir = run_dir / "agent"
    t0 = time.time()

    say(f"1/3 behaviour-cloning finetuning of the world model ({steps} steps)")
    done = train_stage("bc", agent_dir, [
        "--preset", recipe.preset.name, "--data", str(data_dir), "--tokenizer", str(tokenizer), "--dynamics",
        str(dynamics), "--steps", str(steps), "--eval-every", str(args.eval_every or training.eval_every),
        "--eval-sequences", str(training.eval_sequences)])

    say(f"2/3 the policy in the real tasks ({args.episodes} episodes per task)")
    result_file = agent_dir / "policy_eval.json"
    wanted = {"episodes": args.episodes, "episode_steps": args.episode_steps}
    stamp = agent_dir / "policy_eval.args.json"
    if result_file.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        print(f"policy: already evaluated in {result_file}; skipping", flush=True)
    else:
        run([sys.executable, "-m", "dreamer4_torch.eval", "policy", str(agent_dir), "--episodes", str(args.episodes),
             "--episode-steps", str(args.episode_steps)])
        stamp.write_text(json.dumps(wanted) + "\n")
    result = json.loads(result_file.read_text())

    say("3/3 report")
    path = report(run_dir, agent_dir, done, result, recipe.name)
    print(path.read_text())
    print(f"total {(time.time() - t0) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
