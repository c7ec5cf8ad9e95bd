"""Array contracts at the JAX backend's public boundaries, checked with chex.

chex's assertions raise a bare AssertionError about "input 0"; these raise what a caller expects
instead (ValueError for a wrong shape, TypeError for a wrong dtype or a non-array), naming the
argument and the expected shape, e.g. "video must have shape (B, T, 3, 16, 16) for this tokenizer,
got (1, 2, 3, 32, 32)". They work on traced arrays too (shapes and dtypes are static under jit).
Like every chex assertion they are switched off by chex.disable_asserts().
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import chex
import jax
import jax.numpy as jnp

# A shape entry: an int is the required size; a str (an axis name such as "B") or None is any size.
Dim = Union[int, str, None]
_KIND_NAMES = {float: "a float", int: "an integer", bool: "a bool"}


def _require_array(name: str, x: Any, what: str) -> None:
    # chex reads a list or tuple as several inputs, so a non-array is refused before it gets there
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"{name} must be {what}, got {type(x).__name__}")


def format_shape(shape: Sequence[Dim]) -> str:
    """(B, T, 3, 16, 16): axis names as given, None as '*'."""
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_shape(name: str, x: Any, shape: Sequence[Dim], rule: str = "") -> None:
    """`x` has len(shape) axes, each of the given size where `shape` has an int; else ValueError
    "NAME must have shape SHAPE[rule], got ...". TypeError when `x` is not an array."""
    _require_array(name, x, f"an array of shape {format_shape(shape)}")
    try:
        chex.assert_shape(x, tuple(None if isinstance(s, str) else s for s in shape))
    except AssertionError as e:
        raise ValueError(f"{name} must have shape {format_shape(shape)}{rule}, got {tuple(x.shape)}") from e


def check_dtype(name: str, x: Any, kind: type, what: str = "", hint: str = "") -> None:
    """`x`'s dtype is of `kind` (float, int or bool: any width, as chex.assert_type reads them); else
    TypeError "NAME must be WHAT, got dtype D[hint]", WHAT defaulting to e.g. "an integer array"."""
    what = what or f"{_KIND_NAMES[kind]} array"
    _require_array(name, x, what)
    try:
        chex.assert_type(x, kind)
    except AssertionError as e:
        raise TypeError(f"{name} must be {what}, got dtype {x.dtype}{hint}") from e


def value_range(x) -> tuple[bool, float, float]:
    """(all finite, min, max) of a concrete array, for shared.values.check_values (NaN bounds when empty);
    a traced array (under jit) passes as (True, NaN, NaN): its values are not known here."""
    if isinstance(x, jax.core.Tracer) or x.size == 0:
        return True, float("nan"), float("nan")
    x = jnp.asarray(x)
    return bool(jnp.isfinite(x).all()), float(jnp.min(x)), float(jnp.max(x))
