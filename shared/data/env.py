"""One task as an environment with the data set's conventions: actions in [-1, 1], action
repeat 2 with summed rewards, and a rendered (3, size, size) uint8 frame after reset and after
every agent step. Imports mujoco and dm_control (the `data` extra).

    env = make_env("walker-walk", seed=0, size=64)   # shared.data.tasks.make_env
    frame = env.reset()                              # (3, 64, 64) uint8
    frame, reward = env.step(np.zeros(6))            # reward in [0, 2]

`reset(seed)` reseeds the task's random state, so one TaskEnv can produce any episode: an
episode depends only on its seed, not on the episodes before it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .render import FrameRenderer, configure_gl


class TaskSpec(Protocol):
    """What an environment needs of a task: a `shared.data.tasks.TaskSpec` (the registry builds
    environments through `make_env`, so this module does not import it back)."""
    name: str
    domain: str
    task: str
    action_dim: int
    custom: bool
    control_timestep: float

configure_gl()  # before dm_control / mujoco are imported

from dm_control import suite  # noqa: E402  (needs MUJOCO_GL set)


class TaskBuildError(RuntimeError):
    """A task could not be built; the message names it."""


def build_dm_env(spec: TaskSpec, seed: int):
    """The dm_control environment of `spec`, with no time limit, its task RNG seeded with `seed`."""
    try:
        if spec.custom:
            from . import custom

            env = custom.build(spec.name, seed)
        else:
            env = suite.load(spec.domain, spec.task,
                             task_kwargs={"random": seed, "time_limit": float("inf")})
    except Exception as error:
        raise TaskBuildError(f"task {spec.name!r} could not be built: "
                             f"{type(error).__name__}: {error}") from error
    action_shape = env.action_spec().shape
    if action_shape != (spec.action_dim,):
        raise TaskBuildError(f"task {spec.name!r}: the environment's actions have shape "
                             f"{action_shape}, the registry says ({spec.action_dim},)")
    if abs(env.control_timestep() - spec.control_timestep) > 1e-9:
        raise TaskBuildError(f"task {spec.name!r}: control timestep {env.control_timestep()} s, "
                             f"the registry says {spec.control_timestep} s")
    return env


class TaskEnv:
    """A task with action repeat and rendering; see the module docstring.

    Args:
      spec: the task (from shared.data.tasks.TASKS).
      seed: seed of the task's random state (start states, targets).
      size: frame height and width.
      action_repeat: control steps per agent step (shared.data.tasks.ACTION_REPEAT).
      **render_options: supersample, shadows, reflections (see FrameRenderer).
    """

    def __init__(self, spec: TaskSpec, seed: int, size: int, *, action_repeat: int, **render_options):
        self.spec = spec
        self.action_repeat = int(action_repeat)
        self.size = int(size)
        self.dm_env = build_dm_env(spec, seed)
        self.physics = self.dm_env.physics
        action_spec = self.dm_env.action_spec()
        self._action_low = np.asarray(action_spec.minimum, np.float64)
        self._action_high = np.asarray(action_spec.maximum, np.float64)
        self.renderer = FrameRenderer(self.physics, self.size, camera_id=0, **render_options)
        self.steps = 0

    @property
    def action_dim(self) -> int:
        return self.spec.action_dim

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode (reseeding the task first if `seed` is given); return frame 0."""
        if seed is not None:
            self.dm_env.task.random.seed(int(seed))
        self.dm_env.reset()
        self.steps = 0
        return self.renderer.render()

    def step(self, action: np.ndarray, render: bool = True) -> tuple[np.ndarray | None, float]:
        """Apply `action` ((action_dim,) in [-1, 1]) for `action_repeat` control steps; return the
        new frame (None with render=False, for policies that do not look) and the summed reward."""
        action = np.asarray(action, np.float64)
        if action.shape != (self.spec.action_dim,):
            raise ValueError(f"{self.spec.name}: action of shape {action.shape}, "
                             f"expected ({self.spec.action_dim},)")
        if not np.all(np.isfinite(action)) or np.any(np.abs(action) > 1.0 + 1e-6):
            raise ValueError(f"{self.spec.name}: actions must be finite and in [-1, 1], got {action}")
        scaled = self._action_low + (np.clip(action, -1, 1) + 1) * 0.5 * (
            self._action_high - self._action_low)
        reward = 0.0
        for _ in range(self.action_repeat):
            reward += float(self.dm_env.step(scaled).reward)
        self.steps += 1
        return (self.renderer.render() if render else None), reward

    def render(self) -> np.ndarray:
        return self.renderer.render()

    @property
    def state_names(self) -> list[str]:
        """The names of `state()`'s values: 'group[i]' for each observation group in the task's
        key order (a scalar group is 'group[0]')."""
        names = []
        for group, spec in self.dm_env.observation_spec().items():
            names += [f"{group}[{i}]" for i in range(int(np.prod(spec.shape, dtype=np.int64)))]
        return names

    def state(self) -> np.ndarray:
        """The current physical state: the task's observation of the current physics, flattened
        in its key order (float32). It is what a state-based agent sees: positions (joint angles as
        cos/sin where they wrap), velocities, and task extras (touch, vectors to targets)."""
        observation = self.dm_env.task.get_observation(self.physics)
        return np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in observation.values()])

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
