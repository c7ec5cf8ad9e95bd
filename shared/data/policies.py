"""Behaviour policies for data collection: diverse motion without trained agents.

Kinds (stored per episode in the dataset as `policy`):
  uniform     i.i.d. uniform actions in [-1, 1].
  noise       temporally correlated Gaussian noise (AR(1), correlation 0 to 0.98) around a
              random offset, at a random scale: from jitter to slow sweeps.
  oscillator  sinusoids per action dimension (random frequency, amplitude, phase, offset) plus
              correlated noise: rhythmic, gait-like motion for walkers, hoppers, fingers.
  controller  a simple task controller, where one is cheap (pendulum energy pumping and
              balancing, cartpole swing-up and balancing, reacher Jacobian reaching), plus
              correlated noise of a random scale; reaches rewarding states like upstream's
              expert data with added noise.

`make_policy(mode, task, rng)` draws one policy for one episode: mode "random" always gives
uniform, "noise" always noise, "mixed" draws a kind (see MIXED_WEIGHTS) and its parameters. A
policy is called once per agent step with the environment (controllers read its physics state)
and the step index, and returns an action of shape (action_dim,) in [-1, 1].
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

POLICY_MODES = ("random", "noise", "mixed")
KINDS = ("uniform", "noise", "oscillator", "controller")
# Probabilities of each kind under --policy mixed; a task without a controller gives the
# controller's share to the oscillator.
MIXED_WEIGHTS = {"uniform": 0.1, "noise": 0.35, "oscillator": 0.25, "controller": 0.3}


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
}


def make_policy(mode: str, task: str, action_dim: int, agent_dt: float,
                rng: np.random.Generator) -> Policy:
    """One episode's behaviour policy. `agent_dt` is the duration of an agent step in seconds."""
    if mode == "random":
        return UniformPolicy(action_dim, rng)
    if mode == "noise":
        return NoisePolicy(action_dim, rng)
    if mode != "mixed":
        raise ValueError(f"unknown policy mode {mode!r}; choose one of {', '.join(POLICY_MODES)}")
    weights = dict(MIXED_WEIGHTS)
    if task not in CONTROLLERS:
        weights["oscillator"] += weights.pop("controller")
    kinds = list(weights)
    kind = kinds[rng.choice(len(kinds), p=np.array([weights[k] for k in kinds]))]
    if kind == "uniform":
        return UniformPolicy(action_dim, rng)
    if kind == "noise":
        return NoisePolicy(action_dim, rng)
    if kind == "oscillator":
        return OscillatorPolicy(action_dim, rng, agent_dt)
    return ControllerPolicy(action_dim, rng, CONTROLLERS[task], CONTROLLERS[task].__name__)
