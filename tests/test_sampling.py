"""shared.sampling on its own: the samplers' bookkeeping without a model or a tensor library.

Expected values are worked out by hand from the semantics in dreamer4_torch/sampler.py's docstring
(window of C frames, the window's first frame gets the zero action, the first denoising pass commits the
frames not yet cached, "slide" rebuilds the cache when the window moves, "roll" drops the oldest frame).
A recording sampler stands in for a backend: frames are numpy arrays whose value is the frame's absolute
index, and its model records what each pass was given.
"""

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest

from shared.sampling import (CacheBook, ContextLabels, SamplerCore, Stream, act_mask_shape, check_context_length, check_modes,
                             check_noise_shape, check_packed_context, check_rollout_inputs, context_frame_labels, frames_kept,
                             needs_batch_axis, rollout_frames, time_attention_mask, time_layer_queries, time_pass,
                             zero_action_frame)


class FakeDynamics:
    """What SamplerCore reads of a model: its config and new_cache."""

    def __init__(self, time_rope=False, action_dim=2):
        self.config = SimpleNamespace(k_max=8, n_spatial=1, d_spatial=1, action_dim=action_dim,
                                      transformer=SimpleNamespace(time_rope=time_rope))

    def new_cache(self, start=0):
        return CacheBook(1, start)


class RecordingSampler(SamplerCore):
    """numpy tensor operations; `log` records draws and every model call's inputs."""

    def __init__(self, dyn=None, **options):
        self.log = []
        kw = dict(n_steps=2, context_length=3, context_mode="upstream", tau_ctx=0.9, window_mode="slide",
                  use_cache=True, history_limit=None)
        kw.update(options)
        super().__init__(dyn or FakeDynamics(time_rope=kw["window_mode"] == "roll"), **kw)

    def _as_context(self, context):
        check_packed_context(np.shape(context), 1, 1)
        return np.asarray(context, np.float32)

    def _as_actions(self, x, shape, name):
        x = np.asarray(x, np.float32)
        return np.broadcast_to(x, shape) if needs_batch_axis(x.shape, shape, name) else x

    def _broadcast_mask(self, act_mask, B, T, A):
        if act_mask is None:
            return None
        mask = np.asarray(act_mask, np.float32)
        return np.broadcast_to(mask.reshape(act_mask_shape(mask.shape, B, T, A)), (B, T, A))

    def _array_shape(self, x):
        return x.shape if isinstance(x, np.ndarray) else None

    def _to_stream(self, x):
        return np.asarray(x, np.float32)

    def _randn(self, shape):
        self.log.append(("draw", tuple(shape)))
        return np.zeros(shape, np.float32)

    def _noised(self, z, eps):
        self.log.append(("noised", None if eps is None else float(eps.flat[0])))
        return z

    def _stack_actions(self, actions, zero_row):
        return zero_row

    def _predict(self, p, frames, signal, steps, acts):
        self.log.append(dict(context=[int(f.flat[0]) for f in frames[:-1]], signal=signal[0].tolist(),
                             steps=steps[0].tolist(), cached=p.cached, commit=p.commit, outputs_from=p.outputs_from,
                             window=p.time_window, zero_row=acts))
        if p.cached:
            self.cache.length += p.commit          # what the model's pass does to the cache
        return np.full((self.batch, 1, 1), self.n_frames, np.float32)    # the new frame's value: its index

    _euler_step = staticmethod(lambda z, x1, step: x1)

    def _generating(self):
        return contextlib.nullcontext()

    def passes_of_next_frame(self, action=None):
        self.log.clear()
        self.step(action)
        return [entry for entry in self.log if isinstance(entry, dict)]


def context(n, batch=1):
    """n clean context frames whose values are their indices 0..n-1: (B, n, 1, 1)."""
    return np.broadcast_to(np.arange(n, dtype=np.float32)[None, :, None, None], (batch, n, 1, 1)).copy()


def call(context, signal, steps, commit=0, outputs_from=0, cached=True, window=None, zero_row=None):
    return dict(context=context, signal=signal, steps=steps, cached=cached, commit=commit, outputs_from=outputs_from,
                window=window, zero_row=zero_row)


# --------------------------------------------------------------------------- options and labels

