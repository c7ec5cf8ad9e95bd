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
import torch.nn as nn

from shared.shortcut import (SAMPLER_MIN_DENOM, SamplerStep, context_labels, inference_plan,
                             noisy_context_signal_idx)

from .dynamics import Dynamics
from .prepack import PrepackedLinears

CONTEXT_MODES = ("upstream", "noised")
WINDOW_MODES = ("slide", "roll")

Noise = Union[None, torch.Tensor, torch.Generator]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run `model` in eval mode (no dropout) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def euler_step(z: torch.Tensor, x1_hat: torch.Tensor, step: SamplerStep) -> torch.Tensor:
    """z + d (x1_hat - z) / max(1e-4, 1 - tau), computed in float32 (upstream's sampler update)."""
    denom = max(SAMPLER_MIN_DENOM, 1.0 - step.tau)
    velocity = (x1_hat.float() - z.float()) / denom
    return (z.float() + velocity * step.step_size).to(z.dtype)


class Sampler:
    """Stateful next-frame generator for a batch of B independent streams (the demo's engine).

    sampler = Sampler(dyn, n_steps=2, context_length=16)
    sampler.reset(context)                 # (B, C0, S, D) clean packed latents, C0 >= 1
    z = sampler.step(action)               # (B, S, D): the next frame, produced by `action` (B, A)

    `n_steps` and `context_length` may be changed between steps (a changed window start rebuilds the
    cache). `prepack` (default) runs the model's Linears through oneDNN with prepacked weights on the CPU
    (dreamer4_torch.prepack: the same function to fp32 rounding, 2-2.6x faster for one frame's rows).
    `history_limit` bounds the frames kept (default: the window); the uncached "roll" path keeps the whole
    history because it recomputes it.
    """

    def __init__(self, dynamics: Dynamics, *, n_steps: int = 4, context_length: Optional[int] = 24,
                 context_mode: str = "upstream", tau_ctx: float = 0.9, window_mode: str = "slide",
                 use_cache: bool = True, history_limit: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, prepack: bool = True):
        if not isinstance(dynamics, Dynamics):
            raise TypeError(f"Sampler needs a dreamer4_torch Dynamics model, got {type(dynamics).__name__}")
        if context_mode not in CONTEXT_MODES:
            raise ValueError(f"context_mode must be one of {CONTEXT_MODES}, got {context_mode!r}")
        if window_mode not in WINDOW_MODES:
            raise ValueError(f"window_mode must be one of {WINDOW_MODES}, got {window_mode!r}")
        cfg = dynamics.config
        if window_mode == "roll" and not cfg.transformer.time_rope:
            raise ValueError("window_mode='roll' keeps cached keys/values while the window moves, which is only "
                             "exact for relative time positions (transformer.time_rope=True); this model adds "
                             "window-relative sinusoid positions, use window_mode='slide'")
        self.dynamics = dynamics
        self.k_max = cfg.k_max
        self.context_mode = context_mode
        self.window_mode = window_mode
        self.use_cache = bool(use_cache)
        self.generator = generator
        # CPU fp32: the model's Linears through oneDNN with prepacked weights (dreamer4_torch.prepack), for
        # the cached and the uncached path alike; a no-op elsewhere.
        self.prepacked = PrepackedLinears(dynamics, enabled=prepack)
        self.history_limit = history_limit
        _, self.context_step_idx = context_labels(cfg.k_max)
        if context_mode == "upstream":
            self.context_signal_idx, _ = context_labels(cfg.k_max)
            self.context_tau = None
        else:
            if not 0.0 < tau_ctx < 1.0:
                raise ValueError(f"tau_ctx must lie in (0, 1), got {tau_ctx}")
            self.context_signal_idx = noisy_context_signal_idx(cfg.k_max, tau_ctx)
            self.context_tau = self.context_signal_idx / cfg.k_max
        self.n_steps = n_steps
        self.context_length = context_length
        self._started = False

    # ------------------------------------------------------------------ options

    @property
    def n_steps(self) -> int:
        return len(self.plan)

    @n_steps.setter
    def n_steps(self, k: int) -> None:
        self.plan = inference_plan(self.k_max, int(k))

    @property
    def context_length(self) -> Optional[int]:
        return self._context_length

    @context_length.setter
    def context_length(self, c: Optional[int]) -> None:
        if c is not None and int(c) < 1:
            raise ValueError(f"context_length must be >= 1 (or None for the whole history), got {c}")
        self._context_length = None if c is None else int(c)
        if self.window_mode == "roll":
            self.cache = None     # a different band: recompute the retained frames

    # ------------------------------------------------------------------ state

    def reset(self, context: torch.Tensor, actions: Optional[torch.Tensor] = None,
              act_mask: Optional[torch.Tensor] = None, context_noise: Optional[torch.Tensor] = None) -> None:
        """Start B streams from clean packed context latents (B, C0, S, D), C0 >= 1.

        actions (B, C0, A): the actions that produced the context frames (row 0 is never used: the
        first frame of a window gets a zero action), or None for a model run without actions (every
        frame then gets the learned base token, and step() takes no action). act_mask (A,), (B, A) or
        (B, C0, A), 1 = real dimension; a (A,) or (B, A) mask also applies to later steps.
        context_noise (B, C0, S, D): eps of the "noised" context mode (drawn when None).
        """
        cfg = self.dynamics.config
        if not isinstance(context, torch.Tensor) or context.dim() != 4 or \
                tuple(context.shape[2:]) != (cfg.n_spatial, cfg.d_spatial) or context.shape[1] < 1:
            raise ValueError(f"context must be packed latents of shape (B, C0 >= 1, {cfg.n_spatial}, "
                             f"{cfg.d_spatial}), got {tuple(getattr(context, 'shape', ()))}")
        if not context.is_floating_point():
            raise TypeError(f"context must be a float tensor, got {context.dtype}")
        B, C0 = context.shape[:2]
        self.batch, self.device, self.dtype = B, context.device, context.dtype
        self.use_actions = actions is not None
        self.act_mask = None
        if actions is not None:
            actions = self._check_actions(actions, (B, C0, cfg.action_dim), "actions")
            mask = broadcast_act_mask(act_mask, B, C0, cfg.action_dim)
            if mask is not None:
                mask = mask.to(device=self.device, dtype=self.dtype)
                if act_mask.dim() <= 2:
                    self.act_mask = mask[:, 0]
                actions = actions * mask
        elif act_mask is not None:
            raise ValueError("act_mask given without actions")
        if context_noise is not None and tuple(context_noise.shape) != tuple(context.shape):
            raise ValueError(f"context_noise must have the context's shape {tuple(context.shape)}, "
                             f"got {tuple(context_noise.shape)}")
        self._frames: list[torch.Tensor] = []        # context inputs as the model sees them (B, S, D)
        self._actions: list[Optional[torch.Tensor]] = []   # masked actions (B, A), None without actions
        self._first = 0                              # absolute index of self._frames[0]
        self.cache = None
        self._cache_origin = 0                       # slide: absolute frame at cache position 0
        self._started = True
        for t in range(C0):
            eps = None if context_noise is None else context_noise[:, t]
            self._append(context[:, t], None if actions is None else actions[:, t], eps)

    @property
    def n_frames(self) -> int:
        """Frames in the stream so far (context given at reset + generated)."""
        return self._first + len(self._frames)

    def _append(self, z: torch.Tensor, action: Optional[torch.Tensor], eps: Optional[torch.Tensor]) -> None:
        if self.context_tau is not None:
            if eps is None:
                eps = self._randn(z.shape)
            z = ((1.0 - self.context_tau) * eps.to(z) + self.context_tau * z).to(self.dtype)
        self._frames.append(z)
        self._actions.append(action)
        self._trim()

    def _trim(self) -> None:
        """Forget frames no later step can need."""
        if self.window_mode == "roll" and not self.use_cache:
            return                                    # the reference path recomputes the whole history
        limit = self.context_length
        if self.history_limit is not None and limit is not None:
            limit = max(self.history_limit, limit)
        if limit is None:
            return
        drop = len(self._frames) - limit
        if self.window_mode == "roll":
            # frames not yet in the cache are still needed to compute the cache exactly
            committed = self.cache.end if self.cache is not None else self._first
            drop = min(drop, committed - self._first)
        if drop > 0:
            del self._frames[:drop], self._actions[:drop]
            self._first += drop

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def step(self, action: Optional[torch.Tensor] = None, act_mask: Optional[torch.Tensor] = None,
             noise: Optional[torch.Tensor] = None, context_noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Generate the next frame and append it to the context; returns its clean packed latent (B, S, D).

        action (B, A) or (A,): the action that produces the new frame (required iff reset got actions);
        act_mask (A,) or (B, A) (default: the mask given to reset). noise (B, S, D): the starting noise
        (drawn when None). context_noise (B, S, D): eps for this frame when it becomes "noised" context.
        """
        if not self._started:
            raise RuntimeError("call reset(context) before step()")
        cfg = self.dynamics.config
        B, S, D = self.batch, cfg.n_spatial, cfg.d_spatial
        if self.use_actions:
            if action is None:
                raise ValueError("this sampler was reset with actions: step() needs the action that produces "
                                 "the new frame")
            action = self._check_actions(action, (B, cfg.action_dim), "action")
            mask = self.act_mask if act_mask is None else \
                self._check_actions(act_mask, (B, cfg.action_dim), "act_mask")
            if mask is not None:
                action = action * mask
        elif action is not None or act_mask is not None:
            raise ValueError("this sampler was reset without actions (the model's base action token); "
                             "pass actions to reset() to condition on actions")
        if noise is None:
            noise = self._randn((B, S, D))
        elif tuple(noise.shape) != (B, S, D):
            raise ValueError(f"noise must have shape ({B}, {S}, {D}), got {tuple(noise.shape)}")
        noise = noise.to(device=self.device, dtype=self.dtype)
        if context_noise is not None and tuple(context_noise.shape) != (B, S, D):
            raise ValueError(f"context_noise must have shape ({B}, {S}, {D}), got {tuple(context_noise.shape)}")
        with eval_mode(self.dynamics), self.prepacked:
            z = self._generate_cached(noise, action) if self.use_cache else self._generate(noise, action)
        self._append(z, action, context_noise)
        return z

    def _window_start(self) -> int:
        """Absolute index of the oldest frame the next frame sees."""
        n = self.n_frames
        start = 0 if self.context_length is None else n - self.context_length
        return max(start, self._first)

    def _inputs(self, first: int, z: Optional[torch.Tensor], action: Optional[torch.Tensor],
                step: Optional[SamplerStep], zero_action_at: int):
        """Model inputs for the context frames first..n-1 followed by the new frame z (if given)."""
        frames = self._frames[first - self._first:]
        actions = self._actions[first - self._first:]
        if z is not None:
            frames = frames + [z]
            actions = actions + [action]
        B, T = self.batch, len(frames)
        packed = torch.stack(frames, dim=1)
        signal = torch.full((B, T), self.context_signal_idx, dtype=torch.long, device=self.device)
        steps = torch.full((B, T), self.context_step_idx, dtype=torch.long, device=self.device)
        if step is not None:
            signal[:, -1], steps[:, -1] = step.signal_idx, step.step_idx
        acts = None
        if self.use_actions:
            acts = torch.stack(actions, dim=1)
            if first <= zero_action_at < first + T:
                acts = acts.clone()
                acts[:, zero_action_at - first] = 0.0
        return packed, signal, steps, acts

    def _zero_action_frame(self, window_start: int) -> int:
        # slide: the first frame of the (window-relative) window; roll: the first frame of the stream.
        return window_start if self.window_mode == "slide" else 0

    def _generate(self, z: torch.Tensor, action: Optional[torch.Tensor]) -> torch.Tensor:
        """Reference path: every denoising step recomputes the whole window (upstream's demo)."""
        if self.window_mode == "slide":
            first, window = self._window_start(), None
        else:
            first, window = self._first, self.context_length     # full history, banded time attention
        zero_at = self._zero_action_frame(self._window_start())
        for step in self.plan:
            packed, signal, steps, acts = self._inputs(first, z, action, step, zero_at)
            x1 = self.dynamics(packed, signal_idx=signal, step_idx=steps, actions=acts, time_window=window)[0]
            z = euler_step(z, x1[:, -1], step)
        return z

    def _generate_cached(self, z: torch.Tensor, action: Optional[torch.Tensor]) -> torch.Tensor:
        window_start = self._window_start()
        if self.window_mode == "slide":
            window = None
            if self.cache is None or self._cache_origin != window_start:
                # The window moved: every frame's time position changed, so rebuild from the window.
                self.cache = self.dynamics.new_cache(start=0)
                self._cache_origin = window_start
            pending = self._cache_origin + self.cache.length
        else:
            window = self.context_length
            if self.cache is None:
                self.cache = self.dynamics.new_cache(start=self._first)
            pending = self.cache.end
        zero_at = self._zero_action_frame(window_start)
        n_pending = self.n_frames - pending
        # First denoising step, committing the frames not yet in the cache in the same pass.
        step = self.plan[0]
        packed, signal, steps, acts = self._inputs(pending, z, action, step, zero_at)
        x1 = self.dynamics(packed, signal_idx=signal, step_idx=steps, actions=acts, cache=self.cache,
                           commit=n_pending, time_window=window, outputs_from=n_pending)[0]
        z = euler_step(z, x1[:, -1], step)
        if self.window_mode == "roll" and window is not None:
            self.cache.drop_oldest(self.cache.length - window)
        # Remaining steps: only the new frame's tokens.
        for step in self.plan[1:]:
            packed, signal, steps, acts = self._inputs(self.n_frames, z, action, step, zero_at)
            x1 = self.dynamics(packed, signal_idx=signal, step_idx=steps, actions=acts, cache=self.cache,
                               commit=0, time_window=window)[0]
            z = euler_step(z, x1[:, -1], step)
        return z

    # ------------------------------------------------------------------ checks

    def _check_actions(self, x: torch.Tensor, shape: tuple, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor of shape {shape}")
        if x.dim() == len(shape) - 1 and tuple(x.shape) == shape[1:]:
            x = x.expand(shape)
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (zero-padded to the model's action_dim), "
                             f"got {tuple(x.shape)}")
        return x.to(device=self.device, dtype=self.dtype)



def broadcast_act_mask(mask: Optional[torch.Tensor], B: int, T: int, A: int) -> Optional[torch.Tensor]:
    """An action mask given as (A,), (B, A), (B, T, A) (or with 1s for B/T) -> (B, T, A)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"act_mask must be a tensor of shape ({A},), ({B}, {A}) or ({B}, {T}, {A})")
    if mask.dim() == 1:
        mask = mask[None, None]
    elif mask.dim() == 2:
        mask = mask[:, None]
    if mask.dim() != 3 or mask.shape[-1] != A or mask.shape[0] not in (1, B) or mask.shape[1] not in (1, T):
        raise ValueError(f"act_mask must have shape ({A},), ({B}, {A}) or ({B}, {T}, {A}), "
                         f"got {tuple(mask.shape)}")
    return mask.expand(B, T, A)


def _draw(source: Noise, shape: tuple, like: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(source, torch.Tensor):
        if tuple(source.shape) != shape:
            hint = ""
            if name == "noise" and source.dim() == 5:
                hint = (" (one starting noise per frame: the K Euler steps are deterministic, so there is no "
                        "per-step noise axis)")
            raise ValueError(f"{name} must have shape {shape}, got {tuple(source.shape)}{hint}")
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
    if not isinstance(context_packed, torch.Tensor) or context_packed.dim() != 4:
        raise ValueError(f"context_packed must be a (B, C, S, D) tensor, got "
                         f"{tuple(getattr(context_packed, 'shape', ()))}")
    B, C, S, D = context_packed.shape
    H = int(horizon)
    if H < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    A = dynamics.config.action_dim
    if actions is not None and (actions.dim() != 3 or tuple(actions.shape) != (B, C + H, A)):
        raise ValueError(f"actions must have shape (B, C + H, A) = ({B}, {C + H}, {A}), got {tuple(actions.shape)}")
    sampler = Sampler(dynamics, n_steps=n_steps, context_length=context_length, context_mode=context_mode,
                      tau_ctx=tau_ctx, window_mode=window_mode, use_cache=use_cache, prepack=prepack)
    start_noise = _draw(noise, (B, H, S, D), context_packed, "noise")
    ctx_noise = None
    if context_mode == "noised":
        ctx_noise = _draw(context_noise if context_noise is not None else
                          (noise if isinstance(noise, torch.Generator) else None),
                          (B, C + H, S, D), context_packed, "context_noise")
    if act_mask is not None and actions is None:
        raise ValueError("act_mask given without actions")
    mask = broadcast_act_mask(act_mask, B, C + H, A)
    sampler.reset(context_packed, None if actions is None else actions[:, :C],
                  None if mask is None else mask[:, :C], None if ctx_noise is None else ctx_noise[:, :C])
    out = []
    for h in range(H):
        t = C + h
        z = sampler.step(None if actions is None else actions[:, t],
                         None if mask is None else mask[:, t],
                         noise=start_noise[:, h], context_noise=None if ctx_noise is None else ctx_noise[:, t])
        out.append(z)
    return torch.stack(out, dim=1)
