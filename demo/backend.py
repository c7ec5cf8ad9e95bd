"""The world model behind the demo: checkpoints, encoding, decoding and a per-session sampler.

A backend object holds one tokenizer and one dynamics model and is shared by every browser
session; all model calls go through `lock` (one inference at a time: on a small CPU two concurrent
passes only fight over the cores). Each session owns its own `Sampler` (stream state and KV cache).

Two engines with one interface: `TorchWorldModel` (dreamer4_torch) and `JaxWorldModel` (dreamer4_jax:
the JAX sampler, tokenizer encoding and decoding). The JAX engine loads the same checkpoints (native
torch directories, training runs and upstream files, converted in memory with convert.torch_jax) or
native JAX checkpoint directories (config.json + orbax params/). Both engines draw the sampler's noise
from a torch.Generator seeded per session, in the same order, so for a seed and a sequence of actions
the two show the same frames up to fp32 rounding.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import numpy as np

from shared.config import ConfigError, check_compatible, replace
from shared.recipes import get_preset
from shared.io import CheckpointError
from shared.params import count_params


class StartupError(Exception):
    """A problem found before serving (bad checkpoint path or kind, incompatible models, data);
    the demo prints the message on one line and exits non-zero."""


BACKENDS = ("torch", "jax")


def load_backend(name: str, tokenizer: Optional[str], dynamics: Optional[str], *, random_weights: Optional[str] = None,
                 device: str = "cpu", context_mode: str = "upstream", seed: int = 0):
    if name == "torch":
        return TorchWorldModel.from_paths(tokenizer, dynamics, random_weights=random_weights, device=device,
                                          context_mode=context_mode, seed=seed)
    if name == "jax":
        return JaxWorldModel.from_paths(tokenizer, dynamics, random_weights=random_weights, device=device,
                                        context_mode=context_mode, seed=seed)
    raise StartupError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def load_models(tokenizer: Optional[str], dynamics: Optional[str], *, random_weights: Optional[str] = None,
                seed: int = 0, jax_checkpoints: bool = False):
    """(tokenizer, dynamics, source description) from checkpoint paths or a preset.

    Models are dreamer4_torch modules, except that with `jax_checkpoints` a native JAX checkpoint
    directory (config.json + params/) is loaded as a dreamer4_jax model. The tokenizer's config
    carries the clip length it was trained on (see tokenizer_clip_frames), by which its encode and
    decode chunk longer clips."""
    import torch
    from dreamer4_torch import Dynamics, Tokenizer
    if random_weights:
        try:
            preset = get_preset(random_weights)
        except ConfigError as e:
            raise StartupError(str(e)) from e
        torch.manual_seed(seed)
        tok, dyn = Tokenizer(preset.tokenizer), Dynamics(preset.dynamics)
        randomize_for_display(dyn, seed)
        return tok, dyn, f"random weights ({random_weights} preset)"
    tok_path, dyn_path = resolve_checkpoint(tokenizer), resolve_checkpoint(dynamics)
    load = _load_one_any if jax_checkpoints else _load_one
    tok = load(tok_path, "tokenizer", flag=tokenizer)
    dyn = load(dyn_path, "dynamics", tokenizer=tok_path, flag=dynamics)
    try:
        check_compatible(tok.config, dyn.config)
    except ConfigError as e:
        raise StartupError(f"the checkpoints do not fit together: {e}") from e
    clip = tokenizer_clip_frames(tok, tok_path)
    if clip != tok.config.clip_frames:      # an older checkpoint: its options.json knows the clip
        tok.config = replace(tok.config, clip_frames=clip)
    return tok, dyn, f"{tok_path} + {dyn_path}"


def randomize_for_display(dynamics, seed: int = 0) -> None:
    """Random-weight models predict zeros (the flow head is zero-initialised) and barely react to
    actions (fc2 ~ N(0, 1e-3)); give both heads visible weights so an untrained model still moves."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = dynamics.flow_x_head.weight
        w.copy_(torch.randn(w.shape, generator=g) / w.shape[1] ** 0.5)
        fc2 = dynamics.action_encoder.fc2.weight
        fc2.copy_(torch.randn(fc2.shape, generator=g) * 0.05)