def test_context_labels_per_mode():
    assert context_frame_labels(8, "upstream", 0.9) == ContextLabels(7, 3, None)    # (k_max - 1, e_max), clean
    noised = context_frame_labels(8, "noised", 0.9)                       # floor(0.9 * 8) = 7 on the k_max grid
    assert (noised.signal_idx, noised.step_idx, noised.tau) == (7, 3, 7 / 8)
    assert context_frame_labels(8, "noised", 0.5).tau == 0.5
    assert context_frame_labels(16, "noised", 0.6).signal_idx == 9        # floor(9.6)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="tau_ctx must lie in"):
            context_frame_labels(8, "noised", bad)


def test_option_rules():
    check_modes("noised", "roll", time_rope=True)
    with pytest.raises(ValueError, match="context_mode must be one of"):
        check_modes("clean", "slide", time_rope=False)
    with pytest.raises(ValueError, match="window_mode must be one of"):
        check_modes("upstream", "wrap", time_rope=True)
    with pytest.raises(ValueError, match="window_mode='roll'.*time_rope"):
        check_modes("upstream", "roll", time_rope=False)
    assert check_context_length(None) is None and check_context_length("3") == 3
    with pytest.raises(ValueError, match="context_length must be >= 1"):
        check_context_length(0)
    with pytest.raises(ValueError, match="power of two"):
        RecordingSampler(n_steps=3)


def test_frames_kept_and_the_zero_action_frame():
    assert frames_kept(None, 8) is None          # the whole history
    assert frames_kept(4, None) == 4             # the window
    assert frames_kept(4, 8) == 8                # a longer history limit wins
    assert frames_kept(6, 2) == 6                # ... a shorter one does not
    assert zero_action_frame("slide", 5) == 5    # window-relative: the window's first frame
    assert zero_action_frame("roll", 5) == 0     # the stream's first frame


# --------------------------------------------------------------------------- the stream

def test_stream_window_start_and_trim():
    s = Stream()
    for t in range(5):
        s.append(f"z{t}", f"a{t}")
    assert s.n_frames == 5 and s.window_start(3) == 2 and s.window_start(None) == 0 and s.window_start(9) == 0
    s.trim(3)
    assert (s.first, s.frames, s.actions) == (2, ["z2", "z3", "z4"], ["a2", "a3", "a4"])
    assert s.n_frames == 5 and s.window_start(9) == 2              # never before the oldest frame kept
    assert s.since(3) == (["z3", "z4"], ["a3", "a4"])
    with pytest.raises(ValueError, match="frame 1 was forgotten"):
        s.since(1)
    s.append("z5", "a5")
    s.trim(1, keep_from=4)                                         # frames 4.. are still needed
    assert (s.first, s.frames) == (4, ["z4", "z5"])
    s.trim(5)
    assert s.first == 4                                            # nothing to drop


# --------------------------------------------------------------------------- input plans

def test_slide_cached_commits_pending_frames_and_rebuilds_when_the_window_moves():
    s = RecordingSampler(context_length=3)
    s.reset(context(2))
    # frame 2: window 0..1, empty cache: the first pass commits frames 0, 1; the window's first frame
    # (input row 0) gets the zero action; the second pass runs the new frame alone. Plan K=2: signal
    # 0 then 4, step index 1; context frames (7, 3).
    assert s.passes_of_next_frame() == [call([0, 1], [7, 7, 0], [3, 3, 1], commit=2, outputs_from=2),
                                        call([], [4], [1])]
    assert (s.cache.start, s.cache.length, s._cache_origin) == (0, 2, 0)
    # frame 3: window 0..2 (not full), only frame 2 is pending
    assert s.passes_of_next_frame() == [call([2], [7, 0], [3, 1], commit=1, outputs_from=1), call([], [4], [1])]
    assert s.cache.length == 3 and s.window_full()
    # frame 4: the window moved to 1..3: rebuilt from it, frame 1 is its first frame (zero action)
    assert s.passes_of_next_frame() == [call([1, 2, 3], [7, 7, 7, 0], [3, 3, 3, 1], commit=3, outputs_from=3),
                                        call([], [4], [1])]
    assert (s.cache.start, s.cache.length, s._cache_origin) == (0, 3, 1)
    assert s.stream.first == 2 and s.n_frames == 5                 # the stream keeps the last 3 frames


