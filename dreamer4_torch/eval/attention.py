"""Where a dynamics model's time attention looks when it predicts the next frame.

To carry a frame forward (the repeat-last-latent baseline, and most of any good prediction one frame
ahead) the model must fetch each spatial token's code from the previous frame. This evaluation gives a
checkpoint C clean context frames of held-out windows (labelled as the sampler labels context) and a
new frame of starting noise at signal level 0 (the first step of generation), and prints, for every
layer and head, the time-attention weight that the new frame's spatial tokens put on themselves, on
the previous frame, on the frame before that and on all older frames, averaged over tokens and windows:

    python -m dreamer4_torch.eval attention runs/quickstart/dynamics --windows 48

A model that copies its last frame puts most of some head's weight on "t-1"; one that spreads it over
the whole history averages its context instead (see docs/experiments.md, "Dynamics recipe"). Paths
recorded in the run's options.json (data, tokenizer) are resolved against --root. Nothing in the run
directory is written.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from dreamer4_torch.eval.runs import open_run, window_parser


def time_attention_probs(attn, x: torch.Tensor, rope=None) -> torch.Tensor:
    """Causal attention probabilities (N, H, T, T) of an `Attention` over x (N, T, D): its own projection
    and weights (`Attention.attention_probs`: QK-norm, RoPE, grouped kv heads, soft-capping included)."""
    q, k, _ = attn.project(x, rope)
    return attn.attention_probs(q, k, causal=True)


@torch.no_grad()
def newest_frame_attention(model, packed: torch.Tensor, actions=None, act_mask=None) -> np.ndarray:
    """Time-attention weights of the last frame's spatial tokens, per layer with time attention:
    (n_time_layers, H, T) with the weight on frame j (0..T-1) averaged over windows and spatial slots.

    packed (B, T, S, D): the model's whole input (context frames and the new frame); the caller sets it
    up. Every frame is labelled as context except the last, which gets signal index 0 (pure noise) at
    the model's finest step size."""
    from dreamer4_torch.sampler import eval_mode
    from shared.shortcut import context_labels

    cfg = model.config
    B, T = packed.shape[:2]
    ctx_signal, ctx_step = context_labels(cfg.k_max)
    signal = torch.full((B, T), ctx_signal, dtype=torch.long)
    step = torch.full((B, T), ctx_step, dtype=torch.long)
    signal[:, -1] = 0
    found = []

    def hook(module, args, kwargs):
        x, rope = args[0], (args[1] if len(args) > 1 else kwargs.get("rope"))
        xs = x[:, :, model.spatial_slice]                     # (B, T, S_spatial, D)
        n, t, s, d = xs.shape
        xs = xs.permute(0, 2, 1, 3).reshape(n * s, t, d)
        probs = time_attention_probs(module.attn, xs, rope)    # (B*S, H, T, T)
        found.append(probs[:, :, -1].mean(0).cpu().numpy())

    layers = [layer for layer in model.transformer.layers if layer.has_time]
    handles = [layer.time.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    try:
        with eval_mode(model):
            model(packed, signal_idx=signal, step_idx=step, actions=actions, act_mask=act_mask)
    finally:
        for h in handles:
            h.remove()
    return np.stack(found)


def build_parser():
    return window_parser("python -m dreamer4_torch.eval attention", __doc__, 48,
                         "held-out windows, evenly spaced as the trainer's", "seed of the new frame's starting noise")


def main(argv=None) -> int:
    args, run = open_run(build_parser(), argv)

    from dreamer4_torch.train.common import encode_chunked, to_video
    from shared.data.windows import WindowSampler

    model, C = run.model, run.context
    sampler = WindowSampler(run.dataset, C + 1, episodes=run.heldout_episodes)
    batch = sampler.read(sampler.evenly_spaced(args.windows))
    with torch.no_grad():
        z = encode_chunked(run.tokenizer, to_video(torch.from_numpy(batch["frames"]), "cpu"), run.chunk).float()
    packed = model.pack(z)
    noise = torch.randn(packed[:, -1].shape, generator=torch.Generator().manual_seed(args.seed))
    packed = torch.cat([packed[:, :C], noise[:, None]], dim=1)
    weights = newest_frame_attention(model, packed, torch.from_numpy(batch["actions"]),
                                     torch.from_numpy(batch["action_mask"]))
    n = packed.shape[0]
    print(f"{args.run}, checkpoint {args.checkpoint}: time attention of the new frame (signal level 0) over "
          f"{C} clean context frames, {n} held-out windows\n")
    print("| layer | head | self | t-1 | t-2 | older |")
    print("|---|---|---|---|---|---|")
    time_layers = [i for i, layer in enumerate(model.transformer.layers) if layer.has_time]
    for layer, w in zip(time_layers, weights):
        for h, row in enumerate(w):
            older = row[:-3].sum() if row.shape[0] > 3 else 0.0
            prev2 = row[-3] if row.shape[0] > 2 else 0.0
            print(f"| {layer} | {h} | {row[-1]:.2f} | {row[-2]:.2f} | {prev2:.2f} | {older:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
