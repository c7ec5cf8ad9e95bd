"""JAX (Flax NNX) backend of Dreamer 4: the reference implementation that mirrors dreamer4_torch file
for file, class for class and attribute for attribute. Never imports torch."""

from .dynamics import ActionEncoder, Dynamics, pack, unpack
from .layers import set_dropout_source
from .losses import shortcut_loss, tokenizer_loss
from .tokenizer import Decoder, Encoder, Tokenizer, TokenizerOutput, patchify, unpatchify

__all__ = [
    "ActionEncoder", "Dynamics", "pack", "unpack", "set_dropout_source", "shortcut_loss", "tokenizer_loss",
    "Decoder", "Encoder", "Tokenizer", "TokenizerOutput", "patchify", "unpatchify",
]
