"""walker-walk-backward / walker-run-backward: the walker on a floor extended backwards.

The floor spans x in [-252, 748] (stock: [-2, 498]) so the walker can travel backwards.
stand = (3 tol(torso height, (1.2, inf), margin 0.6) + (1 + upright) / 2) / 4 (stock);
move = clip(-v_x / S, 0, 1) with S = 1 (walk) or 8 (run); reward = stand * (5 move + 1) / 6.
25 s at 0.025 s per control step.
"""

from __future__ import annotations

from dm_control.rl import control
from dm_control.suite import common, walker
from dm_control.utils import rewards

from .stock_models import edited_stock_model

CONTROL_TIMESTEP = 0.025
STAND_HEIGHT = 1.2
WALK_SPEED = 1.0
RUN_SPEED = 8.0

_STOCK_FLOOR = 'pos="248 0 0" size="250 .8 .2"'
_LONG_FLOOR = 'pos="248 0 0" size="500 .8 .2"'


class Backward(walker.PlanarWalker):
    def get_reward(self, physics):
        standing = rewards.tolerance(physics.torso_height(), bounds=(STAND_HEIGHT, float("inf")),
                                     margin=STAND_HEIGHT / 2)
        upright = (1 + physics.torso_upright()) / 2
        stand_reward = (3 * standing + upright) / 4
        move_reward = min(max(-float(physics.horizontal_velocity()) / self._move_speed, 0.0), 1.0)
        return stand_reward * (5 * move_reward + 1) / 6


def _backward(speed, random):
    physics = walker.Physics.from_xml_string(
        edited_stock_model("walker.xml", _STOCK_FLOOR, _LONG_FLOOR), common.ASSETS)
    return control.Environment(physics, Backward(move_speed=speed, random=random),
                               time_limit=float("inf"), control_timestep=CONTROL_TIMESTEP)


def walk_backward(random=None):
    return _backward(WALK_SPEED, random)


def run_backward(random=None):
    return _backward(RUN_SPEED, random)
