"""The block-causal transformer: RMSNorm, SwiGLU MLP, attention, space/time attention, layers.

The Flax NNX mirror of dreamer4_torch/layers.py: the same classes, attributes and parameter names
(NNX path `layers/0/space/attn/qkv/kernel` <-> torch `layers.0.space.attn.qkv.weight`; kernels are
(in, out), the transpose of torch's weights).

Shapes: B batch, T frames, S token slots per frame, D width, H query heads, G key/value heads,
hd = D / H. Space attention mixes the S slots of one frame under one (S, S) mask shared by the
whole batch; time attention mixes frames causally, separately for every slot.

Training mode: modules start in training mode, as torch modules do; `model.eval()` / `model.train()`
(NNX's `set_attributes(deterministic=...)`) switch dropout and the tokenizer's MAE draw.
Randomness: dropout draws from the `dropout` stream of the `rngs` given at construction, or from an
injected source (`set_dropout_source`, same site names as torch) so parity tests can feed both
backends the same masks.

Generation reuses past frames' time-attention keys and values through a `KVCache` passed to
`BlockCausalTransformer.__call__` (the same contract as torch's); without a cache (the default) every
path below is the plain full-window computation. Cache state is eager Python state (lists of arrays).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.config import TransformerConfig
from shared.positions import position_table, rope_angles
from shared.sampling import CacheBook, LayerKV, run_time_layers, time_pass
from shared.sampling import time_attention_mask  # noqa: F401  (re-exported: this backend's name for it)

# A dropout source maps (site name, shape) to a boolean keep-mask of that shape.
DropoutSource = Callable[[str, tuple], "jax.Array | np.ndarray"]


def rng_stream(rngs: nnx.Rngs, name: str) -> nnx.RngStream:
    """A fork of stream `name` of `rngs` (falling back to its `default` stream), with a clear error."""
    try:
        return rngs[name].fork()
    except (AttributeError, KeyError) as e:
        raise ValueError(f"rngs has no '{name}' stream and no 'default' stream; build it as "
                         f"nnx.Rngs(seed) or nnx.Rngs(params=..., {name}=...)") from e


def host_zeros(key, shape, dtype=jnp.float32) -> jax.Array:
    """A zeros initializer that transfers a numpy array instead of compiling a fill op per shape."""
    return jnp.asarray(np.zeros(shape, dtype))


def linear(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    """A dense layer kernel (d_in, d_out) + bias (d_out,), created as zeros; init.py draws the values
    from the parameter table (shared.params), as dreamer4_torch/init.py does."""
    return nnx.Linear(d_in, d_out, kernel_init=host_zeros, bias_init=host_zeros, rngs=rngs)


class Module(nnx.Module):
    """nnx.Module whose train() / eval() return the module, as torch's do (`Tokenizer(cfg).eval()`).

    Both set the `deterministic` attribute of every submodule that has one (NNX set_attributes):
    False = training mode (dropout on, the tokenizer draws MAE masks), True = eval mode."""

    def train(self, **attributes):
        super().train(**attributes)
        return self

    def eval(self, **attributes):
        super().eval(**attributes)
        return self


class StaticMask:
    """An immutable boolean (S, S) attention mask held as a static (hashable) module attribute, so it
    is a compile-time constant under jit (torch's non-persistent buffer)."""

    def __init__(self, mask: np.ndarray):
        self.array = np.array(mask, dtype=bool)
        self.array.setflags(write=False)
        self._hash = hash((self.array.shape, self.array.tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return (isinstance(other, StaticMask) and other.array.shape == self.array.shape
                and bool(np.array_equal(other.array, self.array)))

    def __repr__(self) -> str:
        return f"StaticMask(shape={self.array.shape}, allowed={int(self.array.sum())})"


class RMSNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        self.eps = eps
        self.scale = nnx.Param(jnp.asarray(np.ones((dim,), np.float32)))

    def __call__(self, x: jax.Array) -> jax.Array:
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        # upstream's op order: x * (scale / sqrt(var + eps))
        return x * (self.scale[...] / jnp.sqrt(var + self.eps))


class Dropout(Module):
    """Inverted dropout whose keep-mask can come from an injected source (see set_dropout_source)."""

    def __init__(self, p: float, rngs: nnx.Rngs):
        self.p = float(p)
        self.site = ""
        self.source: Optional[DropoutSource] = None
        self.deterministic = False
        self.rngs = rng_stream(rngs, "dropout") if self.p > 0.0 else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic or self.p == 0.0:
            return x
        if self.source is not None:
            keep = jnp.asarray(self.source(self.site, tuple(x.shape)))
        else:
            keep = jax.random.bernoulli(self.rngs(), 1.0 - self.p, x.shape)
        return x * keep.astype(x.dtype) / (1.0 - self.p)


class MLP(Module):
    """SwiGLU: fc_out(dropout(u * silu(v))) with [u, v] = fc_in(x), then dropout."""

    def __init__(self, tf: TransformerConfig, rngs: nnx.Rngs):
        self.fc_in = linear(tf.d_model, 2 * tf.mlp_hidden, rngs)
        self.fc_out = linear(tf.mlp_hidden, tf.d_model, rngs)
        self.drop = Dropout(tf.dropout, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        u, v = jnp.split(self.fc_in(x), 2, axis=-1)
        return self.drop(self.fc_out(self.drop(u * jax.nn.silu(v))))


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate (..., L, hd) by angles whose cos/sin are (L, hd/2): halves convention (shared.positions)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def rope_tables(positions: np.ndarray, head_dim: int, base: float, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    ang = jnp.asarray(rope_angles(positions, head_dim, base))
    return jnp.cos(ang).astype(dtype), jnp.sin(ang).astype(dtype)


class Attention(Module):
    """Multi-head self-attention with a fused qkv projection.

    qkv: D -> D + 2*G*hd, split into q, k, v in that order. Optional (config) QK-norm, grouped
    key/value heads (query head h uses kv head h // (H/G)), logit soft-capping, and RoPE.
    Masked logits are -inf; a query row with no allowed key outputs zeros (torch SDPA's rule),
    though the project's masks never have such a row.
    """

    def __init__(self, tf: TransformerConfig, rngs: nnx.Rngs):
        self.n_heads = tf.n_heads
        self.n_kv_heads = tf.kv_heads
        self.head_dim = tf.head_dim
        self.d_model = tf.d_model
        self.softcap = float(tf.logit_softcap)
        self.dropout_p = float(tf.dropout)
        self.qkv = linear(tf.d_model, tf.d_model + 2 * self.n_kv_heads * self.head_dim, rngs)
        self.out = linear(tf.d_model, tf.d_model, rngs)
        self.qk_norm = bool(tf.qk_norm)
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim)
            self.k_norm = RMSNorm(self.head_dim)
        self.site = ""
        self.source: Optional[DropoutSource] = None
        self.deterministic = False
        self.rngs = rng_stream(rngs, "dropout") if self.dropout_p > 0.0 else None

    def project(self, x: jax.Array, rope: Optional[tuple[jax.Array, jax.Array]] = None):
        """(N, L, D) -> q (N, H, L, hd), k and v (N, G, L, hd), normalised and rotated."""
        N, L, _ = x.shape
        kv = self.n_kv_heads * self.head_dim
        q, k, v = jnp.split(self.qkv(x), [self.d_model, self.d_model + kv], axis=-1)
        q = q.reshape(N, L, self.n_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = k.reshape(N, L, self.n_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = v.reshape(N, L, self.n_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, *,
               mask: Optional[np.ndarray] = None, causal: bool = False) -> jax.Array:
        """Scaled dot-product attention; q (N, H, Lq, hd), k/v (N, G, Lk, hd) -> (N, Lq, D).

        `mask` is a static numpy (Lq, Lk) bool array (True = may attend)."""
        N, _, Lq, _ = q.shape
        Lk = k.shape[2]
        if self.n_kv_heads != self.n_heads:
            groups = self.n_heads // self.n_kv_heads
            k = jnp.repeat(k, groups, axis=1)
            v = jnp.repeat(v, groups, axis=1)
        logits = jnp.einsum("nhqd,nhkd->nhqk", q, k) * (1.0 / math.sqrt(self.head_dim))
        if self.softcap > 0.0:
            logits = self.softcap * jnp.tanh(logits / self.softcap)
        allow = None if mask is None else np.asarray(mask, dtype=bool)
        if causal:
            causal_mask = np.tril(np.ones((Lq, Lk), dtype=bool), Lk - Lq)
            allow = causal_mask if allow is None else (allow & causal_mask)
        if allow is not None:
            logits = jnp.where(allow, logits, -jnp.inf)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
        if allow is not None and not allow.any(axis=-1).all():
            probs = jnp.where(allow.any(axis=-1)[:, None], probs, 0.0)     # no allowed key: output 0
        if self.dropout_p > 0.0 and not self.deterministic:
            if self.source is not None:
                keep = jnp.asarray(self.source(self.site, tuple(probs.shape)))
            else:
                keep = jax.random.bernoulli(self.rngs(), 1.0 - self.dropout_p, probs.shape)
            probs = probs * keep.astype(probs.dtype) / (1.0 - self.dropout_p)
        y = jnp.einsum("nhqk,nhkd->nhqd", probs, v)
        return y.transpose(0, 2, 1, 3).reshape(N, Lq, self.d_model)

    def __call__(self, x: jax.Array, *, mask: Optional[np.ndarray] = None, causal: bool = False,
                 rope: Optional[tuple[jax.Array, jax.Array]] = None) -> jax.Array:
        q, k, v = self.project(x, rope)
        return self.out(self.attend(q, k, v, mask=mask, causal=causal))


class SpaceAttention(Module):
    """Attention among the S slots of each frame under one (S, S) mask shared by the batch."""

    def __init__(self, tf: TransformerConfig, mask: np.ndarray, rngs: nnx.Rngs):
        self.attn = Attention(tf, rngs)
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
            raise ValueError(f"a space-attention mask must be square (S, S), got shape {mask.shape}")
        # An all-true mask is dropped (no masking work), as in torch.
        self.mask = None if mask.all() else StaticMask(mask)

    def __call__(self, x: jax.Array) -> jax.Array:
        B, T, S, D = x.shape
        mask = None if self.mask is None else self.mask.array
        if mask is not None and mask.shape != (S, S):
            raise ValueError(f"space attention built for {mask.shape[0]} slots got {S}")
        y = self.attn(x.reshape(B * T, S, D), mask=mask)
        return y.reshape(B, T, S, D)


class TimeAttention(Module):
    """Causal attention over frames, separately per slot.

    With `n_time_slots` set (the tokenizer's latents-only time attention) only the first
    n_time_slots slots attend, and the block returns its input unchanged at the other slots.
    """

    def __init__(self, tf: TransformerConfig, n_time_slots: Optional[int], rngs: nnx.Rngs):
        self.attn = Attention(tf, rngs)
        self.n_time_slots = n_time_slots

    def __call__(self, x: jax.Array, rope=None, *, cache: Optional["LayerKV"] = None, commit: int = 0,
                 mask: Optional[np.ndarray] = None, query_from: int = 0) -> jax.Array:
        """x (B, T, S, D). Without `cache` and `mask`: causal attention over the T frames.

        With `cache`, the T frames follow the cached ones: their queries attend to the cached keys and
        values and to their own, under `mask` ((T, cached + T) numpy bool, None = everything visible),
        and the keys/values of the first `commit` frames are appended to the cache. A `mask` without a
        cache replaces the causal mask (sliding-window attention). `query_from` > 0 returns only frames
        query_from.. (the earlier ones contribute keys and values only).
        """
        if self.n_time_slots is not None:
            L = self.n_time_slots
            return jnp.concatenate([self._per_slot(x[:, :, :L], rope, cache, commit, mask, query_from),
                                    x[:, query_from:, L:]], axis=2)
        return self._per_slot(x, rope, cache, commit, mask, query_from)

    def _per_slot(self, x: jax.Array, rope, cache=None, commit=0, mask=None, query_from=0) -> jax.Array:
        B, T, S, D = x.shape
        xs = x.transpose(0, 2, 1, 3).reshape(B * S, T, D)
        if cache is None and mask is None and not query_from:
            y = self.attn(xs, causal=True, rope=rope)
        else:
            q, k, v = self.attn.project(xs, rope)        # k, v: (B*S, G, T, hd), rotated at their positions
            if cache is not None and cache.keys is not None:
                k = jnp.concatenate([cache.keys, k], axis=2)
                v = jnp.concatenate([cache.values, v], axis=2)
            if query_from:
                q = q[:, :, query_from:]
                if mask is None and cache is None:      # no cache, no mask: causal
                    mask = np.tril(np.ones((T, T), dtype=bool))
                if mask is not None:
                    mask = np.asarray(mask, dtype=bool)[query_from:]
                    mask = None if bool(mask.all()) else mask
            y = self.attn.out(self.attn.attend(q, k, v, mask=mask))
            if commit:
                keep = k.shape[2] - T + commit
                cache.keys, cache.values = k[:, :, :keep], v[:, :, :keep]
        return y.reshape(B, S, T - query_from, D).transpose(0, 2, 1, 3)


class BlockCausalLayer(Module):
    """Pre-norm residual layer: space attention, [time attention], SwiGLU MLP."""

    def __init__(self, tf: TransformerConfig, space_mask: np.ndarray, layer_index: int,
                 n_time_slots: Optional[int] = None, *, rngs: nnx.Rngs):
        self.has_time = tf.has_time(layer_index)
        self.norm1 = RMSNorm(tf.d_model)
        self.space = SpaceAttention(tf, space_mask, rngs)
        self.drop1 = Dropout(tf.dropout, rngs)
        if self.has_time:
            self.norm2 = RMSNorm(tf.d_model)
            self.time = TimeAttention(tf, n_time_slots, rngs)
            self.drop2 = Dropout(tf.dropout, rngs)
        self.norm3 = RMSNorm(tf.d_model)
        self.mlp = MLP(tf, rngs)

    def __call__(self, x: jax.Array, rope=None, **time_kwargs) -> jax.Array:
        """`time_kwargs` (cache, commit, mask, query_from) go to the time attention (TimeAttention.__call__);
        with query_from > 0 the layer returns only frames query_from.."""
        x = x + self.drop1(self.space(self.norm1(x)))
        if self.has_time:
            y = self.drop2(self.time(self.norm2(x), rope, **time_kwargs))
            query_from = time_kwargs.get("query_from", 0)
            x = (x[:, query_from:] if query_from else x) + y
        return x + self.mlp(self.norm3(x))


class BlockCausalTransformer(Module):
    def __init__(self, tf: TransformerConfig, space_mask: np.ndarray, n_time_slots: Optional[int] = None, *,
                 rngs: nnx.Rngs):
        self.config = tf
        self.layers = nnx.List(
            [BlockCausalLayer(tf, space_mask, i, n_time_slots, rngs=rngs) for i in range(tf.depth)])
        self.norm = RMSNorm(tf.d_model) if tf.final_norm else None

    def time_rope(self, n_frames: int, dtype=jnp.float32, frame_offset: int = 0):
        """cos/sin tables for time RoPE over frames offset..offset+T-1 (None when RoPE is off)."""
        if not self.config.time_rope:
            return None
        positions = np.arange(frame_offset, frame_offset + n_frames)
        return rope_tables(positions, self.config.head_dim, self.config.rope_base, dtype)

    def new_cache(self, start: int = 0) -> "KVCache":
        """An empty KVCache with one LayerKV per layer; its first frame gets absolute index `start` (as in
        torch's)."""
        return KVCache(len(self.layers), start)

    def __call__(self, x: jax.Array, *, cache: Optional["KVCache"] = None, commit: int = 0,
                 time_window: Optional[int] = None, outputs_from: int = 0) -> jax.Array:
        """(B, T, S, D) -> (B, T - outputs_from, S, D); positions must already be added.

        cache / commit / time_window / outputs_from make it a generation pass (see shared.sampling.time_pass;
        `prepare` + `run` are its two halves, which a sampler can jit); without them, the plain pass.
        """
        if cache is None and time_window is None and not outputs_from:
            rope = self.time_rope(x.shape[1], x.dtype)
            for layer in self.layers:
                x = layer(x, rope)
            return x if self.norm is None else self.norm(x)
        rope, mask = self.prepare(x.shape[1], x.dtype, cache, commit, time_window, outputs_from)
        layers = None if cache is None else cache.layers
        x = self.run(x, rope, mask, layers, commit, outputs_from)
        if cache is not None:
            cache.length += commit
        return x

    def prepare(self, n_frames: int, dtype, cache: Optional["KVCache"], commit: int, time_window: Optional[int],
                outputs_from: int):
        """Check a cached/windowed call and compute its time tables: (rope cos/sin or None, numpy time mask or
        None) for `n_frames` input frames that follow the cache."""
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a dreamer4_jax KVCache (transformer.new_cache()), got {type(cache).__name__}")
        q_start, mask = time_pass(n_frames, cache, commit, time_window, outputs_from, len(self.layers))
        return self.time_rope(n_frames, dtype, frame_offset=q_start), mask

    def run(self, x: jax.Array, rope, mask: Optional[np.ndarray], caches: Optional[list["LayerKV"]], commit: int,
            outputs_from: int) -> jax.Array:
        """The layers of a cached/windowed pass on prepared inputs (see prepare): traceable (the mask is a
        static numpy array, `caches` are LayerKV objects whose arrays may be tracers), so a sampler can jit
        it with the cached arrays as inputs and outputs. Commits into `caches` but leaves the cache's
        frame count to the caller."""
        x = run_time_layers(self.layers, x, rope, mask, caches, commit, outputs_from)
        return x if self.norm is None else self.norm(x)


class KVCache(CacheBook):
    """Time-attention keys/values (jax arrays, eager Python state) of already-processed frames for every
    layer of one transformer: the bookkeeping of shared.sampling.CacheBook, as torch's KVCache."""


def add_positions(tokens: jax.Array, tf: TransformerConfig, frame_offset: int = 0) -> jax.Array:
    """tokens (B, T, S, D) + (pos_t[t] + pos_s[s]) [* 1/sqrt(D)]; without the time table under time RoPE.

    The table is shared.positions.position_table (numpy float32; torch computes the same formula with
    torch ops, equal up to the last ulp of exp). Positions restart at 0 on every call (window-relative);
    `frame_offset` gives the frames time positions offset .. offset + T - 1 instead (frames that follow
    cached ones).
    """
    _, T, S, D = tokens.shape
    pos = position_table(T, S, D, scale=tf.scale_pos_embeds, time=not tf.time_rope, frame_offset=frame_offset)
    return tokens + jnp.asarray(pos, dtype=tokens.dtype)[None]


def set_dropout_source(model: nnx.Module, source: Optional[DropoutSource]) -> None:
    """Route every dropout site of `model` (residual, MLP and attention-probability dropout) through
    `source(site_name, shape) -> keep mask`; None restores the model's own random dropout.

    Site names are module paths joined by '.' (e.g. `encoder.transformer.layers.0.drop1`,
    `encoder.transformer.layers.0.space.attn`), identical to the torch backend's, so a parity test can
    give both backends the same masks.
    """
    for path, module in nnx.iter_modules(model):
        if isinstance(module, (Dropout, Attention)):
            module.site = ".".join(str(p) for p in path)
            module.source = source
