"""Behaviour policies for data collection: diverse motion without trained agents.

Kinds (stored per episode in the dataset as `policy`):
  uniform     i.i.d. uniform actions in [-1, 1].
  noise       temporally correlated Gaussian noise (AR(1), correlation 0 to 0.98) around a
              random offset, at a random scale: from jitter to slow sweeps.
  oscillator  sinusoids per action dimension (random frequency, amplitude, phase, offset) plus
              correlated noise: rhythmic, gait-like motion for walkers, hoppers, fingers.
  controller  a simple task controller, where one is cheap (pendulum energy pumping and
              balancing, cartpole swing-up and balancing, reacher Jacobian reaching, cup-catch
              swing-up and catching, a finger-spin wiping stroke, a cheetah-run open-loop gait),
              plus correlated noise of a random scale; reaches rewarding states like upstream's
              expert data with added noise.

`make_policy(mode, task, rng)` draws one policy for one episode: mode "random" always gives
uniform, "noise" always noise, "mixed" draws a kind (see MIXED_WEIGHTS) and its parameters,
"controller-heavy" draws with CONTROLLER_HEAVY_WEIGHTS (mostly controllers, for behaviour
cloning and agent data). "mixed" only draws the controllers of MIXED_CONTROLLER_TASKS (those it
had when the first data sets were collected), so the same seeds keep giving the same episodes;
"controller-heavy" draws every controller in CONTROLLERS. A policy is called once per agent
step with the environment (controllers read its physics state, open-loop ones its clock
`physics.data.time`) and the step index, and returns an action of shape (action_dim,) in [-1, 1].
Measured returns: docs/experiments.md, "Which tasks for the agent, and what the data's policies
reach".
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

POLICY_MODES = ("random", "noise", "mixed", "controller-heavy")
KINDS = ("uniform", "noise", "oscillator", "controller")
# Probabilities of each kind under --policy mixed; a task without a controller gives the
# controller's share to the oscillator.
MIXED_WEIGHTS = {"uniform": 0.1, "noise": 0.35, "oscillator": 0.25, "controller": 0.3}
# Under --policy controller-heavy: mostly (noisy) controllers, and some episodes of the other
# kinds so that the data still shows poor returns and off-task motion.
CONTROLLER_HEAVY_WEIGHTS = {"uniform": 0.1, "noise": 0.1, "oscillator": 0.1, "controller": 0.7}


class CorrelatedNoise:
    """x_t = rho x_{t-1} + sqrt(1 - rho^2) eps_t: unit-variance noise with correlation rho."""

    def __init__(self, dim: int, correlation: float, rng: np.random.Generator):
        self.rho = float(correlation)
        self.rng = rng
        self.state = rng.standard_normal(dim)

    def __call__(self) -> np.ndarray:
        eps = self.rng.standard_normal(self.state.shape)
        self.state = self.rho * self.state + math.sqrt(1.0 - self.rho ** 2) * eps
        return self.state


class Policy:
    """Base class: `kind` names the family, `params` records the drawn parameters."""

    kind = "base"

    def __init__(self, action_dim: int, rng: np.random.Generator):
        self.action_dim = action_dim
        self.rng = rng
        self.params: dict = {}

    def act(self, env, step: int) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, env, step: int) -> np.ndarray:
        return np.clip(self.act(env, step), -1.0, 1.0).astype(np.float32)


class UniformPolicy(Policy):
    kind = "uniform"

    def act(self, env, step):
        return self.rng.uniform(-1.0, 1.0, self.action_dim)


class NoisePolicy(Policy):
    kind = "noise"

    def __init__(self, action_dim, rng):
        super().__init__(action_dim, rng)
        self.params = dict(scale=float(rng.uniform(0.2, 1.0)),
                           correlation=float(rng.choice([0.0, 0.5, 0.8, 0.9, 0.95, 0.98])),
                           offset_scale=float(rng.choice([0.0, 0.3])))
        self.offset = self.params["offset_scale"] * rng.uniform(-1, 1, action_dim)
        self.noise = CorrelatedNoise(action_dim, self.params["correlation"], rng)

    def act(self, env, step):
        return self.offset + self.params["scale"] * self.noise()


class OscillatorPolicy(Policy):
    kind = "oscillator"

    def __init__(self, action_dim, rng, agent_dt: float):
        super().__init__(action_dim, rng)
        self.params = dict(frequency_hz=float(rng.uniform(0.5, 4.0)),
                           noise_scale=float(rng.uniform(0.0, 0.4)))
        self.amplitude = rng.uniform(0.3, 1.0, action_dim)
        self.phase = rng.uniform(0, 2 * np.pi, action_dim)
        self.offset = rng.uniform(-0.3, 0.3, action_dim)
        self.agent_dt = agent_dt
        self.noise = CorrelatedNoise(action_dim, 0.8, rng)

    def act(self, env, step):
        angle = 2 * np.pi * self.params["frequency_hz"] * step * self.agent_dt + self.phase
        return (self.offset + self.amplitude * np.sin(angle)
                + self.params["noise_scale"] * self.noise())


class ControllerPolicy(Policy):
    """A task controller plus correlated noise; `gain` scales the controller's output so that
    episodes range from careful to sloppy."""

    kind = "controller"

    def __init__(self, action_dim, rng, controller: Callable, name: str):
        super().__init__(action_dim, rng)
        self.controller = controller
        self.params = dict(controller=name,
                           noise_scale=float(rng.choice([0.0, 0.1, 0.3, 0.6])),
                           noise_correlation=float(rng.choice([0.0, 0.8, 0.95])),
                           gain=float(rng.uniform(0.7, 1.3)))
        self.noise = CorrelatedNoise(action_dim, self.params["noise_correlation"], rng)

    def act(self, env, step):
        return (self.params["gain"] * self.controller(env.physics)
                + self.params["noise_scale"] * self.noise())


# --- task controllers: physics -> action in [-1, 1] -------------------------------------------

def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def pendulum_swingup(physics) -> np.ndarray:
    """Energy pumping until the pole has the energy of the upright pose, then PD balancing.
    The hinge angle is 0 upright; the mass (1 kg at 0.5 m) gives E = I w^2 / 2 + m g l cos(q)."""
    angle = _wrap(float(physics.named.data.qpos["hinge"][0]))
    velocity = float(physics.named.data.qvel["hinge"][0])
    if math.cos(angle) > 0.95:
        return np.array([-10.0 * angle - 2.0 * velocity])
    energy = 0.5 * 0.25 * velocity ** 2 + 4.905 * math.cos(angle)
    return np.array([4.0 * (4.905 - energy) * velocity])


def pendulum_spin(physics) -> np.ndarray:
    """Always push along the current velocity (or start it moving)."""
    velocity = float(physics.named.data.qvel["hinge"][0])
    return np.array([1.0 if velocity >= 0 else -1.0])


def cartpole(physics) -> np.ndarray:
    """Swing the pole up by pumping energy through the cart, balance it near upright with a
    linear state feedback, and keep the cart near the centre. Hinge angle 0 is upright."""
    x = float(physics.named.data.qpos["slider"][0])
    v = float(physics.named.data.qvel["slider"][0])
    angle = _wrap(float(physics.named.data.qpos["hinge_1"][0]))
    omega = float(physics.named.data.qvel["hinge_1"][0])
    if math.cos(angle) > 0.8:
        return np.array([CARTPOLE_BALANCE @ np.array([x, v, angle, omega])])
    # Energy relative to upright at rest (pole: 0.1 kg, 1 m, I ~ m l^2 / 3 about the hinge).
    energy = 0.5 * (0.1 / 3) * omega ** 2 + 0.1 * 9.81 * 0.5 * (math.cos(angle) - 1)
    pump = CARTPOLE_PUMP * energy * np.sign(omega * math.cos(angle))
    return np.array([pump - 0.3 * x - 0.1 * v])


CARTPOLE_BALANCE = np.array([1.0, 1.5, 12.0, 2.0])
CARTPOLE_PUMP = 40.0


def reacher(physics) -> np.ndarray:
    """Jacobian-transpose PD reaching: joint torques that pull the finger towards the target."""
    import mujoco

    model, data = physics.model.ptr, physics.data.ptr
    finger_body = model.geom_bodyid[physics.model.name2id("finger", "geom")]
    error = (physics.named.data.geom_xpos["target", :2]
             - physics.named.data.geom_xpos["finger", :2])
    jacobian = np.zeros((3, model.nv))
    mujoco.mj_jac(model, data, jacobian, None, physics.named.data.geom_xpos["finger"], finger_body)
    return 40.0 * jacobian[:2].T @ error - 0.3 * physics.data.qvel


def _tip_pd(physics, geom: str, target_xz, gain: float, joints: slice) -> np.ndarray:
    """Jacobian-transpose PD in the x-z plane: torques on `joints` pulling geom towards target."""
    import mujoco

    model, data = physics.model.ptr, physics.data.ptr
    body = model.geom_bodyid[physics.model.name2id(geom, "geom")]
    position = physics.named.data.geom_xpos[geom]
    jacobian = np.zeros((3, model.nv))
    mujoco.mj_jac(model, data, jacobian, None, position, body)
    error = np.array([target_xz[0] - position[0], 0.0, target_xz[1] - position[2]])
    return gain * jacobian[:, joints].T @ error - 0.1 * physics.data.qvel[joints]


# Tuned by cross-entropy search on returns (docs/experiments.md, "Which tasks for the agent").
FINGER_SPIN = dict(radius=0.108, radius_swing=0.0265, radius_phase=3.31, angle=3.24,
                   angle_swing=1.035, angle_phase=1.82, hz=3.12, gain=73.8)


def finger_spin(physics) -> np.ndarray:
    """A wiping stroke: the fingertip's target circles (open loop, 3.1 Hz) through an arc of
    +-60 degrees on the spinner's left side, about 0.11 m from its axis, so that the tip flicks
    the spinner's arms upwards, clockwise on camera (the rewarded direction)."""
    p = FINGER_SPIN
    phase = 2 * np.pi * p["hz"] * float(physics.data.time)
    radius = p["radius"] + p["radius_swing"] * math.cos(phase + p["radius_phase"])
    angle = p["angle"] + p["angle_swing"] * math.sin(phase + p["angle_phase"])
    centre = physics.named.data.xpos["spinner"]
    target = (centre[0] + radius * math.cos(angle), centre[2] + radius * math.sin(angle))
    return _tip_pd(physics, "fingertip", target, p["gain"], slice(0, 2))


