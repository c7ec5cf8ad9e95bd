"""The samplers' bookkeeping, written once for both backends: everything in generation without a tensor in it.

dreamer4_torch/sampler.py's module docstring describes the semantics (context modes, window modes, the
KV cache). This module makes every decision of it that is not array arithmetic: the option rules, the
context frames' labels, which frames a stream still keeps, where the window starts, which frame gets
the zero action, which frames and labels each denoising pass of a new frame gets, when the KV cache is
rebuilt or rolled, and the shape rules of the inputs with their error messages. Each backend's sampler
subclasses `SamplerCore` and supplies the tensor operations (stacking frames, drawing noise, calling the
model, the Euler update); each backend's `KVCache` is a `CacheBook` holding that backend's arrays.

Frames, actions and masks are opaque items here. The only things done to them are indexing along the
frame axis (`x[:, t]`) and multiplying an action by its mask, which every array type spells alike.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .shortcut import SamplerStep, context_labels, inference_plan, noisy_context_signal_idx

CONTEXT_MODES = ("upstream", "noised")
WINDOW_MODES = ("slide", "roll")

NOISE_AXIS_HINT = (" (one starting noise per frame: the K Euler steps are deterministic, so there is no "
                   "per-step noise axis)")


# --------------------------------------------------------------------------- options

def check_modes(context_mode: str, window_mode: str, time_rope: bool) -> None:
    """The context and window mode are known, and "roll" is only used where it is exact."""
    if context_mode not in CONTEXT_MODES:
        raise ValueError(f"context_mode must be one of {CONTEXT_MODES}, got {context_mode!r}")
    if window_mode not in WINDOW_MODES:
        raise ValueError(f"window_mode must be one of {WINDOW_MODES}, got {window_mode!r}")
    if window_mode == "roll" and not time_rope:
        raise ValueError("window_mode='roll' keeps cached keys/values while the window moves, which is only "
                         "exact for relative time positions (transformer.time_rope=True); this model adds "
                         "window-relative sinusoid positions, use window_mode='slide'")


@dataclass(frozen=True)
class ContextLabels:
    """What context frames are labelled with, and the signal level their inputs are corrupted to."""
    signal_idx: int
    step_idx: int
    tau: Optional[float]        # None: clean context ("upstream"); else (1 - tau) eps + tau z ("noised")


def context_frame_labels(k_max: int, context_mode: str, tau_ctx: float) -> ContextLabels:
    """"upstream": clean, (k_max - 1, e_max); "noised": tau_ctx on the k_max grid, (that index, e_max)."""
    clean_signal, step_idx = context_labels(k_max)
    if context_mode == "upstream":
        return ContextLabels(clean_signal, step_idx, None)
    if not 0.0 < tau_ctx < 1.0:
        raise ValueError(f"tau_ctx must lie in (0, 1), got {tau_ctx}")
    signal_idx = noisy_context_signal_idx(k_max, tau_ctx)
    return ContextLabels(signal_idx, step_idx, signal_idx / k_max)


def check_context_length(context_length: Optional[int]) -> Optional[int]:
    """A window of C >= 1 frames, or None for the whole history."""
    if context_length is not None and int(context_length) < 1:
        raise ValueError(f"context_length must be >= 1 (or None for the whole history), got {context_length}")
    return None if context_length is None else int(context_length)


def frames_kept(context_length: Optional[int], history_limit: Optional[int]) -> Optional[int]:
    """How many frames a stream keeps: the window, or history_limit if that is longer (None: all)."""
    if context_length is None:
        return None
    return context_length if history_limit is None else max(history_limit, context_length)


def zero_action_frame(window_mode: str, window_start: int) -> int:
    """Absolute index of the frame whose action is zeroed, as the first frame of every training window:
    "slide", the first frame of the window (positions are window-relative); "roll", the stream's first."""
    return window_start if window_mode == "slide" else 0


# --------------------------------------------------------------------------- shapes

def check_packed_context(shape: Optional[tuple], n_spatial: int, d_spatial: int) -> None:
    """shape: the context's shape, None when it is not an array of the backend."""
    if shape is None or len(shape) != 4 or tuple(shape[2:]) != (n_spatial, d_spatial) or shape[1] < 1:
        raise ValueError(f"context must be packed latents of shape (B, C0 >= 1, {n_spatial}, {d_spatial}), "
                         f"got {tuple(shape or ())}")


