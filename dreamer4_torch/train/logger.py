"""Metric sinks of a training run (rank 0 only): console, RUN_DIR/metrics.jsonl, TensorBoard
(RUN_DIR/tb, default), optional wandb (online or offline), and image/GIF files."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from . import distributed as D


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Logger:
    def __init__(self, run_dir: Path, world: D.World, options, resumed_at: Optional[int] = None):
        self.active = world.is_main
        self.run_dir = Path(run_dir)
        self.tb = None
        self.wandb = None
        if not self.active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "images").mkdir(exist_ok=True)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if resumed_at is not None:
            self.jsonl.write(json.dumps({"event": "resume", "step": resumed_at, "time": time.time()}) + "\n")
        if options.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.info("TensorBoard is not installed (pip install 'dreamer4[train]'); logging without it")
            else:
                self.tb = SummaryWriter(str(self.run_dir / "tb"))
        if options.wandb != "off":
            try:
                import wandb
            except ImportError as e:
                raise SystemExit("error: --wandb needs the wandb package (pip install wandb)") from e
            self.wandb = wandb.init(project=options.wandb_project, mode=options.wandb, dir=str(self.run_dir),
                                    config=vars(options), name=self.run_dir.name, resume="allow")

    def info(self, message: str) -> None:
        if self.active:
            print(message, flush=True)

    def progress(self, step: int, total: int, metrics: dict, steps_per_s: float, elapsed: float) -> None:
        if not self.active:
            return
        eta = (total - step) / max(steps_per_s, 1e-9)
        shown = [f"{k} {metrics[k]:.4g}" for k in ("loss", "mse", "flow_mse", "boot_mse", "grad_norm", "lr")
                 if k in metrics]
        print(f"step {step}/{total} | " + " | ".join(shown)
              + f" | {steps_per_s:.2f} it/s {metrics.get('frames_per_s', 0):.0f} frames/s"
              + f" | elapsed {_fmt_time(elapsed)} eta {_fmt_time(eta)}", flush=True)
        sys.stdout.flush()

    def scalars(self, group: str, values: dict, step: int) -> None:
        if not self.active or not values:
            return
        record = {"step": step, "time": time.time(), group: {k: float(v) for k, v in values.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{group}/{k}", float(v), step)
        if self.wandb is not None:
            self.wandb.log({f"{group}/{k}": float(v) for k, v in values.items()}, step=step)

    def images(self, images: dict, step: int) -> None:
        if not self.active or not images:
            return
        from PIL import Image
        for name, img in images.items():
            Image.fromarray(img).save(self.run_dir / "images" / f"{name}_{step:07d}.png")
            if self.tb is not None:
                self.tb.add_image(name, img, step, dataformats="HWC")
            if self.wandb is not None:
                import wandb
                self.wandb.log({name: wandb.Image(img)}, step=step)

    def gifs(self, gifs: dict, step: int) -> None:
        if not self.active or not gifs:
            return
        from PIL import Image
        for name, frames in gifs.items():
            pil = [Image.fromarray(f) for f in frames]
            path = self.run_dir / "images" / f"{name}_{step:07d}.gif"
            pil[0].save(path, save_all=True, append_images=pil[1:], duration=125, loop=0)
            if self.tb is not None:  # TensorBoard has no GIF without moviepy: log the frames as a strip
                self.tb.add_image(name + "_strip", np.concatenate(frames[:: max(1, len(frames) // 8)], axis=0),
                                  step, dataformats="HWC")

    def curves(self) -> None:
        """Redraw RUN_DIR/curves.png from metrics.jsonl (skipped without matplotlib)."""
        if not self.active:
            return
        try:
            from .plot import plot_run
        except ImportError:
            return
        self.jsonl.flush()
        try:
            plot_run(self.run_dir)
        except ImportError:
            pass

    def close(self) -> None:
        if not self.active:
            return
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
