"""The JAX training loop shared by the tokenizer and dynamics trainers (dreamer4_torch/train/runner.py's shape).

A `Task` (tokenizer.py, dynamics.py) knows its model: its config and initial weights, how a window of
frames becomes the train step's inputs, and its evaluation. The loop here is generic: the optimizer
(optim.py: AdamW or Muon, clipping, warm-up + cosine), the jit step over all local devices
(trainer.py), the weights' moving average (`--ema-decay`), logging, checkpoints, resume and signals.

Data: window `s` of the run is batch `s` of dreamer4_jax.data.WindowBatches, a pure function of
(data, frames, batch size, seed, step), so the data position is just the step. The other draws (MAE
masks, shortcut indices, noise) come from the Trainer's numpy Generator and dropout from the model's
RNG streams, both in the training state; a run resumed at step k therefore repeats steps k+1..n exactly.

Run directory (the torch trainer's): RUN/options.json (the options this trainer takes, resolved),
RUN/metrics.jsonl ({"step", "time", "train" | "eval": {...}} per line, {"event": "resume"} on resume),
RUN/done.json when finished, RUN/checkpoints/step_XXXXXXX/ -- a native JAX checkpoint directory
(config.json, params/: the moving average when EMA is on, which dreamer4_jax.load_model reads) plus
train_state/ and train_state.json (Trainer.save) and options.json --, RUN/checkpoints/latest -> the
newest (a symlink replaced atomically), the newest `--keep-checkpoints` kept. SIGTERM/SIGINT finish
the current step, save and exit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.data.format import DatasetError, open_dataset
from shared.data.windows import split_episodes
from shared.io import CheckpointError, atomic_write_bytes
from shared.train_options import options_to_json, resume_changes

from ..data import WindowBatches
from .optim import OptimizerConfig, warmup_cosine
from .trainer import Trainer, params_by_name, params_from_names

CHECKPOINTS = "checkpoints"
OPTIONS_FILE = "options.json"
DONE_FILE = "done.json"


class TrainingError(RuntimeError):
    """A training run cannot continue (non-finite loss, inconsistent resume, ...)."""


class Task:
    """What a trainer provides to the loop. The base class opens the data set, splits off the held-out
    episodes and draws the training windows (`options.frames` frames each)."""

    kind: str
    config: Any                  # the model's shared config
    frames_per_batch: int

    def __init__(self, options):
        self.options = options
        self.dataset = open_dataset(options.data)
        self.train_episodes, self.heldout_episodes = split_episodes(
            self.dataset, holdout_per_task=options.holdout_per_task, seed=0)
        if len(self.heldout_episodes) == 0:
            raise SystemExit(f"error: {options.data} has no held-out episodes (--holdout-per-task "
                             f"{options.holdout_per_task}); collect at least 2 episodes per task")
        self.frames_per_batch = options.batch_size * options.frames
        self.batches: Optional[WindowBatches] = None

    def start_data(self, mesh, step: int) -> None:
        """Begin drawing training windows at `step`, sharded over `mesh`."""
        o = self.options
        self.batches = WindowBatches(self.dataset, o.frames, o.batch_size, seed=o.seed, episodes=self.train_episodes,
                                     start_step=step, mesh=mesh)

    def build_model(self):
        """The model with its initial weights (a function of --seed)."""
        raise NotImplementedError

    def trainer_options(self) -> dict:
        """Keyword arguments of Trainer (the loss's settings)."""
        return {}

    def loss_inputs(self, batch: dict, step: int) -> dict:
        """A batch of training windows (WindowBatches' arrays) -> the Trainer.train_step batch of step `step`."""
        raise NotImplementedError

    def evaluate(self, step: int, model) -> dict[str, float]:
        """Scalars of `model` (eval mode: the trained or averaged weights) on the held-out episodes."""
        raise NotImplementedError


def optimizer_config(options) -> OptimizerConfig:
    """The torch trainer's optimizer from the shared options: decay on the linear weights only."""
    return OptimizerConfig(lr=options.lr, b1=options.beta1, b2=options.beta2, weight_decay=options.weight_decay,
                           max_grad_norm=options.grad_clip if options.grad_clip > 0 else None, decay="weights",
                           kind=options.optimizer, warmup_steps=options.warmup_steps, total_steps=options.steps,
                           min_lr_ratio=options.min_lr_ratio)


@jax.jit
def _lerp(average, params, weight):
    return jax.tree_util.tree_map(lambda a, p: a + weight * (p - a), average, params)


class Ema:
    """The moving average of the trained parameters (dreamer4_torch/train/ema.py): after update n (from 1)
    average <- average + (1 - beta_n) (params - average), beta_n = min(decay, (1 + n) / (10 + n))."""

    def __init__(self, params, decay: float, updates: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = updates
        self.params = jax.tree_util.tree_map(jnp.copy, params)     # the train step donates its own buffers

    def update(self, params) -> None:
        self.updates += 1
        beta = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.params = _lerp(self.params, params, jnp.float32(1.0 - beta))


def evaluation_model(trainer: Trainer, ema: Optional[Ema]):
    """A model in eval mode holding the trained weights, or their average with EMA."""
    params = trainer.state.params if ema is None else ema.params
    return nnx.merge(trainer.graphdef, params, trainer.state.rest).eval()


class StopFlag:
    """Set by SIGTERM/SIGINT; a second signal gets the previous handler's behaviour."""

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handler
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Checkpointer:
    def __init__(self, run_dir: Path, keep: int):
        self.dir = Path(run_dir) / CHECKPOINTS
        self.keep = keep

    def latest(self) -> Optional[Path]:
        link = self.dir / "latest"
        return link.resolve() if link.exists() else None

    def save(self, step: int, trainer: Trainer, task: Task, options, ema: Optional[Ema]) -> Path:
        path = self.dir / f"step_{step:07d}"
        extra = {"data": task.batches.state_dict(), "ema_updates": None if ema is None else ema.updates}
        weights = None if ema is None else params_by_name(ema.params)
        trainer.save(path, extra, weights=weights,
                     files={OPTIONS_FILE: options_to_json(options, task.offered).encode()})
        # `latest` moves only once the step directory is complete, by renaming a new link over it.
        tmp_link = self.dir / f".latest.tmp-{os.getpid()}"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(path.name, tmp_link)
        os.replace(tmp_link, self.dir / "latest")
        for old in sorted(p for p in self.dir.glob("step_*") if p.is_dir())[:-self.keep]:
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def restore(self, task: Task, options) -> tuple[Trainer, Optional[Ema], int]:
        path = self.latest()
        if path is None:
            raise TrainingError(f"--resume: no checkpoint under {self.dir} (expected {self.dir / 'latest'})")
        # Continue with this run's optimizer settings (a longer --steps stretches the schedule, as in torch).
        trainer = Trainer.restore(path, opt=optimizer_config(options))
        if trainer.config != task.config:
            raise TrainingError(f"--resume: the checkpoint {path} was trained with a different model config; "
                                "resume with the run's own options (see its options.json)")
        updates = trainer.extra_state.get("ema_updates")
        if (options.ema_decay > 0) != (updates is not None):
            raise TrainingError(f"--resume: {path} was written with{'out' if options.ema_decay > 0 else ''} an EMA "
                                "of the weights; resume with the run's own --ema-decay (see its options.json)")
        ema = None
        if updates is not None:   # params/ holds the average, the training state the raw weights
            ema = Ema(params_from_names(trainer.state.params, trainer.checkpoint_weights), options.ema_decay,
                      updates=int(updates))
        task.start_data(trainer.mesh, trainer.step_count)
        task.batches.load_state_dict(trainer.extra_state["data"])
        return trainer, ema, trainer.step_count


class Logger:
    """RUN/metrics.jsonl and the console."""

    def __init__(self, run_dir: Path, resumed_at: Optional[int]):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
        if resumed_at is not None:
            self.jsonl.write(json.dumps({"event": "resume", "step": resumed_at, "time": time.time()}) + "\n")

    @staticmethod
    def info(message: str) -> None:
        print(message, flush=True)

    def scalars(self, group: str, values: dict, step: int) -> None:
        self.jsonl.write(json.dumps({"step": step, "time": time.time(), group: {k: float(v) for k, v in values.items()}})
                         + "\n")

    def progress(self, step: int, total: int, metrics: dict, elapsed: float) -> None:
        shown = [f"{k} {metrics[k]:.4g}" for k in ("loss", "mse", "flow_mse", "boot_mse", "grad_norm", "lr")
                 if k in metrics]
        eta = (total - step) / max(metrics["steps_per_s"], 1e-9)
        self.info(f"step {step}/{total} | " + " | ".join(shown) + f" | {metrics['steps_per_s']:.2f} it/s "
                  f"{metrics['frames_per_s']:.0f} frames/s | elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min")

    def close(self) -> None:
        self.jsonl.close()


def check_resume_options(options, fields: list[str]) -> None:
    """A resumed run must use the options it was started with (except those that change nothing computed)."""
    if not options.resume:
        return
    path = Path(options.out) / OPTIONS_FILE
    if not path.is_file():
        raise TrainingError(f"--resume: {path} does not exist; is {options.out} a run directory?")
    diff = resume_changes(options, json.loads(path.read_text()), fields)
    if diff:
        raise TrainingError("--resume with options that change the run: " + "; ".join(diff))


def train(task: Task, options) -> dict:
    """Run the loop; returns the last evaluation's scalars."""
    run_dir = Path(options.out)
    ckpt = Checkpointer(run_dir, options.keep_checkpoints)
    if options.resume:
        trainer, ema, start = ckpt.restore(task, options)
    else:
        trainer = Trainer(task.build_model(), optimizer_config(options), seed=options.seed, **task.trainer_options())
        ema = Ema(trainer.state.params, options.ema_decay) if options.ema_decay > 0 else None
        start = 0
        task.start_data(trainer.mesh, start)
    if options.batch_size % trainer.n_devices:
        raise SystemExit(f"error: --batch-size {options.batch_size} does not divide over the {trainer.n_devices} "
                         "devices")
    logger = Logger(run_dir, resumed_at=start if options.resume else None)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(trainer.state.params))
    logger.info(f"{task.kind}: {n_params:,} parameters, {trainer.n_devices} device(s) "
                f"({jax.devices()[0].platform}), {f'EMA {options.ema_decay}, ' if ema else ''}"
                f"{'resuming at step ' + str(start) if options.resume else 'from scratch'}; run dir {run_dir}")
    total, step, last_eval = options.steps, start, {}
    t_start = t_window = time.time()
    steps_window = 0
    with StopFlag() as stop:
        try:
            while step < total:
                metrics = trainer.train_step(task.loss_inputs(next(task.batches), step))
                if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):
                    raise TrainingError(
                        f"non-finite loss or gradient at step {step + 1} (loss={metrics['loss']}, grad norm="
                        f"{metrics['grad_norm']}); nothing of this step was saved. Lower --lr or check the data; "
                        f"the last good checkpoint is {ckpt.latest()}")
                if ema is not None:
                    ema.update(trainer.state.params)
                step += 1
                steps_window += 1
                out_of_time = options.max_minutes > 0 and time.time() - t_start > 60 * options.max_minutes
                stop_now = stop.requested or out_of_time
                final = step == total or stop_now
                if step % options.log_every == 0 or final:
                    dt = max(time.time() - t_window, 1e-9)
                    metrics.update(lr=options.lr * float(warmup_cosine(step, total, options.warmup_steps,
                                                                       options.min_lr_ratio)),
                                   steps_per_s=steps_window / dt,
                                   frames_per_s=steps_window * task.frames_per_batch / dt)
                    logger.scalars("train", metrics, step)
                    logger.progress(step, total, metrics, time.time() - t_start)
                    t_window, steps_window = time.time(), 0
                if step % options.eval_every == 0 or final:
                    t_eval = time.time()
                    last_eval = task.evaluate(step, evaluation_model(trainer, ema))
                    logger.scalars("eval", last_eval, step)
                    logger.info(f"eval @ {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in last_eval.items())
                                + f" ({time.time() - t_eval:.1f}s)")
                    t_window += time.time() - t_eval
                if step % options.ckpt_every == 0 or final:
                    t_ck = time.time()
                    path = ckpt.save(step, trainer, task, options, ema)
                    logger.info(f"checkpoint {path} ({time.time() - t_ck:.1f}s)")
                    t_window += time.time() - t_ck
                if stop_now:
                    why = "time limit (--max-minutes) reached" if not stop.requested else "stop signal"
                    logger.info(f"{why}: stopped after step {step}; continue with --resume")
                    break
            if step == total or not stop.requested:
                done = {"step": step, "steps": total, "reason": "steps" if step == total else "max_minutes",
                        "eval": last_eval, "minutes": (time.time() - t_start) / 60, "resumed_at": start}
                atomic_write_bytes(run_dir / DONE_FILE, (json.dumps(done, indent=2) + "\n").encode())
        finally:
            task.batches.close()
            logger.close()
    return last_eval


def run(task_class, options) -> int:
    """Check the run directory, record the options, build the task and train; 0 on success."""
    try:
        if not Path(options.data).exists():
            raise SystemExit(f"error: --data {options.data} does not exist; collect a data set with "
                             "`python -m shared.data.collect --tasks ... --out DIR`")
        check_resume_options(options, task_class.offered)
        out = Path(options.out)
        if not options.resume and (out / CHECKPOINTS / "latest").exists():
            raise SystemExit(f"error: {out} already holds a run; pass --resume to continue it, or choose another --out")
        task = task_class(options)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / OPTIONS_FILE, options_to_json(options, task.offered).encode())
        train(task, options)
        return 0
    except (CheckpointError, DatasetError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
