"""Faster CPU inference: every nn.Linear of a model through oneDNN with its weight reordered once.

    from dreamer4_torch.prepack import PrepackedLinears
    fast = PrepackedLinears(dynamics)          # nothing happens yet
    with torch.no_grad(), fast:                # inside: nn.Linear.forward -> oneDNN, packed weights
        x1 = dynamics(...)

On the CPU, torch's nn.Linear calls MKL's sgemm with the weight in its plain (out, in) layout. For the
few rows of one generated frame (a KV-cached denoising step multiplies 16-22 token rows by every
weight matrix) that runs far below the machine's arithmetic rate, limited by the kernel on so few
rows rather than by reading the weights; oneDNN's inner product with the weight reordered ahead of
time into its blocked layout is much faster there, and somewhat faster for a whole window
(`python -m benchmarks.frame_linears`; docs/experiments.md, "Sampler speed"). This is the weight
prepacking torch.compile's CPU backend does with `freezing`, without compiling anything.

The results are the same linear maps to fp32 rounding (~1e-6 relative). Only inference uses them:
inside the context, a Linear falls back to plain F.linear when gradients are being recorded, when its
weight or input is not a plain float32 CPU tensor (a DTensor under FSDP, say), or when this torch
build lacks oneDNN (then the context does nothing at all). Packed copies are made on first use and kept (one extra copy of the weights) until
`release()`; a weight changed since it was packed (an optimizer step, load_state_dict) is repacked
on its next use (tracked through the tensor's version counter).

Entering is cheap (the packed copies are reused) and re-entrant; several threads may use the same
model at once (the demo's browser sessions): the forwards are swapped in when the first user enters
and restored when the last one leaves.
"""

from __future__ import annotations

import threading
import types
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# oneDNN picks the blocked layout for a row count. One layout serves both uses: a cached step's few rows
# and a full window's hundreds; of the hints tried, 400 was fastest for both (docs/experiments.md,
# "Sampler speed").
ROWS_HINT = 400

_LOCK = threading.Lock()
_USERS = "_prepack_users"
_PLAIN = (torch.Tensor, nn.Parameter)


def available() -> bool:
    """True when this torch build can run oneDNN linear layers with prepacked weights."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and mkldnn is not None
            and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise"))


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """A Linear's (out, in) float32 CPU weight reordered into oneDNN's blocked layout (for packed_linear)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), ROWS_HINT)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """F.linear(x, weight, bias) computed by oneDNN from packed = pack_weight(weight)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None if bias is None else bias.detach(), "none", [], "")


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    w = self.weight
    if (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)) or w.device.type != "cpu" \
            or w.dtype != torch.float32 or x.dtype != torch.float32 or x.device.type != "cpu" \
            or type(w) not in _PLAIN or type(x) not in _PLAIN:     # tensor subclasses (DTensor under FSDP)
        return F.linear(x, w, self.bias)
    packed = self.__dict__.get("_prepacked")
    if packed is None or packed[0] is not w or packed[1] != w._version:
        packed = (w, w._version, pack_weight(w))
        self.__dict__["_prepacked"] = packed
    return packed_linear(x, packed[2], self.bias)


class PrepackedLinears:
    """Context manager running the nn.Linear layers of `model` through oneDNN (see the module docstring).

    enabled=False (or a build without oneDNN) makes it a no-op, so callers can keep one code path.
    """

    def __init__(self, model: nn.Module, enabled: bool = True):
        self.model = model
        self.enabled = bool(enabled) and available()
        # found once: entering and leaving happen on every generated frame
        self._linears = [m for m in model.modules() if type(m) is nn.Linear]

    # The number of contexts inside which a model's Linears are swapped is kept on the model itself, so
    # that several PrepackedLinears of one model (one per demo session) do not undo each other's swap.
    def __enter__(self) -> "PrepackedLinears":
        if self.enabled:
            with _LOCK:
                users = self.model.__dict__.get(_USERS, 0)
                if users == 0:
                    for m in self._linears:
                        m.forward = types.MethodType(_packed_forward, m)
                self.model.__dict__[_USERS] = users + 1
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            with _LOCK:
                users = self.model.__dict__.get(_USERS, 0) - 1
                self.model.__dict__[_USERS] = users
                if users == 0:
                    for m in self._linears:
                        m.__dict__.pop("forward", None)

    def release(self) -> None:
        """Drop the packed weight copies (they are rebuilt on the next use)."""
        for m in self._linears:
            m.__dict__.pop("_prepacked", None)

    @property
    def packed_bytes(self) -> int:
        """Bytes held by packed copies right now."""
        total = 0
        for m in self._linears:
            p: Optional[tuple] = m.__dict__.get("_prepacked")
            if p is not None:
                total += p[0].numel() * p[0].element_size()
        return total
