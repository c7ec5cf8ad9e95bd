"""reacher-three-easy / reacher-three-hard: a three-link planar reacher.

Links of 0.09 and 0.09 and a 0.1 hand capsule; joints shoulder0 (unlimited), shoulder1 (+-80
deg) and wrist (+-80 deg); the finger sits 0.09 along the hand from the wrist; motors with gear
0.05. The task is stock reacher's: joints randomised, target of radius 0.05 (easy) or 0.015
(hard) at a random angle and a radius U(0.05, 0.20), sparse reward for the finger inside the
target. 20 s at 0.02 s per control step. Arena, walls, camera and materials are stock.
"""

from __future__ import annotations

from dm_control.rl import control
from dm_control.suite import common, reacher

THREE_LINK_XML = """
<mujoco model="three-link planar reacher">
  <include file="./common/skybox.xml"/>
  <include file="./common/visual.xml"/>
  <include file="./common/materials.xml"/>

  <option timestep="0.02">
    <flag contact="disable"/>
  </option>

  <default>
    <joint type="hinge" axis="0 0 1" damping="0.01"/>
    <motor gear=".05" ctrlrange="-1 1" ctrllimited="true"/>
  </default>

  <worldbody>
    <light name="light" pos="0 0 1"/>
    <camera name="fixed" pos="0 0 .75" quat="1 0 0 0"/>
    <geom name="ground" type="plane" pos="0 0 0" size=".3 .3 10" material="grid"/>
    <geom name="wall_x" type="plane" pos="-.3 0 .02" zaxis="1 0 0"  size=".02 .3 .02" material="decoration"/>
    <geom name="wall_y" type="plane" pos="0 -.3 .02" zaxis="0 1 0"  size=".3 .02 .02" material="decoration"/>
    <geom name="wall_neg_x" type="plane" pos=".3 0 .02" zaxis="-1 0 0"  size=".02 .3 .02" material="decoration"/>
    <geom name="wall_neg_y" type="plane" pos="0 .3 .02" zaxis="0 -1 0"  size=".3 .02 .02" material="decoration"/>

    <geom name="root" type="cylinder" fromto="0 0 0 0 0 0.02" size=".011" material="decoration"/>
    <body name="arm0" pos="0 0 .01">
      <geom name="arm0" type="capsule" fromto="0 0 0 0.09 0 0" size=".01" material="self"/>
      <joint name="shoulder0"/>
      <body name="arm1" pos=".09 0 0">
        <geom name="arm1" type="capsule" fromto="0 0 0 0.09 0 0" size=".01" material="self"/>
        <joint name="shoulder1" limited="true" range="-80 80"/>
        <body name="hand" pos=".09 0 0">
          <geom name="hand" type="capsule" fromto="0 0 0 0.1 0 0" size=".01" material="self"/>
          <joint name="wrist" limited="true" range="-80 80"/>
          <body name="finger" pos=".09 0 0">
            <geom name="finger" type="sphere" size=".01" material="effector"/>
          </body>
        </body>
      </body>
    </body>
    <geom name="target" pos="0 0 .01" material="target" type="sphere" size=".05"/>
  </worldbody>

  <actuator>
    <motor name="shoulder0" joint="shoulder0"/>
    <motor name="shoulder1" joint="shoulder1"/>
    <motor name="wrist" joint="wrist"/>
  </actuator>
</mujoco>
"""

EASY_TARGET = 0.05
HARD_TARGET = 0.015


def _three_link(target_size, random):
    physics = reacher.Physics.from_xml_string(THREE_LINK_XML, common.ASSETS)
    task = reacher.Reacher(target_size=target_size, random=random)
    return control.Environment(physics, task, time_limit=float("inf"))


def three_easy(random=None):
    return _three_link(EASY_TARGET, random)


def three_hard(random=None):
    return _three_link(HARD_TARGET, random)