# bthigh, bshin, bfoot, fthigh, fshin, ffoot
CHEETAH_GAIT = dict(hz=2.238,
                    amplitude=np.array([0.970, 0.580, 0.676, 0.178, 0.735, 0.340]),
                    phase=np.array([4.367, 4.308, 4.433, 5.771, 1.068, 1.051]),
                    offset=np.array([0.036, -0.240, -0.428, -0.487, -0.077, 0.171]))


def cheetah_run(physics) -> np.ndarray:
    """An open-loop bounding gait: one sinusoid per joint at 2.2 Hz (amplitudes, phases and
    offsets found by search), about 2.3 m/s."""
    g = CHEETAH_GAIT
    angle = 2 * np.pi * g["hz"] * float(physics.data.time)
    return g["offset"] + g["amplitude"] * np.sin(angle + g["phase"])


CUP_CATCH = dict(kx=33.8, dx=0.31, kz=14.3, dz=0.67, lead=0.028, depth=0.135, margin=-0.086,
                 pump=0.93)


def cup_catch(physics) -> np.ndarray:
    """While the ball is above the cup's bottom: move the cup under it (PD on x towards the
    ball, on z towards a point below it) so that it falls in. While it hangs below: hold the
    cup up and pump the swing (push the cup against the ball's relative velocity) until the
    ball flies above the cup."""
    p = CUP_CATCH
    v = physics.named.data.qvel
    bx, bz = physics.named.data.xpos["ball"][[0, 2]]
    cx, cz = physics.named.data.xpos["cup"][[0, 2]]
    bvx, cvx, cvz = float(v["ball_x"][0]), float(v["cup_x"][0]), float(v["cup_z"][0])
    if bz > cz - 0.1 + p["margin"]:
        ux = p["kx"] * (bx + p["lead"] * bvx - cx) - p["dx"] * cvx
        uz = p["kz"] * (bz - p["depth"] - cz) - p["dz"] * cvz
    else:
        ux = -p["pump"] * math.tanh(10 * (bvx - cvx)) - 2.0 * cx
        uz = 1.0
    return np.array([ux, uz])