def check_shape(name: str, shape: Optional[tuple], expected: tuple, rule: str = "") -> None:
    """`name must have shape <expected>[rule], got <shape>`; shape None: not an array of the backend."""
    if shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}{rule}, got {tuple(shape or ())}")


def check_noise_shape(name: str, shape: tuple, expected: tuple) -> None:
    """Like check_shape, with a hint for the one mistake a 5-d starting noise means."""
    if shape != tuple(expected):
        hint = NOISE_AXIS_HINT if name == "noise" and len(shape) == 5 else ""
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {shape}{hint}")


def needs_batch_axis(shape: tuple, expected: tuple, name: str) -> bool:
    """An action (or mask) of `expected` shape, or of that shape without its leading batch axis (True:
    the caller broadcasts it over the batch)."""
    if len(shape) == len(expected) - 1 and shape == expected[1:]:
        return True
    check_shape(name, shape, expected, " (zero-padded to the model's action_dim)")
    return False


def act_mask_forms(batch: int, frames: int, action_dim: int) -> str:
    return f"({action_dim},), ({batch}, {action_dim}) or ({batch}, {frames}, {action_dim})"


def act_mask_shape(shape: tuple, batch: int, frames: int, action_dim: int) -> tuple:
    """The (B', T', A) view of an action mask given as (A,), (B, A) or (B, T, A), B' in (1, B), T' in
    (1, T); the caller broadcasts that view to (B, T, A)."""
    view = {1: (1, 1) + shape, 2: shape[:1] + (1,) + shape[1:]}.get(len(shape), shape)
    if len(view) != 3 or view[2] != action_dim or view[0] not in (1, batch) or view[1] not in (1, frames):
        raise ValueError(f"act_mask must have shape {act_mask_forms(batch, frames, action_dim)}, "
                         f"got {tuple(view)}")
    return view


def check_rollout_inputs(context_shape: Optional[tuple], actions_shape: Optional[tuple], has_act_mask: bool,
                         horizon: int, action_dim: int, kind: str) -> tuple[int, int, int]:
    """The open-loop rollout's inputs: context (B, C, S, D), actions (B, C + H, A) or None (shape ()
    for something that is not an array). Returns (B, C, H)."""
    if context_shape is None or len(context_shape) != 4:
        raise ValueError(f"context_packed must be a (B, C, S, D) {kind}, got {tuple(context_shape or ())}")
    B, C = context_shape[:2]
    H = int(horizon)
    if H < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if actions_shape is not None and actions_shape != (B, C + H, action_dim):
        raise ValueError(f"actions must have shape (B, C + H, A) = ({B}, {C + H}, {action_dim}), "
                         f"got {actions_shape}")
    if has_act_mask and actions_shape is None:
        raise ValueError("act_mask given without actions")
    return B, C, H


# --------------------------------------------------------------------------- the KV cache's bookkeeping

