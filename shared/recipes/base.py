"""The parts of a recipe: the model config (`Preset`), one training recipe per trainer
(`TokenizerRecipe`, `DynamicsRecipe`) and the pipeline settings of the quickstart (`Pipeline`).

Every part is a frozen dataclass that checks itself when built, so a recipe module that imports
is a valid recipe. Training lengths are optimizer steps, never minutes: the same recipe gives the
same model on a fast machine and on a slow or busy one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from shared.config import ConfigError, DynamicsConfig, TokenizerConfig, check_compatible
from shared.data.policies import POLICY_MODES
from shared.data.tasks import get_task
from shared.optim import OPTIMIZERS


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class Preset:
    """The model config of a recipe: a tokenizer and a dynamics model that runs on its latents."""

    name: str
    description: str
    tokenizer: TokenizerConfig
    dynamics: DynamicsConfig = field(repr=False)

    def __post_init__(self) -> None:
        self.tokenizer.validate()
        self.dynamics.validate()
        check_compatible(self.tokenizer, self.dynamics)


@dataclass(frozen=True, kw_only=True)
class TrainRecipe:
    """One trainer's defaults: `shared.train_options.resolve` fills every option the user left
    unset (None) from these fields, under the same names."""

    steps: int                 # optimizer steps; also the length of the cosine schedule
    batch_size: int            # sequences per micro-batch per process
    frames: int                # frames per training sequence
    lr: float                  # peak learning rate
    warmup_steps: int          # linear warm-up before the cosine decay
    optimizer: str             # one of shared.optim.OPTIMIZERS
    ema_decay: float           # weights' moving average; 0 = off
    # What an application (the quickstart) passes as --eval-every / --eval-sequences; evaluation
    # reads the model and never changes it.
    eval_every: int
    eval_sequences: int

    def __post_init__(self) -> None:
        what = type(self).__name__
        for name in ("steps", "batch_size", "frames", "eval_every", "eval_sequences"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0, f"{what}.{name} must be a positive integer, got {value!r}")
        _require(self.lr > 0, f"{what}.lr must be positive, got {self.lr!r}")
        _require(0 <= self.warmup_steps < self.steps,
                 f"{what}.warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps!r}")
        _require(self.optimizer in OPTIMIZERS,
                 f"{what}.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        _require(0.0 <= self.ema_decay < 1.0, f"{what}.ema_decay must be in [0, 1), got {self.ema_decay!r}")

    def option_defaults(self) -> dict:
        """The fields as trainer options: {option name: value}."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, kw_only=True)
class TokenizerRecipe(TrainRecipe):
    mse_on: str                # reconstruction loss over "masked" patches (upstream) or "all"
    contrast_weight: float = 0.0  # squared errors weighted by 1 + C |x - patch mean| (losses.contrast_weights)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.contrast_weight >= 0,
                 f"TokenizerRecipe.contrast_weight must be >= 0, got {self.contrast_weight!r}")
        _require(self.mse_on in ("masked", "all"),
                 f"TokenizerRecipe.mse_on must be 'masked' or 'all', got {self.mse_on!r}")


@dataclass(frozen=True, kw_only=True)
class DynamicsRecipe(TrainRecipe):
    bootstrap_start: int       # step from which a fraction of each batch are bootstrap (shortcut) rows
    bootstrap_fraction: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0 <= self.bootstrap_start < self.steps,
                 f"DynamicsRecipe.bootstrap_start must be in [0, steps={self.steps}), got {self.bootstrap_start!r}")
        _require(0.0 <= self.bootstrap_fraction < 1.0,
                 f"DynamicsRecipe.bootstrap_fraction must be in [0, 1), got {self.bootstrap_fraction!r}")