def set_model_info(engine, tc, dc) -> None:
    """The sizes the session and the page need, from the tokenizer and dynamics configs (both backends)."""
    engine.image_size = (tc.image_height, tc.image_width)
    engine.channels = tc.channels
    engine.action_dim = dc.action_dim
    engine.k_max = dc.k_max
    engine.n_spatial, engine.d_spatial = dc.n_spatial, dc.d_spatial
    engine.steps_choices = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= dc.k_max]


def model_summary(tc, dc) -> str:
    """Sizes and parameter counts (from the canonical parameter table, which both backends' models match)."""
    return (f"tokenizer {tc.image_height}x{tc.image_width} ({count_params(tc) / 1e6:.1f}M params), "
            f"dynamics D{dc.transformer.d_model} x{dc.transformer.depth} "
            f"({count_params(dc) / 1e6:.1f}M params, k_max {dc.k_max})")


class TorchWorldModel:
    backend = "torch"

    def __init__(self, tokenizer, dynamics, *, device: str = "cpu", context_mode: str = "upstream",
                 source: str = ""):
        import torch
        self.torch = torch
        self.tokenizer = tokenizer.to(device).eval()
        self.dynamics = dynamics.to(device).eval()
        self.device = torch.device(device)
        self.context_mode = context_mode
        self.source = source
        self.lock = threading.Lock()
        # CPU: the tokenizer's Linears through oneDNN with prepacked weights (the samplers do the same for
        # the dynamics model; dreamer4_torch.prepack), a no-op on CUDA.
        from dreamer4_torch.prepack import PrepackedLinears
        self.fast_tokenizer = PrepackedLinears(self.tokenizer)
        set_model_info(self, tokenizer.config, dynamics.config)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_paths(cls, tokenizer: Optional[str], dynamics: Optional[str], *, random_weights: Optional[str] = None,
                   device: str = "cpu", context_mode: str = "upstream", seed: int = 0) -> "TorchWorldModel":
        tok, dyn, source = load_models(tokenizer, dynamics, random_weights=random_weights, seed=seed)
        return cls(tok, dyn, device=device, context_mode=context_mode, source=source)

    # ------------------------------------------------------------------ model calls

    def encode(self, frames: np.ndarray):
        """uint8 frames (T, C, H, W) -> packed latents (1, T, S, D), causal passes over clips of the
        tokenizer's training length (Tokenizer.encode chunks by its config's clip_frames)."""
        torch = self.torch
        video = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).float().div_(255.0)[None]
        with self.lock, torch.inference_mode(), self.fast_tokenizer:
            return self.dynamics.pack(self.tokenizer.encode(video))

    def decode(self, packed) -> np.ndarray:
        """packed latents (B, T, S, D) -> uint8 frames (B, T, H, W, C); every frame decoded alone (as
        upstream's demo does: the decoder never sees earlier generated frames)."""
        torch = self.torch
        B, T = packed.shape[:2]
        with self.lock, torch.inference_mode(), self.fast_tokenizer:
            z = self.dynamics.unpack(packed.reshape(B * T, 1, *packed.shape[2:]))
            video = self.tokenizer.decode(z)                          # (B*T, 1, C, H, W)
        img = (video[:, 0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)
        return img.reshape(B, T, *img.shape[1:]).cpu().numpy()

    def random_context(self, rng: np.random.Generator):
        """A start latent when there is no data set: uniform in (-1, 1), like the tanh bottleneck."""
        z = rng.uniform(-1.0, 1.0, size=(1, 1, self.n_spatial, self.d_spatial)).astype(np.float32)
        return self.torch.from_numpy(z).to(self.device)

    def new_sampler(self, n_steps: int, context_length: int, history_limit: int, seed: int):
        from dreamer4_torch.sampler import Sampler
        generator = self.torch.Generator(device=self.device).manual_seed(int(seed))
        return Sampler(self.dynamics, n_steps=n_steps, context_length=context_length,
                       context_mode=self.context_mode, history_limit=history_limit, generator=generator)

    def sampler_reset(self, sampler, context, actions: np.ndarray, act_mask: np.ndarray) -> None:
        torch = self.torch
        a = torch.from_numpy(np.asarray(actions, np.float32)).to(self.device)[None]
        m = torch.from_numpy(np.asarray(act_mask, np.float32)).to(self.device)
        with self.lock:
            sampler.reset(context, a, m)

    def sampler_step(self, sampler, action: np.ndarray):
        torch = self.torch
        a = torch.from_numpy(np.asarray(action, np.float32)).to(self.device)[None]
        with self.lock, torch.inference_mode():
            return sampler.step(a)[:, None]                           # (1, 1, S, D)

    def rollout(self, context, actions: np.ndarray, act_mask: np.ndarray, horizon: int, n_steps: int,
                context_length: int, seed: int):
        from dreamer4_torch.sampler import rollout
        torch = self.torch
        a = torch.from_numpy(np.asarray(actions, np.float32)).to(self.device)[None]
        m = torch.from_numpy(np.asarray(act_mask, np.float32)).to(self.device)
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        with self.lock, torch.inference_mode():
            return rollout(self.dynamics, context, a, m, horizon, n_steps=n_steps, noise=g,
                           context_mode=self.context_mode, context_length=context_length)

    # ------------------------------------------------------------------ the agent (demo.agent)

    @property
    def has_agent(self) -> bool:
        """Whether the dynamics model has agent inputs and heads (an agent-finetuned run)."""
        c = self.dynamics.config
        return bool(c.n_tasks and c.agent_heads)

    @property
    def tokenizer_clip_frames(self) -> Optional[int]:
        return self.tokenizer.config.clip_frames

    def policy_runner(self, task_id: int, context: int):
        """The policy's window over one stream of frames (dreamer4_torch.eval.policy.PolicyRunner)."""
        from dreamer4_torch.eval.policy import PolicyRunner
        return PolicyRunner(self.dynamics, np.array([task_id]), context, "slide")

    def policy_observe(self, runner, packed, action: Optional[np.ndarray]) -> np.ndarray:
        """Feed a frame's packed latents (1, 1, S, D) and the action that made it (None at a start);
        returns the policy's next action (action_dim,) in [-1, 1], zero on the task's padding."""
        torch = self.torch
        a = None if action is None else torch.from_numpy(np.asarray(action, np.float32)).to(self.device)[None]
        with self.lock, torch.inference_mode():
            mean, _ = runner.observe(packed[:, 0], a)
        return mean[0].clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)

    def policy_reward(self, runner) -> float:
        """The reward head's prediction for the transition the policy's next action makes."""
        with self.lock, self.torch.inference_mode():
            return float(runner.predicted_reward()[0])

    def describe(self) -> str:
        summary = model_summary(self.tokenizer.config, self.dynamics.config)
        agent = "; agent heads (the policy can drive)" if self.has_agent else ""
        return f"PyTorch on {self.device.type}: {summary}{agent}; {self.source}"