class LayerKV:
    """Cached time-attention keys and values of one layer, arrays of the backend: (N, G, frames, hd) each,
    N = B * time slots. Keys are stored after QK-norm and RoPE (rotated at their own absolute frame
    positions)."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: Any = None, values: Any = None):
        self.keys = keys
        self.values = values


class CacheBook:
    """Time-attention keys/values of already-processed frames for every layer of one transformer.

    The cached frames have absolute indices start .. start + length - 1. Space attention and the MLP
    are per frame, so the time-attention keys/values are all a later frame needs from an earlier one.
    The cache is only valid while the cached frames' inputs (and, for models with additive time
    positions, their positions) stay what they were when they were committed. The transformer appends
    to `layers[i]` (its backend's arrays, frames on axis 2) and adds the committed frames to `length`.
    """

    def __init__(self, n_layers: int, start: int = 0):
        self.layers = [LayerKV() for _ in range(n_layers)]
        self.start = int(start)
        self.length = 0

    @property
    def end(self) -> int:
        """Absolute index of the frame that follows the cached ones."""
        return self.start + self.length

    def clear(self, start: int = 0) -> None:
        for layer in self.layers:
            layer.keys = layer.values = None
        self.start, self.length = int(start), 0

    def drop_oldest(self, n: int) -> None:
        """Forget the n oldest frames (rolling window; exact only for relative time positions)."""
        n = min(int(n), self.length)
        if n <= 0:
            return
        for layer in self.layers:
            if layer.keys is not None:
                layer.keys, layer.values = layer.keys[:, :, n:], layer.values[:, :, n:]
        self.start += n
        self.length -= n


def time_attention_mask(q_start: int, n_q: int, k_start: int, n_k: int,
                        window: Optional[int]) -> Optional[np.ndarray]:
    """(n_q, n_k) numpy bool: query frame q_start + i may attend to key frame k_start + j when
    0 <= (q_start + i) - (k_start + j) <= window (window None: no upper bound). None when all true."""
    q = np.arange(q_start, q_start + n_q)[:, None]
    k = np.arange(k_start, k_start + n_k)[None, :]
    allow = q >= k
    if window is not None:
        allow &= (q - k) <= window
    return None if bool(allow.all()) else allow


def time_pass(n_frames: int, cache: Optional[CacheBook], commit: int, time_window: Optional[int],
              outputs_from: int, n_layers: int) -> tuple[int, Optional[np.ndarray]]:
    """Check a cached/windowed transformer pass over `n_frames` frames; returns the absolute index of its
    first frame (its time-position offset) and its time mask (None: all visible).

    cache: the input frames are the frames that follow the cached ones (absolute indices cache.end ..);
    they attend to the cached keys/values, and the keys/values of the first `commit` input frames are
    appended to the cache. time_window: a frame sees itself and at most `time_window` frames before it
    (None: every earlier frame). outputs_from: only frames outputs_from.. are returned; the earlier ones
    (which must be committed) are dropped once the last time-attention layer has their keys/values,
    skipping the rest of the work for them.
    """
    if cache is not None and len(cache.layers) != n_layers:
        raise ValueError(f"the cache has {len(cache.layers)} layers, this transformer {n_layers}")
    if time_window is not None and int(time_window) < 0:
        raise ValueError(f"time_window must be >= 0 (or None), got {time_window}")
    T = n_frames
    if not 0 <= commit <= T:
        raise ValueError(f"commit={commit} must lie in [0, {T}] (the number of input frames)")
    if commit and cache is None:
        raise ValueError("commit needs a cache")
    if not 0 <= outputs_from <= min(commit, T - 1):
        raise ValueError(f"outputs_from={outputs_from} must lie in [0, min(commit={commit}, T-1={T - 1})]: frames "
                         "whose outputs are skipped must be cached, and at least one frame is returned")
    q_start = cache.end if cache is not None else 0
    k_start = cache.start if cache is not None else 0
    return q_start, time_attention_mask(q_start, T, k_start, q_start + T - k_start, time_window)


def time_layer_queries(has_time: Sequence[bool], outputs_from: int) -> list[Optional[int]]:
    """Per layer of a cached/windowed pass: the first frame whose output its time attention returns
    (outputs_from at the last time-attention layer, 0 before it), or None for the layers after the last
    time-attention layer, which see only the returned frames and need no time arguments."""
    last_time = max(i for i, flag in enumerate(has_time) if flag)
    return [0 if i < last_time else outputs_from if i == last_time else None for i in range(len(has_time))]


def run_time_layers(layers: Sequence, x, rope, mask, caches: Optional[Sequence[LayerKV]], commit: int,
                    outputs_from: int):
    """Call a transformer's layers (each with `has_time`) for a cached/windowed pass: the time-attention
    arguments go to the layers up to the last time-attention layer, which returns frames outputs_from..
    only; `caches[i]` is layer i's LayerKV (None: no cache)."""
    queries = time_layer_queries([layer.has_time for layer in layers], outputs_from)
    caches = [None] * len(layers) if caches is None else caches
    for layer, cache, query_from in zip(layers, caches, queries):
        if query_from is None:
            x = layer(x)
        else:
            x = layer(x, rope, cache=cache, commit=commit, mask=mask, query_from=query_from)
    return x


# --------------------------------------------------------------------------- the stream and its window

class Stream:
    """The frames of a batch of streams that later frames may still need, with the actions that produced
    them (opaque items: the backend's (B, S, D) and (B, A) arrays). Frames are numbered from the start of
    the stream (absolute indices); `first` is the index of the oldest one kept."""

    def __init__(self):
        self.frames: list = []
        self.actions: list = []
        self.first = 0

    @property
    def n_frames(self) -> int:
        """Frames in the stream so far, the forgotten ones included."""
        return self.first + len(self.frames)

    def append(self, frame, action) -> None:
        self.frames.append(frame)
        self.actions.append(action)

    def since(self, first: int) -> tuple[list, list]:
        """The frames and actions from absolute index `first` on (first >= self.first)."""
        if first < self.first:
            raise ValueError(f"frame {first} was forgotten (the stream keeps frames {self.first}..)")
        return self.frames[first - self.first:], self.actions[first - self.first:]

    def trim(self, limit: int, keep_from: Optional[int] = None) -> None:
        """Keep at most `limit` frames, but none from `keep_from` on (frames still needed) is dropped."""
        drop = len(self.frames) - limit
        if keep_from is not None:
            drop = min(drop, keep_from - self.first)
        if drop > 0:
            del self.frames[:drop], self.actions[:drop]
            self.first += drop

    def window_start(self, context_length: Optional[int]) -> int:
        """Absolute index of the oldest frame the next frame sees (None: the whole history kept)."""
        start = 0 if context_length is None else self.n_frames - context_length
        return max(start, self.first)


@dataclass(frozen=True)
class DenoisingPass:
    """One model call of a new frame's denoising: the context frames `first` .. n-1 (absolute indices)
    followed by the new frame, labelled for `step`.

    cached: the pass runs against the sampler's KV cache (the frames follow the cached ones), commits the
    first `commit` input frames to it and returns only frames outputs_from..; time_window: a frame sees
    itself and at most that many frames before it (None: every earlier input frame)."""
    first: int
    step: SamplerStep
    zero_action_at: int               # absolute index of the frame whose action is zeroed
    cached: bool = False
    commit: int = 0
    outputs_from: int = 0
    time_window: Optional[int] = None


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Run `model` in eval mode (no dropout) and restore training mode afterwards if it was on."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


class SamplerCore:
    """The bookkeeping of a stateful next-frame generator; a backend's Sampler subclasses it.

    The subclass supplies the tensor operations: `_as_context`, `_as_actions`, `_broadcast_mask`,
    `_array_shape`, `_to_stream`, `_randn`, `_noised`, `_stack_actions`, `_predict`, `_euler_step`,
    `_generating`, and `label_dtype` (the dtype of the label arrays its model takes).
    """

    label_dtype = np.int64

    def __init__(self, dynamics, *, n_steps: int, context_length: Optional[int], context_mode: str, tau_ctx: float,
                 window_mode: str, use_cache: bool, history_limit: Optional[int]):
        cfg = dynamics.config
        check_modes(context_mode, window_mode, cfg.transformer.time_rope)
        labels = context_frame_labels(cfg.k_max, context_mode, tau_ctx)
        self.dynamics = dynamics
        self.k_max = cfg.k_max
        self.context_mode = context_mode
        self.window_mode = window_mode
        self.use_cache = bool(use_cache)
        self.history_limit = history_limit
        self.context_signal_idx, self.context_step_idx = labels.signal_idx, labels.step_idx
        self.context_tau = labels.tau
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
        self._context_length = check_context_length(c)
        if self.window_mode == "roll":
            self.cache = None     # a different band: recompute the retained frames

    # ------------------------------------------------------------------ the stream

    @property
    def n_frames(self) -> int:
        """Frames in the stream so far (context given at reset + generated)."""
        return self.stream.n_frames

    def reset(self, context, actions=None, act_mask=None, context_noise=None) -> None:
        """Start B streams from clean packed context latents (B, C0, S, D), C0 >= 1.

        actions (B, C0, A): the actions that produced the context frames (row 0 is never used: the
        first frame of a window gets a zero action), or None for a model run without actions (every
        frame then gets the learned base token, and step() takes no action). act_mask (A,), (B, A) or
        (B, C0, A), 1 = real dimension; a (A,) or (B, A) mask also applies to later steps.
        context_noise (B, C0, S, D): eps of the "noised" context mode (drawn when None).
        """
        cfg = self.dynamics.config
        context = self._as_context(context)
        B, C0 = context.shape[:2]
        self.batch = B
        self.use_actions = actions is not None
        self.act_mask = None
        if actions is not None:
            actions = self._as_actions(actions, (B, C0, cfg.action_dim), "actions")
            mask = self._broadcast_mask(act_mask, B, C0, cfg.action_dim)
            if mask is not None:
                if act_mask.ndim <= 2:            # one mask per stream: it also applies to later steps
                    self.act_mask = mask[:, 0]
                actions = actions * mask
        elif act_mask is not None:
            raise ValueError("act_mask given without actions")
        if context_noise is not None:
            got = self._array_shape(context_noise)
            if got != tuple(context.shape):
                raise ValueError(f"context_noise must have the context's shape {tuple(context.shape)}, "
                                 f"got {tuple(got or ())}")
            context_noise = self._to_stream(context_noise)
        self.stream = Stream()
        self.cache = None
        self._cache_origin = 0                    # slide: absolute frame at cache position 0
        self._started = True
        for t in range(C0):
            self._append(context[:, t], None if actions is None else actions[:, t],
                         None if context_noise is None else context_noise[:, t])

    def _append(self, z, action, eps) -> None:
        if self.context_tau is not None:
            z = self._noised(z, eps)
        self.stream.append(z, action)
        self._trim()

    def _trim(self) -> None:
        """Forget frames no later step can need."""
        if self.window_mode == "roll" and not self.use_cache:
            return                                    # the reference path recomputes the whole history
        limit = frames_kept(self.context_length, self.history_limit)
        if limit is None:
            return
        keep_from = None
        if self.window_mode == "roll":
            # frames not yet in the cache are still needed to compute the cache exactly
            keep_from = self.cache.end if self.cache is not None else self.stream.first
        self.stream.trim(limit, keep_from)

    def window_start(self) -> int:
        """Absolute index of the oldest frame the next frame sees."""
        return self.stream.window_start(self.context_length)

    def window_full(self) -> bool:
        """Whether this frame's model calls have the shapes of every later frame's (the window is full)."""
        if self.context_length is None or (self.window_mode == "roll" and not self.use_cache):
            return False
        return self.n_frames - self.window_start() == self.context_length

    # ------------------------------------------------------------------ generation

    def step(self, action=None, act_mask=None, noise=None, context_noise=None):
        """Generate the next frame and append it to the context; returns its clean packed latent (B, S, D).

        action (B, A) or (A,): the action that produces the new frame (required iff reset got actions);
        act_mask (A,) or (B, A) (default: the mask given to reset). noise (B, S, D): the starting noise
        (drawn when None). context_noise (B, S, D): eps for this frame when it becomes "noised" context.
        """
        if not self._started:
            raise RuntimeError("call reset(context) before step()")
        cfg = self.dynamics.config
        shape = (self.batch, cfg.n_spatial, cfg.d_spatial)
        action = self._step_action(action, act_mask)
        if noise is None:
            noise = self._randn(shape)
        else:
            check_shape("noise", self._array_shape(noise), shape)
            noise = self._to_stream(noise)
        if context_noise is not None:
            check_shape("context_noise", self._array_shape(context_noise), shape)
            context_noise = self._to_stream(context_noise)
        with self._generating():
            z = self.denoise(noise, action)
        self._append(z, action, context_noise)
        return z

    def _step_action(self, action, act_mask):
        """The new frame's action, checked and masked (None for a model run without actions)."""
        shape = (self.batch, self.dynamics.config.action_dim)
        if not self.use_actions:
            if action is not None or act_mask is not None:
                raise ValueError("this sampler was reset without actions (the model's base action token); "
                                 "pass actions to reset() to condition on actions")
            return None
        if action is None:
            raise ValueError("this sampler was reset with actions: step() needs the action that produces "
                             "the new frame")
        action = self._as_actions(action, shape, "action")
        mask = self.act_mask if act_mask is None else self._as_actions(act_mask, shape, "act_mask")
        return action if mask is None else action * mask

    def passes(self) -> Iterator[DenoisingPass]:
        """The model calls that generate the next frame, one per Euler step of the plan. Lazy: with the
        cache, each is planned after the previous one has committed its frames."""
        window_start = self.window_start()
        zero_at = zero_action_frame(self.window_mode, window_start)
        if not self.use_cache:
            # every step recomputes the window; "roll": the whole history under banded attention
            first, window = (window_start, None) if self.window_mode == "slide" else \
                (self.stream.first, self.context_length)
            for step in self.plan:
                yield DenoisingPass(first, step, zero_at, time_window=window)
            return
        pending, window = self._cache_for(window_start)
        n_pending = self.n_frames - pending
        # The first step commits the frames not yet in the cache in the same pass.
        yield DenoisingPass(pending, self.plan[0], zero_at, cached=True, commit=n_pending,
                            outputs_from=n_pending, time_window=window)
        if self.window_mode == "roll" and window is not None:
            self.cache.drop_oldest(self.cache.length - window)
        for step in self.plan[1:]:                # only the new frame's tokens
            yield DenoisingPass(self.n_frames, step, zero_at, cached=True, time_window=window)

    def _cache_for(self, window_start: int) -> tuple[int, Optional[int]]:
        """Make the cache fit the window; returns (first frame not in it, the time window of its passes)."""
        if self.window_mode == "slide":
            if self.cache is None or self._cache_origin != window_start:
                # The window moved: every frame's time position changed, so rebuild from the window.
                self.cache = self.dynamics.new_cache(start=0)
                self._cache_origin = window_start
            return self._cache_origin + self.cache.length, None
        if self.cache is None:
            self.cache = self.dynamics.new_cache(start=self.stream.first)
        return self.cache.end, self.context_length

    def pass_inputs(self, p: DenoisingPass, z, action) -> tuple[list, Optional[list], Optional[int]]:
        """The frames of pass p (context frames, then the new frame z), their actions (None without
        actions) and the input row whose action is zeroed (None: not among them)."""
        frames, actions = self.stream.since(p.first)
        frames = frames + [z]
        if not self.use_actions:
            return frames, None, None
        zero_row = p.zero_action_at - p.first
        return frames, actions + [action], zero_row if 0 <= zero_row < len(frames) else None

    def pass_labels(self, step: SamplerStep, n_inputs: int) -> tuple[np.ndarray, np.ndarray]:
        """(signal_idx, step_idx), (B, n_inputs) numpy arrays: the context labels, the step's for the last."""
        shape = (self.batch, n_inputs)
        signal = np.full(shape, self.context_signal_idx, dtype=self.label_dtype)
        steps = np.full(shape, self.context_step_idx, dtype=self.label_dtype)
        signal[:, -1], steps[:, -1] = step.signal_idx, step.step_idx
        return signal, steps

    def denoise(self, z, action):
        """Take the new frame from its starting noise z to clean, running the passes of `passes()`."""
        for p in self.passes():
            frames, actions, zero_row = self.pass_inputs(p, z, action)
            signal, steps = self.pass_labels(p.step, len(frames))
            acts = None if actions is None else self._stack_actions(actions, zero_row)
            x1 = self._predict(p, frames, signal, steps, acts)
            z = self._euler_step(z, x1, p.step)
        return z


def rollout_frames(sampler, context, actions, mask, start_noise, context_noise, horizon: int) -> list:
    """Drive `sampler` through an open-loop rollout: reset on the C context frames, then one step per
    predicted frame h with row C + h of actions/mask/context_noise and start_noise[:, h] (each may be
    None but start_noise). Returns the H predicted frames."""
    C = context.shape[1]

    def rows(x, t):
        return None if x is None else x[:, t]

    sampler.reset(context, None if actions is None else actions[:, :C], None if mask is None else mask[:, :C],
                  None if context_noise is None else context_noise[:, :C])
    return [sampler.step(rows(actions, C + h), rows(mask, C + h), noise=start_noise[:, h],
                         context_noise=rows(context_noise, C + h)) for h in range(horizon)]
