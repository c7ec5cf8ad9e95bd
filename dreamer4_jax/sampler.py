"""Autoregressive generation with the JAX dynamics model: shortcut Euler steps, a context window, a KV cache.

The JAX mirror of dreamer4_torch/sampler.py, whose module docstring is the normative description; in
short:

* Each new frame starts from Gaussian noise z (tau = 0) and takes K Euler steps (K a power of two
  <= k_max): at step i, tau_i = i/K, d = 1/K, x1 = f(z, tau_i, d), z <- z + d (x1 - z) / max(1e-4, 1 - tau_i).
* Context frames (`context_mode`): "upstream" = clean, labelled (k_max - 1, e_max); "noised" = corrupted
  once, when the frame enters the context, to tau_ctx: (1 - tau_ctx) eps + tau_ctx z.
* Actions: row t produced frame t; the first frame of the window gets a zero action.
* Window (`context_length` C, None = whole history), `window_mode`: "slide" (window-relative positions;
  the cache is rebuilt in the first denoising pass whenever the window moves) or "roll" (time RoPE
  models only; the cache rolls and is never rebuilt; equal to banded attention with time_window=C).
* `use_cache=True`: per time-attention layer the context frames' keys/values (dreamer4_jax.layers.KVCache)
  are kept between frames; the cached sampler computes the same function as the uncached one to fp32
  rounding (tests/jax/test_sampler.py), and the same function as the torch sampler on converted weights
  (parity_tests/test_sampler.py).

Randomness is injectable so that torch and JAX can be fed identical noise: every draw (the starting
noise of a frame, the eps of a "noised" context frame) can be given as an array, and the draws the sampler
makes itself come from `key` (a jax.random key, split once per draw) or from `noise_fn(shape) -> array`
(any source, e.g. a torch.Generator, called at exactly the points where the torch sampler draws from
its generator, in the same order). Arrays may be jax or numpy arrays.

By default (`jit=False`) the model runs eagerly, op by op, and the cache is Python state holding jax
arrays. `jit=True` runs every model call as one compiled pass instead: the cache's arrays go in and come
out as arguments, the position and RoPE tables are computed on the host and passed as arrays, and the
time mask (which depends only on the window's shape) is static. A repeated call is then ~2.5x faster
(~10 ms against ~25 ms for the tiny model on the loaded 2-core development machine), but every distinct
(frames, cached frames, commit) signature costs a compilation of the whole pass (1.6-2.8 s there), about
two per frame while the window fills. Eager JAX compiles each operation for each new shape too, but
shares those compilations across models and, when only the cached length changes, recompiles only the
few time-attention operations that depend on it. `jit="auto"` (the demo's choice) takes the best of
both: eager while the window fills (and for a whole-history window or the growing uncached "roll"
reference), compiled once the window is full and the shapes repeat. All settings compute the same
function (to fp32 rounding) and may be changed within a stream.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
from typing import Callable, Iterator, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.shortcut import (SAMPLER_MIN_DENOM, SamplerStep, context_labels, inference_plan,
                             noisy_context_signal_idx)

from .dynamics import Dynamics
from .layers import LayerKV, StaticMask

CONTEXT_MODES = ("upstream", "noised")
WINDOW_MODES = ("slide", "roll")

NoiseFn = Callable[[tuple], "jax.Array | np.ndarray"]
Noise = Union[None, jax.Array, np.ndarray, int, NoiseFn]


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Run `model` in eval mode (no dropout) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def euler_step(z: jax.Array, x1_hat: jax.Array, step: SamplerStep) -> jax.Array:
    """z + d (x1_hat - z) / max(1e-4, 1 - tau), computed in float32 (upstream's sampler update)."""
    denom = max(SAMPLER_MIN_DENOM, 1.0 - step.tau)
    velocity = (x1_hat.astype(jnp.float32) - z.astype(jnp.float32)) / denom
    return (z.astype(jnp.float32) + velocity * step.step_size).astype(z.dtype)


@functools.partial(nnx.jit, static_argnames=("mask", "commit", "outputs_from"))
def _compiled_pass(dyn, packed, signal, steps, acts, positions, rope, keys, values, *, mask, commit, outputs_from):
    """Dynamics.prepared_pass with the cache's arrays as inputs and outputs (for Sampler(jit=True))."""
    tokens = dyn.tokens(packed, signal, steps, acts)
    caches = None if keys is None else [LayerKV(k, v) for k, v in zip(keys, values)]
    x1, _ = dyn.prepared_pass(tokens, positions, rope, None if mask is None else mask.array, caches, commit,
                              outputs_from)
    if caches is None:
        return x1, None, None
    return x1, [c.keys for c in caches], [c.values for c in caches]


@nnx.jit
def _compiled_plain(dyn, packed, signal, steps, acts):
    """The plain forward (no cache, no window) compiled (for Sampler(jit=True, use_cache=False))."""
    return dyn(packed, signal_idx=signal, step_idx=steps, actions=acts)[0]


def is_key(x) -> bool:
    """A jax.random key: a typed key array, or a legacy raw uint32 key of shape (2,)."""
    if not isinstance(x, (jax.Array, np.ndarray)):
        return False
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return x.shape == ()
    return x.dtype == np.uint32 and x.shape == (2,)


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray)) and not is_key(x)


