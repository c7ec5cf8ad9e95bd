"""Weight converters: upstream .pt -> native PyTorch, and (see convert.torch_jax) PyTorch <-> JAX."""

from .upstream import import_upstream, load_upstream

__all__ = ["import_upstream", "load_upstream"]
