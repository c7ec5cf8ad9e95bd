"""Causal video tokenizer: Encoder (patches -> tanh-bottleneck latents), Decoder (latents -> patches).

Video contract: (B, T, C, H, W) float in [0, 1]. Latents z: (B, T, n_latents, d_bottleneck) in (-1, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from shared.clips import by_clip
from shared.config import TokenizerConfig
from shared.layout import Modality, space_mask, tokenizer_layout
from shared.patchify import patch_layout
from shared.values import check_values

from .contracts import value_range
from .init import build_checked
from .layers import BlockCausalTransformer, add_positions


def patchify(video: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(..., C, H, W) -> (..., Np, C*p*p) in shared.patchify's layout (F.unfold's)."""
    *lead, C, H, W = video.shape
    layout = patch_layout(tuple(lead), C, H, W, patch_size)
    return video.reshape(layout.frame_split).permute(layout.to_patches).reshape(layout.patches_shape)


def unpatchify(patches: torch.Tensor, height: int, width: int, channels: int, patch_size: int) -> torch.Tensor:
    """Exact inverse of patchify: (..., Np, C*p*p) -> (..., C, H, W)."""
    layout = patch_layout(tuple(patches.shape[:-2]), channels, height, width, patch_size)
    return patches.reshape(layout.patch_split).permute(layout.to_frames).reshape(layout.frames_shape)


