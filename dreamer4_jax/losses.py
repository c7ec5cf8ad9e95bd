"""Training losses: the tokenizer's masked-autoencoding loss and the dynamics' shortcut-forcing loss.

The JAX mirror of dreamer4_torch/losses.py: same definitions, arguments and metrics. All random draws
(MAE keep masks, tau/d indices, noise) are inputs. The functions are pure given the model and trace
under jax.jit / jax.grad; metrics are stop-gradient scalars.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from shared.shortcut import LOSS_MIN_DENOM

from .tokenizer import TokenizerOutput, unpatchify

# perceptual(pred, target) -> scalar or per-image values, both (N, C, H, W) in [-1, 1].
PerceptualFn = Callable[[jax.Array, jax.Array], jax.Array]

_sg = jax.lax.stop_gradient


def contrast_weights(target: jax.Array, channels: int, weight: float) -> jax.Array:
    """Per value of patch vectors (..., C*p*p) (channel slowest, shared.patchify):
    1 + weight * |x - the mean of x's channel over its patch|. Thin bodies on a plain background
    (a pole, an arm, a ball) stand out from their patch's mean; the background does not."""
    x = target.reshape(target.shape[:-1] + (channels, -1))
    return (1.0 + weight * jnp.abs(x - jnp.mean(x, -1, keepdims=True))).reshape(target.shape)


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
    Returns (loss, metrics dict of stop-gradient scalars).
    """
    pred, target = out.recon.astype(jnp.float32), out.target.astype(jnp.float32)
    sq = jnp.square(pred - target)
    if mse_on == "masked":
        masked = (~out.keep_mask)[..., None].astype(jnp.float32)            # (B, T, Np, 1)
        reduce = lambda v: jnp.sum(v * masked) / (jnp.maximum(jnp.sum(masked), 1.0) * v.shape[-1])  # noqa: E731
        composite = jnp.where(out.keep_mask[..., None], target, pred)
    elif mse_on == "all":
        reduce = jnp.mean
        composite = pred
    else:
        raise ValueError(f"mse_on must be 'masked' or 'all', got {mse_on!r}")
    if contrast_weight < 0:
        raise ValueError(f"contrast_weight must be >= 0, got {contrast_weight}")
    mse = reduce(sq)
    loss = reduce(sq * contrast_weights(target, image_shape[0], contrast_weight)) if contrast_weight else mse
    metrics = {"mse": _sg(mse), "full_mse": _sg(jnp.mean(sq)),
               "keep_fraction": _sg(jnp.mean(out.keep_mask.astype(jnp.float32)))}
    if contrast_weight:
        metrics["weighted_mse"] = _sg(loss)
    if perceptual is not None and perceptual_weight > 0:
        C, H, W = image_shape
        frames = slice(None, None, perceptual_frame_stride)
        rec = jnp.clip(unpatchify(composite[:, frames], H, W, C, patch_size), 0, 1) * 2 - 1
        tgt = jnp.clip(unpatchify(target[:, frames], H, W, C, patch_size), 0, 1) * 2 - 1
        perc = jnp.mean(perceptual(rec.reshape((-1,) + rec.shape[2:]), tgt.reshape((-1,) + tgt.shape[2:])))
        loss = loss + perceptual_weight * perc
        metrics["perceptual"] = _sg(perc)
    metrics["loss"] = _sg(loss)
    return loss, metrics


def _bcast(x: jax.Array) -> jax.Array:
    """(B, T) -> (B, T, 1, 1) for broadcasting over tokens and features."""
    return x[..., None, None]


def shortcut_loss(model, z1: jax.Array, *, signal_idx: jax.Array, step_idx: jax.Array,
                  noise: jax.Array, n_bootstrap: int, k_max: int,
                  actions: Optional[jax.Array] = None, act_mask: Optional[jax.Array] = None,
                  agent_tokens: Optional[jax.Array] = None):
    """Shortcut-forcing loss (DREAMER4.md section 3), x-prediction with per-frame signal levels.

    z1 (B, T, n_spatial, d_spatial) clean packed latents; signal_idx, step_idx (B, T) integers from
    shared.shortcut.draw_shortcut_indices (flow rows first, the last n_bootstrap rows bootstrap);
    noise (B, T, n_spatial, d_spatial) standard normal. `model(packed, signal_idx=, step_idx=, ...)`
    returns (x1_hat, h). n_bootstrap and k_max are Python ints (static under jit).

      tau = i / k_max, d = 2^-e, z_tau = (1 - tau) z0 + tau z1, x1_hat = f(z_tau, tau, d, a), w = 0.9 tau + 0.1
      flow rows:      L_flow = mean_{b,t} w * mean (x1_hat - z1)^2
      bootstrap rows: h = d/2; x' = f(z_tau, tau, h); b' = (x' - z_tau)/(1 - tau); z' = z_tau + h b';
                      x'' = f(z', tau + h, h); b'' = (x'' - z')/(1 - tau - h);
                      v_hat = (x1_hat - z_tau)/(1 - tau); v_bar = sg((b' + b'')/2);
                      L_boot = mean_{b,t} w * (1 - tau)^2 * mean (v_hat - v_bar)^2
      total = (L_flow * B_flow + L_boot * B_boot) / B
    Denominators are clamped at 1e-6. The half-steps are a stop-gradient target (torch: no_grad).
    Returns (loss, metrics dict of stop-gradient scalars).
    """
    B, T = z1.shape[:2]
    if not 0 <= n_bootstrap < B:
        raise ValueError(f"n_bootstrap must be in [0, {B}), got {n_bootstrap}")
    if noise.shape != z1.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal z1 shape {tuple(z1.shape)}")
    signal_idx, step_idx = jnp.asarray(signal_idx), jnp.asarray(step_idx)
    n_flow = B - n_bootstrap
    z1f = z1.astype(jnp.float32)
    tau = signal_idx.astype(jnp.float32) / k_max                         # (B, T)
    d = jnp.exp2(-step_idx.astype(jnp.float32))                           # (B, T)
    z_tau = (1.0 - _bcast(tau)) * noise.astype(jnp.float32) + _bcast(tau) * z1f
    weight = 0.9 * tau + 0.1

    x1_hat, _ = model(z_tau.astype(z1.dtype), signal_idx=signal_idx, step_idx=step_idx,
                      actions=actions, act_mask=act_mask, agent_tokens=agent_tokens)
    x1_hat = x1_hat.astype(jnp.float32)

    flow_per = jnp.mean(jnp.square(x1_hat[:n_flow] - z1f[:n_flow]), axis=(2, 3))   # (B_flow, T)
    loss_flow = jnp.mean(weight[:n_flow] * flow_per)
    metrics = {"flow_mse": _sg(jnp.mean(flow_per)), "loss_flow": _sg(loss_flow)}

    loss_boot = jnp.zeros((), jnp.float32)
    if n_bootstrap:
        rows = slice(n_flow, B)

        def sub(x):
            return None if x is None else (x[rows] if x.ndim > 1 and x.shape[0] == B else x)

        tau_b, d_b, zt_b = tau[rows], d[rows], z_tau[rows]
        half = d_b / 2.0
        half_step_idx = step_idx[rows] + 1
        plus_signal_idx = signal_idx[rows] + (k_max * half).astype(signal_idx.dtype)
        x_first, _ = model(_sg(zt_b).astype(z1.dtype), signal_idx=signal_idx[rows], step_idx=half_step_idx,
                           actions=sub(actions), act_mask=sub(act_mask), agent_tokens=sub(agent_tokens))
        b_first = (x_first.astype(jnp.float32) - zt_b) / _bcast(jnp.maximum(1.0 - tau_b, LOSS_MIN_DENOM))
        z_mid = zt_b + _bcast(half) * b_first
        x_second, _ = model(_sg(z_mid).astype(z1.dtype), signal_idx=plus_signal_idx, step_idx=half_step_idx,
                            actions=sub(actions), act_mask=sub(act_mask), agent_tokens=sub(agent_tokens))
        b_second = (x_second.astype(jnp.float32) - z_mid) / _bcast(jnp.maximum(1.0 - tau_b - half, LOSS_MIN_DENOM))
        v_target = _sg((b_first + b_second) / 2.0)
        v_hat = (x1_hat[rows] - zt_b) / _bcast(jnp.maximum(1.0 - tau_b, LOSS_MIN_DENOM))
        boot_per = jnp.square(1.0 - tau_b) * jnp.mean(jnp.square(v_hat - v_target), axis=(2, 3))
        loss_boot = jnp.mean(weight[rows] * boot_per)
        metrics["boot_mse"] = _sg(jnp.mean(boot_per))
        metrics["loss_boot"] = _sg(loss_boot)

    loss = (loss_flow * n_flow + loss_boot * n_bootstrap) / B
    metrics["loss"] = _sg(loss)
    return loss, metrics
