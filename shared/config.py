"""Model configurations: frozen dataclasses, validation and JSON round trip.

One `TransformerConfig` describes the block-causal transformer; `TokenizerConfig` and
`DynamicsConfig` wrap it with the model-specific sizes. Every backend builds its modules from
these objects only, so a config file fully determines a model's parameter table. The named
model configs (presets) are part of the recipes: `shared.recipes.get_preset`.

The default field values of the paper-feature switches (`qk_norm`, `n_kv_heads`,
`logit_softcap`, `time_rope`) reproduce upstream (nicklashansen/dreamer4) exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

CONFIG_FORMAT_VERSION = 1

SPACE_MODES = ("encoder", "decoder", "wm_agent_isolated", "wm_agent")
DYNAMICS_SPACE_MODES = ("wm_agent_isolated", "wm_agent")


class ConfigError(ValueError):
    """A config value is invalid; the message names the offending field."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _check_types(obj: Any, prefix: str) -> None:
    """Reject values of the wrong type early (JSON gives floats for ints, strings for bools...)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}.{f.name}"
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind == "int":
            _require(isinstance(value, int) and not isinstance(value, bool),
                     f"{name} must be an integer, got {value!r}")
        elif kind == "float":
            _require(isinstance(value, (int, float)) and not isinstance(value, bool),
                     f"{name} must be a number, got {value!r}")
        elif kind == "bool":
            _require(isinstance(value, bool), f"{name} must be true or false, got {value!r}")
        elif kind == "str":
            _require(isinstance(value, str), f"{name} must be a string, got {value!r}")


@dataclass(frozen=True)
class TransformerConfig:
    """The block-causal transformer shared by the encoder, decoder and dynamics model."""

    d_model: int
    n_heads: int
    depth: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # Layer i has causal time attention when (i + 1) % time_every == 0.
    time_every: int = 1
    # Multiply the summed sinusoid position table by 1/sqrt(d_model) (upstream's released
    # checkpoints were trained with this on).
    scale_pos_embeds: bool = True
    # --- paper features; the defaults are upstream's architecture ---
    qk_norm: bool = False          # RMSNorm on per-head queries and keys
    n_kv_heads: int = 0            # grouped-query attention; 0 means n_heads (plain MHA)
    logit_softcap: float = 0.0     # cap * tanh(logits / cap); 0 disables
    time_rope: bool = False        # RoPE over frames in time attention instead of the additive time table
    rope_base: float = 10000.0
    # RMSNorm on the output of the last layer (parameter `<prefix>.norm.scale`). Upstream has none:
    # its pre-norm residual stream reaches the tanh bottleneck unnormalised, which saturates small
    # tokenizers trained from scratch (see README, "Training").
    final_norm: bool = False

    def validate(self, prefix: str = "transformer") -> None:
        _check_types(self, prefix)
        _require(self.d_model > 0, f"{prefix}.d_model must be positive, got {self.d_model}")
        _require(self.n_heads > 0, f"{prefix}.n_heads must be positive, got {self.n_heads}")
        _require(self.d_model % self.n_heads == 0,
                 f"{prefix}.d_model={self.d_model} is not divisible by {prefix}.n_heads={self.n_heads}")
        _require(self.depth > 0, f"{prefix}.depth must be positive, got {self.depth}")
        _require(self.mlp_ratio > 0 and int(self.d_model * self.mlp_ratio) > 0,
                 f"{prefix}.mlp_ratio must be positive, got {self.mlp_ratio}")
        _require(0.0 <= self.dropout < 1.0, f"{prefix}.dropout must be in [0, 1), got {self.dropout}")
        _require(self.time_every >= 1, f"{prefix}.time_every must be >= 1, got {self.time_every}")
        _require(self.time_every <= self.depth,
                 f"{prefix}.time_every={self.time_every} exceeds {prefix}.depth={self.depth}: "
                 "no layer would attend over time")
        _require(self.n_kv_heads >= 0, f"{prefix}.n_kv_heads must be >= 0, got {self.n_kv_heads}")
        _require(self.n_kv_heads == 0 or self.n_heads % self.n_kv_heads == 0,
                 f"{prefix}.n_heads={self.n_heads} is not divisible by {prefix}.n_kv_heads={self.n_kv_heads}")
        _require(self.logit_softcap >= 0.0, f"{prefix}.logit_softcap must be >= 0, got {self.logit_softcap}")
        _require(not self.time_rope or self.head_dim % 2 == 0,
                 f"{prefix}.time_rope needs an even head dimension, got d_model/n_heads={self.head_dim}")
        _require(self.rope_base > 1.0, f"{prefix}.rope_base must be > 1, got {self.rope_base}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.d_model * self.mlp_ratio)

    def has_time(self, layer: int) -> bool:
        """Whether layer `layer` (0-based) has a time-attention block."""
        return (layer + 1) % self.time_every == 0


@dataclass(frozen=True)
class TokenizerConfig:
    """Causal video tokenizer: patches -> n_latents tanh-bottleneck latents per frame -> patches."""

    transformer: TransformerConfig
    image_height: int = 128
    image_width: int = 128
    channels: int = 3
    patch_size: int = 4
    n_latents: int = 16
    d_bottleneck: int = 32
    # MAE: per (batch, frame) drop probability p ~ U(mae_p_min, mae_p_max) during training.
    mae_p_min: float = 0.0
    mae_p_max: float = 0.9
    # Normalise each latent's pre-tanh vector to unit RMS (no parameters): z = tanh(x / rms(x)).
    # Keeps the bottleneck out of tanh's flat tails, where a tokenizer trained from scratch on a
    # small budget otherwise saturates into a near-constant binary code. Upstream has none.
    bottleneck_norm: bool = False
    # The clip length the tokenizer was trained on. Its time positions are window-relative, so a
    # longer clip would put frames at positions it never saw: encode/decode process longer clips in
    # consecutive chunks of at most this many frames (see docs/experiments.md, "Tokenizer recipe").
    # None: any length at once.
    clip_frames: Optional[int] = None

    kind = "tokenizer"

    def validate(self) -> None:
        _check_types(self, "tokenizer")
        _require(isinstance(self.transformer, TransformerConfig),
                 "tokenizer.transformer must be a TransformerConfig")
        self.transformer.validate("tokenizer.transformer")
        for name in ("image_height", "image_width", "channels", "patch_size", "n_latents", "d_bottleneck"):
            _require(getattr(self, name) > 0, f"tokenizer.{name} must be positive, got {getattr(self, name)}")
        _require(self.image_height % self.patch_size == 0,
                 f"tokenizer.image_height={self.image_height} is not divisible by "
                 f"tokenizer.patch_size={self.patch_size}")
        _require(self.image_width % self.patch_size == 0,
                 f"tokenizer.image_width={self.image_width} is not divisible by "
                 f"tokenizer.patch_size={self.patch_size}")
        _require(0.0 <= self.mae_p_min <= self.mae_p_max < 1.0,
                 f"tokenizer.mae_p_min/mae_p_max must satisfy 0 <= min <= max < 1, "
                 f"got {self.mae_p_min}, {self.mae_p_max}")
        _require(self.clip_frames is None
                 or (isinstance(self.clip_frames, int) and not isinstance(self.clip_frames, bool)
                     and self.clip_frames >= 1),
                 f"tokenizer.clip_frames must be null or an integer >= 1, got {self.clip_frames!r}")

    def clip_chunks(self, frames: int) -> list[slice]:
        """The consecutive frame ranges of a `frames`-long clip that encode/decode process separately:
        chunks of clip_frames frames (the last one shorter), or the whole clip when clip_frames is None."""
        if self.clip_frames is None or frames <= self.clip_frames:
            return [slice(0, frames)]
        step = self.clip_frames
        return [slice(start, min(start + step, frames)) for start in range(0, frames, step)]

    @property
    def n_patches(self) -> int:
        return (self.image_height // self.patch_size) * (self.image_width // self.patch_size)

    @property
    def d_patch(self) -> int:
        return self.channels * self.patch_size * self.patch_size

    @property
    def n_tokens(self) -> int:
        return self.n_latents + self.n_patches


@dataclass(frozen=True)
class DynamicsConfig:
    """Action-conditioned shortcut-forcing dynamics over packed tokenizer latents."""

    transformer: TransformerConfig
    # Taken from the tokenizer the model is trained on.
    n_latents: int = 16
    d_bottleneck: int = 32
    packing_factor: int = 2
    n_register: int = 4
    n_agent: int = 1
    k_max: int = 8
    action_dim: int = 16
    space_mode: str = "wm_agent_isolated"
    # Agent finetuning (shared.agent): a learned task embedding fills the agent slot (one row per
    # task id of shared.data.tasks; 0 = the slot holds zeros or the caller's agent_tokens), and the
    # policy and reward heads read the agent output h_t, each predicting `mtp_length` future steps.
    n_tasks: int = 0
    agent_heads: bool = False
    mtp_length: int = 8
    reward_bins: int = 255

    kind = "dynamics"

    def validate(self) -> None:
        _check_types(self, "dynamics")
        _require(isinstance(self.transformer, TransformerConfig),
                 "dynamics.transformer must be a TransformerConfig")
        self.transformer.validate("dynamics.transformer")
        for name in ("n_latents", "d_bottleneck", "packing_factor", "action_dim"):
            _require(getattr(self, name) > 0, f"dynamics.{name} must be positive, got {getattr(self, name)}")
        _require(self.n_latents % self.packing_factor == 0,
                 f"dynamics.n_latents={self.n_latents} is not divisible by "
                 f"dynamics.packing_factor={self.packing_factor}")
        _require(self.n_register >= 0, f"dynamics.n_register must be >= 0, got {self.n_register}")
        _require(self.n_agent >= 0, f"dynamics.n_agent must be >= 0, got {self.n_agent}")
        _require(_is_pow2(self.k_max), f"dynamics.k_max must be a power of two, got {self.k_max}")
        _require(self.space_mode in DYNAMICS_SPACE_MODES,
                 f"dynamics.space_mode must be one of {DYNAMICS_SPACE_MODES}, got {self.space_mode!r}")
        _require(self.n_tasks >= 0, f"dynamics.n_tasks must be >= 0, got {self.n_tasks}")
        if self.n_tasks or self.agent_heads:
            _require(self.n_agent == 1, f"dynamics.n_tasks and dynamics.agent_heads need exactly one agent "
                                        f"token (dynamics.n_agent=1), got n_agent={self.n_agent}")
        _require(self.mtp_length >= 1, f"dynamics.mtp_length must be >= 1, got {self.mtp_length}")
        _require(self.reward_bins >= 2, f"dynamics.reward_bins must be >= 2, got {self.reward_bins}")

    @property
    def n_spatial(self) -> int:
        return self.n_latents // self.packing_factor

    @property
    def d_spatial(self) -> int:
        return self.d_bottleneck * self.packing_factor

    @property
    def e_max(self) -> int:
        return int(round(math.log2(self.k_max)))

    @property
    def n_step_bins(self) -> int:
        return self.e_max + 1

    @property
    def n_tokens(self) -> int:
        return 3 + self.n_spatial + self.n_register + self.n_agent


ModelConfig = TokenizerConfig | DynamicsConfig


# ----------------------------------------------------------------------------------------------
# JSON round trip
# ----------------------------------------------------------------------------------------------

def _dataclass_from_dict(cls, data: Mapping[str, Any], prefix: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}")
    kwargs = dict(data)
    if "transformer" in names:
        if "transformer" not in data:
            raise ConfigError(f"missing config key {prefix}.transformer")
        kwargs["transformer"] = _dataclass_from_dict(TransformerConfig, data["transformer"],
                                                     f"{prefix}.transformer")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing config key(s) {', '.join(f'{prefix}.{k}' for k in missing)}")
    return cls(**kwargs)


def config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    out = {"format_version": CONFIG_FORMAT_VERSION, "kind": cfg.kind}
    out.update(dataclasses.asdict(cfg))
    return out


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"a model config must be a JSON object, got {type(data).__name__}")
    data = dict(data)
    version = data.pop("format_version", None)
    if version is None:
        raise ConfigError("config has no format_version")
    if version != CONFIG_FORMAT_VERSION:
        raise ConfigError(f"config format_version={version!r} is not supported "
                          f"(this version reads {CONFIG_FORMAT_VERSION})")
    kind = data.pop("kind", None)
    classes = {"tokenizer": TokenizerConfig, "dynamics": DynamicsConfig}
    if kind not in classes:
        raise ConfigError(f"config kind must be 'tokenizer' or 'dynamics', got {kind!r}")
    cfg = _dataclass_from_dict(classes[kind], data, kind)
    cfg.validate()
    return cfg


def config_to_json(cfg: ModelConfig) -> str:
    return json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n"


def config_from_json(text: str) -> ModelConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config is not valid JSON: {e}") from e
    return config_from_dict(data)


def replace(cfg, **changes):
    """dataclasses.replace that re-validates; `transformer__x=` edits a transformer field."""
    tf_changes = {k[len("transformer__"):]: v for k, v in changes.items() if k.startswith("transformer__")}
    changes = {k: v for k, v in changes.items() if not k.startswith("transformer__")}
    if tf_changes:
        changes["transformer"] = dataclasses.replace(changes.get("transformer", cfg.transformer), **tf_changes)
    new = dataclasses.replace(cfg, **changes)
    new.validate()
    return new


def dynamics_for_tokenizer(tok: TokenizerConfig, dyn: DynamicsConfig) -> DynamicsConfig:
    """`dyn` with the latent sizes taken from the tokenizer it will run on."""
    return replace(dyn, n_latents=tok.n_latents, d_bottleneck=tok.d_bottleneck)


def check_compatible(tok: TokenizerConfig, dyn: DynamicsConfig) -> None:
    """Raise ConfigError if a dynamics model cannot consume this tokenizer's latents."""
    if (tok.n_latents, tok.d_bottleneck) != (dyn.n_latents, dyn.d_bottleneck):
        raise ConfigError(
            f"tokenizer latents (n_latents={tok.n_latents}, d_bottleneck={tok.d_bottleneck}) do not match "
            f"the dynamics model (dynamics.n_latents={dyn.n_latents}, dynamics.d_bottleneck={dyn.d_bottleneck})")
