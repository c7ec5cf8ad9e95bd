"""Backend-neutral spec of Dreamer 4: configs, token layouts and masks, position tables, the
shortcut-forcing arithmetic, the canonical parameter table, the data layer, and the recipes
(model configs, training recipes, pipeline settings).

Depends on numpy and the standard library only; importing it never imports torch or jax.
"""

from .config import (
    CONFIG_FORMAT_VERSION,
    ConfigError,
    DynamicsConfig,
    TokenizerConfig,
    TransformerConfig,
    check_compatible,
    config_from_dict,
    config_from_json,
    config_to_dict,
    config_to_json,
    dynamics_for_tokenizer,
)
from .layout import Modality, TokenLayout, dynamics_layout, space_mask, time_mask, tokenizer_layout
from .params import ParamSpec, count_params, param_table
from .positions import position_table, rope_angles, sinusoid_table
from .recipes import PRESETS, RECIPES, get_preset, get_recipe

__all__ = [
    "CONFIG_FORMAT_VERSION", "ConfigError", "DynamicsConfig", "TokenizerConfig", "TransformerConfig",
    "check_compatible", "config_from_dict", "config_from_json", "config_to_dict", "config_to_json",
    "dynamics_for_tokenizer", "Modality", "TokenLayout", "dynamics_layout", "space_mask", "time_mask",
    "tokenizer_layout", "ParamSpec", "count_params", "param_table", "position_table", "rope_angles",
    "sinusoid_table", "PRESETS", "RECIPES", "get_preset", "get_recipe",
]
