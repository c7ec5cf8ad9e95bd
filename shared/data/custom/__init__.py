"""The 12 tasks that dm_control does not ship, built on mujoco==3.17.0 + dm_control==1.0.50 from
the definitions in the reference notes (TASKS.md): modified models and reward functions.

`build(name, seed)` returns a dm_control `control.Environment` with no time limit (the episode
length of 500 agent steps is kept by `shared.data.env.TaskEnv`). Importing this package imports
dm_control.
"""

from __future__ import annotations

from typing import Callable

from ..render import configure_gl

configure_gl()  # MUJOCO_GL must be chosen before dm_control imports mujoco

from . import ball_in_cup, cheetah, hopper, jumper, pendulum, reacher, walker  # noqa: E402

BUILDERS: dict[str, Callable] = {
    "pendulum-spin": pendulum.spin,
    "cup-spin": ball_in_cup.spin,
    "jumper-jump": jumper.jump,
    "reacher-three-easy": reacher.three_easy,
    "reacher-three-hard": reacher.three_hard,
    "hopper-hop-backward": hopper.hop_backward,
    "walker-walk-backward": walker.walk_backward,
    "walker-run-backward": walker.run_backward,
    "cheetah-run-backward": cheetah.run_backward,
    "cheetah-run-front": cheetah.run_front,
    "cheetah-run-back": cheetah.run_back,
    "cheetah-jump": cheetah.jump,
}


def build(name: str, seed: int):
    """The dm_control environment of custom task `name`, its task RNG seeded with `seed`."""
    if name not in BUILDERS:
        raise KeyError(f"{name!r} is not a custom task; custom tasks: {', '.join(BUILDERS)}")
    return BUILDERS[name](random=seed)