def test_slide_uncached_recomputes_the_window_every_step():
    s = RecordingSampler(context_length=3, use_cache=False, n_steps=1)
    s.reset(context(2))
    # K=1: one pass at signal 0, step index 0
    assert s.passes_of_next_frame() == [call([0, 1], [7, 7, 0], [3, 3, 0], cached=False, zero_row=None)]
    s.step()
    assert s.passes_of_next_frame() == [call([1, 2, 3], [7, 7, 7, 0], [3, 3, 3, 0], cached=False)]
    assert s.cache is None and s.stream.first == 2


def test_roll_cached_keeps_keys_and_drops_the_oldest():
    s = RecordingSampler(window_mode="roll", context_length=2)
    s.reset(context(2))
    # frame 2: cache starts at the stream's first frame; banded attention over 2 earlier frames
    assert s.passes_of_next_frame() == [call([0, 1], [7, 7, 0], [3, 3, 1], commit=2, outputs_from=2, window=2),
                                        call([], [4], [1], window=2)]
    assert (s.cache.start, s.cache.length) == (0, 2)
    assert s.stream.first == 1           # 3 frames, keep 2, but frame 2 is not cached yet: drop only frame 0
    # frame 3: frame 2 is committed, then the oldest cached frame (0) is dropped; never a rebuild
    assert s.passes_of_next_frame() == [call([2], [7, 0], [3, 1], commit=1, outputs_from=1, window=2),
                                        call([], [4], [1], window=2)]
    assert (s.cache.start, s.cache.length) == (1, 2) and s.stream.first == 2
    s.context_length = 3                 # another band: the retained frames are recomputed
    assert s.cache is None
    assert s.passes_of_next_frame()[0] == call([2, 3], [7, 7, 0], [3, 3, 1], commit=2, outputs_from=2, window=3)
    assert (s.cache.start, s.cache.length) == (2, 2)


def test_roll_uncached_runs_the_whole_history_banded():
    s = RecordingSampler(window_mode="roll", context_length=2, use_cache=False, n_steps=1)
    s.reset(context(2), np.ones((1, 2, 2)))
    s.step(np.ones(2))
    s.step(np.ones(2))
    # the stream's first frame keeps the zero action (input row 0), and nothing is forgotten
    assert s.passes_of_next_frame(np.ones(2)) == [call([0, 1, 2, 3], [7, 7, 7, 7, 0], [3, 3, 3, 3, 0], cached=False,
                                                       window=2, zero_row=0)]
    assert s.stream.first == 0 and not s.window_full()


def test_whole_history_window_and_history_limit():
    s = RecordingSampler(context_length=None)
    s.reset(context(3))
    for _ in range(3):
        s.step()
    assert s.stream.first == 0 and s.cache.length == 5 and not s.window_full()   # the cache only grows
    s = RecordingSampler(context_length=2, history_limit=4)
    s.reset(context(3))
    for _ in range(3):
        s.step()
    assert s.stream.first == 2 and s.window_start() == 4      # 4 frames kept, the window sees 2
    s.context_length = 4                                       # a longer window: rebuilt from the history
    assert s.passes_of_next_frame()[0]["context"] == [2, 3, 4, 5]


def test_noised_context_and_actions():
    s = RecordingSampler(context_mode="noised", tau_ctx=0.5, context_length=2)
    assert (s.context_signal_idx, s.context_step_idx, s.context_tau) == (4, 3, 0.5)
    eps = np.full((1, 2, 1, 1), 9.0, np.float32)
    actions = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
    s.reset(context(2), actions, np.array([1.0, 0.0], np.float32), context_noise=eps)
    assert s.log == [("noised", 9.0), ("noised", 9.0)]        # every context frame, with its injected eps
    assert [a.tolist() for a in s.stream.actions] == [[[1.0, 0.0]], [[3.0, 0.0]]]
    s.log.clear()
    s.step(np.array([5.0, 7.0], np.float32))                   # (A,) action: broadcast over the batch, masked
    # the starting noise is drawn before the model runs; the new frame is noised (eps drawn) afterwards
    assert s.log[0] == ("draw", (1, 1, 1)) and isinstance(s.log[1], dict) and s.log[-1] == ("noised", None)
    assert s.log[1]["signal"] == [4, 4, 0] and s.log[1]["zero_row"] == 0
    assert s.stream.actions[-1].tolist() == [[5.0, 0.0]]
    s.step(np.array([[5.0, 7.0]], np.float32), act_mask=np.array([[1.0, 1.0]], np.float32))
    assert s.stream.actions[-1].tolist() == [[5.0, 7.0]]       # a step's own mask replaces reset's
    # context length 2: frame 4's window is frames 2, 3; rebuilt, frame 2 takes the zero action
    assert s.passes_of_next_frame(np.zeros(2, np.float32))[0]["zero_row"] == 0


