"""Training losses: the tokenizer's masked-autoencoding loss and the dynamics' shortcut-forcing loss.

All random draws (MAE keep masks, tau/d indices, noise) are inputs, so the JAX backend and
hand-written tests can reproduce every number.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from shared.shortcut import LOSS_MIN_DENOM

from .tokenizer import TokenizerOutput, unpatchify

# perceptual(pred, target) -> scalar, both (N, C, H, W) in [-1, 1].
PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def contrast_weights(target: torch.Tensor, channels: int, weight: float) -> torch.Tensor:
    """Per value of patch vectors (..., C*p*p) (channel slowest, shared.patchify):
    1 + weight * |x - the mean of x's channel over its patch|. Thin bodies on a plain background
    (a pole, an arm, a ball) stand out from their patch's mean; the background does not."""
    x = target.unflatten(-1, (channels, -1))
    return (1.0 + weight * (x - x.mean(-1, keepdim=True)).abs()).flatten(-2)


def tokenizer_loss(out: TokenizerOutput, *, image_shape: tuple[int, int, int], patch_size: int,
                   mse_on: str = "masked", perceptual: Optional[PerceptualFn] = None,
                   perceptual_weight: float = 0.2, perceptual_frame_stride: int = 2,
                   contrast_weight: float = 0.0):
    """Reconstruction loss of a tokenizer pass.

    mse_on="masked" (upstream): sum of squared errors over the patches the encoder did not see,
    divided by (number of masked patches, at least 1) * Dp. mse_on="all": mean over every patch.
    perceptual: optional term on a composite frame (prediction where masked, input elsewhere; the
    prediction everywhere for mse_on="all") of every `perceptual_frame_stride`-th frame, scaled to
    [-1, 1], weighted by `perceptual_weight`.
    contrast_weight > 0: the squared errors of the reconstruction term are weighted by
    `contrast_weights` (the `mse` metric stays unweighted; `weighted_mse` is the term).
    Returns (loss, metrics dict of detached scalars).
    """
    pred, target = out.recon.float(), out.target.float()
    sq = (pred - target).pow(2)
    if mse_on == "masked":
        masked = (~out.keep_mask).unsqueeze(-1).float()            # (B, T, Np, 1)
        reduce = lambda v: (v * masked).sum() / (masked.sum().clamp_min(1.0) * v.shape[-1])  # noqa: E731
        composite = torch.where(out.keep_mask.unsqueeze(-1), target, pred)
    elif mse_on == "all":
        reduce = torch.mean
        composite = pred
    else:
        raise ValueError(f"mse_on must be 'masked' or 'all', got {mse_on!r}")
    if contrast_weight < 0:
        raise ValueError(f"contrast_weight must be >= 0, got {contrast_weight}")
    mse = reduce(sq)
    loss = reduce(sq * contrast_weights(target, image_shape[0], contrast_weight)) if contrast_weight else mse
    metrics = {"mse": mse.detach(), "full_mse": sq.mean().detach(),
               "keep_fraction": out.keep_mask.float().mean().detach()}
    if contrast_weight:
        metrics["weighted_mse"] = loss.detach()
    if perceptual is not None and perceptual_weight > 0:
        C, H, W = image_shape
        frames = slice(None, None, perceptual_frame_stride)
        rec = unpatchify(composite[:, frames], H, W, C, patch_size).clamp(0, 1) * 2 - 1
        tgt = unpatchify(target[:, frames], H, W, C, patch_size).clamp(0, 1) * 2 - 1
        perc = perceptual(rec.flatten(0, 1), tgt.flatten(0, 1)).mean()
        loss = loss + perceptual_weight * perc
        metrics["perceptual"] = perc.detach()
    metrics["loss"] = loss.detach()
    return loss, metrics


