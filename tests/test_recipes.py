"""The recipes (shared/recipes/): each builds and validates, fills every option the trainers leave
to it, and the dmc64 numbers are written out here so that changing the quickstart's recipe is a
visible change."""

import dataclasses
import importlib

import pytest

from shared.config import ConfigError, check_compatible, config_from_json, config_to_json
from shared.data.tasks import TASK_NAMES, UnknownTaskError
from shared.recipes import PRESETS, RECIPES, get_preset, get_recipe
from shared.recipes.base import DynamicsRecipe, Pipeline, Preset, Recipe, TokenizerRecipe
from shared.train_options import DynamicsOptions, TokenizerOptions, resolve

# Options that stay None unless the user gives them: a replacement model config, an override of the
# config's MAE probability, and the LPIPS weights files.
LEFT_TO_THE_USER = {"model_config", "mae_p_max", "lpips_alexnet", "lpips_lin"}
OPTIONS = {"tokenizer": TokenizerOptions, "dynamics": DynamicsOptions}


def test_the_three_recipes_are_registered_under_their_module_names():
    assert list(RECIPES) == ["tiny", "dmc64", "dmc128"]
    for name in RECIPES:
        module = importlib.import_module(f"shared.recipes.{name}")
        assert module.RECIPE is RECIPES[name] and isinstance(module.RECIPE, Recipe)
        assert module.RECIPE.preset is module.PRESET is PRESETS[name] is get_preset(name)
        assert module.RECIPE.tokenizer is module.TOKENIZER and module.RECIPE.dynamics is module.DYNAMICS
        assert module.RECIPE.pipeline is module.PIPELINE


@pytest.mark.parametrize("name", ["tiny", "dmc64", "dmc128"])
def test_model_config_validates_and_round_trips(name):
    preset = get_recipe(name).preset
    check_compatible(preset.tokenizer, preset.dynamics)
    for cfg in (preset.tokenizer, preset.dynamics):
        cfg.validate()
        assert config_from_json(config_to_json(cfg)) == cfg
    assert get_recipe(name).image_size == preset.tokenizer.image_height == preset.tokenizer.image_width


def user_left_none(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)
            if f.default is None and not f.metadata.get("required") and f.name not in LEFT_TO_THE_USER}


@pytest.mark.parametrize("kind", ["tokenizer", "dynamics"])
@pytest.mark.parametrize("name", ["tiny", "dmc64", "dmc128"])
def test_training_recipe_fills_every_option_left_unset(name, kind):
    cls = OPTIONS[kind]
    required = {f.name: "x" for f in dataclasses.fields(cls) if f.metadata.get("required")}
    options = resolve(cls(**required, preset=name), kind)
    training = get_recipe(name).training(kind)
    unset = user_left_none(cls)
    assert unset, "the options class has no recipe-filled field"
    for field_name in unset:
        assert getattr(options, field_name) is not None, field_name
        assert getattr(options, field_name) == getattr(training, field_name), field_name
    # ...and a value the user gave is kept.
    given = resolve(cls(**required, preset=name, steps=7, lr=0.5), kind)
    assert (given.steps, given.lr) == (7, 0.5)


def test_resolve_rejects_an_unknown_preset():
    with pytest.raises(SystemExit, match=r"--preset: unknown recipe 'huge'; the recipes are tiny, dmc64, dmc128"):
        resolve(TokenizerOptions(data="d", out="o", preset="huge"), "tokenizer")


def test_unknown_names_are_errors_that_name_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown recipe 'nope'; the recipes are tiny, dmc64, dmc128"):
        get_recipe("nope")
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; choose one of tiny, dmc64, dmc128"):
        get_preset("nope")
    with pytest.raises(ConfigError, match="unknown trainer 'agent'"):
        get_recipe("tiny").training("agent")


def test_dmc64_is_the_quickstart_recipe():
    r = get_recipe("dmc64")
    assert r.tokenizer.steps == 2100 and r.dynamics.steps == 2000
    assert r.pipeline.tasks == ("cheetah-run", "walker-walk", "hopper-hop", "finger-spin", "cartpole-swingup")
    assert r.pipeline.policy == "mixed"
    assert r.pipeline.episodes_per_task == 30 and r.pipeline.episode_steps == 500
    a = r.pipeline_for(agent=True)
    assert a.tasks == ("cartpole-swingup", "cheetah-run", "cup-catch", "finger-spin", "reacher-easy")
    assert (a.policy, a.data_dir, a.run_dir, a.episodes_per_task) == ("controller-heavy", "data/agent", "runs/agent", 30)
    assert r.pipeline_for(agent=False) is r.pipeline and get_recipe("tiny").pipeline_for(agent=True) is \
        get_recipe("tiny").pipeline                                  # no agent pipeline: the pipeline's own
    assert (r.tokenizer.eval_every, r.dynamics.eval_every) == (250, 500)
    assert (r.tokenizer.eval_sequences, r.dynamics.eval_sequences) == (96, 96)
    assert (r.pipeline.data_dir, r.pipeline.run_dir) == ("data/quickstart", "runs/quickstart")
    assert r.image_size == 64
    t, d = r.tokenizer, r.dynamics
    assert (t.batch_size, t.frames, t.lr, t.warmup_steps, t.optimizer, t.ema_decay, t.mse_on) == \
        (32, 1, 5e-4, 100, "muon", 0.0, "all")
    assert (d.batch_size, d.frames, d.lr, d.warmup_steps, d.optimizer, d.ema_decay) == (16, 16, 1e-3, 100, "muon", 0.995)
    assert (d.bootstrap_start, d.bootstrap_fraction) == (300, 0.1)


