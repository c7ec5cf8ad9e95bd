"""Per-run summary: eval PSNR history, bottleneck saturation and spread across held-out images."""
import json, sys
from pathlib import Path
import numpy as np
import torch
from dreamer4_torch import load_model
from dreamer4_torch.tokenizer import bottleneck_pre
from shared.data.format import open_dataset
from shared.data.windows import split_episodes

data = sys.argv[1]
ds = open_dataset(data)
_, held = split_episodes(ds, holdout_per_task=1, seed=0)
frames = ds.frames if hasattr(ds, "frames") else ds._map("frames", "frames.u8", np.uint8)
idx = np.concatenate([np.arange(ds.episode_rows(int(e)).start, ds.episode_rows(int(e)).stop)[::40][:12] for e in held])
video = torch.from_numpy(np.asarray(frames[idx])).float().div(255).unsqueeze(1)  # (N,1,3,64,64)
dev = "cuda" if torch.cuda.is_available() else "cpu"
video = video.to(dev)
for run in [a for a in sys.argv[2:] if Path(a).is_dir()]:
    run = Path(run)
    evals = [(m["step"], round(m["eval"]["psnr"], 2)) for m in map(json.loads, open(run / "metrics.jsonl")) if "eval" in m]
    train = [m for m in map(json.loads, open(run / "metrics.jsonl")) if "eval" not in m and "loss" in json.dumps(m)]
    rate = round(train[-1]["train"]["frames_per_s"]) if train else None
    try:
        tok = load_model(run / "checkpoints" / "latest").to(dev).eval()
        pre = {}
        h = tok.encoder.bottleneck_proj.register_forward_hook(lambda m, i, o: pre.__setitem__("x", bottleneck_pre(o.detach(), tok.config)))
        with torch.no_grad():
            rec = tok.decode(tok.encode(video))
        h.remove()
        x = pre["x"].abs()
        sat = f"|pre| {x.mean():.2f} >2: {(x > 2).float().mean() * 100:.0f}%"
        spread = f"img std rec {rec.std(0).mean():.3f} gt {video.std(0).mean():.3f}"
        psnr = (-10 * torch.log10(((rec - video) ** 2).mean())).item()
    except Exception as e:  # noqa
        sat, spread, psnr = f"diag failed: {e}", "", float("nan")
    print(f"{run.name:14s} evals {evals} | diag psnr {psnr:.2f} | {sat} | {spread} | train fps {rate}", flush=True)
