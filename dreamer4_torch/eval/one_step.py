"""How well a dynamics checkpoint predicts one frame ahead, in latent space, against simple predictors.

The trainer's evaluation measures open-loop rollouts in pixels, where errors compound and a blurred
frame is a good hedge. This script isolates the first step: for windows of C + 1 frames it gives the
model the C context frames' codes (clean, labelled as the sampler labels context) and compares its
prediction of frame C + 1 with that frame's code. Beside the model (K = 1, the deterministic mean
prediction, and the trainer's K) it prints two predictors that learn nothing or almost nothing:

  repeat last latent   frame C's code (what a model that copies its context would predict);
  linear AR(2)         ridge regression of a code on the two codes before it and the action that
                       produced it, fitted on every frame of the training episodes.

Mean squared error per latent element (packed latents), per task and pooled, on held-out and on
training episodes (the same model on both: the gap is the overfitting):

    python -m dreamer4_torch.eval one-step runs/quickstart/dynamics --windows 96

Paths recorded in the run's options.json (data, tokenizer) are resolved against --root (default: the
current directory). The linear fit uses the run's latent cache (RUN/latents) when it is up to date
and otherwise encodes the data set into a temporary directory. Nothing in the run directory
is written.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from dreamer4_torch.eval.runs import open_run, window_parser

RIDGE = 1.0


def fit_linear_ar(latents: np.ndarray, actions: np.ndarray, episodes, table) -> np.ndarray:
    """Ridge weights W of z_t ~ [z_{t-1}, z_{t-2}, a_t, 1] @ W over the given episodes' frames."""
    n_feat = 2 * latents.shape[1] + actions.shape[1] + 1
    xtx = np.zeros((n_feat, n_feat))
    xty = np.zeros((n_feat, latents.shape[1]))
    for ep in episodes:
        start, length = int(table["start"][ep]), int(table["length"][ep])
        if length < 3:
            continue
        z = np.asarray(latents[start:start + length], dtype=np.float64)
        a = np.asarray(actions[start:start + length], dtype=np.float64)
        x = np.concatenate([z[1:-1], z[:-2], a[2:], np.ones((length - 2, 1))], axis=1)
        xtx += x.T @ x
        xty += x.T @ z[2:]
    return np.linalg.solve(xtx + RIDGE * np.eye(n_feat), xty)


def build_parser():
    return window_parser("python -m dreamer4_torch.eval one-step", __doc__, 96,
                         "windows per split, evenly spaced as the trainer's",
                         "seed of the K-step prediction's starting noise")


def main(argv=None) -> int:
    args, run = open_run(build_parser(), argv)

    from dreamer4_torch.sampler import rollout
    from dreamer4_torch.train import distributed as D
    from dreamer4_torch.train.common import encode_chunked, to_video
    from dreamer4_torch.train.latents import build_latent_cache, cache_is_valid, fingerprint
    from shared.data.tasks import TASK_NAMES
    from shared.data.windows import WindowSampler

    options, tokenizer, model, chunk, dataset = run.options, run.tokenizer, run.model, run.chunk, run.dataset
    data_dir, tok_dir = Path(options.data), Path(options.tokenizer)
    train_eps, heldout_eps, C = run.train_episodes, run.heldout_episodes, run.context
    K = options.eval_sampling_steps

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.run / "latents"
        if not cache_is_valid(cache, fingerprint(tok_dir, data_dir, chunk)):
            cache = Path(tmp) / "latents"       # never write into the run directory
        cache = build_latent_cache(tokenizer, tok_dir, data_dir, cache, chunk, D.init("cpu"))
        latents = np.load(cache / "latents.npy", mmap_mode="r")
        flat = latents.reshape(latents.shape[0], -1)
        weights = fit_linear_ar(flat, np.asarray(dataset.actions), train_eps, dataset.episodes)

    print(f"{args.run}, checkpoint {args.checkpoint}: one-step latent MSE of frame {C + 1} from {C} clean "
          f"context frames\n")
    head = ["split", "task", "windows", "model K=1", f"model K={K}", "repeat last latent", "linear AR(2)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    with torch.no_grad():
        for split, episodes in (("held-out", heldout_eps), ("train", train_eps)):
            sampler = WindowSampler(dataset, C + 1, episodes=episodes)
            picked = sampler.evenly_spaced(args.windows)
            batch, n = sampler.read(picked), len(picked)
            z = encode_chunked(tokenizer, to_video(torch.from_numpy(batch["frames"]), "cpu"), chunk).float()
            actions, act_mask = torch.from_numpy(batch["actions"]), torch.from_numpy(batch["action_mask"])
            target = z[:, C]
            errors = {}
            for steps in sorted({1, K}):
                pred = rollout(model, model.pack(z[:, :C]), actions, act_mask, 1, n_steps=steps,
                               noise=torch.Generator().manual_seed(args.seed))
                errors[f"K{steps}"] = (model.unpack(pred)[:, 0] - target).pow(2).mean(dim=(1, 2))
            errors["copy"] = (z[:, C - 1] - target).pow(2).mean(dim=(1, 2))
            if C >= 2:
                x = torch.cat([z[:, C - 1].flatten(1), z[:, C - 2].flatten(1), actions[:, C].float(),
                               torch.ones(n, 1)], dim=1).double()
                linear = (x @ torch.from_numpy(weights)).float().view_as(target)
                errors["linear"] = (linear - target).pow(2).mean(dim=(1, 2))
            tasks = batch["task_id"]
            for task in [*np.unique(tasks), None]:
                rows = np.ones(n, bool) if task is None else tasks == task
                name = "all" if task is None else TASK_NAMES[int(task)]
                cells = [f"{errors[k][torch.from_numpy(rows)].mean():.4f}" if k in errors else "-"
                         for k in ("K1", f"K{K}", "copy", "linear")]
                print(f"| {split} | {name} | {int(rows.sum())} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