def _as_key(key) -> jax.Array:
    if key is None:
        return jax.random.key(secrets.randbits(31))
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if is_key(key):
        return key
    raise TypeError(f"key must be None, an int seed or a jax.random key, got {type(key).__name__}")


class Sampler:
    """Stateful next-frame generator for a batch of B independent streams (the demo's engine).

    sampler = Sampler(dyn, n_steps=2, context_length=16, key=jax.random.key(0))
    sampler.reset(context)                 # (B, C0, S, D) clean packed latents, C0 >= 1
    z = sampler.step(action)               # (B, S, D): the next frame, produced by `action` (B, A)

    `n_steps` and `context_length` may be changed between steps (a changed window start rebuilds the
    cache). `history_limit` bounds the frames kept (default: the window); the uncached "roll" path keeps
    the whole history because it recomputes it. Draws the sampler makes itself come from `key` (a
    jax.random key or an int seed; None: a fresh random seed) or, when given, `noise_fn(shape) -> array`.
    `jit`: False (eager model calls), True (compiled) or "auto" (compiled once the window is full), see the
    module docstring; `use_cache` and `jit` may be changed between steps.
    """

    def __init__(self, dynamics: Dynamics, *, n_steps: int = 4, context_length: Optional[int] = 24,
                 context_mode: str = "upstream", tau_ctx: float = 0.9, window_mode: str = "slide",
                 use_cache: bool = True, history_limit: Optional[int] = None,
                 key: Union[None, int, jax.Array] = None, noise_fn: Optional[NoiseFn] = None,
                 jit: Union[bool, str] = False):
        if not isinstance(dynamics, Dynamics):
            raise TypeError(f"Sampler needs a dreamer4_jax Dynamics model, got {type(dynamics).__name__}")
        if context_mode not in CONTEXT_MODES:
            raise ValueError(f"context_mode must be one of {CONTEXT_MODES}, got {context_mode!r}")
        if window_mode not in WINDOW_MODES:
            raise ValueError(f"window_mode must be one of {WINDOW_MODES}, got {window_mode!r}")
        cfg = dynamics.config
        if window_mode == "roll" and not cfg.transformer.time_rope:
            raise ValueError("window_mode='roll' keeps cached keys/values while the window moves, which is only "
                             "exact for relative time positions (transformer.time_rope=True); this model adds "
                             "window-relative sinusoid positions, use window_mode='slide'")
        if noise_fn is not None and not callable(noise_fn):
            raise TypeError(f"noise_fn must be a callable shape -> array, got {type(noise_fn).__name__}")
        if noise_fn is not None and key is not None:
            raise ValueError("give either key or noise_fn, not both")
        self.dynamics = dynamics
        self.k_max = cfg.k_max
        self.context_mode = context_mode
        self.window_mode = window_mode
        self.use_cache = bool(use_cache)
        self.jit = jit
        self.noise_fn = noise_fn
        self.key = None if noise_fn is not None else _as_key(key)
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
    def jit(self) -> Union[bool, str]:
        return self._jit

    @jit.setter
    def jit(self, value: Union[bool, str]) -> None:
        if value not in (True, False, "auto"):
            raise ValueError(f"jit must be True, False or 'auto', got {value!r}")
        self._jit = value if value == "auto" else bool(value)

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

    def reset(self, context, actions=None, act_mask=None, context_noise=None) -> None:
        """Start B streams from clean packed context latents (B, C0, S, D), C0 >= 1.

        actions (B, C0, A): the actions that produced the context frames (row 0 is never used: the
        first frame of a window gets a zero action), or None for a model run without actions (every
        frame then gets the learned base token, and step() takes no action). act_mask (A,), (B, A) or
        (B, C0, A), 1 = real dimension; a (A,) or (B, A) mask also applies to later steps.
        context_noise (B, C0, S, D): eps of the "noised" context mode (drawn when None).
        Arrays may be jax or numpy arrays.
        """
        cfg = self.dynamics.config
        if not _is_array(context) or context.ndim != 4 or \
                tuple(context.shape[2:]) != (cfg.n_spatial, cfg.d_spatial) or context.shape[1] < 1:
            raise ValueError(f"context must be packed latents of shape (B, C0 >= 1, {cfg.n_spatial}, "
                             f"{cfg.d_spatial}), got {tuple(getattr(context, 'shape', ()))}")
        if not jnp.issubdtype(context.dtype, jnp.floating):
            raise TypeError(f"context must be a float array, got {context.dtype}")
        context = jnp.asarray(context)
        B, C0 = context.shape[:2]
        self.batch, self.dtype = B, context.dtype
        self.use_actions = actions is not None
        self.act_mask = None
        if actions is not None:
            actions = self._check_actions(actions, (B, C0, cfg.action_dim), "actions")
            mask = broadcast_act_mask(act_mask, B, C0, cfg.action_dim)
            if mask is not None:
                mask = mask.astype(self.dtype)
                if act_mask.ndim <= 2:
                    self.act_mask = mask[:, 0]
                actions = actions * mask
        elif act_mask is not None:
            raise ValueError("act_mask given without actions")
        if context_noise is not None:
            if not _is_array(context_noise) or tuple(context_noise.shape) != tuple(context.shape):
                raise ValueError(f"context_noise must have the context's shape {tuple(context.shape)}, "
                                 f"got {tuple(getattr(context_noise, 'shape', ()))}")
            context_noise = jnp.asarray(context_noise, self.dtype)
        self._frames: list[jax.Array] = []           # context inputs as the model sees them (B, S, D)
        self._actions: list[Optional[jax.Array]] = []   # masked actions (B, A), None without actions
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

    def _append(self, z: jax.Array, action: Optional[jax.Array], eps: Optional[jax.Array]) -> None:
        if self.context_tau is not None:
            if eps is None:
                eps = self._randn(z.shape)
            z = ((1.0 - self.context_tau) * eps.astype(z.dtype) + self.context_tau * z).astype(self.dtype)
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

    def _randn(self, shape) -> jax.Array:
        shape = tuple(int(n) for n in shape)
        if self.noise_fn is not None:
            x = self.noise_fn(shape)
            if tuple(np.shape(x)) != shape:
                raise ValueError(f"noise_fn returned shape {tuple(np.shape(x))} for a draw of shape {shape}")
            return jnp.asarray(np.asarray(x) if not isinstance(x, jax.Array) else x, self.dtype)
        self.key, sub = jax.random.split(self.key)
        return jax.random.normal(sub, shape, self.dtype)

    # ------------------------------------------------------------------ generation

    def step(self, action=None, act_mask=None, noise=None, context_noise=None) -> jax.Array:
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
        elif not _is_array(noise) or tuple(noise.shape) != (B, S, D):
            raise ValueError(f"noise must have shape ({B}, {S}, {D}), got {tuple(getattr(noise, 'shape', ()))}")
        noise = jnp.asarray(noise, self.dtype)
        if context_noise is not None:
            if not _is_array(context_noise) or tuple(context_noise.shape) != (B, S, D):
                raise ValueError(f"context_noise must have shape ({B}, {S}, {D}), "
                                 f"got {tuple(getattr(context_noise, 'shape', ()))}")
            context_noise = jnp.asarray(context_noise, self.dtype)
        self._compiled = self.jit is True or (self.jit == "auto" and self._steady())
        with eval_mode(self.dynamics):
            z = self._generate_cached(noise, action) if self.use_cache else self._generate(noise, action)
        self._append(z, action, context_noise)
        return z

    def _steady(self) -> bool:
        """Whether this frame's model calls have the shapes of every later frame's (the window is full)."""
        if self.context_length is None or (self.window_mode == "roll" and not self.use_cache):
            return False
        return self.n_frames - self._window_start() == self.context_length

    def _window_start(self) -> int:
        """Absolute index of the oldest frame the next frame sees."""
        n = self.n_frames
        start = 0 if self.context_length is None else n - self.context_length
        return max(start, self._first)

    def _inputs(self, first: int, z: Optional[jax.Array], action: Optional[jax.Array],
                step: Optional[SamplerStep], zero_action_at: int):
        """Model inputs for the context frames first..n-1 followed by the new frame z (if given)."""
        frames = self._frames[first - self._first:]
        actions = self._actions[first - self._first:]
        if z is not None:
            frames = frames + [z]
            actions = actions + [action]
        B, T = self.batch, len(frames)
        packed = jnp.stack(frames, axis=1)
        signal = np.full((B, T), self.context_signal_idx, dtype=np.int32)
        steps = np.full((B, T), self.context_step_idx, dtype=np.int32)
        if step is not None:
            signal[:, -1], steps[:, -1] = step.signal_idx, step.step_idx
        acts = None
        if self.use_actions:
            acts = jnp.stack(actions, axis=1)
            if first <= zero_action_at < first + T:
                acts = acts.at[:, zero_action_at - first].set(0.0)
        return packed, jnp.asarray(signal), jnp.asarray(steps), acts

    def _model(self, packed, signal, steps, acts, cache=None, commit: int = 0, window: Optional[int] = None,
               outputs_from: int = 0) -> jax.Array:
        """x1_hat of the dynamics model, eager or compiled (see jit); commits into `cache` either way."""
        dyn = self.dynamics
        if not self._compiled:
            return dyn(packed, signal_idx=signal, step_idx=steps, actions=acts, cache=cache, commit=commit,
                       time_window=window, outputs_from=outputs_from)[0]
        dyn.check_inputs(packed, signal, steps, acts, None, None)
        if cache is None and window is None and not outputs_from:
            return _compiled_plain(dyn, packed, signal, steps, acts)
        positions, rope, mask = dyn.generation_tables(packed.shape[1], packed.dtype, cache, commit, window,
                                                      outputs_from)
        keys = values = None
        if cache is not None:
            keys = [layer.keys for layer in cache.layers]
            values = [layer.values for layer in cache.layers]
        x1, keys, values = _compiled_pass(dyn, packed, signal, steps, acts, positions, rope, keys, values,
                                          mask=None if mask is None else StaticMask(mask), commit=commit,
                                          outputs_from=outputs_from)
        if cache is not None:
            for layer, k, v in zip(cache.layers, keys, values):
                layer.keys, layer.values = k, v
            cache.length += commit
        return x1

    def _zero_action_frame(self, window_start: int) -> int:
        # slide: the first frame of the (window-relative) window; roll: the first frame of the stream.
        return window_start if self.window_mode == "slide" else 0

    def _generate(self, z: jax.Array, action: Optional[jax.Array]) -> jax.Array:
        """Reference path: every denoising step recomputes the whole window (upstream's demo)."""
        if self.window_mode == "slide":
            first, window = self._window_start(), None
        else:
            first, window = self._first, self.context_length     # full history, banded time attention
        zero_at = self._zero_action_frame(self._window_start())
        for step in self.plan:
            packed, signal, steps, acts = self._inputs(first, z, action, step, zero_at)
            x1 = self._model(packed, signal, steps, acts, window=window)
            z = euler_step(z, x1[:, -1], step)
        return z

    def _generate_cached(self, z: jax.Array, action: Optional[jax.Array]) -> jax.Array:
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
        x1 = self._model(packed, signal, steps, acts, self.cache, commit=n_pending, window=window,
                         outputs_from=n_pending)
        z = euler_step(z, x1[:, -1], step)
        if self.window_mode == "roll" and window is not None:
            self.cache.drop_oldest(self.cache.length - window)
        # Remaining steps: only the new frame's tokens.
        for step in self.plan[1:]:
            packed, signal, steps, acts = self._inputs(self.n_frames, z, action, step, zero_at)
            x1 = self._model(packed, signal, steps, acts, self.cache, commit=0, window=window)
            z = euler_step(z, x1[:, -1], step)
        return z

    # ------------------------------------------------------------------ checks

    def _check_actions(self, x, shape: tuple, name: str) -> jax.Array:
        if not _is_array(x) or not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be a float array of shape {shape}")
        x = jnp.asarray(x)
        if x.ndim == len(shape) - 1 and tuple(x.shape) == shape[1:]:
            x = jnp.broadcast_to(x, shape)
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (zero-padded to the model's action_dim), "
                             f"got {tuple(x.shape)}")
        return x.astype(self.dtype)


