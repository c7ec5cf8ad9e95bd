"""The 30 DMControl tasks of the upstream data set: names, action sizes, timing, cameras.

`TASKS` lists them in upstream's canonical order (grouped by action size); a task's id is its
index in that order and is what datasets store. 18 tasks are stock dm_control tasks; 12 are
built in `shared.data.custom` from modified models and rewards (see /TASKS.md of the reference
notes: pendulum-spin, cup-spin, reacher-three-*, hopper-hop-backward, walker-*-backward,
cheetah-run-backward/-front/-back, cheetah-jump, jumper-jump).

Every task: actions in [-1, 1], action repeat 2 (the two control steps' rewards are summed),
500 agent steps per episode (1000 control steps = the task's time limit), camera 0.

This module needs numpy only. `make_env` imports mujoco and dm_control when called.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

ACTION_PAD = 16        # actions are stored zero-padded to this many dimensions
STATE_PAD = 32         # states (flattened observations, at most 24 values) are stored zero-padded
ACTION_REPEAT = 2      # control steps per agent step
EPISODE_STEPS = 500    # agent steps per episode; an episode has EPISODE_STEPS + 1 frames
DEFAULT_SIZE = 128     # frame height and width (upstream trains at 128x128)


@dataclass(frozen=True)
class TaskSpec:
    """One task. `control_timestep` is the duration of one control step in seconds; an episode
    lasts ACTION_REPEAT * EPISODE_STEPS control steps."""

    name: str              # e.g. "walker-walk"
    domain: str            # dm_control domain ("ball_in_cup" for cup-*), or our own ("jumper")
    task: str              # dm_control task name ("turn_easy"), or our custom task's name
    action_dim: int
    custom: bool           # built in shared.data.custom rather than loaded from dm_control.suite
    control_timestep: float
    camera: str            # what camera 0 shows

    @property
    def task_id(self) -> int:
        return TASK_IDS[self.name]

    @property
    def episode_seconds(self) -> float:
        return self.control_timestep * ACTION_REPEAT * EPISODE_STEPS


_FIXED = "fixed camera"
_TOP = "fixed top-down camera"
_TRACK = "torso-tracking side camera"

# (name, domain, task, action_dim, custom, control_timestep, camera), in upstream's order.
_TABLE = [
    # 1-d
    ("acrobot-swingup", "acrobot", "swingup", 1, False, 0.01, _FIXED),
    ("pendulum-swingup", "pendulum", "swingup", 1, False, 0.02, _FIXED),
    ("cartpole-balance", "cartpole", "balance", 1, False, 0.01, _FIXED),
    ("cartpole-balance-sparse", "cartpole", "balance_sparse", 1, False, 0.01, _FIXED),
    ("cartpole-swingup", "cartpole", "swingup", 1, False, 0.01, _FIXED),
    ("cartpole-swingup-sparse", "cartpole", "swingup_sparse", 1, False, 0.01, _FIXED),
    ("pendulum-spin", "pendulum", "spin", 1, True, 0.02, _FIXED),
    # 2-d
    ("reacher-easy", "reacher", "easy", 2, False, 0.02, _TOP),
    ("reacher-hard", "reacher", "hard", 2, False, 0.02, _TOP),
    ("cup-catch", "ball_in_cup", "catch", 2, False, 0.02, "cam0"),
    ("finger-spin", "finger", "spin", 2, False, 0.02, "cam0"),
    ("finger-turn-easy", "finger", "turn_easy", 2, False, 0.02, "cam0"),
    ("finger-turn-hard", "finger", "turn_hard", 2, False, 0.02, "cam0"),
    ("cup-spin", "ball_in_cup", "spin", 2, True, 0.02, "cam0"),
    ("jumper-jump", "jumper", "jump", 2, True, 0.01, _TRACK),
    # 3-d
    ("reacher-three-easy", "reacher", "three_easy", 3, True, 0.02, _TOP),
    ("reacher-three-hard", "reacher", "three_hard", 3, True, 0.02, _TOP),
    # 4-d
    ("hopper-stand", "hopper", "stand", 4, False, 0.02, _TRACK),
    ("hopper-hop", "hopper", "hop", 4, False, 0.02, _TRACK),
    ("hopper-hop-backward", "hopper", "hop_backward", 4, True, 0.02, _TRACK),
    # 6-d
    ("walker-stand", "walker", "stand", 6, False, 0.025, _TRACK),
    ("walker-walk", "walker", "walk", 6, False, 0.025, _TRACK),
    ("walker-run", "walker", "run", 6, False, 0.025, _TRACK),
    ("cheetah-run", "cheetah", "run", 6, False, 0.01, _TRACK),
    ("walker-walk-backward", "walker", "walk_backward", 6, True, 0.025, _TRACK),
    ("walker-run-backward", "walker", "run_backward", 6, True, 0.025, _TRACK),
    ("cheetah-run-backward", "cheetah", "run_backward", 6, True, 0.01, _TRACK),
    ("cheetah-run-front", "cheetah", "run_front", 6, True, 0.01, _TRACK),
    ("cheetah-run-back", "cheetah", "run_back", 6, True, 0.01, _TRACK),
    ("cheetah-jump", "cheetah", "jump", 6, True, 0.01, _TRACK),
]

TASKS: dict[str, TaskSpec] = {row[0]: TaskSpec(*row) for row in _TABLE}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
TASK_IDS: dict[str, int] = {name: i for i, name in enumerate(TASK_NAMES)}


class UnknownTaskError(KeyError):
    """A task name that is not one of the 30; the message suggests the closest names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


