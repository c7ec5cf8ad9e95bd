"""The training loop shared by the tokenizer and dynamics trainers.

One step: `grad_accum` micro-batches (gradient all-reduce only on the last, via no_sync), global
norm clipping, AdamW (or Muon + AdamW, optim.py), a warm-up + cosine learning rate. Every random
draw of step s on rank r comes from generators seeded with (seed, rank, s), so a run resumed at
step k repeats steps k+1..n exactly: the checkpoint stores model, optimizer, scheduler, step and data position
(and, with `--ema-decay`, the parameters' moving average, ema.py).

Checkpoints: RUN_DIR/checkpoints/step_XXXXXXX/ (a native checkpoint directory: config.json,
model.safetensors -- the moving average when EMA is on --, plus training_state.pt and options.json),
written atomically, with
RUN_DIR/checkpoints/latest -> the newest. SIGTERM/SIGINT finish the current step, save and exit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict,
    set_optimizer_state_dict,
)

from shared.config import TokenizerConfig, config_to_dict
from shared.io import CheckpointError, atomic_directory, atomic_write_bytes, write_config
from shared.train_options import options_to_json, resume_changes

from ..checkpoint import WEIGHTS_FILE, load_state
from . import distributed as D
from .ema import Ema
from .logger import Logger
from .optim import make_optimizer

STATE_FILE = "training_state.pt"
DONE_FILE = "done.json"
CHECKPOINTS = "checkpoints"


class TrainingError(RuntimeError):
    """A training run cannot continue (non-finite loss, inconsistent resume, ...)."""


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up from 1/warmup to 1, then cosine decay to min_ratio."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.default_rng([seed, rank, step]).integers(0, 2**62))


class StopFlag:
    """Set by SIGTERM/SIGINT; a second signal restores the default handler's behaviour."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Task:
    """What a trainer provides to the loop (see tokenizer.py and dynamics.py)."""

    kind: str
    model: nn.Module           # the raw model, on the device
    frames_per_batch: int      # frames consumed per micro-batch on this rank

    def micro_batches(self) -> Iterator[Any]:
        raise NotImplementedError

    def data_state(self) -> dict:
        raise NotImplementedError

    def load_data_state(self, state: dict) -> None:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, step: int, rng: np.random.Generator, gen: torch.Generator):
        raise NotImplementedError

    def evaluate(self, step: int, model: nn.Module):
        """Evaluate `model` (an unsharded copy of the trained model) on every rank.
        -> (scalars dict, images dict name -> HxWx3 uint8, gifs dict name -> list of frames)."""
        raise NotImplementedError


def evaluation_model(model: nn.Module, config, parallel: str, world: D.World, ema: Optional[Ema] = None) -> nn.Module:
    """The model to evaluate: itself, or a replica on every rank holding the moving average (with EMA)
    or, under FSDP, the unsharded weights (evaluation calls encode/decode and the sampler, which are not
    `forward`, so FSDP's gathering hooks would not run)."""
    if ema is None and (parallel != "fsdp" or not world.distributed):
        return model
    from ..checkpoint import build_model
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    if ema is not None:
        state = ema.full_state(state)
    replica = build_model(config).to(world.device)
    replica.load_state_dict({k: v.to(world.device) for k, v in state.items()})
    return replica


def _autocast(world: D.World, precision: str):
    enabled = precision == "bf16"
    return torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=enabled)


def resolve_precision(precision: str, world: D.World) -> str:
    if precision == "auto":
        return "bf16" if world.device.type == "cuda" else "fp32"
    return precision


