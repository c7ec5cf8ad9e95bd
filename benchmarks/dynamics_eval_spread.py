"""How much a dynamics run's evaluation moves with the held-out windows and the sampling noise.

The trainer evaluates open-loop rollouts on a fixed set of held-out windows with one fixed draw of
starting noise, so that every evaluation of a run is comparable with the others. This script
re-runs exactly that evaluation (`DynamicsTask.evaluate`) on one checkpoint for several window
counts and several noise seeds and prints the gain over the repeat-last-frame floor at each horizon,
with the mean and standard deviation over the seeds for each window count:

    python -m benchmarks.dynamics_eval_spread runs/quickstart/dynamics --sequences 48,96 --seeds 1234,1,2,3

`--sampling-steps K` evaluates with K shortcut steps per frame instead of the run's recorded K (the
trainer's default is 4); K = 1 gives the model's single-step mean prediction from pure noise.

Paths recorded in the run's options.json (data, tokenizer) are resolved against --root (default:
the current directory, where the training command ran). Nothing in the run directory is written.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from benchmarks.run_args import checked_checkpoint, recorded_options, run_parser


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: {flag} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise SystemExit(f"error: {flag} is empty")
    return values


def main(argv=None) -> int:
    ap = run_parser(__doc__)
    ap.add_argument("--sequences", default="48", help="comma-separated numbers of held-out windows")
    ap.add_argument("--seeds", default="1234", help="comma-separated noise seeds (the trainer uses 1234)")
    ap.add_argument("--sampling-steps", type=int, default=None,
                    help="shortcut steps K per generated frame, in place of the run's recorded --eval-sampling-steps")
    args = ap.parse_args(argv)
    sequences, seeds = _ints(args.sequences, "--sequences"), _ints(args.seeds, "--seeds")
    ckpt = checked_checkpoint(args)

    from dreamer4_torch.checkpoint import load_model
    from dreamer4_torch.train import distributed as D
    from dreamer4_torch.train.dynamics import EVAL_HORIZONS, DynamicsTask

    options = dataclasses.replace(recorded_options(args), out=str(args.run), cache_latents=False, workers=0,
                                  device="cpu")
    if args.sampling_steps is not None:      # DynamicsTask checks it against the model's k_max
        options = dataclasses.replace(options, eval_sampling_steps=args.sampling_steps)
    weights = load_model(ckpt, kind="dynamics").state_dict()
    world = D.init("cpu")
    horizons = [h for h in EVAL_HORIZONS if h <= options.eval_horizon]
    head = ["windows", "seed"] + [f"gain h{h}" for h in horizons] + \
        [f"floor h{h}" for h in horizons[:2]] + [f"copy-latent gain h{h}" for h in horizons[:2]]
    print(f"{args.run}, checkpoint {args.checkpoint}; K = {options.eval_sampling_steps}, context "
          f"{options.eval_context}; gains in dB over the repeat-last-frame floor\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in sequences:
        task = DynamicsTask(dataclasses.replace(options, eval_sequences=n), world)
        task.model.load_state_dict(weights)
        gains = []
        for seed in seeds:
            task.eval_noise_seed = seed
            s, _, _ = task.evaluate(0, task.model)
            gains.append([s[f"gain_h{h}"] for h in horizons])
            cells = [f"{s[f'gain_h{h}']:+.2f}" for h in horizons] + \
                [f"{s[f'floor_h{h}']:.2f}" for h in horizons[:2]] + \
                [f"{s[f'copy_latent_h{h}'] - s[f'floor_h{h}']:+.2f}" for h in horizons[:2]]
            print(f"| {len(task.eval_windows)} | {seed} | " + " | ".join(cells) + " |", flush=True)
        if len(seeds) > 1:
            g = np.asarray(gains)
            cells = [f"{m:+.2f} ± {sd:.2f}" for m, sd in zip(g.mean(0), g.std(0))]
            cells += [""] * (len(head) - 2 - len(cells))
            print(f"| {len(task.eval_windows)} | mean ± sd | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