@dataclass(frozen=True, kw_only=True)
class AgentRecipe(DynamicsRecipe):
    """Behaviour-cloning finetuning of a pretrained dynamics model (python -m dreamer4_torch.train bc):
    each micro-batch is half uniform windows with the video loss and half task-relevant windows with
    the BC and reward losses (dreamer4_torch/train/agent.py)."""

    bc_weight: float           # weight of the behaviour-cloning loss beside the video loss (weight 1)
    reward_weight: float       # weight of the reward loss
    relevant_quantile: float   # task-relevant episodes: return >= this quantile of their task's returns

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.batch_size >= 2, f"AgentRecipe.batch_size must be >= 2 (two halves), got {self.batch_size}")
        _require(self.bc_weight >= 0 and self.reward_weight >= 0,
                 f"AgentRecipe.bc_weight and reward_weight must be >= 0, got {self.bc_weight}, {self.reward_weight}")
        _require(0.0 <= self.relevant_quantile < 1.0,
                 f"AgentRecipe.relevant_quantile must be in [0, 1), got {self.relevant_quantile!r}")


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """What the quickstart collects and where it writes (the frame size is the preset's)."""

    tasks: tuple[str, ...]     # DMControl tasks (shared.data.tasks names)
    episodes_per_task: int
    episode_steps: int         # agent steps per episode (500 = a whole episode)
    data_dir: str              # default data set directory
    run_dir: str               # default run directory (RUN_DIR/tokenizer, RUN_DIR/dynamics)
    policy: str = "mixed"      # the collector's behaviour (shared.data.policies.POLICY_MODES)

    def __post_init__(self) -> None:
        _require(isinstance(self.tasks, tuple) and len(self.tasks) > 0,
                 f"Pipeline.tasks must be a non-empty tuple of task names, got {self.tasks!r}")
        for task in self.tasks:
            get_task(task)
        _require(self.policy in POLICY_MODES,
                 f"Pipeline.policy must be one of {', '.join(POLICY_MODES)}, got {self.policy!r}")
        for name in ("episodes_per_task", "episode_steps"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0, f"Pipeline.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Model config + the two trainers' recipes + pipeline settings, under one name."""

    name: str
    description: str
    preset: Preset
    tokenizer: TokenizerRecipe
    dynamics: DynamicsRecipe
    agent: AgentRecipe
    pipeline: Pipeline
    # The data and world model an agent learns from (python -m quickstart --agent-data; make agent):
    # tasks whose rewards the data reaches. None: the pipeline's own.
    agent_pipeline: Pipeline | None = None

    def __post_init__(self) -> None:
        _require(self.preset.name == self.name,
                 f"recipe {self.name!r} holds the preset {self.preset.name!r}; a recipe and its preset share the name")
        _require(isinstance(self.tokenizer, TokenizerRecipe) and isinstance(self.dynamics, DynamicsRecipe)
                 and isinstance(self.agent, AgentRecipe),
                 f"recipe {self.name!r}: tokenizer must be a TokenizerRecipe, dynamics a DynamicsRecipe and "
                 f"agent an AgentRecipe")
        tok = self.preset.tokenizer
        _require(tok.image_height == tok.image_width,
                 f"recipe {self.name!r}: the collector renders square frames, the tokenizer takes "
                 f"{tok.image_height}x{tok.image_width}")

    @property
    def image_size(self) -> int:
        """Frame height and width of the data set: the tokenizer's (its frames are square)."""
        return self.preset.tokenizer.image_height

    def pipeline_for(self, agent: bool) -> Pipeline:
        """The quickstart's pipeline, or with `agent` the agent's (the same when the recipe has none)."""
        return (self.agent_pipeline or self.pipeline) if agent else self.pipeline

    def training(self, kind: str) -> TrainRecipe:
        """The training recipe of trainer `kind` ('tokenizer', 'dynamics' or 'bc')."""
        if kind not in ("tokenizer", "dynamics", "bc"):
            raise ConfigError(f"unknown trainer {kind!r}; recipes hold 'tokenizer', 'dynamics' and 'bc'")
        return self.agent if kind == "bc" else getattr(self, kind)
