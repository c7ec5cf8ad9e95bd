"""Import upstream (nicklashansen/dreamer4) `.pt` checkpoints as native checkpoints.

Upstream files are `torch.save` dicts:
  tokenizer: {step, epoch, model: state dict (encoder.* / decoder.*), opt, scaler, args, scale_pos_embeds}
  dynamics:  {step, epoch, dynamics: state dict, opt, scaler, args, scale_pos_embeds}
State-dict keys may carry `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes; older files lack
`scale_pos_embeds` (meaning true). A dynamics file does not record the latent sizes of its tokenizer
(n_latents, d_bottleneck): they come from the tokenizer checkpoint (native directory or upstream .pt).

Architecture values are read from `args`; where a key is missing it is inferred from the weights
(or, for head counts, upstream's default). Where `args` and the weights disagree, the import fails and
names both. Loading is strict: every tensor must be used and match its shape.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
from pathlib import Path
from typing import Any, Optional, Union

import torch

from shared.config import ConfigError, DynamicsConfig, TokenizerConfig, TransformerConfig
from shared.io import CheckpointError

PathLike = Union[str, os.PathLike]

_PREFIXES = ("module.", "_orig_mod.")
# Upstream training scripts' defaults, used only for values neither args nor weights determine.
_DEFAULT_HEADS = 4
_DEFAULT_MLP_RATIO = 4.0
# Upstream trains its tokenizer on 8-frame clips (DREAMER4.md section 3); its checkpoints do not record it.
UPSTREAM_TOKENIZER_CLIP = 8


def _safe_globals() -> list:
    allowed: list = [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath,
                     argparse.Namespace]
    try:
        import numpy as np
        allowed += [np.dtype, np.ndarray, type(np.dtype("float32")), type(np.dtype("float64")),
                    type(np.dtype("int64")), type(np.dtype("int32")), type(np.dtype("bool"))]
        from numpy.core.multiarray import _reconstruct, scalar  # noqa: PLC0415
        allowed += [scalar, _reconstruct]
    except Exception:  # numpy layout differs between versions; the core allowlist is enough
        pass
    return allowed


def read_upstream_file(path: PathLike, trust_pickle: bool = False) -> dict:
    """torch.load an upstream checkpoint with the restricted (weights-only) unpickler.

    Upstream files hold tensors, dicts and plain Python values; paths and argparse namespaces in
    `args` are allowed too. Pass trust_pickle=True only for a file you trust: it runs arbitrary pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"upstream checkpoint {path} does not exist or is not a file")
    try:
        if trust_pickle:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_safe_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        hint = "" if trust_pickle else (" If the file is one you trust and it holds other Python objects, "
                                        "retry with --trust-pickle.")
        raise CheckpointError(f"cannot read {path} as a torch checkpoint: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}.{hint}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected an upstream checkpoint dict")
    return obj


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove leading `module.` and `_orig_mod.` (in any order, any number) from every key."""
    out = {}
    for key, value in state.items():
        k = key
        while k.startswith(_PREFIXES):
            k = k[len("module."):] if k.startswith("module.") else k[len("_orig_mod."):]
        if k in out:
            raise CheckpointError(f"two state-dict keys map to {k!r} after removing prefixes")
        out[k] = value
    return out


def detect_kind(ckpt: dict) -> str:
    if isinstance(ckpt.get("dynamics"), dict):
        return "dynamics"
    if isinstance(ckpt.get("model"), dict):
        return "tokenizer"
    raise CheckpointError("not an upstream checkpoint: expected a state dict under 'model' (tokenizer) "
                          f"or 'dynamics'; top-level keys are {sorted(map(str, ckpt))}")


def _args(ckpt: dict) -> dict[str, Any]:
    args = ckpt.get("args") or {}
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, dict):
        raise CheckpointError(f"upstream 'args' must be a dict, got {type(args).__name__}")
    return args


def _scale_pos_embeds(ckpt: dict, args: dict) -> bool:
    if "scale_pos_embeds" in ckpt and ckpt["scale_pos_embeds"] is not None:
        return bool(ckpt["scale_pos_embeds"])
    if args.get("scale_pos_embeds") is not None:
        return bool(args["scale_pos_embeds"])
    return True  # files written before the option existed were trained with scaling


def _layer_indices(state: dict, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"layers\.(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pat.match(k))})


def _time_every(state: dict, prefix: str, depth: int) -> int:
    with_time = [i for i in range(depth) if f"{prefix}layers.{i}.time.attn.qkv.weight" in state]
    if not with_time:
        raise CheckpointError(f"no layer under {prefix}layers has time attention")
    every = with_time[0] + 1
    if with_time != [i for i in range(depth) if (i + 1) % every == 0]:
        raise CheckpointError(f"time-attention layers {with_time} under {prefix}layers do not follow a "
                              "time_every pattern")
    return every


def _need(state: dict, key: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"upstream state dict lacks {key}")
    return state[key]


class _Resolver:
    """Pick each architecture value from args, falling back to the weights, and check they agree."""

    def __init__(self, args: dict, source: str):
        self.args, self.source = args, source

    def get(self, arg_key: str, inferred: Any = None, default: Any = None, cast=int):
        value = self.args.get(arg_key)
        if value is None:
            if inferred is None and default is None:
                raise CheckpointError(f"{self.source}: args lack {arg_key!r} and it cannot be inferred")
            return cast(inferred if inferred is not None else default)
        value = cast(value)
        if inferred is not None and cast(inferred) != value:
            raise CheckpointError(f"{self.source}: args say {arg_key}={value} but the weights imply "
                                  f"{arg_key}={cast(inferred)}")
        return value


def tokenizer_config_from_upstream(ckpt: dict, state: dict, source: str = "upstream tokenizer") -> TokenizerConfig:
    args = _args(ckpt)
    r = _Resolver(args, source)
    d_model, d_patch = _need(state, "encoder.patch_proj.weight").shape
    n_latents = _need(state, "encoder.latents").shape[0]
    d_bottleneck = _need(state, "encoder.bottleneck_proj.weight").shape[0]
    n_patches = _need(state, "decoder.patch_queries").shape[0]
    depth = len(_layer_indices(state, "encoder.transformer."))
    hidden2 = _need(state, "encoder.transformer.layers.0.mlp.fc_in.weight").shape[0]
    if args.get("latents_only_time") is not None and not bool(args["latents_only_time"]):
        raise CheckpointError(f"{source}: latents_only_time=False tokenizers are not supported")
    C = r.get("C", default=3)
    patch = r.get("patch", inferred=round((d_patch / C) ** 0.5))
    H = r.get("H", default=128)
    W = r.get("W", default=128)
    if (H // patch) * (W // patch) != n_patches:
        raise CheckpointError(f"{source}: H={H}, W={W}, patch={patch} give {(H // patch) * (W // patch)} "
                              f"patches but decoder.patch_queries has {n_patches}")
    mlp_ratio = r.get("mlp_ratio", default=_DEFAULT_MLP_RATIO, cast=float)
    if int(d_model * mlp_ratio) * 2 != hidden2:
        raise CheckpointError(f"{source}: mlp_ratio={mlp_ratio} does not match fc_in width {hidden2}")
    tf = TransformerConfig(
        d_model=r.get("d_model", inferred=d_model),
        n_heads=r.get("n_heads", default=_DEFAULT_HEADS),
        depth=r.get("depth", inferred=depth),
        mlp_ratio=mlp_ratio,
        dropout=r.get("dropout", default=0.0, cast=float),
        time_every=r.get("time_every", inferred=_time_every(state, "encoder.transformer.", depth)),
        scale_pos_embeds=_scale_pos_embeds(ckpt, args),
    )
    cfg = TokenizerConfig(
        transformer=tf, image_height=H, image_width=W, channels=C, patch_size=patch,
        n_latents=r.get("n_latents", inferred=n_latents),
        d_bottleneck=r.get("d_bottleneck", inferred=d_bottleneck),
        mae_p_min=r.get("mae_p_min", default=0.0, cast=float),
        mae_p_max=r.get("mae_p_max", default=0.9, cast=float),
        clip_frames=UPSTREAM_TOKENIZER_CLIP,
    )
    try:
        cfg.validate()
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from e
    return cfg


def dynamics_config_from_upstream(ckpt: dict, state: dict, *, n_latents: int, d_bottleneck: int,
                                  source: str = "upstream dynamics") -> DynamicsConfig:
    args = _args(ckpt)
    r = _Resolver(args, source)
    d_model, d_spatial = _need(state, "spatial_proj.weight").shape
    depth = len(_layer_indices(state, "transformer."))
    k_max = _need(state, "signal_embed.weight").shape[0] - 1
    hidden2 = _need(state, "transformer.layers.0.mlp.fc_in.weight").shape[0]
    if d_spatial % d_bottleneck:
        raise CheckpointError(f"{source}: spatial_proj input width {d_spatial} is not a multiple of the "
                              f"tokenizer's d_bottleneck={d_bottleneck}: wrong tokenizer?")
    packing = r.get("packing_factor", inferred=d_spatial // d_bottleneck)
    mlp_ratio = r.get("mlp_ratio", default=_DEFAULT_MLP_RATIO, cast=float)
    if int(d_model * mlp_ratio) * 2 != hidden2:
        raise CheckpointError(f"{source}: mlp_ratio={mlp_ratio} does not match fc_in width {hidden2}")
    tf = TransformerConfig(
        d_model=r.get("d_model_dyn", inferred=d_model),
        n_heads=r.get("n_heads", default=_DEFAULT_HEADS),
        depth=r.get("dyn_depth", inferred=depth),
        mlp_ratio=mlp_ratio,
        dropout=r.get("dropout", default=0.0, cast=float),
        time_every=r.get("time_every", inferred=_time_every(state, "transformer.", depth)),
        scale_pos_embeds=_scale_pos_embeds(ckpt, args),
    )
    cfg = DynamicsConfig(
        transformer=tf, n_latents=n_latents, d_bottleneck=d_bottleneck, packing_factor=packing,
        n_register=r.get("n_register", inferred=_need(state, "register_tokens").shape[0]),
        n_agent=r.get("n_agent", default=1),
        k_max=r.get("k_max", inferred=k_max),
        action_dim=int(_need(state, "action_encoder.fc1.weight").shape[1]),
        space_mode=str(args.get("space_mode") or "wm_agent_isolated"),
    )
    try:
        cfg.validate()
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from e
    return cfg


def _tokenizer_sizes(tokenizer: PathLike, trust_pickle: bool) -> tuple[int, int]:
    """(n_latents, d_bottleneck) of a native tokenizer directory or an upstream tokenizer file."""
    path = Path(tokenizer)
    if path.is_dir():
        from shared.io import read_config
        cfg = read_config(path)
        if not isinstance(cfg, TokenizerConfig):
            raise CheckpointError(f"--tokenizer {path} is a {cfg.kind} checkpoint, not a tokenizer")
        return cfg.n_latents, cfg.d_bottleneck
    ckpt = read_upstream_file(path, trust_pickle)
    if detect_kind(ckpt) != "tokenizer":
        raise CheckpointError(f"--tokenizer {path} is an upstream dynamics file, not a tokenizer")
    state = strip_prefixes(ckpt["model"])
    cfg = tokenizer_config_from_upstream(ckpt, state, source=str(path))
    return cfg.n_latents, cfg.d_bottleneck


def load_upstream(src: PathLike, *, tokenizer: Optional[PathLike] = None, n_latents: Optional[int] = None,
                  d_bottleneck: Optional[int] = None, trust_pickle: bool = False):
    """Build a dreamer4_torch model from an upstream .pt file, with strictly loaded weights (eval mode).

    For a dynamics file, give `tokenizer` (native checkpoint directory or upstream tokenizer .pt), or
    both `n_latents` and `d_bottleneck`.
    """
    from dreamer4_torch.checkpoint import build_model, check_state_against_config

    src = Path(src)
    ckpt = read_upstream_file(src, trust_pickle)
    kind = detect_kind(ckpt)
    state = strip_prefixes(ckpt["model" if kind == "tokenizer" else "dynamics"])
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{src}: state-dict entries that are not tensors: {bad[:5]}")
    if kind == "tokenizer":
        cfg = tokenizer_config_from_upstream(ckpt, state, source=str(src))
    else:
        if tokenizer is not None:
            n_latents, d_bottleneck = _tokenizer_sizes(tokenizer, trust_pickle)
        if n_latents is None or d_bottleneck is None:
            raise CheckpointError(
                f"{src} is an upstream dynamics checkpoint, which does not record its tokenizer's latent "
                "sizes (n_latents, d_bottleneck): pass --tokenizer TOK (the tokenizer it was trained with, "
                "as a native checkpoint directory or an upstream .pt file)")
        cfg = dynamics_config_from_upstream(ckpt, state, n_latents=n_latents, d_bottleneck=d_bottleneck,
                                            source=str(src))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    check_state_against_config(state, cfg, str(src))
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()


def import_upstream(src: PathLike, dst: PathLike, *, tokenizer: Optional[PathLike] = None,
                    n_latents: Optional[int] = None, d_bottleneck: Optional[int] = None,
                    trust_pickle: bool = False) -> Path:
    """Convert an upstream .pt file into a native checkpoint directory `dst` (written atomically)."""
    from dreamer4_torch.checkpoint import save_model

    model = load_upstream(src, tokenizer=tokenizer, n_latents=n_latents, d_bottleneck=d_bottleneck,
                          trust_pickle=trust_pickle)
    return save_model(model, dst)
