"""cheetah-run-backward / -run-front / -run-back / -jump: the cheetah on a floor extended
backwards (x in [-102, 298]; stock: [-2, 198]), stock start state, new rewards.

  run-backward: clip(-v_x / 8, 0, 1).
  run-front (back foot `bfoot` up) / run-back (front foot `ffoot` up):
    up = (3 tol(foot_z, (1.2, inf), margin 0.6) + 2 tol(torso_z, (1.2, inf), margin 0.6)) / 5;
    reward = up * (5 clip(v_x / 6, 0, 1) + 1) / 6.
  jump: mean over feet f in (bfoot, ffoot) of
    (5 tol((torso_z + f_z) / 2, (1.2, inf), margin 0.6)
     + tol(v_x, (-0.5, 0.5), margin 0.5, value_at_margin 0, linear)) / 6.
Heights are body-frame origins (`xpos`), v_x is the torso subtree's linear velocity.
10 s at 0.01 s per control step.
"""

from __future__ import annotations

from dm_control.rl import control
from dm_control.suite import cheetah, common
from dm_control.utils import rewards

from .stock_models import edited_stock_model

HIGH = 1.2
BACKWARD_SPEED = 8.0
ONE_FOOT_SPEED = 6.0
JUMP_DRIFT = 0.5

_STOCK_FLOOR = 'pos="98 0 0" size="100 .8 .5"'
_LONG_FLOOR = 'pos="98 0 0" size="200 .8 .5"'


def _high(height):
    return rewards.tolerance(height, bounds=(HIGH, float("inf")), margin=HIGH / 2)


def _clip01(x):
    return min(max(float(x), 0.0), 1.0)


class RunBackward(cheetah.Cheetah):
    def get_reward(self, physics):
        return _clip01(-physics.speed() / BACKWARD_SPEED)


class RunOneFoot(cheetah.Cheetah):
    """Run forwards on one foot; `raised_foot` is the body kept up."""

    def __init__(self, raised_foot, random=None):
        self._raised_foot = raised_foot
        super().__init__(random=random)

    def get_reward(self, physics):
        foot_up = _high(physics.named.data.xpos[self._raised_foot, "z"])
        torso_up = _high(physics.named.data.xpos["torso", "z"])
        up = (3 * foot_up + 2 * torso_up) / 5
        return up * (5 * _clip01(physics.speed() / ONE_FOOT_SPEED) + 1) / 6


class Jump(cheetah.Cheetah):
    def get_reward(self, physics):
        torso_z = physics.named.data.xpos["torso", "z"]
        in_place = rewards.tolerance(physics.speed(), bounds=(-JUMP_DRIFT, JUMP_DRIFT),
                                     margin=JUMP_DRIFT, value_at_margin=0, sigmoid="linear")
        per_foot = [(5 * _high((torso_z + physics.named.data.xpos[foot, "z"]) / 2) + in_place) / 6
                    for foot in ("bfoot", "ffoot")]
        return sum(per_foot) / 2


def _environment(task):
    physics = cheetah.Physics.from_xml_string(
        edited_stock_model("cheetah.xml", _STOCK_FLOOR, _LONG_FLOOR), common.ASSETS)
    return control.Environment(physics, task, time_limit=float("inf"))


def run_backward(random=None):
    return _environment(RunBackward(random=random))


def run_front(random=None):
    return _environment(RunOneFoot("bfoot", random=random))


def run_back(random=None):
    return _environment(RunOneFoot("ffoot", random=random))


def jump(random=None):
    return _environment(Jump(random=random))
