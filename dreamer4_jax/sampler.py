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

import functools
import secrets
from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.sampling import (CONTEXT_MODES, WINDOW_MODES, DenoisingPass, SamplerCore, act_mask_forms,
                             act_mask_shape, check_noise_shape, check_packed_context, check_rollout_inputs,
                             eval_mode, needs_batch_axis, rollout_frames)
from shared.shortcut import SAMPLER_MIN_DENOM, SamplerStep
from shared.values import check_values

from .contracts import value_range
from .dynamics import Dynamics
from .layers import LayerKV, StaticMask

__all__ = ["CONTEXT_MODES", "WINDOW_MODES", "Sampler", "broadcast_act_mask", "euler_step", "eval_mode", "is_key",
           "rollout"]

NoiseFn = Callable[[tuple], "jax.Array | np.ndarray"]
Noise = Union[None, jax.Array, np.ndarray, int, NoiseFn]


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


def _shape(x) -> tuple:
    """The shape of an array, () for anything else."""
    return tuple(x.shape) if _is_array(x) else ()


def _as_key(key) -> jax.Array:
    if key is None:
        return jax.random.key(secrets.randbits(31))
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if is_key(key):
        return key
    raise TypeError(f"key must be None, an int seed or a jax.random key, got {type(key).__name__}")


class Sampler(SamplerCore):
    """Stateful next-frame generator for a batch of B independent streams (the demo's engine).

    sampler = Sampler(dyn, n_steps=2, context_length=16, key=jax.random.key(0))
    sampler.reset(context)                 # (B, C0, S, D) clean packed latents, C0 >= 1
    z = sampler.step(action)               # (B, S, D): the next frame, produced by `action` (B, A)

    `n_steps` and `context_length` may be changed between steps (a changed window start rebuilds the
    cache). `history_limit` bounds the frames kept (default: the window); the uncached "roll" path keeps
    the whole history because it recomputes it. Draws the sampler makes itself come from `key` (a
    jax.random key or an int seed; None: a fresh random seed) or, when given, `noise_fn(shape) -> array`.
    `jit`: False (eager model calls), True (compiled) or "auto" (compiled once the window is full), see the
    module docstring; `use_cache` and `jit` may be changed between steps. The window, cache and input
    bookkeeping is shared.sampling.SamplerCore; this class holds the array operations and the jit handling.
    """

    label_dtype = np.int32

    def __init__(self, dynamics: Dynamics, *, n_steps: int = 4, context_length: Optional[int] = 24,
                 context_mode: str = "upstream", tau_ctx: float = 0.9, window_mode: str = "slide",
                 use_cache: bool = True, history_limit: Optional[int] = None,
                 key: Union[None, int, jax.Array] = None, noise_fn: Optional[NoiseFn] = None,
                 jit: Union[bool, str] = False):
        if not isinstance(dynamics, Dynamics):
            raise TypeError(f"Sampler needs a dreamer4_jax Dynamics model, got {type(dynamics).__name__}")
        if noise_fn is not None and not callable(noise_fn):
            raise TypeError(f"noise_fn must be a callable shape -> array, got {type(noise_fn).__name__}")
        if noise_fn is not None and key is not None:
            raise ValueError("give either key or noise_fn, not both")
        super().__init__(dynamics, n_steps=n_steps, context_length=context_length, context_mode=context_mode,
                         tau_ctx=tau_ctx, window_mode=window_mode, use_cache=use_cache,
                         history_limit=history_limit)
        self.jit = jit
        self.noise_fn = noise_fn
        self.key = None if noise_fn is not None else _as_key(key)

    @property
    def jit(self) -> Union[bool, str]:
        return self._jit

    @jit.setter
    def jit(self, value: Union[bool, str]) -> None:
        if value not in (True, False, "auto"):
            raise ValueError(f"jit must be True, False or 'auto', got {value!r}")
        self._jit = value if value == "auto" else bool(value)

    # ------------------------------------------------------------------ array operations (SamplerCore)

    _euler_step = staticmethod(euler_step)

    def _as_context(self, context) -> jax.Array:
        cfg = self.dynamics.config
        check_packed_context(_shape(context) or None, cfg.n_spatial, cfg.d_spatial)
        if not jnp.issubdtype(context.dtype, jnp.floating):
            raise TypeError(f"context must be a float array, got {context.dtype}")
        check_values("context", *value_range(context))
        context = jnp.asarray(context)
        self.dtype = context.dtype
        return context

    def _as_actions(self, x, shape: tuple, name: str) -> jax.Array:
        if not _is_array(x) or not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be a float array of shape {shape}")
        check_values(name, *value_range(x))      # finite; beyond [-1, 1] the model clamps, as upstream
        x = jnp.asarray(x)
        if needs_batch_axis(tuple(x.shape), shape, name):
            x = jnp.broadcast_to(x, shape)
        return x.astype(self.dtype)

    def _broadcast_mask(self, act_mask, B: int, T: int, A: int) -> Optional[jax.Array]:
        mask = broadcast_act_mask(act_mask, B, T, A)
        return None if mask is None else mask.astype(self.dtype)

    def _array_shape(self, x) -> Optional[tuple]:
        return tuple(x.shape) if _is_array(x) else None

    def _to_stream(self, x) -> jax.Array:
        return jnp.asarray(x, self.dtype)

    def _randn(self, shape) -> jax.Array:
        shape = tuple(int(n) for n in shape)
        if self.noise_fn is not None:
            x = self.noise_fn(shape)
            if tuple(np.shape(x)) != shape:
                raise ValueError(f"noise_fn returned shape {tuple(np.shape(x))} for a draw of shape {shape}")
            return jnp.asarray(np.asarray(x) if not isinstance(x, jax.Array) else x, self.dtype)
        self.key, sub = jax.random.split(self.key)
        return jax.random.normal(sub, shape, self.dtype)

    def _noised(self, z: jax.Array, eps: Optional[jax.Array]) -> jax.Array:
        if eps is None:
            eps = self._randn(z.shape)
        return ((1.0 - self.context_tau) * eps.astype(z.dtype) + self.context_tau * z).astype(self.dtype)

    def _stack_actions(self, actions: list, zero_row: Optional[int]) -> jax.Array:
        acts = jnp.stack(actions, axis=1)
        return acts if zero_row is None else acts.at[:, zero_row].set(0.0)

    def _generating(self):
        self._compiled = self.jit is True or (self.jit == "auto" and self.window_full())
        return eval_mode(self.dynamics)

    def _predict(self, p: DenoisingPass, frames: list, signal, steps, acts) -> jax.Array:
        """x1_hat of the new frame, eager or compiled (see jit); commits into the cache either way."""
        dyn, cache = self.dynamics, self.cache if p.cached else None
        packed, signal, steps = jnp.stack(frames, axis=1), jnp.asarray(signal), jnp.asarray(steps)
        commit, window, outputs_from = p.commit, p.time_window, p.outputs_from
        if not self._compiled:
            return dyn(packed, signal_idx=signal, step_idx=steps, actions=acts, cache=cache, commit=commit,
                       time_window=window, outputs_from=outputs_from)[0][:, -1]
        dyn.check_inputs(packed, signal, steps, acts, None, None)
        if cache is None and window is None and not outputs_from:
            return _compiled_plain(dyn, packed, signal, steps, acts)[:, -1]
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
        return x1[:, -1]


