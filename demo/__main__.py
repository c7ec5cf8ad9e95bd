"""Serve the interactive world-model demo.

    python -m demo                                        # the quickstart's checkpoints (runs/quickstart)
    python -m demo --tokenizer runs/tok --dynamics runs/dyn --data data/dmc64
    python -m demo --tokenizer tokenizer.pt --dynamics dynamics.pt   # upstream files, imported on the fly
    python -m demo --random-weights dmc64                 # untrained models, to try the interface
    python -m demo --backend jax                          # the same checkpoints run by the JAX backend
    python -m demo --agent --data data/agent              # the agent of `make agent` (runs/agent/agent)

Open the printed address in a browser. Interactive tab: arrow keys choose (left/right) and push
(up/down, while held) an action dimension, space plays/pauses, R resets; or use the sliders and
buttons. Open-loop tab (needs --data): a held-out episode beside the model's rollout under the same
actions, with per-frame PSNR. Every browser tab is its own session. With an agent-finetuned model
(--agent, or a behaviour-cloning run as --dynamics; torch backend) the "agent drives" switch hands
the actions to its policy, in the world model and, where MuJoCo is installed, in the real task
beside it (demo/agent.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.recipes import get_recipe

# Where `make quickstart` and `make agent` write: the dmc64 recipe's two pipelines.
_DMC64 = get_recipe("dmc64")
DEFAULT_RUN_DIR = os.environ.get("DREAMER4_RUN_DIR", _DMC64.pipeline.run_dir)
AGENT_RUN_DIR = os.environ.get("DREAMER4_RUN_DIR", _DMC64.agent_pipeline.run_dir)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", metavar="DIR", help="tokenizer checkpoint: a native checkpoint directory, a "
                    "training run directory (its checkpoints/latest is used) or an upstream .pt file "
                    "(default: RUN_DIR/tokenizer)")
    ap.add_argument("--dynamics", metavar="DIR", help="dynamics checkpoint, the same kinds (an upstream .pt file "
                    "needs the matching --tokenizer; default: RUN_DIR/dynamics)")
    ap.add_argument("--run-dir", default=None, metavar="DIR",
                    help=f"where to look for tokenizer/ and dynamics/ (or agent/) when neither is given "
                         f"(default: {DEFAULT_RUN_DIR}, or $DREAMER4_RUN_DIR; with --agent {AGENT_RUN_DIR})")
    ap.add_argument("--agent", action="store_true",
                    help="serve the agent-finetuned model RUN_DIR/agent (make agent) instead of RUN_DIR/dynamics: "
                         "the page's 'agent drives' switch lets its policy choose the actions (the same as "
                         "--dynamics RUN_DIR/agent; any behaviour-cloning run works as --dynamics)")
    ap.add_argument("--random-weights", metavar="PRESET", help="serve untrained models of a preset (tiny, dmc64, "
                    "dmc128) instead of checkpoints, to try the interface")
    ap.add_argument("--data", metavar="DIR", help="data set directory (shared.data format): start frames for each "
                    "task and held-out episodes for the open-loop view (default: none; starts from a random "
                    "latent)")
    ap.add_argument("--task", help="task selected when a page opens (default: the first task of the data set or "
                    "the task registry)")
    ap.add_argument("--backend", choices=["torch", "jax"], default="torch", help="model backend (default: torch); "
                    "jax runs dreamer4_jax's sampler, encoder and decoder on the checkpoints converted in memory, or "
                    "on native JAX checkpoint directories (config.json + params/)")
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu; --backend jax uses JAX's default "
                    "device)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    ap.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=2, help="initial shortcut steps K per frame (default: 2)")
    ap.add_argument("--context", type=int, default=16, help="initial context length in frames (default: 16)")
    ap.add_argument("--context-mode", choices=["upstream", "noised"], default="upstream",
                    help="context frames clean and labelled as upstream does, or corrupted to tau=0.9 as in the "
                         "paper (default: upstream)")
    ap.add_argument("--start-frames", type=int, default=1, help="real frames a reset starts from (default: 1, "
                    "as upstream)")
    ap.add_argument("--smoothing", type=float, default=0.817, help="action smoothing beta in a <- beta a + "
                    "(1 - beta) a_new (default: 0.817, upstream's; 0 disables)")
    ap.add_argument("--max-fps", type=float, default=20.0, help="frame-rate cap in play mode (default: 20; "
                    "0 = as fast as the model runs)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    ap.add_argument("--max-sessions", type=int, default=32,
                    help="sessions kept at once (browser tabs and API clients); beyond it the least recently used "
                         "is closed (default: 32)")
    return ap.parse_args(argv)


def checkpoint_paths(args) -> tuple:
    """(tokenizer, dynamics) paths from the arguments or the run directory; raises StartupError."""
    from .backend import StartupError
    if args.random_weights:
        if args.tokenizer or args.dynamics:
            raise StartupError("--random-weights replaces --tokenizer/--dynamics; give one or the other")
        return None, None
    if bool(args.tokenizer) != bool(args.dynamics):
        raise StartupError("give both --tokenizer and --dynamics (the dynamics model runs on its tokenizer's "
                           "latents)")
    if args.tokenizer:
        if args.agent:
            raise StartupError("--agent takes the run directory's agent model; with --tokenizer and --dynamics, "
                               "pass the behaviour-cloning run as --dynamics instead")
        return args.tokenizer, args.dynamics
    run = Path(args.run_dir or (AGENT_RUN_DIR if args.agent else DEFAULT_RUN_DIR))
    tok, dyn = run / "tokenizer", run / ("agent" if args.agent else "dynamics")
    if args.agent and tok.exists() and not dyn.exists():
        raise StartupError(f"--agent: no agent model at {dyn}: train it with `make agent` (or pass the run "
                           "directory that holds tokenizer/ and agent/ as --run-dir)")
    if not (tok.exists() and dyn.exists()):
        raise StartupError(f"no checkpoints given and none found at {tok} and {dyn}: train them first (see the "
                           "README's quickstart), pass --tokenizer DIR --dynamics DIR (or --run-dir DIR), "
                           "or try the interface with --random-weights dmc64")
    return str(tok), str(dyn)


def prepare(args):
    """Load everything the app needs; every problem surfaces as a StartupError before serving."""
    from .backend import StartupError, load_backend
    from .data import DatasetSource, NoDataSource
    if args.steps < 1 or args.context < 1 or args.start_frames < 1 or args.max_sessions < 1:
        raise StartupError("--steps, --context, --start-frames and --max-sessions must be >= 1")
    tok, dyn = checkpoint_paths(args)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    model = load_backend(args.backend, tok, dyn, random_weights=args.random_weights, device=args.device,
                         context_mode=args.context_mode, seed=args.seed)
    if args.steps not in model.steps_choices:
        raise StartupError(f"--steps {args.steps}: choose one of {model.steps_choices} (powers of two up to the "
                           f"model's k_max = {model.k_max})")
    if args.data:
        source = DatasetSource.open(args.data, model.image_size, model.action_dim)
    else:
        source = NoDataSource(model.action_dim)
    if args.task is not None and args.task not in source.tasks:
        raise StartupError(f"--task {args.task}: not one of the {len(source.tasks)} tasks "
                           f"{'of the data set' if args.data else 'available'} ({', '.join(source.tasks)})")
    return model, source


def main(argv=None) -> int:
    from .backend import StartupError
    args = parse_args(argv)
    try:
        model, source = prepare(args)
    except StartupError as e:
        print(f"python -m demo: error: {e}", file=sys.stderr)
        return 2
    from .app import AppOptions, build_app, launch
    options = AppOptions(task=args.task, n_steps=args.steps, context_length=min(args.context, 64), smoothing=args.smoothing,
                         start_frames=args.start_frames, max_fps=args.max_fps, seed=args.seed,
                         session_capacity=args.max_sessions)
    app = build_app(model, source, options)
    print(model.describe(), flush=True)
    print(source.describe(), flush=True)
    print(f"serving on http://{args.host}:{args.port}", flush=True)
    launch(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
