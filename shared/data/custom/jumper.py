"""jumper-jump: a planar two-legged jumper (a new body; no stock model).

Torso: a sphere of radius 0.22 starting at z = 0.9, free in the x-z plane (x and z slides, a
hinge about y). Two legs hang from the torso centre in a V, +-36 deg from vertical; each is a
capsule 0.566 long of radius 0.052 ending in a foot sphere of radius 0.078, on a hinge about y
with range +-35 deg, stiffness 220 and damping 5, driven by a motor of gear 100 and control
range +-1. Total mass 2 (torso 1.0, legs 0.3 each, feet 0.2 each: the split is this project's
choice; the notes give only the total). Camera 0 is a side camera tracking the torso.
Start: the leg hinges are set uniformly in their range, then 200 physics steps let it settle.
reward = tol(torso_z, (1.5, inf), margin 0.75) (gaussian). 10 s at 0.01 s per control step
(two 0.005 s physics steps each).
"""

from __future__ import annotations

import collections

from dm_control import mujoco
from dm_control.rl import control
from dm_control.suite import base, common
from dm_control.utils import rewards

CONTROL_TIMESTEP = 0.01
JUMP_HEIGHT = 1.5
SETTLE_STEPS = 200

JUMPER_XML = """
<mujoco model="jumper">
  <include file="./common/skybox.xml"/>
  <include file="./common/visual.xml"/>
  <include file="./common/materials.xml"/>

  <option timestep="0.005"/>

  <default>
    <geom contype="1" conaffinity="0" condim="3" friction=".8 .1 .1" material="self"/>
    <joint type="hinge" axis="0 1 0" limited="true" range="-35 35" stiffness="220" damping="5"/>
    <motor gear="100" ctrllimited="true" ctrlrange="-1 1"/>
  </default>

  <worldbody>
    <geom name="floor" type="plane" contype="1" conaffinity="1" pos="0 0 0" size="50 .8 .2"
          material="grid"/>
    <body name="torso" pos="0 0 .9">
      <camera name="side" pos="0 -3.5 0" quat="0.707 0.707 0 0" mode="trackcom"/>
      <light name="light" pos="0 0 2" mode="trackcom"/>
      <joint name="rootx" type="slide" axis="1 0 0" limited="false" stiffness="0" damping="0"/>
      <joint name="rootz" type="slide" axis="0 0 1" limited="false" stiffness="0" damping="0"/>
      <joint name="rooty" type="hinge" axis="0 1 0" limited="false" stiffness="0" damping="0"/>
      <geom name="torso" type="sphere" size=".22" mass="1.0"/>
      <body name="left_leg" euler="0 36 0">
        <joint name="left_hip"/>
        <geom name="left_leg" type="capsule" fromto="0 0 0 0 0 -.566" size=".052" mass=".3"/>
        <geom name="left_foot" type="sphere" pos="0 0 -.566" size=".078" mass=".2"
              material="effector"/>
      </body>
      <body name="right_leg" euler="0 -36 0">
        <joint name="right_hip"/>
        <geom name="right_leg" type="capsule" fromto="0 0 0 0 0 -.566" size=".052" mass=".3"/>
        <geom name="right_foot" type="sphere" pos="0 0 -.566" size=".078" mass=".2"
              material="effector"/>
      </body>
    </body>
  </worldbody>

  <actuator>
    <motor name="left_hip" joint="left_hip"/>
    <motor name="right_hip" joint="right_hip"/>
  </actuator>
</mujoco>
"""


class Physics(mujoco.Physics):
    def torso_height(self):
        return self.named.data.xpos["torso", "z"]


class Jump(base.Task):
    def initialize_episode(self, physics):
        limited = physics.model.jnt_limited == 1
        lower, upper = physics.model.jnt_range[limited].T
        physics.data.qpos[physics.model.jnt_qposadr[limited]] = self.random.uniform(lower, upper)
        physics.step(nstep=SETTLE_STEPS)
        physics.data.time = 0
        super().initialize_episode(physics)

    def get_observation(self, physics):
        observation = collections.OrderedDict()
        observation["position"] = physics.data.qpos[1:].copy()
        observation["velocity"] = physics.data.qvel.copy()
        return observation

    def get_reward(self, physics):
        return rewards.tolerance(physics.torso_height(), bounds=(JUMP_HEIGHT, float("inf")),
                                 margin=JUMP_HEIGHT / 2)


def jump(random=None):
    physics = Physics.from_xml_string(JUMPER_XML, common.ASSETS)
    return control.Environment(physics, Jump(random=random), time_limit=float("inf"),
                               control_timestep=CONTROL_TIMESTEP)

