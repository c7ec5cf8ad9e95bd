"""Does the tokenizer's code depend on the frame? Per held-out episode, and between tasks.

    PYTHONPATH=. python experiments/tokenizer_sweep/code_spread.py DATA_DIR TOKENIZER_CHECKPOINT [--frames 24]

For the held-out episode of every task (the trainer's split: one per task, seed 0) it encodes
--frames frames spread over the episode and prints: the standard deviation of the latents across
those frames (0 = the same code for every frame), the same for the pixels of the input and of the
reconstruction, the reconstruction PSNR, and the PSNR of predicting every frame by the episode's mean
image (a tokenizer below that line has learned less than the episode's average). Then the mean absolute
difference between the tasks' average codes (0 = the encoder cannot tell the tasks apart), and per
encoder layer: the share of the latent queries' space attention that goes to patch tokens, and how
much the layer's patch and latent outputs vary across the frames.
"""

from __future__ import annotations

import argparse
import math
import types

import numpy as np
import torch

from dreamer4_torch import load_model
from shared.data.format import open_dataset
from shared.data.windows import split_episodes


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def watch_encoder(tok) -> dict:
    """Record, per encoder layer, the latent queries' attention share on patches and the layer output."""
    seen: dict = {}
    n_lat = tok.config.n_latents
    for i, layer in enumerate(tok.encoder.transformer.layers):
        layer.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(("out", i), out.detach()))
        attn = [m for m in layer.modules() if type(m).__name__ == "SpaceAttention"][0].attn
        plain = attn.attend

        def attend(self, q, k, v, mask=None, causal=False, i=i, plain=plain):
            logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            seen[("share", i)] = float(logits.softmax(-1)[:, :, :n_lat, n_lat:].sum(-1).mean())
            return plain(q, k, v, mask=mask, causal=causal)

        attn.attend = types.MethodType(attend, attn)
    return seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="data set directory (the one the tokenizer was trained on)")
    ap.add_argument("checkpoint", help="tokenizer checkpoint directory, e.g. RUN/checkpoints/latest")
    ap.add_argument("--frames", type=int, default=24, help="frames per held-out episode (default 24)")
    args = ap.parse_args(argv)
    if args.frames < 2:
        ap.error(f"--frames must be >= 2 (a spread needs two frames), got {args.frames}")
    try:
        ds = open_dataset(args.data)
        tok = load_model(args.checkpoint).eval()
    except (OSError, ValueError) as e:       # DatasetError / CheckpointError: the message names the path
        ap.error(str(e))
    if not hasattr(tok, "encoder"):
        ap.error(f"{args.checkpoint} is not a tokenizer checkpoint")
    _, held = split_episodes(ds, holdout_per_task=1, seed=0)
    frames = ds._map("frames", "frames.u8", np.uint8)
    task_of_frame = ds.frame_task_id
    seen = watch_encoder(tok)
    n_lat, layers = tok.config.n_latents, len(tok.encoder.transformer.layers)
    codes, per_layer = {}, {}
    print("| task | latent std over frames | pixel std over frames: input | reconstruction | "
          "reconstruction PSNR | episode-mean-image PSNR |")
    print("|---|---|---|---|---|---|")
    for e in held:
        rows = ds.episode_rows(int(e))
        idx = np.linspace(rows.start, rows.stop - 1, args.frames).astype(int)
        video = torch.from_numpy(np.asarray(frames[idx])).float().div(255).unsqueeze(1)   # (N, 1, C, H, W)
        with torch.no_grad():
            z = tok.encode(video)
            rec = tok.decode(z)
        task = ds.tasks[ds.task_ids.index(int(task_of_frame[rows.start]))]
        codes[task] = z.mean(0)
        per_layer[task] = [(seen[("share", i)], float(seen[("out", i)][:, :, n_lat:].std(0).mean()),
                            float(seen[("out", i)][:, :, :n_lat].std(0).mean())) for i in range(layers)]
        print(f"| {task} | {z.std(0).mean():.4f} | {video.std(0).mean():.4f} | {rec.std(0).mean():.4f} | "
              f"{psnr(rec, video):.2f} | {psnr(video.mean(0, keepdim=True).expand_as(video), video):.2f} |")
    names = list(codes)
    print("\nmean |difference| between the tasks' average codes")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for a in names:
        print(f"| {a} | " + " | ".join(f"{(codes[a] - codes[b]).abs().mean():.3f}" for b in names) + " |")
    print("\nper encoder layer: latent queries' attention share on patches / std over frames of the patch "
          "outputs / of the latent outputs")
    print("| task | " + " | ".join(f"layer {i}" for i in range(layers)) + " |")
    print("|---|" + "---|" * layers)
    for a in names:
        print(f"| {a} | " + " | ".join(f"{sh:.2f} / {sp:.3f} / {sl:.3f}" for sh, sp, sl in per_layer[a]) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
