"""cup-spin: the stock ball-in-cup model; reward for swinging the ball around the cup.

Start: the ball's position is resampled until it is collision-free and inside the cup (in 10% of
episodes, chosen by the task RNG, the inside-the-cup condition is dropped).
reward = (1 - in_cup) * (dist_r + 2 vel_r) / 3 with dist_r = clip(2 |target - ball|_xz, 0, 1)
and vel_r = clip(|(|v_x|, |v_z|)| / 6, 0, 1). 20 s at 0.02 s per control step.
"""

from __future__ import annotations

import numpy as np
from dm_control.rl import control
from dm_control.suite import ball_in_cup, base

CONTROL_TIMESTEP = 0.02
SPIN_SPEED = 6.0         # ball speed for full velocity reward
FREE_START_FRACTION = 0.1


class Spin(ball_in_cup.BallInCup):
    def initialize_episode(self, physics):
        free_start = self.random.uniform() < FREE_START_FRACTION
        while True:
            physics.named.data.qpos["ball_x"] = self.random.uniform(-0.2, 0.2)
            physics.named.data.qpos["ball_z"] = self.random.uniform(0.2, 0.5)
            physics.after_reset()
            if physics.data.ncon == 0 and (free_start or physics.in_target()):
                break
        base.Task.initialize_episode(self, physics)

    def get_reward(self, physics):
        distance = float(np.linalg.norm(physics.ball_to_target()))
        dist_reward = min(max(2.0 * distance, 0.0), 1.0)
        velocity = np.abs(physics.named.data.qvel[["ball_x", "ball_z"]])
        vel_reward = min(float(np.linalg.norm(velocity)) / SPIN_SPEED, 1.0)
        return (1.0 - physics.in_target()) * (dist_reward + 2.0 * vel_reward) / 3.0


def spin(random=None):
    physics = ball_in_cup.Physics.from_xml_string(*ball_in_cup.get_model_and_assets())
    return control.Environment(physics, Spin(random=random), time_limit=float("inf"),
                               control_timestep=CONTROL_TIMESTEP)
