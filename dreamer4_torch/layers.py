"""The block-causal transformer: RMSNorm, SwiGLU MLP, attention, space/time attention, layers.

Shapes: B batch, T frames, S token slots per frame, D width, H query heads, G key/value heads,
hd = D / H. Space attention mixes the S slots of one frame under one (S, S) mask shared by the
whole batch; time attention mixes frames causally, separately for every slot.

Randomness that parity tests must control (dropout) can be injected with `set_dropout_source`.

Generation reuses past frames' time-attention keys and values through a `KVCache` passed to
`BlockCausalTransformer.forward`; without a cache (the default) every path below is the plain
full-window computation.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.config import TransformerConfig
from shared.positions import rope_angles
from shared.sampling import CacheBook, LayerKV, run_time_layers, time_pass

# A dropout source maps (site name, shape) to a boolean keep-mask of that shape.
DropoutSource = Callable[[str, tuple], "torch.Tensor | np.ndarray"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(dim=-1, keepdim=True)
        return x * (self.scale / torch.sqrt(var + self.eps))


class Dropout(nn.Module):
    """Inverted dropout whose keep-mask can come from an injected source (see set_dropout_source)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.site = ""
        self.source: Optional[DropoutSource] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.source is not None:
            keep = torch.as_tensor(self.source(self.site, tuple(x.shape)), device=x.device)
            return x * keep.to(x.dtype) / (1.0 - self.p)
        return F.dropout(x, self.p, training=True)