def join_frames(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate on the time axis (axis 1): how shared.clips.by_clip joins chunks."""
    return torch.cat(parts, dim=1)


def check_video(video: torch.Tensor, cfg: TokenizerConfig, name: str = "video") -> None:
    expected = (cfg.channels, cfg.image_height, cfg.image_width)
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(video).__name__}")
    if video.dim() != 5 or tuple(video.shape[2:]) != expected:
        raise ValueError(f"{name} must have shape (B, T, {expected[0]}, {expected[1]}, {expected[2]}) "
                         f"for this tokenizer, got {tuple(video.shape)}")
    if not video.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {video.dtype} "
                        "(convert uint8 frames with video.float() / 255)")


class MAE(nn.Module):
    """Masked-autoencoding replacement of projected patch tokens by a learned mask token."""

    def __init__(self, d_model: int, p_min: float, p_max: float):
        super().__init__()
        self.p_min, self.p_max = float(p_min), float(p_max)
        self.mask_token = nn.Parameter(torch.zeros(d_model))

    def draw_keep_mask(self, batch: int, frames: int, n_patches: int, device=None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(B, T, Np) bool, True = patch kept: per (b, t) p ~ U(p_min, p_max), keep with prob 1 - p."""
        u = torch.rand((batch, frames, 1), device=device, generator=generator)
        p = self.p_min + (self.p_max - self.p_min) * u
        return torch.rand((batch, frames, n_patches), device=device, generator=generator) >= p

    def forward(self, tokens: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        return torch.where(keep_mask[..., None], tokens, self.mask_token.to(tokens.dtype))


def bottleneck_pre(h: torch.Tensor, cfg: TokenizerConfig) -> torch.Tensor:
    """The pre-tanh bottleneck values: unit-RMS per latent when cfg.bottleneck_norm (eps as RMSNorm's)."""
    if not cfg.bottleneck_norm:
        return h
    return h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + 1e-6)


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        tf = cfg.transformer
        self.config = cfg
        layout = tokenizer_layout(cfg)
        self.patch_proj = nn.Linear(cfg.d_patch, tf.d_model)
        self.bottleneck_proj = nn.Linear(tf.d_model, cfg.d_bottleneck)
        self.transformer = BlockCausalTransformer(tf, space_mask(layout, "encoder"),
                                                  n_time_slots=layout.count(Modality.LATENT))
        self.mae = MAE(tf.d_model, cfg.mae_p_min, cfg.mae_p_max)
        self.latents = nn.Parameter(torch.zeros(cfg.n_latents, tf.d_model))

    def forward(self, patches: torch.Tensor, keep_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """patches (B, T, Np, Dp) -> z (B, T, n_latents, d_bottleneck).

        keep_mask (B, T, Np) bool replaces dropped patch tokens by the mask token; None keeps all.
        """
        B, T = patches.shape[:2]
        tokens = self.patch_proj(patches)
        if keep_mask is not None:
            tokens = self.mae(tokens, keep_mask)
        lat = self.latents.to(tokens.dtype).expand(B, T, -1, -1)
        x = add_positions(torch.cat([lat, tokens], dim=2), self.config.transformer)
        x = self.transformer(x)
        return torch.tanh(bottleneck_pre(self.bottleneck_proj(x[:, :, : self.config.n_latents]), self.config))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        tf = cfg.transformer
        self.config = cfg
        layout = tokenizer_layout(cfg)
        self.up_proj = nn.Linear(cfg.d_bottleneck, tf.d_model)
        self.patch_queries = nn.Parameter(torch.zeros(cfg.n_patches, tf.d_model))
        self.patch_head = nn.Linear(tf.d_model, cfg.d_patch)
        self.transformer = BlockCausalTransformer(tf, space_mask(layout, "decoder"),
                                                  n_time_slots=layout.count(Modality.LATENT))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, T, n_latents, d_bottleneck) -> patches (B, T, Np, Dp) in (0, 1)."""
        B, T, L, _ = z.shape
        lat = torch.tanh(self.up_proj(z))
        queries = self.patch_queries.to(lat.dtype).expand(B, T, -1, -1)
        x = add_positions(torch.cat([lat, queries], dim=2), self.config.transformer)
        x = self.transformer(x)
        return torch.sigmoid(self.patch_head(x[:, :, L:]))


@dataclass
class TokenizerOutput:
    z: torch.Tensor            # (B, T, n_latents, d_bottleneck)
    recon: torch.Tensor        # (B, T, Np, Dp) predicted patches in (0, 1)
    target: torch.Tensor       # (B, T, Np, Dp) input patches
    keep_mask: torch.Tensor    # (B, T, Np) bool, True where the encoder saw the patch


class Tokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        build_checked(self, cfg)

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        return patchify(video, self.config.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        c = self.config
        return unpatchify(patches, c.image_height, c.image_width, c.channels, c.patch_size)

    def draw_keep_mask(self, batch: int, frames: int, device=None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.encoder.mae.draw_keep_mask(batch, frames, self.config.n_patches, device, generator)

    def forward(self, video: torch.Tensor, keep_mask: Optional[torch.Tensor] = None) -> TokenizerOutput:
        """Masked autoencoding pass. keep_mask (B, T, Np) bool; when None it is drawn in training mode
        (p ~ U(mae_p_min, mae_p_max)) and all-true in eval mode."""
        check_video(video, self.config)
        B, T = video.shape[:2]
        target = self.patchify(video)
        if keep_mask is None:
            if self.training and self.config.mae_p_max > 0.0:
                keep_mask = self.draw_keep_mask(B, T, video.device)
            else:
                keep_mask = torch.ones(B, T, self.config.n_patches, dtype=torch.bool, device=video.device)
        elif tuple(keep_mask.shape) != (B, T, self.config.n_patches) or keep_mask.dtype != torch.bool:
            raise ValueError(f"keep_mask must be a bool tensor of shape ({B}, {T}, {self.config.n_patches}), "
                             f"got {keep_mask.dtype} {tuple(keep_mask.shape)}")
        z = self.encoder(target, keep_mask)
        return TokenizerOutput(z=z, recon=self.decoder(z), target=target, keep_mask=keep_mask)

    def encode(self, video: torch.Tensor, keep_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """video (B, T, C, H, W) float in [0, 1] -> z (B, T, n_latents, d_bottleneck). No masking
        unless keep_mask is given (encoding is deterministic in eval mode). A clip longer than
        config.clip_frames is encoded in chunks of that length (shared.clips)."""
        check_video(video, self.config)
        check_values("video", *value_range(video), 0.0, 1.0, " (frames are floats in [0, 1])")
        return by_clip(self.config, self.encoder, (self.patchify(video), keep_mask), join_frames)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, T, n_latents, d_bottleneck) -> video (B, T, C, H, W) in (0, 1). Latents longer than
        config.clip_frames are decoded in chunks of that length (shared.clips)."""
        c = self.config
        if z.dim() != 4 or tuple(z.shape[2:]) != (c.n_latents, c.d_bottleneck):
            raise ValueError(f"z must have shape (B, T, {c.n_latents}, {c.d_bottleneck}), got {tuple(z.shape)}")
        check_values("z", *value_range(z))
        return self.unpatchify(by_clip(self.config, self.decoder, (z,), join_frames))