def get_task(name: str) -> TaskSpec:
    """The spec of task `name`, or an UnknownTaskError naming it and the closest valid names."""
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(str(name), TASK_NAMES, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownTaskError(f"unknown task {name!r}{hint}; the 30 tasks are: {', '.join(TASK_NAMES)}")


def task_name(task_id: int) -> str:
    if not 0 <= int(task_id) < len(TASK_NAMES):
        raise UnknownTaskError(f"task id {task_id} is out of range [0, {len(TASK_NAMES)})")
    return TASK_NAMES[int(task_id)]


def resolve_tasks(tasks: str | Iterable[str]) -> list[str]:
    """Turn "all", "walker-walk,cheetah-run" or a list of names into task names in canonical
    order, without duplicates. Unknown names raise UnknownTaskError."""
    if isinstance(tasks, str):
        items = [t.strip() for t in tasks.split(",") if t.strip()]
    else:
        items = [str(t).strip() for t in tasks]
    if not items:
        raise UnknownTaskError("no task given; pass 'all' or comma-separated task names")
    if "all" in items:
        return list(TASK_NAMES)
    wanted = {get_task(t).name for t in items}
    return [name for name in TASK_NAMES if name in wanted]


def action_mask(task: str | int) -> np.ndarray:
    """(ACTION_PAD,) float32: 1 on the task's real action dimensions, 0 on the padding."""
    name = task_name(task) if isinstance(task, (int, np.integer)) else task
    mask = np.zeros(ACTION_PAD, np.float32)
    mask[: get_task(name).action_dim] = 1.0
    return mask


def action_masks() -> np.ndarray:
    """(30, ACTION_PAD) float32: `action_mask` of every task, indexed by task id."""
    return np.stack([action_mask(name) for name in TASK_NAMES])


# Observation groups that are not part of a frame's key state: velocities need two frames, touch
# sensors are contact forces. Everything else (positions, joint angles as cos/sin or raw, heights,
# vectors to targets) is what one rendered frame shows and what a policy needs to see.
NOT_KEY_STATE = ("velocity", "touch")


def key_state(state_names: Iterable[str]) -> list[int]:
    """Indices of the key-state dimensions among a task's state names ('position[1]', ...):
    those whose observation group is not in NOT_KEY_STATE."""
    return [i for i, name in enumerate(state_names) if name.split("[")[0] not in NOT_KEY_STATE]


# Hinge angles that a task's observation gives raw although the joint turns freely (no range in
# the model): a frame shows such an angle only modulo 2π, so a probe's target for it is its cos and
# sin. Other angles are either limited joints or already given as cos/sin by the task.
FREE_ANGLES = {"reacher": ("position[0]",),  # the shoulder (the wrist is limited to ±160°)
               "cheetah": ("position[1]",),  # rooty, the torso's pitch
               "hopper": ("position[1]",),   # rooty
               "jumper": ("position[1]",)}   # rooty


def circular_state(task: str, state_names: list[str], states: np.ndarray) -> tuple[list[str], np.ndarray]:
    """`states` (..., len(state_names)) with each of the task's FREE_ANGLES replaced by two
    columns, 'cos NAME' and 'sin NAME', in its place; other columns unchanged."""
    states = np.asarray(states)
    if states.shape[-1] != len(state_names):
        raise ValueError(f"states have {states.shape[-1]} columns, {task} names {len(state_names)}")
    free = FREE_ANGLES.get(get_task(task).domain, ())
    names, columns = [], []
    for i, name in enumerate(state_names):
        if name in free:
            names += [f"cos {name}", f"sin {name}"]
            columns += [np.cos(states[..., i]), np.sin(states[..., i])]
        else:
            names.append(name)
            columns.append(states[..., i])
    return names, np.stack(columns, -1).astype(states.dtype, copy=False)


def make_env(name: str, seed: int, size: int = DEFAULT_SIZE, **render_options):
    """Build task `name` seeded with `seed` as a `shared.data.env.TaskEnv` rendering
    (3, size, size) uint8 frames. Needs the `data` extra (mujoco, dm_control). A task that
    cannot be built raises TaskBuildError naming it; nothing is ever substituted.
    `render_options` go to `shared.data.render.FrameRenderer` (supersample, shadows, reflections)."""
    from .env import TaskEnv  # lazy: mujoco and dm_control

    return TaskEnv(get_task(name), seed=seed, size=size, action_repeat=ACTION_REPEAT, **render_options)


def padded(actions: np.ndarray, action_dim: int) -> np.ndarray:
    """(..., action_dim) -> (..., ACTION_PAD) float32 with zeros in the padded dimensions."""
    actions = np.asarray(actions, np.float32)
    if actions.shape[-1] != action_dim:
        raise ValueError(f"actions have {actions.shape[-1]} dimensions, expected {action_dim}")
    out = np.zeros(actions.shape[:-1] + (ACTION_PAD,), np.float32)
    out[..., :action_dim] = actions
    return out