class MLP(nn.Module):
    """SwiGLU: fc_out(dropout(u * silu(v))) with [u, v] = fc_in(x), then dropout."""

    def __init__(self, tf: TransformerConfig):
        super().__init__()
        self.fc_in = nn.Linear(tf.d_model, 2 * tf.mlp_hidden)
        self.fc_out = nn.Linear(tf.mlp_hidden, tf.d_model)
        self.drop = Dropout(tf.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.fc_in(x).chunk(2, dim=-1)
        return self.drop(self.fc_out(self.drop(u * F.silu(v))))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (..., L, hd) by angles whose cos/sin are (L, hd/2): halves convention (shared.positions)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def rope_tables(positions: np.ndarray, head_dim: int, base: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    ang = torch.from_numpy(rope_angles(positions, head_dim, base)).to(device)
    return ang.cos().to(dtype), ang.sin().to(dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    qkv: D -> D + 2*G*hd, split into q, k, v in that order. Optional (config) QK-norm, grouped
    key/value heads (query head h uses kv head h // (H/G)), logit soft-capping, and RoPE.
    """

    def __init__(self, tf: TransformerConfig):
        super().__init__()
        self.n_heads = tf.n_heads
        self.n_kv_heads = tf.kv_heads
        self.head_dim = tf.head_dim
        self.d_model = tf.d_model
        self.softcap = float(tf.logit_softcap)
        self.dropout_p = float(tf.dropout)
        self.qkv = nn.Linear(tf.d_model, tf.d_model + 2 * self.n_kv_heads * self.head_dim)
        self.out = nn.Linear(tf.d_model, tf.d_model)
        self.qk_norm = bool(tf.qk_norm)
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim)
            self.k_norm = RMSNorm(self.head_dim)
        self.site = ""
        self.source: Optional[DropoutSource] = None

    def project(self, x: torch.Tensor, rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        """(N, L, D) -> q (N, H, L, hd), k and v (N, G, L, hd), normalised and rotated."""
        N, L, _ = x.shape
        kv = self.n_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([self.d_model, kv, kv], dim=-1)
        q = q.view(N, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(N, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(N, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
               mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        """Scaled dot-product attention; q (N, H, Lq, hd), k/v (N, G, Lk, hd) -> (N, Lq, D)."""
        N, _, Lq, _ = q.shape
        drop = self.dropout_p if self.training else 0.0
        if self.softcap == 0.0 and not (drop > 0.0 and self.source is not None):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal,
                                               enable_gqa=self.n_kv_heads != self.n_heads)
        else:
            y = self._attend_explicit(q, k, v, mask=mask, causal=causal, drop=drop)
        return y.transpose(1, 2).reshape(N, Lq, self.d_model)

    def attention_probs(self, q: torch.Tensor, k: torch.Tensor, *, mask: Optional[torch.Tensor] = None,
                        causal: bool = False) -> torch.Tensor:
        """Attention weights (N, H, Lq, Lk) before dropout, as the explicit path applies them: q (N, H, Lq, hd),
        k (N, G, Lk, hd) (grouped kv heads repeated), soft-capped logits, causal and/or boolean mask."""
        if self.n_kv_heads != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        logits = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        if self.softcap > 0.0:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        Lq, Lk = logits.shape[-2:]
        if causal:
            causal_mask = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)
            mask = causal_mask if mask is None else (mask & causal_mask)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits.float(), dim=-1).to(q.dtype)

    def _attend_explicit(self, q, k, v, *, mask, causal, drop):
        probs = self.attention_probs(q, k, mask=mask, causal=causal)
        if self.n_kv_heads != self.n_heads:
            v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        if drop > 0.0:
            if self.source is not None:
                keep = torch.as_tensor(self.source(self.site, tuple(probs.shape)), device=probs.device)
                probs = probs * keep.to(probs.dtype) / (1.0 - drop)
            else:
                probs = F.dropout(probs, drop, training=True)
        return probs @ v

    def forward(self, x: torch.Tensor, *, mask: Optional[torch.Tensor] = None, causal: bool = False,
                rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        q, k, v = self.project(x, rope)
        return self.out(self.attend(q, k, v, mask=mask, causal=causal))


class SpaceAttention(nn.Module):
    """Attention among the S slots of each frame under one (S, S) mask shared by the batch."""

    def __init__(self, tf: TransformerConfig, mask: np.ndarray):
        super().__init__()
        self.attn = Attention(tf)
        mask = np.asarray(mask, dtype=bool)
        # An all-true mask is dropped so SDPA can take its unmasked fast path.
        self.register_buffer("mask", None if mask.all() else torch.from_numpy(mask.copy()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, S, D = x.shape
        y = self.attn(x.reshape(B * T, S, D), mask=self.mask)
        return y.view(B, T, S, D)


class TimeAttention(nn.Module):
    """Causal attention over frames, separately per slot.

    With `n_time_slots` set (the tokenizer's latents-only time attention) only the first
    n_time_slots slots attend, and the block returns its input unchanged at the other slots.
    """

    def __init__(self, tf: TransformerConfig, n_time_slots: Optional[int] = None):
        super().__init__()
        self.attn = Attention(tf)
        self.n_time_slots = n_time_slots

    def forward(self, x: torch.Tensor, rope=None, *, cache: Optional["LayerKV"] = None, commit: int = 0,
                mask: Optional[torch.Tensor] = None, query_from: int = 0) -> torch.Tensor:
        """x (B, T, S, D). Without `cache` and `mask`: causal attention over the T frames.

        With `cache`, the T frames follow the cached ones: their queries attend to the cached keys and
        values and to their own, under `mask` ((T, cached + T) bool, None = everything visible), and
        the keys/values of the first `commit` frames are appended to the cache. A `mask` without a
        cache replaces the causal mask (sliding-window attention). `query_from` > 0 returns only frames
        query_from.. (the earlier ones contribute keys and values only).
        """
        if self.n_time_slots is not None:
            L = self.n_time_slots
            return torch.cat([self._per_slot(x[:, :, :L], rope, cache, commit, mask, query_from),
                              x[:, query_from:, L:]], dim=2)
        return self._per_slot(x, rope, cache, commit, mask, query_from)

    def _per_slot(self, x: torch.Tensor, rope, cache=None, commit=0, mask=None, query_from=0) -> torch.Tensor:
        B, T, S, D = x.shape
        # contiguous() before the projection keeps the matmul kernel (and its rounding) identical to
        # upstream's for every batch size, including B = 1 where reshape would return a strided view.
        xs = x.permute(0, 2, 1, 3).contiguous().view(B * S, T, D)
        if cache is None and mask is None and not query_from:
            y = self.attn(xs, causal=True, rope=rope)
        else:
            q, k, v = self.attn.project(xs, rope)        # k, v: (B*S, G, T, hd), rotated at their positions
            if cache is not None and cache.keys is not None:
                k = torch.cat([cache.keys, k], dim=2)
                v = torch.cat([cache.values, v], dim=2)
            if query_from:
                q = q[:, :, query_from:]
                if mask is None and cache is None:      # no cache, no mask: causal
                    mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
                if mask is not None:
                    mask = mask[query_from:]
                    mask = None if bool(mask.all()) else mask
            y = self.attn.out(self.attn.attend(q, k, v, mask=mask))
            if commit:
                keep = k.shape[2] - T + commit
                cache.keys, cache.values = k[:, :, :keep], v[:, :, :keep]
        return y.view(B, S, T - query_from, D).permute(0, 2, 1, 3).contiguous()


class BlockCausalLayer(nn.Module):
    """Pre-norm residual layer: space attention, [time attention], SwiGLU MLP."""

    def __init__(self, tf: TransformerConfig, space_mask: np.ndarray, layer_index: int,
                 n_time_slots: Optional[int] = None):
        super().__init__()
        self.has_time = tf.has_time(layer_index)
        self.norm1 = RMSNorm(tf.d_model)
        self.space = SpaceAttention(tf, space_mask)
        self.drop1 = Dropout(tf.dropout)
        if self.has_time:
            self.norm2 = RMSNorm(tf.d_model)
            self.time = TimeAttention(tf, n_time_slots)
            self.drop2 = Dropout(tf.dropout)
        self.norm3 = RMSNorm(tf.d_model)
        self.mlp = MLP(tf)

    def forward(self, x: torch.Tensor, rope=None, **time_kwargs) -> torch.Tensor:
        """`time_kwargs` (cache, commit, mask, query_from) go to the time attention (TimeAttention.forward);
        with query_from > 0 the layer returns only frames query_from.."""
        x = x + self.drop1(self.space(self.norm1(x)))
        if self.has_time:
            y = self.drop2(self.time(self.norm2(x), rope, **time_kwargs))
            query_from = time_kwargs.get("query_from", 0)
            x = (x[:, query_from:] if query_from else x) + y
        return x + self.mlp(self.norm3(x))


class BlockCausalTransformer(nn.Module):
    def __init__(self, tf: TransformerConfig, space_mask: np.ndarray, n_time_slots: Optional[int] = None):
        super().__init__()
        self.config = tf
        self.layers = nn.ModuleList(
            [BlockCausalLayer(tf, space_mask, i, n_time_slots) for i in range(tf.depth)])
        self.norm = RMSNorm(tf.d_model) if tf.final_norm else None

    def time_rope(self, n_frames: int, device, dtype, frame_offset: int = 0):
        """cos/sin tables for time RoPE over frames offset..offset+T-1 (None when RoPE is off)."""
        if not self.config.time_rope:
            return None
        positions = np.arange(frame_offset, frame_offset + n_frames)
        return rope_tables(positions, self.config.head_dim, self.config.rope_base, device, dtype)

    def new_cache(self, start: int = 0) -> "KVCache":
        """An empty KVCache for this transformer whose first frame will have absolute index `start`."""
        return KVCache(len(self.layers), start)

    def forward(self, x: torch.Tensor, *, cache: Optional["KVCache"] = None, commit: int = 0,
                time_window: Optional[int] = None, outputs_from: int = 0) -> torch.Tensor:
        """(B, T, S, D) -> (B, T - outputs_from, S, D); positions must already be added.

        With `cache`, `time_window` or `outputs_from` a generation pass (shared.sampling.time_pass says what
        each does: frames that follow the cached ones, banded attention, context frames only committed);
        with none of them the plain block-causal pass.
        """
        if cache is None and time_window is None and not outputs_from:
            rope = self.time_rope(x.shape[1], x.device, x.dtype)
            for layer in self.layers:
                x = layer(x, rope)
            return x if self.norm is None else self.norm(x)
        T = x.shape[1]
        q_start, mask = time_pass(T, cache, commit, time_window, outputs_from, len(self.layers))
        rope = self.time_rope(T, x.device, x.dtype, frame_offset=q_start)
        mask = None if mask is None else torch.from_numpy(mask).to(x.device)
        x = run_time_layers(self.layers, x, rope, mask, None if cache is None else cache.layers, commit, outputs_from)
        if cache is not None:
            cache.length += commit
        return x if self.norm is None else self.norm(x)


class KVCache(CacheBook):
    """Time-attention keys/values (torch tensors) of already-processed frames for every layer of one
    transformer: the bookkeeping of shared.sampling.CacheBook, whose `layers` hold LayerKV tensors."""


def sinusoid_table(n: int, d: int, device=None, base: float = 10000.0) -> torch.Tensor:
    """(n, d) float32 sinusoid table computed with torch ops in upstream's order (bit-exact with
    upstream on the same device); equals shared.positions.sinusoid_table up to the last ulp of exp."""
    pos = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)
    i = torch.arange(d, device=device, dtype=torch.float32).unsqueeze(0)
    k = torch.floor(i / 2.0)
    div = torch.exp(-(2.0 * k) / max(1.0, float(d)) * math.log(base))
    ang = pos * div
    return torch.where((i % 2) == 0, torch.sin(ang), torch.cos(ang))


def add_positions(tokens: torch.Tensor, tf: TransformerConfig, frame_offset: int = 0) -> torch.Tensor:
    """tokens (B, T, S, D) + (pos_t[t] + pos_s[s]) [* 1/sqrt(D)]; without the time table under time RoPE.

    Positions restart at 0 on every call (window-relative), as upstream; `frame_offset` gives the
    frames time positions offset .. offset + T - 1 instead (frames that follow cached ones).
    """
    _, T, S, D = tokens.shape
    pos = sinusoid_table(S, D, tokens.device)[None, None]
    if not tf.time_rope:
        pos_t = sinusoid_table(T, D, tokens.device) if frame_offset == 0 else \
            sinusoid_table(frame_offset + T, D, tokens.device)[frame_offset:]
        pos = pos_t[None, :, None, :] + pos
    if tf.scale_pos_embeds:
        pos = pos * (1.0 / math.sqrt(D))
    return tokens + pos.to(tokens.dtype)


def set_dropout_source(model: nn.Module, source: Optional[DropoutSource]) -> None:
    """Route every dropout site of `model` (residual, MLP and attention-probability dropout) through
    `source(site_name, shape) -> keep mask`; None restores torch's own random dropout.

    Site names are module paths (e.g. `encoder.transformer.layers.0.drop1`,
    `encoder.transformer.layers.0.space.attn`), identical in the JAX backend, so a parity test can
    give both backends the same masks.
    """
    for name, module in model.named_modules():
        if isinstance(module, (Dropout, Attention)):
            module.site = name
            module.source = source