class Checkpointer:
    def __init__(self, run_dir: Path, world: D.World, keep: int):
        self.dir = run_dir / CHECKPOINTS
        self.world = world
        self.keep = keep

    def latest(self) -> Optional[Path]:
        link = self.dir / "latest"
        if not link.exists():
            return None
        return link.resolve()

    def save(self, step: int, model: nn.Module, optimizer, scheduler, task: Task, options, config,
             ema: Optional[Ema] = None) -> Optional[Path]:
        digests = None
        if options.parallel == "ddp":
            # DDP replicas must be bit-identical; upstream's dynamics trainer silently let them drift.
            digests = D.replica_digests(model, self.world)
            if len(set(digests)) != 1:
                names = D.differing_parameters(model, self.world)
                shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
                raise TrainingError(f"parameters differ across ranks at step {step}: {shown} (replica digests "
                                    f"{', '.join(d[:12] for d in digests)}); the replicas drifted apart, so the "
                                    "gradients were not averaged; refusing to save")
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(model, options=opts)
        optim_state = get_optimizer_state_dict(model, optimizer, options=opts)
        averaged = None if ema is None else ema.full_state(model_state)     # a collective under FSDP
        path = self.dir / f"step_{step:07d}"
        if self.world.is_main:
            state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model_state.items()}
            training = {"step": step, "optimizer": optim_state, "scheduler": scheduler.state_dict(),
                        "data": task.data_state(), "world_size": self.world.world_size,
                        "replica_digests": digests,
                        "config": config_to_dict(config)}
            if ema is not None:
                # the weights file holds the average (for every reader); the raw weights resume training
                training.update(model=state, ema_updates=ema.updates)
                state = averaged
            with atomic_directory(path) as tmp:
                write_config(tmp, config)
                save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "dreamer4", "kind": config.kind,
                                                                   "step": str(step)})
                torch.save(training, tmp / STATE_FILE)
                (tmp / "options.json").write_text(options_to_json(options))
            tmp_link = self.dir / f".latest.tmp-{os.getpid()}"
            if tmp_link.is_symlink() or tmp_link.exists():
                tmp_link.unlink()
            os.symlink(path.name, tmp_link)
            os.replace(tmp_link, self.dir / "latest")
            steps = sorted(p for p in self.dir.glob("step_*") if p.is_dir())
            for old in steps[:-self.keep]:
                if old != path:
                    import shutil
                    shutil.rmtree(old, ignore_errors=True)
        D.barrier(self.world)
        return path

    def restore(self, model: nn.Module, optimizer, scheduler, task: Task, config, ema: Optional[Ema] = None) -> int:
        path = self.latest()
        if path is None:
            raise TrainingError(f"--resume: no checkpoint under {self.dir} (expected {self.dir / 'latest'})")
        saved_cfg, state = load_state(path)
        if saved_cfg != config and not predates_clip_frames(saved_cfg, config):
            raise TrainingError(f"--resume: the checkpoint {path} was trained with a different model config; "
                                "resume with the run's own options (see its options.json)")
        state_file = path / STATE_FILE
        if not state_file.is_file():
            raise CheckpointError(f"{state_file} is missing: {path} cannot be resumed")
        try:        # tensors and plain values only: a file carrying code is refused, never run
            training = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
            raise CheckpointError(f"{state_file} cannot be read as a training state ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else 'no detail'}); it is truncated, "
                                  "corrupt or holds more than tensors and plain values") from e
        if training["world_size"] != self.world.world_size:
            raise TrainingError(f"--resume: {path} was written by {training['world_size']} processes, this run "
                                f"has {self.world.world_size}; exact resumption needs the same number")
        opts = StateDictOptions(full_state_dict=True)
        if (ema is not None) != ("ema_updates" in training):
            raise TrainingError(f"--resume: {path} was written with{'out' if ema is not None else ''} an EMA of the "
                                "weights; resume with the run's own --ema-decay (see its options.json)")
        set_model_state_dict(model, state, options=opts)
        if ema is not None:       # `state` is the average: take it, then put the raw weights in the model
            ema.take(model, updates=int(training["ema_updates"]))
            set_model_state_dict(model, training["model"], options=opts)
        set_optimizer_state_dict(model, optimizer, training["optimizer"], options=opts)
        scheduler.load_state_dict(training["scheduler"])
        task.load_data_state(training["data"])
        return int(training["step"])


def predates_clip_frames(saved, config) -> bool:
    """A tokenizer checkpoint written before configs recorded the training clip length (clip_frames None)
    that is otherwise the run's config: resuming it is exact (the field changes no parameter or loss),
    and the checkpoints written from then on carry the clip length."""
    return (isinstance(saved, TokenizerConfig) and saved.clip_frames is None
            and dataclasses.replace(saved, clip_frames=getattr(config, "clip_frames", None)) == config)


