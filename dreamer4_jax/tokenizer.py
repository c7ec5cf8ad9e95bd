"""Causal video tokenizer: Encoder (patches -> tanh-bottleneck latents), Decoder (latents -> patches).

The Flax NNX mirror of dreamer4_torch/tokenizer.py.
Video contract: (B, T, C, H, W) float in [0, 1]. Latents z: (B, T, n_latents, d_bottleneck) in (-1, 1).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.clips import by_clip
from shared.config import TokenizerConfig
from shared.layout import Modality, space_mask, tokenizer_layout
from shared.patchify import patch_layout
from shared.values import check_values

from .contracts import check_dtype, check_shape, value_range
from .init import build_checked
from .layers import BlockCausalTransformer, Module, add_positions, host_zeros, linear, rng_stream


def patchify(video: jax.Array, patch_size: int) -> jax.Array:
    """(..., C, H, W) -> (..., Np, C*p*p) in shared.patchify's layout (F.unfold's)."""
    *lead, C, H, W = video.shape
    layout = patch_layout(tuple(lead), C, H, W, patch_size)
    return video.reshape(layout.frame_split).transpose(layout.to_patches).reshape(layout.patches_shape)


def unpatchify(patches: jax.Array, height: int, width: int, channels: int, patch_size: int) -> jax.Array:
    """Exact inverse of patchify: (..., Np, C*p*p) -> (..., C, H, W)."""
    layout = patch_layout(tuple(patches.shape[:-2]), channels, height, width, patch_size)
    return patches.reshape(layout.patch_split).transpose(layout.to_frames).reshape(layout.frames_shape)


def join_frames(parts: list[jax.Array]) -> jax.Array:
    """Concatenate on the time axis (axis 1): how shared.clips.by_clip joins chunks."""
    return jnp.concatenate(parts, axis=1)


def check_video(video, cfg: TokenizerConfig, name: str = "video") -> None:
    expected = (cfg.channels, cfg.image_height, cfg.image_width)
    if not isinstance(video, (jax.Array, np.ndarray)):
        raise TypeError(f"{name} must be a jax or numpy array, got {type(video).__name__}")
    check_shape(name, video, ("B", "T", *expected), " for this tokenizer")
    check_dtype(name, video, float, "a float array in [0, 1]",
                " (convert uint8 frames with video.astype(jnp.float32) / 255)")


class MAE(Module):
    """Masked-autoencoding replacement of projected patch tokens by a learned mask token."""

    def __init__(self, d_model: int, p_min: float, p_max: float, rngs: nnx.Rngs):
        self.p_min, self.p_max = float(p_min), float(p_max)
        self.mask_token = nnx.Param(host_zeros(None, (d_model,)))
        self.rngs = rng_stream(rngs, "mae") if self.p_max > 0.0 else None

    def draw_keep_mask(self, batch: int, frames: int, n_patches: int, key: Optional[jax.Array] = None) -> jax.Array:
        """(B, T, Np) bool, True = patch kept: per (b, t) p ~ U(p_min, p_max), keep with prob 1 - p.
        `key` defaults to the module's `mae` stream."""
        if key is None:
            if self.rngs is None:
                raise ValueError("this MAE has p_max = 0 and no 'mae' stream: pass a key to draw a keep mask")
            key = self.rngs()
        k_p, k_keep = jax.random.split(key)
        u = jax.random.uniform(k_p, (batch, frames, 1))
        p = self.p_min + (self.p_max - self.p_min) * u
        return jax.random.uniform(k_keep, (batch, frames, n_patches)) >= p

    def __call__(self, tokens: jax.Array, keep_mask: jax.Array) -> jax.Array:
        return jnp.where(keep_mask[..., None], tokens, self.mask_token[...].astype(tokens.dtype))


def bottleneck_pre(h: jax.Array, cfg: TokenizerConfig) -> jax.Array:
    """The pre-tanh bottleneck values: unit-RMS per latent when cfg.bottleneck_norm (eps as RMSNorm's)."""
    if not cfg.bottleneck_norm:
        return h
    return h / jnp.sqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + 1e-6)


class Encoder(Module):
    def __init__(self, cfg: TokenizerConfig, rngs: nnx.Rngs):
        tf = cfg.transformer
        self.config = cfg
        layout = tokenizer_layout(cfg)
        self.patch_proj = linear(cfg.d_patch, tf.d_model, rngs)
        self.bottleneck_proj = linear(tf.d_model, cfg.d_bottleneck, rngs)
        self.transformer = BlockCausalTransformer(tf, space_mask(layout, "encoder"),
                                                  n_time_slots=layout.count(Modality.LATENT), rngs=rngs)
        self.mae = MAE(tf.d_model, cfg.mae_p_min, cfg.mae_p_max, rngs)
        self.latents = nnx.Param(host_zeros(None, (cfg.n_latents, tf.d_model)))

    def __call__(self, patches: jax.Array, keep_mask: Optional[jax.Array] = None) -> jax.Array:
        """patches (B, T, Np, Dp) -> z (B, T, n_latents, d_bottleneck).

        keep_mask (B, T, Np) bool replaces dropped patch tokens by the mask token; None keeps all.
        """
        B, T = patches.shape[:2]
        tokens = self.patch_proj(patches)
        if keep_mask is not None:
            tokens = self.mae(tokens, keep_mask)
        lat = jnp.broadcast_to(self.latents[...].astype(tokens.dtype), (B, T) + self.latents.shape)
        x = add_positions(jnp.concatenate([lat, tokens], axis=2), self.config.transformer)
        x = self.transformer(x)
        return jnp.tanh(bottleneck_pre(self.bottleneck_proj(x[:, :, : self.config.n_latents]), self.config))


