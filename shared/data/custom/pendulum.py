"""pendulum-spin: the stock pendulum and swing-up start state; reward for spinning fast.

reward = tol(|angular velocity|, bounds=(9, inf), margin=4.5, value_at_margin=0.5, linear)
       = min(|omega| / 9, 1). 20 s at 0.02 s per control step.
"""

from __future__ import annotations

from dm_control.rl import control
from dm_control.suite import pendulum

SPIN_SPEED = 9.0  # rad/s for full reward


class Spin(pendulum.SwingUp):
    def get_reward(self, physics):
        return min(abs(float(physics.angular_velocity()[0])) / SPIN_SPEED, 1.0)


def spin(random=None):
    physics = pendulum.Physics.from_xml_string(*pendulum.get_model_and_assets())
    return control.Environment(physics, Spin(random=random), time_limit=float("inf"))
