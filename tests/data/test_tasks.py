"""The task registry and the 30 environments (stock and custom)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from shared.data.tasks import (ACTION_PAD, TASK_IDS, TASK_NAMES, TASKS,
                               UnknownTaskError, action_mask, get_task, make_env, resolve_tasks)

ROOT = Path(__file__).resolve().parents[2]

# DREAMER4.md section 3, "Tasks and action dims", in that order.
UPSTREAM_ORDER = {
    1: "acrobot-swingup pendulum-swingup cartpole-balance cartpole-balance-sparse cartpole-swingup "
       "cartpole-swingup-sparse pendulum-spin",
    2: "reacher-easy reacher-hard cup-catch finger-spin finger-turn-easy finger-turn-hard cup-spin "
       "jumper-jump",
    3: "reacher-three-easy reacher-three-hard",
    4: "hopper-stand hopper-hop hopper-hop-backward",
    6: "walker-stand walker-walk walker-run cheetah-run walker-walk-backward walker-run-backward "
       "cheetah-run-backward cheetah-run-front cheetah-run-back cheetah-jump",
}
CUSTOM = {"pendulum-spin", "cup-spin", "reacher-three-easy", "reacher-three-hard",
          "hopper-hop-backward", "walker-walk-backward", "walker-run-backward",
          "cheetah-run-backward", "cheetah-run-front", "cheetah-run-back", "cheetah-jump",
          "jumper-jump"}


def test_registry_is_upstreams_order_with_action_sizes():
    expected = [(name, dim) for dim, names in UPSTREAM_ORDER.items() for name in names.split()]
    assert [(spec.name, spec.action_dim) for spec in TASKS.values()] == expected
    assert len(TASKS) == 30 and list(TASK_IDS.values()) == list(range(30))
    assert {name for name, spec in TASKS.items() if spec.custom} == CUSTOM
    for spec in TASKS.values():
        # 500 agent steps x action repeat 2 = the stock time limit of the domain
        assert spec.episode_seconds == pytest.approx(
            {"acrobot": 10, "cartpole": 10, "cheetah": 10, "jumper": 10, "walker": 25}.get(spec.domain, 20))


def test_resolve_tasks_and_unknown_names():
    assert resolve_tasks("all") == list(TASK_NAMES)
    assert resolve_tasks("walker-walk, acrobot-swingup") == ["acrobot-swingup", "walker-walk"]
    with pytest.raises(UnknownTaskError, match="walker-wlak.*did you mean walker-walk"):
        resolve_tasks("walker-wlak")
    with pytest.raises(UnknownTaskError, match="no task"):
        resolve_tasks("")
    with pytest.raises(UnknownTaskError, match="unknown task 'humanoid-run'"):
        make_env("humanoid-run", seed=0)


def test_action_mask():
    mask = action_mask("hopper-hop")
    assert mask.shape == (ACTION_PAD,) and mask.dtype == np.float32
    assert mask.tolist() == [1.0] * 4 + [0.0] * 12
    assert np.array_equal(action_mask(TASK_IDS["hopper-hop"]), mask)


def test_core_modules_import_without_torch_jax_mujoco_dm_control():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'jax', 'jaxlib', 'mujoco', 'dm_control'):
                    raise ImportError('blocked import of ' + name)
        sys.meta_path.insert(0, Block())
        import shared, shared.data
        import shared.data.tasks, shared.data.format, shared.data.windows, shared.data.check
        import shared.data.collect, shared.data.import_upstream, shared.data.policies
        import shared.data.render
        print('ok')
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_builds_steps_and_renders(name):
    """Each of the 30 tasks builds (a failure names the task), renders camera 0 and gives
    summed rewards in [0, 2] for the two control steps of an agent step."""
    spec = get_task(name)
    with make_env(name, seed=1, size=16) as env:
        frame = env.reset()
        assert frame.shape == (3, 16, 16) and frame.dtype == np.uint8
        assert frame.std() > 0  # not a blank image
        rng = np.random.default_rng(0)
        for _ in range(3):
            frame, reward = env.step(rng.uniform(-1, 1, spec.action_dim))
            assert 0.0 <= reward <= 2.0 + 1e-9
        with pytest.raises(ValueError, match="expected"):
            env.step(np.zeros(spec.action_dim + 1))
        with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
            env.step(np.full(spec.action_dim, 1.5))


def test_episode_depends_only_on_its_seed():
    """Resetting a used environment with a seed gives the episode a fresh environment with
    that seed gives: what lets one worker record any episode."""
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 2))

    def play(env, seed):
        frames = [env.reset(seed)]
        frames += [env.step(a)[0] for a in actions]
        return np.stack(frames)

    with make_env("reacher-easy", seed=0, size=24) as used, make_env("reacher-easy", seed=7, size=24) as fresh:
        play(used, 3)
        first = play(used, 5)
        second = play(fresh, 5)
        other = play(fresh, 6)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_custom_models_follow_the_notes():
    """Spot checks of the custom definitions in TASKS.md."""
    with make_env("walker-walk-backward", seed=0, size=8) as env:
        floor = env.physics.named.model
        assert floor.geom_pos["floor", 0] - floor.geom_size["floor", 0] == pytest.approx(-252)
        assert floor.geom_pos["floor", 0] + floor.geom_size["floor", 0] == pytest.approx(748)
    with make_env("cheetah-jump", seed=0, size=8) as env:
        floor = env.physics.named.model
        assert floor.geom_pos["ground", 0] - floor.geom_size["ground", 0] == pytest.approx(-102)
        assert floor.geom_pos["ground", 0] + floor.geom_size["ground", 0] == pytest.approx(298)
    with make_env("jumper-jump", seed=0, size=8) as env:
        model = env.physics.named.model
        assert env.physics.model.body_mass.sum() == pytest.approx(2.0)
        assert model.geom_size["torso", 0] == pytest.approx(0.22)
        assert np.degrees(model.jnt_range["left_hip"]).tolist() == pytest.approx([-35, 35])
        assert model.jnt_stiffness["left_hip"] == 220 and model.actuator_gear["left_hip", 0] == 100
    with make_env("reacher-three-hard", seed=0, size=8) as env:
        env.reset()  # the task sets the target's size at the start of an episode
        model = env.physics.named.model
        assert model.geom_size["target", 0] == pytest.approx(0.015)
        assert [env.physics.model.joint(i).name for i in range(3)] == ["shoulder0", "shoulder1", "wrist"]
        assert model.actuator_gear[:, 0].tolist() == pytest.approx([0.05] * 3)
    with make_env("pendulum-spin", seed=0, size=8) as env:
        env.reset()
        env.physics.named.data.qvel["hinge"] = 4.5
        assert env.dm_env.task.get_reward(env.physics) == pytest.approx(0.5)
        env.physics.named.data.qvel["hinge"] = -20
        assert env.dm_env.task.get_reward(env.physics) == pytest.approx(1.0)
    with make_env("cup-spin", seed=0, size=8) as env:
        in_cup = []
        for seed in range(20):
            env.reset(seed)
            in_cup.append(env.physics.in_target())
        assert 14 <= sum(in_cup) <= 20  # 90% start inside the cup, the rest anywhere
        env.reset(0)
        if env.physics.in_target():
            assert env.dm_env.task.get_reward(env.physics) == 0.0


def test_circular_state_replaces_free_angles_by_cos_and_sin():
    """Reacher's shoulder (position[0]) becomes two columns in its place; the same angle one turn
    later gives the same values; a domain without free angles is unchanged."""
    from shared.data.tasks import circular_state

    names = ["position[0]", "position[1]", "to_target[0]"]
    states = np.array([[np.pi / 2, 0.3, -0.1], [np.pi / 2 + 2 * np.pi, 0.3, -0.1]], np.float32)
    out_names, out = circular_state("reacher-easy", names, states)
    assert out_names == ["cos position[0]", "sin position[0]", "position[1]", "to_target[0]"]
    np.testing.assert_allclose(out[0], [0.0, 1.0, 0.3, -0.1], atol=1e-6)
    np.testing.assert_allclose(out[1], out[0], atol=1e-5)
    same_names, same = circular_state("walker-walk", names, states)
    assert same_names == names and np.array_equal(same, states)
    with pytest.raises(ValueError, match="columns"):
        circular_state("reacher-easy", names[:2], states)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_free_angles_are_the_raw_angles_of_unlimited_hinges(name):
    """FREE_ANGLES names exactly the state dimensions that echo an unlimited hinge's raw angle:
    each such joint is set to a distinct angle beyond 2π and the state is searched for it."""
    from shared.data.tasks import FREE_ANGLES

    with make_env(name, seed=0, size=16) as env:
        model, data = env.physics.model, env.physics.data
        import mujoco
        hinges = [j for j in range(model.njnt)
                  if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE and not model.jnt_limited[j]]
        values = {}
        for k, j in enumerate(hinges):
            values[j] = 7.0 + 0.37 * k
            data.qpos[model.jnt_qposadr[j]] = values[j]
        env.physics.forward()
        state, names = env.state(), env.state_names
        echoed = {names[i] for i in range(len(names))
                  if any(abs(float(state[i]) - v) < 1e-4 for v in values.values())}
    assert echoed == set(FREE_ANGLES.get(get_task(name).domain, ())), name