class Decoder(Module):
    def __init__(self, cfg: TokenizerConfig, rngs: nnx.Rngs):
        tf = cfg.transformer
        self.config = cfg
        layout = tokenizer_layout(cfg)
        self.up_proj = linear(cfg.d_bottleneck, tf.d_model, rngs)
        self.patch_queries = nnx.Param(host_zeros(None, (cfg.n_patches, tf.d_model)))
        self.patch_head = linear(tf.d_model, cfg.d_patch, rngs)
        self.transformer = BlockCausalTransformer(tf, space_mask(layout, "decoder"),
                                                  n_time_slots=layout.count(Modality.LATENT), rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        """z (B, T, n_latents, d_bottleneck) -> patches (B, T, Np, Dp) in (0, 1)."""
        B, T, L, _ = z.shape
        lat = jnp.tanh(self.up_proj(z))
        queries = jnp.broadcast_to(self.patch_queries[...].astype(lat.dtype), (B, T) + self.patch_queries.shape)
        x = add_positions(jnp.concatenate([lat, queries], axis=2), self.config.transformer)
        x = self.transformer(x)
        return jax.nn.sigmoid(self.patch_head(x[:, :, L:]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TokenizerOutput:
    z: jax.Array            # (B, T, n_latents, d_bottleneck)
    recon: jax.Array        # (B, T, Np, Dp) predicted patches in (0, 1)
    target: jax.Array       # (B, T, Np, Dp) input patches
    keep_mask: jax.Array    # (B, T, Np) bool, True where the encoder saw the patch


class Tokenizer(Module):
    """Encoder + decoder. `rngs` supplies the `params` stream (initialisation), and the `dropout` and
    `mae` streams used in training mode (a plain nnx.Rngs(seed) serves all three)."""

    def __init__(self, cfg: TokenizerConfig, *, rngs: Optional[nnx.Rngs] = None):
        cfg.validate()
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.config = cfg
        self.deterministic = False      # training mode, as a fresh torch module
        self.encoder = Encoder(cfg, rngs)
        self.decoder = Decoder(cfg, rngs)
        build_checked(self, cfg, rngs)

    @property
    def training(self) -> bool:
        return not self.deterministic

    def patchify(self, video: jax.Array) -> jax.Array:
        return patchify(video, self.config.patch_size)

    def unpatchify(self, patches: jax.Array) -> jax.Array:
        c = self.config
        return unpatchify(patches, c.image_height, c.image_width, c.channels, c.patch_size)

    def draw_keep_mask(self, batch: int, frames: int, key: Optional[jax.Array] = None) -> jax.Array:
        return self.encoder.mae.draw_keep_mask(batch, frames, self.config.n_patches, key)

    def __call__(self, video: jax.Array, keep_mask: Optional[jax.Array] = None) -> TokenizerOutput:
        """Masked autoencoding pass. keep_mask (B, T, Np) bool; when None it is drawn in training mode
        (p ~ U(mae_p_min, mae_p_max), from the `mae` stream) and all-true in eval mode."""
        check_video(video, self.config)
        B, T = video.shape[:2]
        target = self.patchify(jnp.asarray(video))
        if keep_mask is None:
            if self.training and self.config.mae_p_max > 0.0:
                keep_mask = self.draw_keep_mask(B, T)
            else:
                keep_mask = jnp.ones((B, T, self.config.n_patches), dtype=bool)
        elif tuple(keep_mask.shape) != (B, T, self.config.n_patches) or keep_mask.dtype != jnp.bool_:
            raise ValueError(f"keep_mask must be a bool array of shape ({B}, {T}, {self.config.n_patches}), "
                             f"got {keep_mask.dtype} {tuple(keep_mask.shape)}")
        z = self.encoder(target, keep_mask)
        return TokenizerOutput(z=z, recon=self.decoder(z), target=target, keep_mask=jnp.asarray(keep_mask))

    def encode(self, video: jax.Array, keep_mask: Optional[jax.Array] = None) -> jax.Array:
        """video (B, T, C, H, W) float in [0, 1] -> z (B, T, n_latents, d_bottleneck). No masking
        unless keep_mask is given (encoding is deterministic in eval mode). A clip longer than
        config.clip_frames is encoded in chunks of that length (shared.clips)."""
        check_video(video, self.config)
        check_values("video", *value_range(video), 0.0, 1.0, " (frames are floats in [0, 1])")
        return by_clip(self.config, self.encoder, (self.patchify(jnp.asarray(video)), keep_mask), join_frames)

    def decode(self, z: jax.Array) -> jax.Array:
        """z (B, T, n_latents, d_bottleneck) -> video (B, T, C, H, W) in (0, 1). Latents longer than
        config.clip_frames are decoded in chunks of that length (shared.clips)."""
        c = self.config
        check_shape("z", z, ("B", "T", c.n_latents, c.d_bottleneck))
        check_values("z", *value_range(z))
        return self.unpatchify(by_clip(self.config, self.decoder, (jnp.asarray(z),), join_frames))
