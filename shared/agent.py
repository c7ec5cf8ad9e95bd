"""Agent finetuning: what both backends agree on about agent tokens, the policy and reward heads.

The finetuning model is the pretrained dynamics model with
  * `space_mode="wm_agent"` (shared.layout.space_mask): the agent token sees every token of its
    frame and no other token sees it, so the frame predictions are those of the pretrained model;
  * `n_tasks` learned task embeddings (`task_embed.weight`, one row per task id of
    shared.data.tasks) as the agent token's input;
  * two heads on the agent output h_t, each with one output layer per distance n = 1..L
    (multi-token prediction, L = `mtp_length`):
      policy_head: the actions a_{t+n} (the data set's `actions[t + n]`, the action taken after
                   frame t + n - 1), a diagonal Gaussian per distance;
      reward_head: the rewards r_{t+n} (`rewards[t + n]`, the reward of that transition), a
                   categorical over `reward_bins` bins in symlog space (symexp two-hot).
  Indices follow the data set (shared.data.format): row t holds frame t, the action that produced it
  and that transition's reward; h_t has seen frames <= t and the actions that produced them.

The policy distribution is a diagonal Gaussian whose mean is tanh-bounded to [-1, 1] and whose
standard deviation is squashed into [POLICY_STD_MIN, POLICY_STD_MAX]. Unlike a tanh-squashed
Gaussian it gives finite log-probabilities to the data's actions on the bounds (controllers saturate
at +-1) and has a closed-form entropy and KL divergence (what PMPO's prior term needs); a sampled
action is clipped to [-1, 1] before it reaches the environment. Padded action dimensions (past the
task's action size, shared.data.tasks.action_mask) are left out of every log-probability, entropy and
KL, and are sampled as 0.

This module holds the numpy side: constants, the bin table, symlog/symexp, the multi-token target
table and the config of the finetuning model. The tensor math lives in each backend's losses module.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ConfigError, DynamicsConfig, ModelConfig, replace
from .io import CheckpointError

POLICY_STD_MIN = 0.05
POLICY_STD_MAX = 1.0
REWARD_SYMLOG_LIMIT = 20.0     # the bins span symlog values [-20, 20] (DreamerV3's range)
LOG_2PI = math.log(2.0 * math.pi)


def symlog(x):
    """sign(x) log(1 + |x|) (numpy)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def symexp(x):
    """The inverse of symlog: sign(x) (exp(|x|) - 1) (numpy)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.expm1(np.abs(x))


def reward_bins(n_bins: int) -> np.ndarray:
    """(n_bins,) float32 bin centres in symlog space, evenly spaced over [-20, 20] (0 is a centre
    for an odd count)."""
    if n_bins < 2:
        raise ValueError(f"need at least 2 reward bins, got {n_bins}")
    return np.linspace(-REWARD_SYMLOG_LIMIT, REWARD_SYMLOG_LIMIT, n_bins).astype(np.float32)


def two_hot_reference(values, bins: np.ndarray) -> np.ndarray:
    """(..., n_bins) float64 two-hot encodings of symlog(values): the weight is split between the two
    bins around it in proportion to closeness; values outside the range go to the end bins. A loop
    over elements: a readable reference for tests, not for training."""
    y = np.clip(symlog(values), bins[0], bins[-1])
    out = np.zeros(y.shape + (len(bins),))
    for idx in np.ndindex(y.shape):
        v = y[idx]
        hi = int(np.searchsorted(bins, v, side="right"))
        if hi >= len(bins):
            out[idx + (len(bins) - 1,)] = 1.0
            continue
        lo = hi - 1
        w_hi = (v - bins[lo]) / (bins[hi] - bins[lo])
        out[idx + (lo,)] += 1.0 - w_hi
        out[idx + (hi,)] += w_hi
    return out


def mtp_targets(n_frames: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The multi-token targets of a clip of `n_frames` frames: (index (T, L) int64, valid (T, L) bool),
    where distance n = 1..L of frame t targets row t + n of the clip (`index[t, n - 1]`, clamped into
    the clip) and `valid` says whether that row exists. The backends gather actions and rewards with
    `index` and weight the terms by `valid` (and by the action mask of the target row)."""
    if n_frames < 1 or length < 1:
        raise ValueError(f"n_frames and length must be positive, got {n_frames}, {length}")
    target = np.arange(n_frames)[:, None] + np.arange(1, length + 1)[None, :]
    return np.minimum(target, n_frames - 1).astype(np.int64), target < n_frames


