"""Autoregressive generation with the dynamics model: shortcut Euler steps, a context window, a KV cache.

Semantics (upstream's demo and evaluation, DREAMER4.md section 3):

* Each new frame starts from Gaussian noise z (tau = 0) and takes K Euler steps (K a power of two
  <= k_max; `shared.shortcut.inference_plan`): at step i, tau_i = i/K and d = 1/K,
      x1 = f(z, tau_i, d);  b = (x1 - z) / max(1e-4, 1 - tau_i);  z <- z + b d.
  Only the starting noise is random, so the noise of a frame is one (B, S, D) draw.
* Context frames, `context_mode`:
  - "upstream": clean latents labelled signal_idx = k_max - 1 and step_idx = e_max (what upstream's
    checkpoints expect);
  - "noised" (the paper): every context frame is corrupted once, when it enters the context, to
    tau_ctx (on the k_max grid, `noisy_context_signal_idx`): (1 - tau_ctx) eps + tau_ctx z, and labelled
    with that signal index. Upstream's evaluation re-draws eps for every generated frame; here eps is
    drawn once per frame so that the frame's keys/values can be cached (and so that it can be injected).
* Actions: row t is the action that *produced* frame t, so generating frame t+1 uses the action chosen
  after seeing frame t. The first frame of the window gets a zero action, exactly like the first frame
  of every training window (and upstream's demo, which zeroes it).
* Window (`context_length` = C frames; None = the whole history, as upstream's evaluation), `window_mode`:
  - "slide" (upstream; any model): the next frame sees the last C frames with window-relative
    positions 0..C-1 and itself at position C. Once the window is full it moves by one frame per
    generated frame, which moves every frame's additive time position, so every cached key/value
    changes: the cache is rebuilt from the window in the same pass as the first denoising step (one
    pass over C+1 frames, what the uncached sampler runs for that step, minus the work after the last
    time-attention layer for the context frames, whose outputs are not needed), and the remaining
    K-1 steps run the new frame alone against the cache.
  - "roll" (models with relative time positions, i.e. `time_rope`): every frame's keys/values are
    computed once and kept until the frame leaves the window; the cache rolls (oldest frame out, newest
    in) and is never rebuilt. This is exactly full-history attention in which every frame sees itself
    and the C frames before it (`time_window=C`), which is what the uncached "roll" path computes.

KV cache (`use_cache=True`): per layer with time attention, the keys/values of the context frames
(space attention and the MLP are per frame, so that is all a new frame needs from earlier ones).
Before the window is full a generated frame is committed to the cache in the pass that takes the
first denoising step of the next frame ([committed frame, new frame], two frames); denoising steps run
the new frame's tokens only. The cached sampler computes the same function as the uncached one
(to fp32 rounding; tests/test_sampler.py).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Union

import torch

from shared.sampling import (CONTEXT_MODES, WINDOW_MODES, DenoisingPass, SamplerCore, act_mask_forms,
                             act_mask_shape, check_noise_shape, check_packed_context, check_rollout_inputs,
                             eval_mode, needs_batch_axis, rollout_frames)
from shared.shortcut import SAMPLER_MIN_DENOM, SamplerStep
from shared.values import check_values

from .contracts import value_range
from .dynamics import Dynamics
from .prepack import PrepackedLinears

__all__ = ["CONTEXT_MODES", "WINDOW_MODES", "Sampler", "broadcast_act_mask", "euler_step", "eval_mode", "rollout"]

Noise = Union[None, torch.Tensor, torch.Generator]


def euler_step(z: torch.Tensor, x1_hat: torch.Tensor, step: SamplerStep) -> torch.Tensor:
    """z + d (x1_hat - z) / max(1e-4, 1 - tau), computed in float32 (upstream's sampler update)."""
    denom = max(SAMPLER_MIN_DENOM, 1.0 - step.tau)
    velocity = (x1_hat.float() - z.float()) / denom
    return (z.float() + velocity * step.step_size).to(z.dtype)


class Sampler(SamplerCore):
    """Stateful next-frame generator for a batch of B independent streams (the demo's engine).

    sampler = Sampler(dyn, n_steps=2, context_length=16)
    sampler.reset(context)                 # (B, C0, S, D) clean packed latents, C0 >= 1
    z = sampler.step(action)               # (B, S, D): the next frame, produced by `action` (B, A)

    `n_steps` and `context_length` may be changed between steps (a changed window start rebuilds the
    cache). `prepack` (default) runs the model's Linears through oneDNN with prepacked weights on the CPU
    (dreamer4_torch.prepack: the same function to fp32 rounding, 2-2.6x faster for one frame's rows).
    `history_limit` bounds the frames kept (default: the window); the uncached "roll" path keeps the whole
    history because it recomputes it. The window, cache and input bookkeeping is shared.sampling.SamplerCore;
    this class holds the tensor operations.
    """

    def __init__(self, dynamics: Dynamics, *, n_steps: int = 4, context_length: Optional[int] = 24,
                 context_mode: str = "upstream", tau_ctx: float = 0.9, window_mode: str = "slide",
                 use_cache: bool = True, history_limit: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, prepack: bool = True):
        if not isinstance(dynamics, Dynamics):
            raise TypeError(f"Sampler needs a dreamer4_torch Dynamics model, got {type(dynamics).__name__}")
        super().__init__(dynamics, n_steps=n_steps, context_length=context_length, context_mode=context_mode,
                         tau_ctx=tau_ctx, window_mode=window_mode, use_cache=use_cache,
                         history_limit=history_limit)
        self.generator = generator
        # CPU fp32: the model's Linears through oneDNN with prepacked weights (dreamer4_torch.prepack), for
        # the cached and the uncached path alike; a no-op elsewhere.
        self.prepacked = PrepackedLinears(dynamics, enabled=prepack)

    # ------------------------------------------------------------------ tensor operations (SamplerCore)

    _euler_step = staticmethod(euler_step)

    def _as_context(self, context) -> torch.Tensor:
        cfg = self.dynamics.config
        is_tensor = isinstance(context, torch.Tensor)
        check_packed_context(tuple(context.shape) if is_tensor else None, cfg.n_spatial, cfg.d_spatial)
        if not context.is_floating_point():
            raise TypeError(f"context must be a float tensor, got {context.dtype}")
        check_values("context", *value_range(context))
        self.device, self.dtype = context.device, context.dtype
        return context

    def _as_actions(self, x, shape: tuple, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor of shape {shape}")
        check_values(name, *value_range(x))      # finite; beyond [-1, 1] the model clamps, as upstream
        if needs_batch_axis(tuple(x.shape), shape, name):
            x = x.expand(shape)
        return x.to(device=self.device, dtype=self.dtype)

    def _broadcast_mask(self, act_mask, B: int, T: int, A: int) -> Optional[torch.Tensor]:
        mask = broadcast_act_mask(act_mask, B, T, A)
        return None if mask is None else mask.to(device=self.device, dtype=self.dtype)

    def _array_shape(self, x) -> Optional[tuple]:
        return _shape(x) if isinstance(x, torch.Tensor) else None

    def _to_stream(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.device, dtype=self.dtype)

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=self.device, dtype=self.dtype)

    def _noised(self, z: torch.Tensor, eps: Optional[torch.Tensor]) -> torch.Tensor:
        if eps is None:
            eps = self._randn(z.shape)
        return ((1.0 - self.context_tau) * eps.to(z) + self.context_tau * z).to(self.dtype)

    def _stack_actions(self, actions: list, zero_row: Optional[int]) -> torch.Tensor:
        acts = torch.stack(actions, dim=1)
        if zero_row is not None:
            acts[:, zero_row] = 0.0
        return acts

    def _predict(self, p: DenoisingPass, frames: list, signal, steps, acts) -> torch.Tensor:
        signal, steps = torch.from_numpy(signal).to(self.device), torch.from_numpy(steps).to(self.device)
        x1 = self.dynamics(torch.stack(frames, dim=1), signal_idx=signal, step_idx=steps, actions=acts,
                           cache=self.cache if p.cached else None, commit=p.commit, time_window=p.time_window,
                           outputs_from=p.outputs_from)[0]
        return x1[:, -1]

    @contextlib.contextmanager
    def _generating(self) -> Iterator[None]:
        with torch.no_grad(), eval_mode(self.dynamics), self.prepacked:
            yield


def _shape(x) -> tuple:
    """The shape of a tensor, () for anything else."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else ()


def broadcast_act_mask(mask: Optional[torch.Tensor], B: int, T: int, A: int) -> Optional[torch.Tensor]:
    """An action mask given as (A,), (B, A), (B, T, A) (or with 1s for B/T) -> (B, T, A)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"act_mask must be a tensor of shape {act_mask_forms(B, T, A)}")
    return mask.reshape(act_mask_shape(tuple(mask.shape), B, T, A)).expand(B, T, A)


