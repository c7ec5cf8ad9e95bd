"""One browser session's world: its stream of frames, its actions and its measurements.

Actions follow upstream's interactive demo: the arrow keys pick an action dimension (left/right)
and push it to +1/-1 while held (up/down); the sliders give every dimension's value otherwise.
The action that produces the next frame is smoothed, a <- beta a + (1 - beta) a_new with
beta = 0.817 (upstream's default), so a held key ramps the action up over a few frames.
"""

from __future__ import annotations

import collections
import io
import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from shared.metrics import psnr

SMOOTHING = 0.817          # upstream: a <- 0.817 a + 0.183 a_new
DISPLAY_SIZE = 512         # frames are shown at least this large, upscaled by an integer factor


def upscale(frame: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    """(H, W, C) uint8 -> nearest-neighbour upscaled by the integer factor that reaches `size`."""
    f = max(1, -(-size // max(frame.shape[:2])))
    return np.repeat(np.repeat(frame, f, axis=0), f, axis=1) if f > 1 else frame


def png_bytes(frame: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def checked_number(name: str, value, lo: float, hi: float, *, integer: bool = False):
    """`value` as a float (an int with `integer`) in [lo, hi], or a ValueError naming `name` and the value.

    The demo's HTTP API takes whatever a client sends; the page's widgets limit their values, the API
    does not, so every number that reaches a session goes through here (a NaN action would otherwise
    stay in the smoothed action and blacken the session's frames until a reset)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if integer and x != int(x):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not lo <= x <= hi:
        bounds = ", ".join(str(int(b)) if float(b).is_integer() else f"{b:g}" for b in (lo, hi))
        raise ValueError(f"{name} must be in [{bounds}], got {value!r}")
    return int(x) if integer else x


@dataclass
class Timing:
    """Wall-clock measurements of the last frames."""

    frame_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=30))
    dynamics_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0

    def fps(self) -> float:
        t = self.frame_times
        if len(t) < 2 or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])


class Session:
    def __init__(self, model, source, *, task: Optional[str] = None, n_steps: int = 2, context_length: int = 16,
                 history_limit: int = 64, smoothing: float = SMOOTHING, start_frames: int = 1, seed: int = 0):
        self.model, self.source = model, source
        self.lock = threading.RLock()
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.smoothing = float(smoothing)
        self.start_frames = int(start_frames)
        self.history_limit = int(history_limit)
        self.n_steps, self.context_length = int(n_steps), int(context_length)
        self.pad = model.action_dim
        self.sliders = np.zeros(self.pad, np.float32)
        self.keys: set[str] = set()
        self.selected_dim = 0
        self.playing = False
        self.closed = False
        self.timing = Timing()
        self.task = task if task is not None else source.tasks[0]
        self.sampler = None
        self.frame = None
        self.start_note = ""
        self.agent_available = bool(getattr(model, "has_agent", False))
        self.agent_on = False
        self.driver = None
        self.agent_note = ""
        self.reset(self.task)

    # ------------------------------------------------------------------ state changes

    @property
    def action_dim(self) -> int:
        return self.source.action_dim(self.task)

    def reset(self, task: Optional[str] = None, seed: Optional[int] = None) -> np.ndarray:
        """A new start: frames from a random (held-out) episode of the task, or a random latent.
        With `seed` the start frame and the sampler's noise are reproducible."""
        with self.lock:
            if seed is not None:
                self.rng = np.random.default_rng(seed)
            if task is not None:
                if not isinstance(task, str) or task not in self.source.tasks:
                    raise ValueError(f"unknown task {task!r}; this demo has {', '.join(self.source.tasks)}")
                if task != self.task:
                    self.sliders[:] = 0.0
                self.task = task
            self.mask = self.source.action_mask(self.task)
            self.selected_dim = min(self.selected_dim, max(self.action_dim - 1, 0))
            self.keys.clear()
            self.action = np.zeros(self.pad, np.float32)
            real_start = self._start_driver()
            if real_start is not None:
                context = self.model.encode(real_start[None])
                actions = np.zeros((1, self.pad), np.float32)
                self.start_note = f"the real {self.task} environment's first frame"
            elif self.source.has_data:
                clip = self.source.clip(self.task, self.rng, self.start_frames)
                context = self.model.encode(clip.frames)
                actions = clip.actions
                self.start_note = f"episode {clip.episode} of {self.task}, first {len(clip.frames)} frame(s)"
            else:
                context = self.model.random_context(self.rng)
                actions = np.zeros((1, self.pad), np.float32)
                self.start_note = "a random start latent (no data set)"
            self.sampler = self.model.new_sampler(self.n_steps, self.context_length, self.history_limit,
                                                  seed=int(self.rng.integers(2**31)))
            self.model.sampler_reset(self.sampler, context, actions, self.mask)
            if self.driver is not None:
                self.driver.start(context, actions)
            self.frame_index = 0
            self.timing = Timing()
            t0 = time.perf_counter()
            self.frame = self.model.decode(context[:, -1:])[0, 0]
            self.timing.decode_ms = (time.perf_counter() - t0) * 1e3
            return self.frame

    def _start_driver(self) -> Optional[np.ndarray]:
        """In agent mode: a new AgentDriver and, where MuJoCo is installed, its real episode, whose first
        frame (3, H, W) the imagination starts from (returned; None otherwise)."""
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        if not self.agent_on:
            return None
        from .agent import AgentDriver, mujoco_available
        missing = mujoco_available()
        self.agent_note = missing or ""
        self.driver = AgentDriver(self.model, self.task, self.context_length, real=missing is None,
                                  size=self.model.image_size[0], render=getattr(self.source, "render_options", {}))
        if missing is not None:
            return None
        return self.driver.start_real(int(self.rng.integers(2**31)))

    def set_agent(self, on: bool) -> None:
        """Agent mode on (the policy head chooses every action; a new start) or off (the keys and sliders)."""
        with self.lock:
            if on and not self.agent_available:
                raise ValueError("this dynamics model has no agent heads: serve an agent-finetuned run "
                                 "(python -m dreamer4_torch.train bc) to let the policy drive")
            self.agent_on = bool(on)
            self.reset()

    def close(self) -> None:
        """Release what the session holds outside Python (the real environment of agent mode)."""
        with self.lock:
            self.closed, self.playing = True, False
            if self.driver is not None:
                self.driver.close()
                self.driver = None

    def set_slider(self, dim: int, value: float) -> None:
        dim = checked_number("the action dimension", dim, 0, self.pad - 1, integer=True)
        value = checked_number(f"action {dim + 1}", value, -1.0, 1.0)
        with self.lock:
            self.sliders[dim] = value

    def set_sliders(self, values) -> None:
        """Every slider's value at once (None, as a hidden slider may send, counts as 0). Each must be a finite
        number in [-1, 1]; on any bad value nothing changes."""
        if len(values) > self.pad:
            raise ValueError(f"{len(values)} action values for a model with {self.pad} action dimensions")
        v = np.zeros(self.pad, np.float32)
        for d, x in enumerate(values):
            v[d] = 0.0 if x is None else checked_number(f"action {d + 1}", x, -1.0, 1.0)
        with self.lock:
            self.sliders = v

    def select(self, delta: int) -> None:
        """Left/right arrow: cycle the selected action dimension (as upstream)."""
        with self.lock:
            if self.action_dim > 0:
                self.selected_dim = (self.selected_dim + delta) % self.action_dim

    def key(self, name: str, pressed: bool) -> None:
        """Up/down arrow held or released."""
        with self.lock:
            (self.keys.add if pressed else self.keys.discard)(name)

    def set_steps(self, n_steps: int) -> None:
        choices = tuple(self.model.steps_choices)
        if isinstance(n_steps, str) and n_steps.strip().isdigit():
            n_steps = int(n_steps)
        if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps not in choices:
            raise ValueError(f"the shortcut steps K must be one of {', '.join(map(str, choices))}, got {n_steps!r}")
        with self.lock:
            self.n_steps = int(n_steps)
            self.sampler.n_steps = self.n_steps

    def set_context(self, context_length: int) -> None:
        context_length = checked_number("the context length", context_length, 1, self.history_limit, integer=True)
        with self.lock:
            self.context_length = context_length
            self.sampler.context_length = self.context_length

    # ------------------------------------------------------------------ generation

    def next_action(self) -> np.ndarray:
        """The raw action (sliders, the held arrow key overriding the selected dimension), masked to the
        task's dimensions, then smoothed. In agent mode: the policy's action, as it is."""
        if self.driver is not None:
            self.action = np.asarray(self.driver.action, np.float32) * self.mask
            return self.action
        raw = self.sliders.copy()
        up, down = "up" in self.keys, "down" in self.keys
        if up != down and self.action_dim > 0:
            raw[self.selected_dim] = 1.0 if up else -1.0
        raw = np.clip(raw, -1.0, 1.0) * self.mask
        beta = min(max(self.smoothing, 0.0), 0.999)
        self.action = (beta * self.action + (1.0 - beta) * raw).astype(np.float32) if beta > 0 else raw
        return self.action

    def advance(self) -> np.ndarray:
        """Generate and decode the next frame; returns it as uint8 (H, W, C)."""
        with self.lock:
            t0 = time.perf_counter()
            action = self.next_action()
            z = self.model.sampler_step(self.sampler, action)
            if self.driver is not None:
                self.driver.observe(z, action)
            t1 = time.perf_counter()
            self.frame = self.model.decode(z)[0, 0]
            t2 = time.perf_counter()
            self.frame_index += 1
            self.timing.dynamics_ms = (t1 - t0) * 1e3
            self.timing.decode_ms = (t2 - t1) * 1e3
            self.timing.total_ms = (t2 - t0) * 1e3
            if self.playing:
                self.timing.frame_times.append(t2)
            return self.frame

    def display(self) -> np.ndarray:
        """The frame, upscaled; in agent mode with the real task, [world model | real environment]."""
        with self.lock:
            if self.driver is None or self.driver.real is None:
                return upscale(self.frame)
            imagined, real = upscale(self.frame), upscale(self.driver.real.image())
            gap = np.full((imagined.shape[0], 16, 3), 255, np.uint8)
            return np.concatenate([imagined, gap, real], axis=1)

    def status(self) -> str:
        with self.lock:
            t = self.timing
            dims = self.action_dim
            acts = " ".join(f"{'▸' if d == self.selected_dim else ''}{self.action[d]:+.2f}" for d in range(dims))
            fps = f"{t.fps():.1f}" if t.fps() > 0 else "–"
            state = "playing" if self.playing else "paused"
            return (f"**{fps} frames/s** · latency {t.total_ms:.0f} ms (dynamics {t.dynamics_ms:.0f} ms, "
                    f"decode {t.decode_ms:.0f} ms) · frame {self.frame_index} · {state}  \n"
                    f"K = {self.n_steps} · context {min(self.sampler.n_frames, self.context_length)}"
                    f"/{self.context_length} · task {self.task} · action dim {self.selected_dim + 1 if dims else 0}"
                    f"/{dims}: [{acts}]  \nstart: {self.start_note}{self.agent_status()}")

    def agent_status(self) -> str:
        d = self.driver
        if d is None:
            return ""
        line = f"  \n**agent drives** · imagined return {d.imagined_return:.1f} (reward head)"
        if d.real is not None:
            line += (f" · real return {d.real.total:.1f} after {d.real.steps} steps · left: world model, "
                     f"right: the real {self.task}")
        elif self.agent_note:
            line += f" · {self.agent_note}"
        return line


# ---------------------------------------------------------------------- open-loop evaluation

@dataclass
class OpenLoop:
    task: str
    episode: int
    context: np.ndarray        # (C, H, W, 3) ground-truth context frames
    truth: np.ndarray          # (H, H, W, 3) ground-truth frames after the context
    predicted: np.ndarray      # (H, H, W, 3) decoded predictions under the same actions
    psnr_model: np.ndarray     # (H,)
    psnr_floor: np.ndarray     # (H,) repeating the last context frame
    psnr_recon: np.ndarray     # (H,) the tokenizer's own reconstruction of the truth (a ceiling)
    seconds: float


def open_loop(model, source, task: str, *, context_frames: int, horizon: int, n_steps: int, context_length: int,
              seed: int, episode: Optional[int] = None) -> OpenLoop:
    """Roll the model out open-loop from the first frames of a held-out episode, under the episode's own
    actions, and compare every predicted frame with the real one."""
    rng = np.random.default_rng(seed)
    clip = source.clip(task, rng, context_frames + horizon, heldout=True, episode=episode)
    T = len(clip.frames)
    C = min(context_frames, T - 1)
    H = T - C
    if H < 1:
        raise ValueError(f"episode {clip.episode} has only {T} frame(s): too short for a rollout")
    t0 = time.perf_counter()
    packed = model.encode(clip.frames)                                 # (1, T, S, D)
    mask = source.action_mask(task)
    pred = model.rollout(packed[:, :C], clip.actions, mask, H, n_steps, context_length, seed)
    predicted = model.decode(pred)[0]
    recon = model.decode(packed[:, C:])[0]
    seconds = time.perf_counter() - t0
    frames = clip.frames.transpose(0, 2, 3, 1)
    truth = frames[C:]
    floor = np.repeat(frames[C - 1:C], H, axis=0)
    return OpenLoop(task, clip.episode, frames[:C], truth, predicted, psnr(predicted, truth, 255),
                    psnr(floor, truth, 255), psnr(recon, truth, 255), seconds)


def side_by_side_gif(result: OpenLoop, path: str, size: int = 256, fps: int = 8) -> str:
    """An animated GIF: context frames, then [truth | prediction] for every step of the horizon."""
    from PIL import Image
    gap = np.full((upscale(result.truth[0], size).shape[0], 8, 3), 255, np.uint8)
    frames = [np.concatenate([upscale(f, size), gap, upscale(f, size)], axis=1) for f in result.context]
    frames += [np.concatenate([upscale(t, size), gap, upscale(p, size)], axis=1)
               for t, p in zip(result.truth, result.predicted)]
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def comparison_grid(result: OpenLoop, max_columns: int = 16, tile: int = 64) -> np.ndarray:
    """Rows truth / prediction, columns evenly spaced horizon steps (nearest-neighbour tiles)."""
    H = len(result.truth)
    cols = np.unique(np.linspace(0, H - 1, min(H, max_columns)).round().astype(int))
    def row(frames):
        tiles = [upscale(frames[c], tile) for c in cols]
        pad = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
        return np.concatenate([x for t in tiles for x in (t, pad)][:-1], axis=1)
    top, bottom = row(result.truth), row(result.predicted)
    return np.concatenate([top, np.full((4, top.shape[1], 3), 255, np.uint8), bottom], axis=0)
