"""PyTorch backend of Dreamer 4: models, losses, checkpoints (and, in submodules, training)."""

from .agent import agent_loss
from .checkpoint import build_model, load_for_agent, load_model, save_model
from .dynamics import ActionEncoder, Dynamics, pack, unpack
from .layers import set_dropout_source
from .losses import shortcut_loss, tokenizer_loss
from .tokenizer import Decoder, Encoder, Tokenizer, TokenizerOutput, patchify, unpatchify

__all__ = [
    "agent_loss", "build_model", "load_for_agent", "load_model", "save_model", "ActionEncoder", "Dynamics", "pack", "unpack",
    "set_dropout_source", "shortcut_loss", "tokenizer_loss", "Decoder", "Encoder", "Tokenizer",
    "TokenizerOutput", "patchify", "unpatchify",
]