def agent_config(pretrained: DynamicsConfig, n_tasks: int, *, mtp_length: int = 8,
                 reward_bins: int = 255) -> DynamicsConfig:
    """The finetuning model of a pretrained dynamics config: the paper's agent mask, `n_tasks` task
    embeddings and both heads; every pretrained parameter keeps its name and shape."""
    if not isinstance(pretrained, DynamicsConfig):
        raise ConfigError(f"agent_config needs a dynamics config, got {type(pretrained).__name__}")
    if pretrained.n_agent != 1:
        raise ConfigError(f"agent finetuning needs a dynamics model with one agent token "
                          f"(dynamics.n_agent=1), this one has n_agent={pretrained.n_agent}")
    if n_tasks < 1:
        raise ConfigError(f"n_tasks must be >= 1, got {n_tasks}")
    return replace(pretrained, space_mode="wm_agent", n_tasks=n_tasks, agent_heads=True,
                   mtp_length=mtp_length, reward_bins=reward_bins)


def base_config(cfg: DynamicsConfig) -> DynamicsConfig:
    """The pretraining part of a (finetuning) dynamics config: no task embedding, no heads."""
    return replace(cfg, n_tasks=0, agent_heads=False)


def new_parameter_names(cfg: DynamicsConfig) -> list[str]:
    """The parameters a finetuning config adds to its base config's table, in table order."""
    from .params import param_table
    base = {p.name for p in param_table(base_config(cfg))}
    return [p.name for p in param_table(cfg) if p.name not in base]


def check_pretrained(pretrained: DynamicsConfig, finetune: DynamicsConfig) -> None:
    """Raise ConfigError unless a checkpoint of `pretrained` can start `finetune`: the same model but
    for the space mode, the task embedding and the heads."""
    a = replace(pretrained, space_mode=finetune.space_mode, n_tasks=0, agent_heads=False,
                mtp_length=finetune.mtp_length, reward_bins=finetune.reward_bins)
    b = base_config(finetune)
    if pretrained.n_tasks or pretrained.agent_heads:
        if (pretrained.n_tasks, pretrained.agent_heads, pretrained.mtp_length, pretrained.reward_bins) != \
                (finetune.n_tasks, finetune.agent_heads, finetune.mtp_length, finetune.reward_bins):
            raise ConfigError("the checkpoint already has agent parameters of another shape "
                              f"(n_tasks={pretrained.n_tasks}, mtp_length={pretrained.mtp_length}, "
                              f"reward_bins={pretrained.reward_bins})")
    if a != b:
        from dataclasses import asdict
        da, db = asdict(a), asdict(b)
        diff = sorted(k for k in da if da[k] != db[k])
        raise ConfigError(f"the pretrained dynamics config differs from the finetuning model in {', '.join(diff)}")


def check_agent_start(pretrained: ModelConfig, finetune: DynamicsConfig, source: str) -> None:
    """The loaders' check (dreamer4_*.checkpoint.load_for_agent): raise CheckpointError naming `source`
    unless its config can start the finetuning model `finetune`."""
    if not isinstance(pretrained, DynamicsConfig):
        raise CheckpointError(f"{source} holds a {pretrained.kind} checkpoint; agent finetuning starts "
                              f"from a dynamics checkpoint")
    try:
        check_pretrained(pretrained, finetune)
    except ConfigError as e:
        raise CheckpointError(f"{source} cannot start this agent model: {e}") from e


def relevant_episodes(returns: np.ndarray, task_ids: np.ndarray, episodes: np.ndarray, quantile: float) -> np.ndarray:
    """The task-relevant episodes among `episodes` (rows of the episode table, whose `return` and
    `task_id` columns are given): per task, those whose return is at or above the `quantile` of that
    task's returns among `episodes` (0.5: the better half). Our data mixes scripted, oscillating and
    random behaviour, so the better half of each task's episodes is the closest it has to the
    paper's task-relevant demonstrations. Sorted int64 row ids."""
    episodes = np.asarray(episodes, np.int64)
    keep = []
    for task in np.unique(task_ids[episodes]):
        rows = episodes[task_ids[episodes] == task]
        threshold = np.quantile(returns[rows], quantile)
        keep.extend(rows[returns[rows] >= threshold].tolist())
    return np.sort(np.asarray(keep, np.int64))
