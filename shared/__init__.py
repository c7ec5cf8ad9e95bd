"""Backend-neutral spec of Dreamer 4: configs, token layouts and masks, position tables, the
shortcut-forcing arithmetic, the canonical parameter table, and the data layer.

Depends on numpy and the standard library only; importing it never imports torch or jax.
"""

from .config import (
    CONFIG_FORMAT_VERSION,
    PRESETS,
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
    get_preset,
)
from .layout import Modality, TokenLayout, dynamics_layout, space_mask, time_mask, tokenizer_layout
from .params import ParamSpec, count_params, param_table
from .positions import position_table, rope_angles, sinusoid_table

__all__ = [
    "CONFIG_FORMAT_VERSION", "PRESETS", "ConfigError", "DynamicsConfig", "TokenizerConfig",
    "TransformerConfig", "check_compatible", "config_from_dict", "config_from_json", "config_to_dict",
    "config_to_json", "dynamics_for_tokenizer", "get_preset", "Modality", "TokenLayout",
    "dynamics_layout", "space_mask", "time_mask", "tokenizer_layout", "ParamSpec", "count_params",
    "param_table", "position_table", "rope_angles", "sinusoid_table",
]