CONTROLLERS: dict[str, Callable] = {
    "pendulum-swingup": pendulum_swingup,
    "pendulum-spin": pendulum_spin,
    "cartpole-balance": cartpole,
    "cartpole-balance-sparse": cartpole,
    "cartpole-swingup": cartpole,
    "cartpole-swingup-sparse": cartpole,
    "reacher-easy": reacher,
    "reacher-hard": reacher,
    "reacher-three-easy": reacher,
    "reacher-three-hard": reacher,
    "cup-catch": cup_catch,
    "finger-spin": finger_spin,
    "cheetah-run": cheetah_run,
}
# The tasks whose controllers "mixed" draws: frozen, so that existing data sets stay reproducible.
MIXED_CONTROLLER_TASKS = frozenset({
    "pendulum-swingup", "pendulum-spin", "cartpole-balance", "cartpole-balance-sparse",
    "cartpole-swingup", "cartpole-swingup-sparse", "reacher-easy", "reacher-hard",
    "reacher-three-easy", "reacher-three-hard"})
MODE_WEIGHTS = {"mixed": MIXED_WEIGHTS, "controller-heavy": CONTROLLER_HEAVY_WEIGHTS}


def make_policy(mode: str, task: str, action_dim: int, agent_dt: float,
                rng: np.random.Generator) -> Policy:
    """One episode's behaviour policy. `agent_dt` is the duration of an agent step in seconds."""
    if mode == "random":
        return UniformPolicy(action_dim, rng)
    if mode == "noise":
        return NoisePolicy(action_dim, rng)
    if mode not in MODE_WEIGHTS:
        raise ValueError(f"unknown policy mode {mode!r}; choose one of {', '.join(POLICY_MODES)}")
    weights = dict(MODE_WEIGHTS[mode])
    has_controller = task in (MIXED_CONTROLLER_TASKS if mode == "mixed" else CONTROLLERS)
    if not has_controller:
        weights["oscillator"] += weights.pop("controller")
    kinds = list(weights)
    kind = kinds[rng.choice(len(kinds), p=np.array([weights[k] for k in kinds]))]
    return policy_of_kind(kind, task, action_dim, agent_dt, rng)


def policy_of_kind(kind: str, task: str, action_dim: int, agent_dt: float,
                   rng: np.random.Generator) -> Policy:
    """A policy of family `kind` with parameters drawn from `rng` (as "mixed" draws them)."""
    if kind == "controller" and task not in CONTROLLERS:
        raise ValueError(f"task {task!r} has no controller; those that do: {', '.join(CONTROLLERS)}")
    if kind == "uniform":
        return UniformPolicy(action_dim, rng)
    if kind == "noise":
        return NoisePolicy(action_dim, rng)
    if kind == "oscillator":
        return OscillatorPolicy(action_dim, rng, agent_dt)
    if kind != "controller":
        raise ValueError(f"unknown policy kind {kind!r}; choose one of {', '.join(KINDS)}")
    return ControllerPolicy(action_dim, rng, CONTROLLERS[task], CONTROLLERS[task].__name__)
