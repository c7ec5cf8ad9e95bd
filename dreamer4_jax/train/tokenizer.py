"""Tokenizer trainer (JAX): masked autoencoding of short clips, evaluated by full-frame PSNR on held-out
episodes (dreamer4_torch/train/tokenizer.py without the LPIPS term)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.data.windows import WindowSampler
from shared.train_options import check_frame_size, tokenizer_config_from

from ..tokenizer import Tokenizer
from .options import offered as offered_fields
from .runner import Task


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _encode(graphdef, state, frames):
    return nnx.merge(graphdef, state).encode(frames.astype(jnp.float32) / 255.0)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _decode(graphdef, state, z):
    return nnx.merge(graphdef, state).decode(z)


def encode_frames(tokenizer: Tokenizer, frames, chunk: int) -> jax.Array:
    """uint8 frames (B, T, 3, H, W) -> latents (B, T, n_latents, d_bottleneck), encoded in consecutive
    clips of at most `chunk` frames (the tokenizer's training clip length: its time positions beyond
    that were never trained)."""
    graphdef, state = nnx.split(tokenizer)
    return jnp.concatenate([_encode(graphdef, state, frames[:, s:s + chunk])
                            for s in range(0, frames.shape[1], chunk)], axis=1)


def decode_latents(tokenizer: Tokenizer, z, chunk: int) -> jax.Array:
    """Latents (B, T, n_latents, d_bottleneck) -> video (B, T, 3, H, W) in [0, 1], in clips of `chunk`."""
    graphdef, state = nnx.split(tokenizer)
    return jnp.concatenate([_decode(graphdef, state, z[:, s:s + chunk]) for s in range(0, z.shape[1], chunk)],
                           axis=1)


def frame_mse(video, target: np.ndarray) -> np.ndarray:
    """Per-frame mean squared error of (..., C, H, W) images in [0, 1] (the prediction clipped) -> (...)."""
    diff = np.clip(np.asarray(video, np.float64), 0.0, 1.0) - np.asarray(target, np.float64)
    return (diff ** 2).reshape(diff.shape[:-3] + (-1,)).mean(-1)


def psnr(mse) -> np.ndarray:
    """PSNR in dB of a mean squared error of images in [0, 1]."""
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))


class TokenizerTask(Task):
    kind = "tokenizer"
    offered = offered_fields("tokenizer")

    def __init__(self, options):
        super().__init__(options)
        self.config = tokenizer_config_from(options)
        check_frame_size(self.dataset, self.config, options.data)
        # Fixed held-out clips, spread over all held-out windows (the same every evaluation).
        self.eval_sampler = WindowSampler(self.dataset, options.frames, episodes=self.heldout_episodes)
        self.eval_windows = self.eval_sampler.evenly_spaced(options.eval_sequences)

    def build_model(self) -> Tokenizer:
        return Tokenizer(self.config, rngs=nnx.Rngs(self.options.seed))

    def trainer_options(self) -> dict:
        return {"mse_on": self.options.mse_on, "contrast_weight": self.options.contrast_weight}

    def loss_inputs(self, batch: dict, step: int) -> dict:
        return {"video": np.asarray(batch["frames"], np.float32) / 255.0}

    def evaluate(self, step: int, model: Tokenizer) -> dict[str, float]:
        frames = self.eval_sampler.read(self.eval_windows)["frames"]
        target = frames.astype(np.float32) / 255.0
        recon = decode_latents(model, encode_frames(model, frames, self.options.frames), self.options.frames)
        mse = frame_mse(jax.device_get(recon), target)                   # (b, T)
        # Headline: PSNR of the MSE pooled over all held-out frames (upstream's convention).
        return {"psnr": float(psnr(mse.mean())), "mse": float(mse.mean()),
                "psnr_frame_mean": float(psnr(mse).mean())}