class JaxWorldModel:
    """The demo's engine on the JAX backend: dreamer4_jax models, the JAX sampler (KV-cached; model calls
    eager while the window fills, compiled once it is full: jit="auto"), jit-compiled encoding and
    decoding. Same interface as TorchWorldModel; latents are jax arrays.

    Torch checkpoints (and random weights) are converted in memory (convert.torch_jax.torch_to_jax);
    the noise comes from a per-session torch.Generator, exactly as in the torch engine."""

    backend = "jax"

    def __init__(self, tokenizer, dynamics, *, context_mode: str = "upstream", source: str = "",
                 converted: bool = False):
        import jax
        import jax.numpy as jnp
        from flax import nnx
        self.jax, self.jnp = jax, jnp
        self.tokenizer = tokenizer.eval()
        self.dynamics = dynamics.eval()
        self.context_mode = context_mode
        self.source = source
        self.converted = converted
        self.lock = threading.Lock()
        self._encode = nnx.jit(lambda m, v: m.encode(v))
        self._decode = nnx.jit(lambda m, z: m.decode(z))
        set_model_info(self, tokenizer.config, dynamics.config)

    @classmethod
    def from_paths(cls, tokenizer: Optional[str], dynamics: Optional[str], *, random_weights: Optional[str] = None,
                   device: str = "cpu", context_mode: str = "upstream", seed: int = 0) -> "JaxWorldModel":
        try:
            import jax  # noqa: F401
            from convert.torch_jax import torch_to_jax
        except ImportError as e:
            raise StartupError(f"--backend jax needs the jax extra (pip install -e '.[jax]'): {e}") from e
        if device != "cpu":
            raise StartupError(f"--device {device} applies to the torch backend; --backend jax runs on JAX's "
                               "default device (set JAX_PLATFORMS to choose it)")
        tok, dyn, source = load_models(tokenizer, dynamics, random_weights=random_weights, seed=seed,
                                             jax_checkpoints=True)
        converted = False
        if not _is_jax_model(tok):
            tok, converted = torch_to_jax(tok.eval()), True
        if not _is_jax_model(dyn):
            dyn, converted = torch_to_jax(dyn.eval()), True
        return cls(tok, dyn, context_mode=context_mode, source=source, converted=converted)

    # ------------------------------------------------------------------ model calls

    def encode(self, frames: np.ndarray):
        """uint8 frames (T, C, H, W) -> packed latents (1, T, S, D), causal passes over clips of the
        tokenizer's training length (Tokenizer.encode chunks by its config's clip_frames)."""
        video = np.ascontiguousarray(frames, dtype=np.float32)[None] / np.float32(255.0)
        with self.lock:
            return self.dynamics.pack(self._encode(self.tokenizer, video))

    def decode(self, packed) -> np.ndarray:
        """packed latents (B, T, S, D) -> uint8 frames (B, T, H, W, C); every frame decoded alone."""
        jnp = self.jnp
        B, T = packed.shape[:2]
        with self.lock:
            z = self.dynamics.unpack(jnp.asarray(packed).reshape(B * T, 1, *packed.shape[2:]))
            video = np.asarray(self._decode(self.tokenizer, z))           # (B*T, 1, C, H, W)
        img = (np.clip(video[:, 0], 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
        img = img.transpose(0, 2, 3, 1)
        return img.reshape(B, T, *img.shape[1:])

    def random_context(self, rng: np.random.Generator):
        """A start latent when there is no data set: uniform in (-1, 1), like the tanh bottleneck."""
        z = rng.uniform(-1.0, 1.0, size=(1, 1, self.n_spatial, self.d_spatial)).astype(np.float32)
        return self.jnp.asarray(z)

    @staticmethod
    def _noise_fn(seed: int):
        """Draws from a torch.Generator seeded like the torch engine's (the same numbers, in the same order)."""
        import torch
        generator = torch.Generator().manual_seed(int(seed))
        return lambda shape: torch.randn(shape, generator=generator).numpy()

    def new_sampler(self, n_steps: int, context_length: int, history_limit: int, seed: int):
        from dreamer4_jax.sampler import Sampler
        # compiled model calls once the window is full (the shapes repeat from then on), eager before
        return Sampler(self.dynamics, n_steps=n_steps, context_length=context_length, context_mode=self.context_mode,
                       history_limit=history_limit, noise_fn=self._noise_fn(seed), jit="auto")

    def sampler_reset(self, sampler, context, actions: np.ndarray, act_mask: np.ndarray) -> None:
        a = np.asarray(actions, np.float32)[None]
        m = np.asarray(act_mask, np.float32)
        with self.lock:
            sampler.reset(context, a, m)

    def sampler_step(self, sampler, action: np.ndarray):
        a = np.asarray(action, np.float32)[None]
        with self.lock:
            z = sampler.step(a)[:, None]                                  # (1, 1, S, D)
            return z.block_until_ready()

    def rollout(self, context, actions: np.ndarray, act_mask: np.ndarray, horizon: int, n_steps: int,
                context_length: int, seed: int):
        from dreamer4_jax.sampler import rollout
        a = np.asarray(actions, np.float32)[None]
        m = np.asarray(act_mask, np.float32)
        with self.lock:
            return rollout(self.dynamics, context, a, m, horizon, n_steps=n_steps, noise=self._noise_fn(seed),
                           context_mode=self.context_mode, context_length=context_length, jit="auto")

    # The agent mode runs on the torch engine (dreamer4_torch.eval.policy); here the policy never drives.
    has_agent = False

    def describe(self) -> str:
        note = ", converted from PyTorch in memory" if self.converted else ""
        return (f"JAX {self.jax.__version__} on {self.jax.default_backend()}: "
                f"{model_summary(self.tokenizer.config, self.dynamics.config)}{note}; {self.source}")


def _is_jax_model(model) -> bool:
    return type(model).__module__.startswith("dreamer4_jax")


def is_jax_checkpoint(path) -> bool:
    """A native JAX checkpoint directory: config.json + an orbax params/ tree."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and (p / "params").is_dir()


def _load_one_any(path: str, kind: str, tokenizer: Optional[str] = None, flag: Optional[str] = None):
    """A native JAX checkpoint directory as a dreamer4_jax model, else what _load_one reads (torch)."""
    if not is_jax_checkpoint(path):
        return _load_one(path, kind, tokenizer=tokenizer, flag=flag)
    from dreamer4_jax import Dynamics, Tokenizer, load_model
    try:
        model = load_model(path, kind=kind)
    except (CheckpointError, ConfigError) as e:
        raise StartupError(f"--{kind} {path}: {e}") from e
    expected = Tokenizer if kind == "tokenizer" else Dynamics
    if not isinstance(model, expected):
        other = "tokenizer" if kind == "dynamics" else "dynamics"
        raise StartupError(f"--{kind} {path} holds a {other} checkpoint, but a {kind} checkpoint was expected")
    return model


def resolve_checkpoint(path: str) -> str:
    """A checkpoint directory as given, or the newest checkpoint of a training run directory
    (RUN_DIR/checkpoints/latest)."""
    p = Path(path)
    latest = p / "checkpoints" / "latest"
    if p.is_dir() and not (p / "config.json").exists() and latest.exists():
        return str(latest)
    return str(path)


def tokenizer_clip_frames(tokenizer, path: str) -> Optional[int]:
    """The clip length a loaded tokenizer was trained on: its config's clip_frames (written by the
    trainers and the upstream importer); for checkpoint directories written before the config held
    it, the training run's options.json beside them; else unknown (None: whole clips at once)."""
    if tokenizer.config.clip_frames is not None or not Path(path).is_dir():
        return tokenizer.config.clip_frames
    try:
        from dreamer4_torch.train.common import tokenizer_clip_frames as recorded
    except ImportError:
        return None
    return recorded(Path(path))


def _load_one(path: str, kind: str, tokenizer: Optional[str] = None, flag: Optional[str] = None):
    """A native checkpoint directory, or an upstream .pt file (imported on the fly), of `kind`."""
    from dreamer4_torch import Dynamics, Tokenizer, load_model
    p = Path(path)
    if not p.exists():
        raise StartupError(f"--{kind} {flag or path}: no such file or directory")
    expected = Tokenizer if kind == "tokenizer" else Dynamics
    try:
        if p.is_file():
            from convert.upstream import detect_kind, load_upstream, read_upstream_file
            found = detect_kind(read_upstream_file(p))
            if found != kind:
                raise StartupError(f"--{kind} {path} holds an upstream {found} checkpoint, but a {kind} "
                                   "checkpoint was expected")
            model = load_upstream(p, tokenizer=tokenizer if kind == "dynamics" else None)
        else:
            model = load_model(p, kind=kind)
    except (CheckpointError, ConfigError) as e:
        raise StartupError(f"--{kind} {path}: {e}") from e
    if not isinstance(model, expected):
        other = "tokenizer" if kind == "dynamics" else "dynamics"
        raise StartupError(f"--{kind} {path} holds a {other} checkpoint, but a {kind} checkpoint was expected")
    return model