def broadcast_act_mask(mask, B: int, T: int, A: int) -> Optional[jax.Array]:
    """An action mask given as (A,), (B, A), (B, T, A) (or with 1s for B/T) -> (B, T, A)."""
    if mask is None:
        return None
    if not _is_array(mask):
        raise TypeError(f"act_mask must be an array of shape ({A},), ({B}, {A}) or ({B}, {T}, {A})")
    mask = jnp.asarray(mask)
    if mask.ndim == 1:
        mask = mask[None, None]
    elif mask.ndim == 2:
        mask = mask[:, None]
    if mask.ndim != 3 or mask.shape[-1] != A or mask.shape[0] not in (1, B) or mask.shape[1] not in (1, T):
        raise ValueError(f"act_mask must have shape ({A},), ({B}, {A}) or ({B}, {T}, {A}), "
                         f"got {tuple(mask.shape)}")
    return jnp.broadcast_to(mask, (B, T, A))


def _draw(source, shape: tuple, dtype, name: str) -> jax.Array:
    """An injected array (checked), or a draw from a key / noise_fn."""
    if _is_array(source):
        if tuple(source.shape) != shape:
            hint = ""
            if name == "noise" and source.ndim == 5:
                hint = (" (one starting noise per frame: the K Euler steps are deterministic, so there is no "
                        "per-step noise axis)")
            raise ValueError(f"{name} must have shape {shape}, got {tuple(source.shape)}{hint}")
        return jnp.asarray(source, dtype)
    if callable(source):
        x = source(shape)
        if tuple(np.shape(x)) != shape:
            raise ValueError(f"the noise function returned shape {tuple(np.shape(x))} for {name} of shape {shape}")
        return jnp.asarray(x, dtype)
    raise TypeError(f"{name} must be None, an array of shape {shape}, an int seed, a jax.random key or a "
                    f"callable shape -> array, got {type(source).__name__}")