# --------------------------------------------------------------------------- checks

def test_sampler_input_errors():
    s = RecordingSampler()
    with pytest.raises(RuntimeError, match="reset"):
        s.step()
    with pytest.raises(ValueError, match=r"context must be packed latents of shape \(B, C0 >= 1, 1, 1\), "
                                         r"got \(1, 2, 1, 2\)"):
        s.reset(np.zeros((1, 2, 1, 2)))
    with pytest.raises(ValueError, match=r"got \(1, 0, 1, 1\)"):
        s.reset(np.zeros((1, 0, 1, 1)))
    with pytest.raises(ValueError, match="act_mask given without actions"):
        s.reset(context(2), None, np.ones(2))
    with pytest.raises(ValueError, match=r"actions must have shape \(1, 2, 2\) \(zero-padded"):
        s.reset(context(2), np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match=r"context_noise must have the context's shape \(1, 2, 1, 1\), got \(1, 1, 1, 1\)"):
        s.reset(context(2), context_noise=np.zeros((1, 1, 1, 1), np.float32))
    s.reset(context(2))
    with pytest.raises(ValueError, match="reset without actions"):
        s.step(np.zeros(2))
    with pytest.raises(ValueError, match=r"noise must have shape \(1, 1, 1\), got \(2, 1, 1\)"):
        s.step(noise=np.zeros((2, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"context_noise must have shape \(1, 1, 1\), got \(\)"):
        s.step(context_noise=[0.0])
    s.reset(context(2), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"step\(\) needs the action"):
        s.step()
    with pytest.raises(ValueError, match=r"act_mask must have shape \(1, 2\)"):
        s.step(np.zeros(2), act_mask=np.ones((1, 3)))


def test_shape_rules():
    assert act_mask_shape((16,), 2, 5, 16) == (1, 1, 16)
    assert act_mask_shape((2, 16), 2, 5, 16) == (2, 1, 16)
    assert act_mask_shape((1, 5, 16), 2, 5, 16) == (1, 5, 16)
    with pytest.raises(ValueError, match=r"act_mask must have shape \(16,\), \(2, 16\) or \(2, 5, 16\), got \(1, 1, 8\)"):
        act_mask_shape((8,), 2, 5, 16)
    with pytest.raises(ValueError, match="act_mask must have shape"):
        act_mask_shape((3, 16), 2, 5, 16)
    with pytest.raises(ValueError, match="act_mask must have shape"):
        act_mask_shape((2, 4, 16), 2, 5, 16)
    assert needs_batch_axis((16,), (2, 16), "action") is True
    assert needs_batch_axis((2, 16), (2, 16), "action") is False
    with pytest.raises(ValueError, match=r"action must have shape \(2, 16\) \(zero-padded to the model's action_dim\), "
                                         r"got \(2, 8\)"):
        needs_batch_axis((2, 8), (2, 16), "action")
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 3, 1, 1\), got \(2, 3, 4, 1, 1\).*no per-step"):
        check_noise_shape("noise", (2, 3, 4, 1, 1), (2, 3, 1, 1))
    with pytest.raises(ValueError, match=r"got \(2, 3, 4, 1, 1\)$"):
        check_noise_shape("context_noise", (2, 3, 4, 1, 1), (2, 3, 1, 1))


def test_rollout_input_rules():
    assert check_rollout_inputs((2, 3, 1, 1), (2, 7, 16), False, 4, 16, "tensor") == (2, 3, 4)
    assert check_rollout_inputs((2, 3, 1, 1), None, False, 1, 16, "tensor") == (2, 3, 1)
    with pytest.raises(ValueError, match=r"context_packed must be a \(B, C, S, D\) array, got \(\)"):
        check_rollout_inputs(None, None, False, 4, 16, "array")
    with pytest.raises(ValueError, match="horizon must be >= 1, got 0"):
        check_rollout_inputs((2, 3, 1, 1), None, False, 0, 16, "tensor")
    with pytest.raises(ValueError, match=r"actions must have shape \(B, C \+ H, A\) = \(2, 7, 16\), got \(2, 6, 16\)"):
        check_rollout_inputs((2, 3, 1, 1), (2, 6, 16), False, 4, 16, "tensor")
    with pytest.raises(ValueError, match="act_mask given without actions"):
        check_rollout_inputs((2, 3, 1, 1), None, True, 4, 16, "tensor")


def test_rollout_frames_feeds_row_c_plus_h_to_step_h():
    class Steps:
        def reset(self, context, actions, mask, context_noise):
            self.calls = [("reset", actions.tolist(), mask, context_noise)]

        def step(self, action, act_mask, noise, context_noise):
            self.calls.append(("step", action.tolist(), act_mask, noise.tolist(), context_noise))
            return len(self.calls)

    rows = np.arange(5, dtype=np.float32)[None, :, None]          # actions (1, C + H = 5, 1): value = row
    noise = np.arange(3, dtype=np.float32)[None, :, None] + 10.0  # starting noise (1, H = 3, 1)
    sampler = Steps()
    assert rollout_frames(sampler, np.zeros((1, 2, 1, 1)), rows, None, noise, None, 3) == [2, 3, 4]
    assert sampler.calls == [("reset", [[[0.0], [1.0]]], None, None), ("step", [[2.0]], None, [[10.0]], None),
                             ("step", [[3.0]], None, [[11.0]], None), ("step", [[4.0]], None, [[12.0]], None)]


# --------------------------------------------------------------------------- the KV cache's bookkeeping

def test_cache_book_rolls_and_clears():
    book = CacheBook(2, start=2)
    assert (book.start, book.length, book.end) == (2, 0, 2)
    book.layers[0].keys = np.arange(5)[None, None, :, None]        # (N, G, frames, hd): frames 2..6
    book.layers[0].values = -book.layers[0].keys
    book.length = 5
    book.drop_oldest(3)
    assert (book.start, book.length, book.end) == (5, 2, 7)
    assert book.layers[0].keys[0, 0, :, 0].tolist() == [3, 4] and book.layers[0].values[0, 0, :, 0].tolist() == [-3, -4]
    assert book.layers[1].keys is None                             # a layer without keys stays empty
    book.drop_oldest(0)
    book.drop_oldest(-1)
    assert (book.start, book.length) == (5, 2)
    book.drop_oldest(10)                                           # at most what is cached
    assert (book.start, book.length) == (7, 0) and book.layers[0].keys.shape[2] == 0
    book.clear(start=4)
    assert (book.start, book.length, book.layers[0].keys) == (4, 0, None)


def test_time_mask_and_pass_checks():
    assert time_attention_mask(0, 3, 0, 3, None).tolist() == [[True, False, False], [True, True, False],
                                                              [True, True, True]]
    assert time_attention_mask(4, 1, 1, 4, None) is None           # a new frame sees every cached frame
    assert time_attention_mask(3, 2, 1, 4, 1).tolist() == [[False, True, True, False], [False, False, True, True]]
    book = CacheBook(1, start=1)
    book.length = 3                                                # frames 1..3 cached
    offset, mask = time_pass(2, book, commit=1, time_window=None, outputs_from=1, n_layers=1)
    # queries 4, 5 against keys 1..5: frame 4 does not see frame 5
    assert offset == 4 and mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert time_pass(1, None, 0, 2, 0, 1) == (0, None)
    with pytest.raises(ValueError, match=r"commit=3 must lie in \[0, 2\]"):
        time_pass(2, book, 3, None, 0, 1)
    with pytest.raises(ValueError, match="commit needs a cache"):
        time_pass(2, None, 1, 2, 0, 1)
    with pytest.raises(ValueError, match="outputs_from=2 must lie in"):
        time_pass(2, book, 2, None, 2, 1)
    with pytest.raises(ValueError, match="the cache has 1 layers, this transformer 3"):
        time_pass(2, book, 1, None, 0, 3)
    with pytest.raises(ValueError, match="time_window must be >= 0"):
        time_pass(2, None, 0, -1, 0, 1)


def test_time_layer_queries():
    # the last time-attention layer returns frames outputs_from..; the layers after it get no time arguments
    assert time_layer_queries([True, False, True, False], 2) == [0, 0, 2, None]
    assert time_layer_queries([False, True], 1) == [0, 1]
    assert time_layer_queries([True, True, True], 0) == [0, 0, 0]
