"""JAX (Flax NNX) backend of Dreamer 4: the reference implementation that mirrors dreamer4_torch file
for file, class for class and attribute for attribute. Models, losses and orbax checkpoints here;
dreamer4_jax.train has the data-parallel jit train step. Never imports torch."""

from .agent import agent_loss
from .checkpoint import build_model, load_for_agent, load_model, load_state, model_state, save_model, save_state, set_model_state
from .dynamics import ActionEncoder, Dynamics, pack, unpack
from .layers import set_dropout_source
from .losses import shortcut_loss, tokenizer_loss
from .tokenizer import Decoder, Encoder, Tokenizer, TokenizerOutput, patchify, unpatchify

__all__ = [
    "agent_loss", "build_model", "load_for_agent", "load_model", "load_state", "model_state", "save_model", "save_state", "set_model_state",
    "ActionEncoder", "Dynamics", "pack", "unpack", "set_dropout_source", "shortcut_loss", "tokenizer_loss",
    "Decoder", "Encoder", "Tokenizer", "TokenizerOutput", "patchify", "unpatchify",
]