def rollout(dynamics: Dynamics, context_packed, actions=None, act_mask=None, horizon: int = 16, *,
            n_steps: int = 4, noise: Noise = None, use_cache: bool = True, context_mode: str = "upstream",
            context_length: Optional[int] = None, window_mode: str = "slide", tau_ctx: float = 0.9,
            context_noise=None, jit: Union[bool, str] = False) -> jax.Array:
    """Open-loop rollout: predict `horizon` packed latents after a context, under given actions.

    context_packed (B, C, S, D): clean packed latents of C >= 1 context frames (dyn.pack(tok.encode(x))).
    actions (B, C + H, A) or None: row t is the action that produced frame t (so row C + h produces the
        h-th predicted frame; rows before C condition the context; row 0 is never used). None runs the
        model without actions (the base token).
    act_mask: (A,), (B, A) or (B, C + H, A), 1 = real dimension.
    n_steps: K shortcut Euler steps per frame (1, 2, 4 or 8 with k_max = 8).
    noise: a (B, H, S, D) array of starting noise (one draw per predicted frame; the steps are
        deterministic), a jax.random key or an int seed, a callable shape -> array, or None (a fresh
        random seed). A key is split into the starting-noise key and the context-noise key; a callable is
        asked for the starting noise first, then the context noise (the torch rollout's generator order).
    context_mode: "upstream" (clean context labelled k_max - 1) or "noised" (context corrupted once to
        tau_ctx); context_noise (B, C + H, S, D) gives that corruption's eps per frame.
    context_length: frames a new frame sees (None: all earlier frames, like upstream's evaluation).
    window_mode: "slide" (upstream) or "roll" (time_rope models), see the module docstring.
    use_cache: KV-cached generation (same result as use_cache=False to fp32 rounding).
    jit: False (eager model calls), True (compiled) or "auto" (compiled once the window is full), see Sampler.
    Returns the predicted packed latents (B, H, S, D); the model is run in eval mode.
    """
    if not _is_array(context_packed) or context_packed.ndim != 4:
        raise ValueError(f"context_packed must be a (B, C, S, D) array, got "
                         f"{tuple(getattr(context_packed, 'shape', ()))}")
    context_packed = jnp.asarray(context_packed)
    B, C, S, D = context_packed.shape
    H = int(horizon)
    if H < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    A = dynamics.config.action_dim
    if actions is not None and (not _is_array(actions) or actions.ndim != 3 or tuple(actions.shape) != (B, C + H, A)):
        raise ValueError(f"actions must have shape (B, C + H, A) = ({B}, {C + H}, {A}), "
                         f"got {tuple(getattr(actions, 'shape', ()))}")
    sampler = Sampler(dynamics, n_steps=n_steps, context_length=context_length, context_mode=context_mode,
                      tau_ctx=tau_ctx, window_mode=window_mode, use_cache=use_cache, key=0, jit=jit)
    dtype = context_packed.dtype
    source = noise
    ctx_source = context_noise
    if noise is None or isinstance(noise, (int, np.integer)) or is_key(noise):
        k_start, k_ctx = jax.random.split(_as_key(noise))
        source = lambda shape: jax.random.normal(k_start, shape, dtype)     # noqa: E731
        if ctx_source is None:
            ctx_source = lambda shape: jax.random.normal(k_ctx, shape, dtype)   # noqa: E731
    elif ctx_source is None and callable(noise) and not _is_array(noise):
        ctx_source = noise
    start_noise = _draw(source, (B, H, S, D), dtype, "noise")
    ctx_noise = None
    if context_mode == "noised":
        if ctx_source is None:
            ctx_source = lambda shape: jax.random.normal(jax.random.key(secrets.randbits(31)), shape, dtype)  # noqa: E731
        ctx_noise = _draw(ctx_source, (B, C + H, S, D), dtype, "context_noise")
    if act_mask is not None and actions is None:
        raise ValueError("act_mask given without actions")
    mask = broadcast_act_mask(act_mask, B, C + H, A)
    actions = None if actions is None else jnp.asarray(actions)
    sampler.reset(context_packed, None if actions is None else actions[:, :C],
                  None if mask is None else mask[:, :C], None if ctx_noise is None else ctx_noise[:, :C])
    out = []
    for h in range(H):
        t = C + h
        z = sampler.step(None if actions is None else actions[:, t],
                         None if mask is None else mask[:, t],
                         noise=start_noise[:, h], context_noise=None if ctx_noise is None else ctx_noise[:, t])
        out.append(z)
    return jnp.stack(out, axis=1)
