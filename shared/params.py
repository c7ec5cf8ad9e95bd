"""The canonical parameter table: every parameter of a model, its name, shape and initializer.

Names and shapes are PyTorch's (`encoder.transformer.layers.0.space.attn.qkv.weight`, linear
weights shaped (out, in)); for the default options they are exactly upstream's state-dict keys.
Both backends create exactly these parameters, and the converters are derived from this table:
the JAX (Flax NNX) path is the same name with '/' separators and the leaf renamed by role
(linear `weight` -> `kernel`, transposed to (in, out); embedding `weight` -> `embedding`).

Initializers:
  linear_uniform   U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch.nn.Linear's default, weight and bias)
  normal(std)      N(0, std^2)
  zeros / ones
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .config import DynamicsConfig, ModelConfig, TokenizerConfig, TransformerConfig

ROLES = ("linear_weight", "linear_bias", "norm_scale", "embedding", "tensor")
# Which parameters take weight decay: "all" (upstream's AdamW(model.parameters(), weight_decay=0.01))
# or "weights" (linear weights only: no decay on biases, norm scales, embeddings or learned tokens).
DECAY_POLICIES = ("all", "weights")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    role: str          # one of ROLES
    init: str          # linear_uniform | normal | zeros | ones
    std: float = 0.0   # for init == "normal"
    fan_in: int = 0    # for init == "linear_uniform"

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def jax_path(self) -> tuple[str, ...]:
        """The NNX state path of this parameter, e.g. ('encoder', 'transformer', 'layers', '0', ...)."""
        parts = self.name.split(".")
        if self.role == "linear_weight":
            parts[-1] = "kernel"
        elif self.role == "embedding":
            parts[-1] = "embedding"
        return tuple(parts)

    @property
    def jax_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape)) if self.role == "linear_weight" else self.shape


def _linear(name: str, d_in: int, d_out: int, *, bias: bool = True, weight_init: str = "linear_uniform",
            weight_std: float = 0.0, bias_init: str = "linear_uniform") -> list[ParamSpec]:
    out = [ParamSpec(f"{name}.weight", (d_out, d_in), "linear_weight", weight_init, weight_std, d_in)]
    if bias:
        out.append(ParamSpec(f"{name}.bias", (d_out,), "linear_bias", bias_init, 0.0, d_in))
    return out


def _norm(name: str, d: int) -> list[ParamSpec]:
    return [ParamSpec(f"{name}.scale", (d,), "norm_scale", "ones")]


def _attention(prefix: str, tf: TransformerConfig) -> list[ParamSpec]:
    d, hd = tf.d_model, tf.head_dim
    params = _linear(f"{prefix}.qkv", d, d + 2 * tf.kv_heads * hd)
    params += _linear(f"{prefix}.out", d, d)
    if tf.qk_norm:
        params += _norm(f"{prefix}.q_norm", hd) + _norm(f"{prefix}.k_norm", hd)
    return params


def transformer_params(prefix: str, tf: TransformerConfig) -> list[ParamSpec]:
    params: list[ParamSpec] = []
    for i in range(tf.depth):
        p = f"{prefix}.layers.{i}"
        params += _norm(f"{p}.norm1", tf.d_model)
        params += _attention(f"{p}.space.attn", tf)
        if tf.has_time(i):
            params += _norm(f"{p}.norm2", tf.d_model)
            params += _attention(f"{p}.time.attn", tf)
        params += _norm(f"{p}.norm3", tf.d_model)
        params += _linear(f"{p}.mlp.fc_in", tf.d_model, 2 * tf.mlp_hidden)
        params += _linear(f"{p}.mlp.fc_out", tf.mlp_hidden, tf.d_model)
    if tf.final_norm:
        params += _norm(f"{prefix}.norm", tf.d_model)
    return params


def tokenizer_params(cfg: TokenizerConfig) -> list[ParamSpec]:
    d = cfg.transformer.d_model
    enc = _linear("encoder.patch_proj", cfg.d_patch, d)
    enc += _linear("encoder.bottleneck_proj", d, cfg.d_bottleneck)
    enc += transformer_params("encoder.transformer", cfg.transformer)
    enc += [ParamSpec("encoder.mae.mask_token", (d,), "tensor", "normal", 0.02)]
    enc += [ParamSpec("encoder.latents", (cfg.n_latents, d), "tensor", "normal", 0.02)]
    dec = _linear("decoder.up_proj", cfg.d_bottleneck, d)
    dec += [ParamSpec("decoder.patch_queries", (cfg.n_patches, d), "tensor", "normal", 0.02)]
    dec += _linear("decoder.patch_head", d, cfg.d_patch)
    dec += transformer_params("decoder.transformer", cfg.transformer)
    return enc + dec


def dynamics_params(cfg: DynamicsConfig) -> list[ParamSpec]:
    d = cfg.transformer.d_model
    params = _linear("spatial_proj", cfg.d_spatial, d)
    params += [ParamSpec("register_tokens", (cfg.n_register, d), "tensor", "normal", 0.02)]
    params += [ParamSpec("action_encoder.base", (d,), "tensor", "normal", 0.02)]
    params += _linear("action_encoder.fc1", cfg.action_dim, 2 * d)
    params += _linear("action_encoder.fc2", 2 * d, d, weight_init="normal", weight_std=1e-3, bias_init="zeros")
    params += [ParamSpec("step_embed.weight", (cfg.n_step_bins, d), "embedding", "normal", 1.0)]
    params += [ParamSpec("signal_embed.weight", (cfg.k_max + 1, d), "embedding", "normal", 1.0)]
    params += transformer_params("transformer", cfg.transformer)
    params += _linear("flow_x_head", d, cfg.d_spatial, weight_init="zeros", bias_init="zeros")
    # Agent finetuning (shared.agent) comes last, so the pretrained part of the table, its order and
    # its initial draws are those of the model without it.
    if cfg.n_tasks:
        params += [ParamSpec("task_embed.weight", (cfg.n_tasks, d), "embedding", "normal", 1.0)]
    if cfg.agent_heads:
        params += _head("policy_head", d, [2 * cfg.action_dim] * cfg.mtp_length, out_std=0.01)
        params += _head("reward_head", d, [cfg.reward_bins] * cfg.mtp_length, out_std=0.0)
    return params


def _head(name: str, d: int, widths: Sequence[int], out_std: float) -> list[ParamSpec]:
    """RMSNorm -> Linear(d, d) -> SiLU -> one output Linear per distance (`name.out.N`); output weights
    N(0, out_std^2) (zeros for 0: a uniform reward distribution at the start), output biases zeros."""
    params = _norm(f"{name}.norm", d) + _linear(f"{name}.fc", d, d)
    for i, width in enumerate(widths):
        params += _linear(f"{name}.out.{i}", d, width, weight_init="normal" if out_std else "zeros",
                          weight_std=out_std, bias_init="zeros")
    return params


def param_table(cfg: ModelConfig) -> list[ParamSpec]:
    """The ordered parameter table of a tokenizer or dynamics config."""
    if isinstance(cfg, TokenizerConfig):
        return tokenizer_params(cfg)
    if isinstance(cfg, DynamicsConfig):
        return dynamics_params(cfg)
    raise TypeError(f"expected a TokenizerConfig or DynamicsConfig, got {type(cfg).__name__}")


def count_params(cfg: ModelConfig) -> int:
    return sum(p.size for p in param_table(cfg))


def param_table_dict(cfg: ModelConfig) -> dict[str, ParamSpec]:
    return {p.name: p for p in param_table(cfg)}


def hidden_matrix_names(cfg: ModelConfig) -> set[str]:
    """The linear weights inside the transformer layers (attention qkv/out, MLP in/out): what the Muon
    optimizer updates (dreamer4_torch.train.optim, dreamer4_jax.train); input projections, heads,
    embeddings and learned tokens are not among them."""
    return {p.name for p in param_table(cfg) if p.role == "linear_weight" and "transformer.layers." in p.name}


def decays(spec: ParamSpec, policy: str) -> bool:
    """Whether a parameter takes weight decay under `policy` (DECAY_POLICIES)."""
    if policy == "all":
        return True
    if policy == "weights":
        return spec.role == "linear_weight"
    raise ValueError(f"decay policy must be one of {DECAY_POLICIES}, got {policy!r}")


def decay_names(cfg: ModelConfig, policy: str) -> set[str]:
    """Torch names of the parameters that decay under `policy`: the torch trainer's AdamW groups
    (dreamer4_torch.train.optim.decay_groups, policy "weights") and the JAX decay mask
    (dreamer4_jax.train) both come from this."""
    return {p.name for p in param_table(cfg) if decays(p, policy)}


def parameter_problems(expected: Mapping[str, tuple], found: Mapping[str, tuple]) -> list[str]:
    """Every difference between two parameter tables {name: shape}: "missing NAME (shape)" for a name
    only expected, "unexpected NAME (shape)" for one only found, "NAME has shape X, expected Y" for a
    shape that differs; in the tables' order."""
    problems = [f"missing {n} {tuple(s)}" for n, s in expected.items() if n not in found]
    problems += [f"unexpected {n} {tuple(s)}" for n, s in found.items() if n not in expected]
    problems += [f"{n} has shape {tuple(found[n])}, expected {tuple(s)}"
                 for n, s in expected.items() if n in found and tuple(found[n]) != tuple(s)]
    return problems


def check_parameters(expected: Mapping[str, tuple], found: Mapping[str, tuple], *, what: str,
                     error: type[Exception], extra_problems: Sequence[str] = ()) -> None:
    """Raise `error` naming every problem of parameter_problems (and the caller's `extra_problems`,
    e.g. wrong dtypes) in one message: "WHAT does not match the parameter table: ...; ..."."""
    problems = parameter_problems(expected, found) + list(extra_problems)
    if problems:
        raise error(f"{what} does not match the parameter table: " + "; ".join(problems))