def _draw(source: Noise, shape: tuple, like: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(source, torch.Tensor):
        check_noise_shape(name, tuple(source.shape), shape)
        return source.to(device=like.device, dtype=like.dtype)
    if source is not None and not isinstance(source, torch.Generator):
        raise TypeError(f"{name} must be None, a tensor of shape {shape} or a torch.Generator, "
                        f"got {type(source).__name__}")
    return torch.randn(shape, generator=source, device=like.device, dtype=like.dtype)


@torch.no_grad()
def rollout(dynamics: Dynamics, context_packed: torch.Tensor, actions: Optional[torch.Tensor] = None,
            act_mask: Optional[torch.Tensor] = None, horizon: int = 16, *, n_steps: int = 4,
            noise: Noise = None, use_cache: bool = True, context_mode: str = "upstream",
            context_length: Optional[int] = None, window_mode: str = "slide", tau_ctx: float = 0.9,
            context_noise: Optional[torch.Tensor] = None, prepack: bool = True) -> torch.Tensor:
    """Open-loop rollout: predict `horizon` packed latents after a context, under given actions.

    context_packed (B, C, S, D): clean packed latents of C >= 1 context frames (dyn.pack(tok.encode(x))).
    actions (B, C + H, A) or None: row t is the action that produced frame t (so row C + h produces the
        h-th predicted frame; rows before C condition the context; row 0 is never used). None runs the
        model without actions (the base token).
    act_mask: (A,), (B, A) or (B, C + H, A), 1 = real dimension.
    n_steps: K shortcut Euler steps per frame (1, 2, 4 or 8 with k_max = 8).
    noise: None (torch's global generator), a torch.Generator, or a (B, H, S, D) tensor of starting
        noise (one draw per predicted frame; the steps are deterministic).
    context_mode: "upstream" (clean context labelled k_max - 1) or "noised" (context corrupted once to
        tau_ctx); context_noise (B, C + H, S, D) gives that corruption's eps per frame. With a generator,
        the starting noise is drawn first, then the context noise.
    context_length: frames a new frame sees (None: all earlier frames, like upstream's evaluation).
    window_mode: "slide" (upstream) or "roll" (time_rope models), see the module docstring.
    use_cache: KV-cached generation (same result as use_cache=False to fp32 rounding).
    prepack: CPU Linears through oneDNN with prepacked weights (see Sampler).
    Returns the predicted packed latents (B, H, S, D); the model is run in eval mode.
    """
    A = dynamics.config.action_dim
    B, C, H = check_rollout_inputs(_shape(context_packed) or None, None if actions is None else _shape(actions),
                                   act_mask is not None, horizon, A, "tensor")
    S, D = context_packed.shape[2:]
    sampler = Sampler(dynamics, n_steps=n_steps, context_length=context_length, context_mode=context_mode,
                      tau_ctx=tau_ctx, window_mode=window_mode, use_cache=use_cache, prepack=prepack)
    start_noise = _draw(noise, (B, H, S, D), context_packed, "noise")
    ctx_noise = None
    if context_mode == "noised":
        ctx_noise = _draw(context_noise if context_noise is not None else
                          (noise if isinstance(noise, torch.Generator) else None),
                          (B, C + H, S, D), context_packed, "context_noise")
    mask = broadcast_act_mask(act_mask, B, C + H, A)
    return torch.stack(rollout_frames(sampler, context_packed, actions, mask, start_noise, ctx_noise, H), dim=1)
