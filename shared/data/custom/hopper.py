"""hopper-hop-backward: the stock hopper; reward for hopping backwards at 1 m/s.

reward = standing * clip(-v_x, 0, 1), where standing is stock hopper's 0/1 indicator of the
torso being 0.6 to 2 above the foot. 20 s at 0.02 s per control step.
"""

from __future__ import annotations

from dm_control.rl import control
from dm_control.suite import hopper
from dm_control.utils import rewards

CONTROL_TIMESTEP = 0.02
STAND_HEIGHT = 0.6
BACKWARD_SPEED = 1.0


class HopBackward(hopper.Hopper):
    def __init__(self, random=None):
        super().__init__(hopping=True, random=random)

    def get_reward(self, physics):
        standing = rewards.tolerance(physics.height(), (STAND_HEIGHT, 2))
        backward = min(max(-float(physics.speed()) / BACKWARD_SPEED, 0.0), 1.0)
        return standing * backward


def hop_backward(random=None):
    physics = hopper.Physics.from_xml_string(*hopper.get_model_and_assets())
    return control.Environment(physics, HopBackward(random=random), time_limit=float("inf"),
                               control_timestep=CONTROL_TIMESTEP)