def broadcast_act_mask(mask, B: int, T: int, A: int) -> Optional[jax.Array]:
    """An action mask given as (A,), (B, A), (B, T, A) (or with 1s for B/T) -> (B, T, A)."""
    if mask is None:
        return None
    if not _is_array(mask):
        raise TypeError(f"act_mask must be an array of shape {act_mask_forms(B, T, A)}")
    mask = jnp.asarray(mask)
    return jnp.broadcast_to(mask.reshape(act_mask_shape(tuple(mask.shape), B, T, A)), (B, T, A))


def _draw(source, shape: tuple, dtype, name: str) -> jax.Array:
    """An injected array (checked), or a draw from a key / noise_fn."""
    if _is_array(source):
        check_noise_shape(name, tuple(source.shape), shape)
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

    context_packed (B, C, S, D), jax or numpy: clean packed latents of C >= 1 context frames
        (dyn.pack(tok.encode(x))). actions (B, C + H, A) or None (the base action token): row t is the
        action that produced frame t, so row C + h produces predicted frame h and row 0 is never used.
    act_mask: (A,), (B, A) or (B, C + H, A), 1 = real dimension. n_steps: K shortcut Euler steps per
        frame, a power of two <= k_max.
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
    A = dynamics.config.action_dim
    B, C, H = check_rollout_inputs(_shape(context_packed) or None, None if actions is None else _shape(actions),
                                   act_mask is not None, horizon, A, "array")
    context_packed = jnp.asarray(context_packed)
    S, D = context_packed.shape[2:]
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
    mask = broadcast_act_mask(act_mask, B, C + H, A)
    actions = None if actions is None else jnp.asarray(actions)
    return jnp.stack(rollout_frames(sampler, context_packed, actions, mask, start_noise, ctx_noise, H), axis=1)