def test_dmc128_trains_as_upstream_on_all_tasks():
    r = get_recipe("dmc128")
    t, d = r.tokenizer, r.dynamics
    assert (t.steps, t.batch_size, t.frames, t.lr, t.optimizer, t.mse_on) == (90_000, 8, 8, 1e-4, "adamw", "masked")
    assert (d.steps, d.batch_size, d.frames, d.lr, d.optimizer) == (40_000, 24, 32, 1e-4, "adamw")
    assert r.pipeline.tasks == TASK_NAMES and len(r.pipeline.tasks) == 30
    assert r.image_size == 128


TRAIN = dict(steps=10, batch_size=2, frames=1, lr=1e-3, warmup_steps=1, optimizer="adamw", ema_decay=0.0,
             eval_every=5, eval_sequences=2)


@pytest.mark.parametrize("changes, message", [
    (dict(steps=0), r"TokenizerRecipe.steps must be a positive integer, got 0"),
    (dict(frames=1.5), r"TokenizerRecipe.frames must be a positive integer, got 1.5"),
    (dict(lr=0.0), r"TokenizerRecipe.lr must be positive"),
    (dict(warmup_steps=10), r"TokenizerRecipe.warmup_steps must be in \[0, steps=10\), got 10"),
    (dict(optimizer="sgd"), r"TokenizerRecipe.optimizer must be one of adamw, muon, got 'sgd'"),
    (dict(ema_decay=1.0), r"TokenizerRecipe.ema_decay must be in \[0, 1\)"),
    (dict(mse_on="some"), r"TokenizerRecipe.mse_on must be 'masked' or 'all', got 'some'"),
    (dict(contrast_weight=-1.0), r"TokenizerRecipe.contrast_weight must be >= 0, got -1.0"),
])
def test_a_bad_training_recipe_names_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        TokenizerRecipe(**{**TRAIN, "mse_on": "all", **changes})


def test_a_bad_dynamics_recipe_or_pipeline_names_the_problem():
    with pytest.raises(ConfigError, match=r"DynamicsRecipe.bootstrap_fraction must be in \[0, 1\), got 1.0"):
        DynamicsRecipe(**TRAIN, bootstrap_start=0, bootstrap_fraction=1.0)
    with pytest.raises(ConfigError, match=r"DynamicsRecipe.bootstrap_start must be in \[0, steps=10\), got 10"):
        DynamicsRecipe(**TRAIN, bootstrap_start=10, bootstrap_fraction=0.1)
    with pytest.raises(UnknownTaskError, match="unknown task 'walker-jog'"):
        Pipeline(tasks=("walker-jog",), episodes_per_task=1, episode_steps=10, data_dir="d", run_dir="r")
    with pytest.raises(ConfigError, match="Pipeline.tasks must be a non-empty tuple"):
        Pipeline(tasks="walker-walk", episodes_per_task=1, episode_steps=10, data_dir="d", run_dir="r")
    with pytest.raises(ConfigError, match="Pipeline.episodes_per_task must be a positive integer, got 0"):
        Pipeline(tasks=("walker-walk",), episodes_per_task=0, episode_steps=10, data_dir="d", run_dir="r")
    with pytest.raises(ConfigError, match="Pipeline.policy must be one of random, noise, mixed, controller-heavy, "
                                          "got 'expert'"):
        Pipeline(tasks=("walker-walk",), episodes_per_task=1, episode_steps=10, data_dir="d", run_dir="r",
                 policy="expert")


def test_a_recipe_and_its_preset_share_the_name_and_the_preset_is_checked():
    tiny = get_recipe("tiny")
    with pytest.raises(ConfigError, match="recipe 'small' holds the preset 'tiny'"):
        dataclasses.replace(tiny, name="small")
    with pytest.raises(ConfigError, match="do not match the dynamics model"):
        Preset("odd", "mismatched latents", tiny.preset.tokenizer, get_recipe("dmc64").preset.dynamics)