def _bcast(x: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T, 1, 1) for broadcasting over tokens and features."""
    return x[..., None, None]


def shortcut_loss(model, z1: torch.Tensor, *, signal_idx: torch.Tensor, step_idx: torch.Tensor,
                  noise: torch.Tensor, n_bootstrap: int, k_max: int,
                  actions: Optional[torch.Tensor] = None, act_mask: Optional[torch.Tensor] = None,
                  agent_tokens: Optional[torch.Tensor] = None):
    """Shortcut-forcing loss (DREAMER4.md section 3), x-prediction with per-frame signal levels.

    z1 (B, T, n_spatial, d_spatial) clean packed latents; signal_idx, step_idx (B, T) from
    shared.shortcut.draw_shortcut_indices (flow rows first, the last n_bootstrap rows bootstrap);
    noise (B, T, n_spatial, d_spatial) standard normal. `model(packed, signal_idx=, step_idx=, ...)`
    returns (x1_hat, h) -- a Dynamics or its DDP wrapper.

      tau = i / k_max, d = 2^-e, z_tau = (1 - tau) z0 + tau z1, x1_hat = f(z_tau, tau, d, a), w = 0.9 tau + 0.1
      flow rows:      L_flow = mean_{b,t} w * mean (x1_hat - z1)^2
      bootstrap rows: h = d/2; x' = f(z_tau, tau, h); b' = (x' - z_tau)/(1 - tau); z' = z_tau + h b';
                      x'' = f(z', tau + h, h); b'' = (x'' - z')/(1 - tau - h);
                      v_hat = (x1_hat - z_tau)/(1 - tau); v_bar = sg((b' + b'')/2);
                      L_boot = mean_{b,t} w * (1 - tau)^2 * mean (v_hat - v_bar)^2
      total = (L_flow * B_flow + L_boot * B_boot) / B
    Denominators are clamped at 1e-6. The half-steps run under no_grad (their result is a target).
    Returns (loss, metrics dict of detached scalars).
    """
    B, T = z1.shape[:2]
    if not 0 <= n_bootstrap < B:
        raise ValueError(f"n_bootstrap must be in [0, {B}), got {n_bootstrap}")
    if noise.shape != z1.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal z1 shape {tuple(z1.shape)}")
    n_flow = B - n_bootstrap
    z1f = z1.float()
    tau = signal_idx.float() / k_max                                  # (B, T)
    d = torch.exp2(-step_idx.float())                                 # (B, T)
    z_tau = (1.0 - _bcast(tau)) * noise.float() + _bcast(tau) * z1f
    weight = 0.9 * tau + 0.1

    x1_hat, _ = model(z_tau.to(z1.dtype), signal_idx=signal_idx, step_idx=step_idx,
                      actions=actions, act_mask=act_mask, agent_tokens=agent_tokens)
    x1_hat = x1_hat.float()

    flow_per = (x1_hat[:n_flow] - z1f[:n_flow]).pow(2).mean(dim=(2, 3))   # (B_flow, T)
    loss_flow = (weight[:n_flow] * flow_per).mean()
    metrics = {"flow_mse": flow_per.mean().detach(), "loss_flow": loss_flow.detach()}

    loss_boot = z1f.new_zeros(())
    if n_bootstrap:
        rows = slice(n_flow, B)
        sub = lambda x: None if x is None else (x[rows] if x.dim() > 1 and x.shape[0] == B else x)  # noqa: E731
        tau_b, d_b, zt_b = tau[rows], d[rows], z_tau[rows]
        half = d_b / 2.0
        half_step_idx = step_idx[rows] + 1
        plus_signal_idx = signal_idx[rows] + (k_max * half).long()
        with torch.no_grad():
            x_first, _ = model(zt_b.to(z1.dtype), signal_idx=signal_idx[rows], step_idx=half_step_idx,
                               actions=sub(actions), act_mask=sub(act_mask), agent_tokens=sub(agent_tokens))
            b_first = (x_first.float() - zt_b) / _bcast((1.0 - tau_b).clamp_min(LOSS_MIN_DENOM))
            z_mid = zt_b + _bcast(half) * b_first
            x_second, _ = model(z_mid.to(z1.dtype), signal_idx=plus_signal_idx, step_idx=half_step_idx,
                                actions=sub(actions), act_mask=sub(act_mask), agent_tokens=sub(agent_tokens))
            b_second = (x_second.float() - z_mid) / _bcast((1.0 - tau_b - half).clamp_min(LOSS_MIN_DENOM))
            v_target = (b_first + b_second) / 2.0
        v_hat = (x1_hat[rows] - zt_b) / _bcast((1.0 - tau_b).clamp_min(LOSS_MIN_DENOM))
        boot_per = (1.0 - tau_b).pow(2) * (v_hat - v_target).pow(2).mean(dim=(2, 3))
        loss_boot = (weight[rows] * boot_per).mean()
        metrics["boot_mse"] = boot_per.mean().detach()
        metrics["loss_boot"] = loss_boot.detach()

    loss = (loss_flow * n_flow + loss_boot * n_bootstrap) / B
    metrics["loss"] = loss.detach()
    return loss, metrics