def train(task: Task, options, config, world: D.World) -> dict:
    """Run the loop; returns the last evaluation's scalars."""
    run_dir = Path(options.out)
    precision = resolve_precision(options.precision, world)
    if options.deterministic:
        torch.use_deterministic_algorithms(True)
    model = task.model
    forward_model = torch.compile(model) if options.compile else model
    wrapped = D.wrap(forward_model, world, options.parallel) if options.parallel == "ddp" else \
        D.wrap(model, world, options.parallel)
    optimizer = make_optimizer(model, options.optimizer, options.lr, options.weight_decay,
                               betas=(options.beta1, options.beta2))
    total = options.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, options.warmup_steps, options.min_lr_ratio))
    ckpt = Checkpointer(run_dir, world, options.keep_checkpoints)
    ema = Ema(model, options.ema_decay) if options.ema_decay > 0 else None     # after wrap: FSDP's shards
    start = ckpt.restore(model, optimizer, scheduler, task, config, ema) if options.resume else 0
    logger = Logger(run_dir, world, options, resumed_at=start if options.resume else None)
    logger.info(f"{task.kind}: {sum(p.numel() for p in model.parameters()):,} parameters, "
                f"{world.world_size} process(es) on {world.device}, {precision}, {options.parallel}, "
                f"{f'EMA {options.ema_decay}, ' if ema is not None else ''}"
                f"{'resuming at step ' + str(start) if options.resume else 'from scratch'}; run dir {run_dir}")
    stop = StopFlag().install()
    batches = task.micro_batches()
    last_eval: dict = {}
    t_start = time.time()
    t_window, steps_window, frames_window = time.time(), 0, 0
    step = start
    try:
        while step < total:
            seed = step_seed(options.seed, world.rank, step)
            torch.manual_seed(seed)                                  # dropout
            rng = np.random.default_rng(seed)                        # shortcut indices, action dropping
            gen = torch.Generator(world.device).manual_seed(seed)    # masks and noise
            model.train()
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for micro in range(options.grad_accum):
                batch = next(batches)
                with D.no_sync(wrapped, micro == options.grad_accum - 1), _autocast(world, precision):
                    loss, metrics = task.loss(wrapped, batch, step, rng, gen)
                (loss / options.grad_accum).backward()
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v) / options.grad_accum
            if options.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip))
            else:
                grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()
                                                                 if p.grad is not None]))
            out_of_time = options.max_minutes > 0 and (time.time() - t_start) > 60 * options.max_minutes
            bad, stop_now = D.any_rank([not (math.isfinite(sums["loss"]) and math.isfinite(grad_norm)),
                                        stop.requested or out_of_time], world)
            if bad:
                raise TrainingError(
                    f"non-finite loss or gradient at step {step + 1} (loss={sums['loss']}, grad norm={grad_norm}) "
                    f"on at least one process; the parameters were not updated. Lower --lr or check the data; "
                    f"the last good checkpoint is {ckpt.latest()}")
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            step += 1
            steps_window += 1
            frames_window += task.frames_per_batch * options.grad_accum * world.world_size
            if step % options.log_every == 0 or step == total or stop_now:
                sums.update(grad_norm=grad_norm)
                means = D.all_reduce_mean(sums, world)
                dt = max(time.time() - t_window, 1e-9)
                rate = steps_window / dt
                means.update(lr=scheduler.get_last_lr()[0], steps_per_s=rate, frames_per_s=frames_window / dt)
                logger.scalars("train", means, step)
                logger.progress(step, total, means, rate, time.time() - t_start)
                t_window, steps_window, frames_window = time.time(), 0, 0
            final = step == total or stop_now
            if step % options.eval_every == 0 or final:
                t_eval = time.time()
                scalars, images, gifs = task.evaluate(step, evaluation_model(model, config, options.parallel, world, ema))
                last_eval = scalars
                logger.scalars("eval", scalars, step)
                logger.images(images, step)
                logger.gifs(gifs, step)
                logger.info(f"eval @ {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in scalars.items())
                            + f" ({time.time() - t_eval:.1f}s)")
                logger.curves()
                t_window += time.time() - t_eval
            if step % options.ckpt_every == 0 or final:
                t_ck = time.time()
                path = ckpt.save(step, model, optimizer, scheduler, task, options, config, ema)
                logger.info(f"checkpoint {path} ({time.time() - t_ck:.1f}s)")
                t_window += time.time() - t_ck
            if stop_now:
                why = "time limit (--max-minutes) reached" if out_of_time and not stop.requested else "stop signal"
                logger.info(f"{why}: stopped after step {step}; continue with --resume")
                break
        if world.is_main and (step == total or not stop.requested):
            # Finished (all steps, or the time budget): pipelines such as the quickstart skip this run next time.
            # "minutes" counts this process only, which began at step "resumed_at" (0 unless --resume).
            done = {"step": step, "steps": total, "reason": "steps" if step == total else "max_minutes",
                    "eval": last_eval, "minutes": (time.time() - t_start) / 60, "resumed_at": start}
            atomic_write_bytes(run_dir / DONE_FILE, (json.dumps(done, indent=2) + "\n").encode())
    finally:
        stop.restore()
        logger.close()
    return last_eval


def record_options(options, world: D.World) -> None:
    """Write RUN_DIR/options.json (all options, resolved) before training starts."""
    if not world.is_main:
        return
    run_dir = Path(options.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "options.json", options_to_json(options).encode())


def check_resume_options(options, world: D.World) -> None:
    """A resumed run must use the options it was started with (except --resume and the time limit)."""
    path = Path(options.out) / "options.json"
    if not options.resume:
        return
    if not path.is_file():
        raise TrainingError(f"--resume: {path} does not exist; is {options.out} a run directory?")
    saved = json.loads(path.read_text())
    saved.setdefault("optimizer", "adamw")          # runs recorded before --optimizer existed used AdamW
    saved.setdefault("ema_decay", 0.0)              # and before --ema-decay, no average
    diff = resume_changes(options, saved)
    if diff:
        raise TrainingError("--resume with options that change the run: " + "; ".join(diff))
