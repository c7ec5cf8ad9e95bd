"""Dynamics trainer (JAX): shortcut forcing on packed latents of a frozen JAX tokenizer, evaluated by
open-loop rollouts from held-out contexts against the repeat-the-last-frame floor
(dreamer4_torch/train/dynamics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from shared.data.windows import WindowSampler
from shared.io import CheckpointError
from shared.train_options import check_frame_size, dynamics_config_from

from ..checkpoint import PARAMS_DIR, load_model
from ..dynamics import Dynamics, pack, unpack
from ..sampler import rollout
from .options import offered as offered_fields
from .runner import Task
from .tokenizer import decode_latents, encode_frames, frame_mse, psnr

EVAL_HORIZONS = (1, 4, 8, 16)
TORCH_WEIGHTS = "model.safetensors"


def load_tokenizer(directory: str):
    """The frozen tokenizer of --tokenizer (a native JAX checkpoint), with a clear error for a PyTorch one."""
    path = Path(directory)
    if (path / TORCH_WEIGHTS).is_file() and not (path / PARAMS_DIR).exists():
        raise SystemExit(f"error: --tokenizer {directory} is a PyTorch checkpoint ({TORCH_WEIGHTS}); the JAX "
                         f"trainer needs a JAX one (config.json + {PARAMS_DIR}/). Convert it with "
                         f"`python -m convert torch-to-jax {directory} DST` and pass --tokenizer DST")
    try:
        return load_model(path, kind="tokenizer")
    except CheckpointError as e:
        raise SystemExit(f"error: --tokenizer: {e}") from e


def tokenizer_clip_frames(tokenizer, directory: str, default: int) -> int:
    """The clip length the tokenizer was trained on: its config's, else its run's options.json (`frames`),
    else `default`."""
    clip = getattr(tokenizer.config, "clip_frames", None)
    if clip:
        return int(clip)
    record = Path(directory) / "options.json"
    try:
        return int(json.loads(record.read_text())["frames"])
    except (OSError, KeyError, ValueError, TypeError):
        return default


class DynamicsTask(Task):
    kind = "dynamics"
    offered = offered_fields("dynamics")

    def __init__(self, options):
        super().__init__(options)
        self.tokenizer = load_tokenizer(options.tokenizer)
        tok_cfg = self.tokenizer.config
        self.config = dynamics_config_from(options, tok_cfg)
        check_frame_size(self.dataset, tok_cfg, options.data)
        # Never run the tokenizer on clips longer than it was trained on.
        self.chunk = tokenizer_clip_frames(self.tokenizer, options.tokenizer, options.frames)
        self.eval_sampler = WindowSampler(self.dataset, options.eval_context + options.eval_horizon,
                                          episodes=self.heldout_episodes)
        self.eval_windows = self.eval_sampler.evenly_spaced(options.eval_sequences)
        self.eval_noise_seed = 1234      # the rollouts' starting noise: the same every evaluation

    def build_model(self) -> Dynamics:
        return Dynamics(self.config, rngs=nnx.Rngs(self.options.seed))

    def trainer_options(self) -> dict:
        return {"bootstrap_start": self.options.bootstrap_start, "bootstrap_fraction": self.options.bootstrap_fraction}

    def loss_inputs(self, batch: dict, step: int) -> dict:
        inputs = {"latents": encode_frames(self.tokenizer, batch["frames"], self.chunk)}
        # A fraction of the steps is trained without actions (the base token only); the draw is a
        # function of (seed, step), so a resumed run makes the same one.
        fraction = self.options.unconditional_fraction
        if not (fraction > 0 and np.random.default_rng([self.options.seed, 1, step]).random() < fraction):
            inputs.update(actions=batch["actions"], act_mask=batch["action_mask"])
        return inputs

    def evaluate(self, step: int, model: Dynamics) -> dict[str, float]:
        o = self.options
        C, H = o.eval_context, o.eval_horizon
        batch = self.eval_sampler.read(self.eval_windows)
        video = batch["frames"].astype(np.float32) / 255.0                  # (b, C + H, 3, h, w)
        z = encode_frames(self.tokenizer, batch["frames"], self.chunk)
        p = self.config.packing_factor
        # Compiled, uncached passes: one compilation per horizon step, reused by every later evaluation
        # (the cached sampler computes the same function, but compiles about two passes per frame).
        pred = rollout(model, pack(z[:, :C], p), batch["actions"], batch["action_mask"], H,
                       n_steps=o.eval_sampling_steps, noise=self.eval_noise_seed, use_cache=False, jit=True)
        pred_video = jax.device_get(decode_latents(self.tokenizer, unpack(pred, p), self.chunk))
        recon_video = jax.device_get(decode_latents(self.tokenizer, z, self.chunk))
        target = video[:, C:]
        last = np.broadcast_to(video[:, C - 1:C], target.shape)
        mse = {"psnr": frame_mse(pred_video, target),                         # (b, H) each
               "floor": frame_mse(last, target),
               "tokenizer": frame_mse(recon_video[:, C:], target),
               # the trivial latent model: repeat the last context frame's code (decoded)
               "copy_latent": frame_mse(np.broadcast_to(recon_video[:, C - 1:C], target.shape), target)}
        per_h = {name: m.mean(0) for name, m in mse.items()}                 # (H,): pooled over sequences
        scalars = {}
        for h in [h for h in EVAL_HORIZONS if h <= H]:
            for name in mse:
                scalars[f"{name}_h{h}"] = float(psnr(per_h[name][h - 1]))
            scalars[f"gain_h{h}"] = scalars[f"psnr_h{h}"] - scalars[f"floor_h{h}"]
        scalars["psnr_all"] = float(psnr(per_h["psnr"].mean()))
        scalars["gain_all"] = scalars["psnr_all"] - float(psnr(per_h["floor"].mean()))
        return scalars
