"""Recipes: one module per recipe, each holding the model config (`PRESET`), the training recipe
of each trainer (`TOKENIZER`, `DYNAMICS`) and the quickstart's pipeline settings (`PIPELINE`),
gathered in its `RECIPE`.

    tiny    unit-test sizes; a smoke test of the pipeline
    dmc64   64x64, the CPU quickstart
    dmc128  128x128, upstream's sizes and training defaults (GPUs)

The trainers (`shared.train_options.resolve`), the quickstart and the docs read them from here.
"""

from __future__ import annotations

from shared.config import ConfigError

from . import dmc64, dmc128, tiny
from .base import AgentRecipe, DynamicsRecipe, Pipeline, Preset, Recipe, TokenizerRecipe, TrainRecipe

RECIPES: dict[str, Recipe] = {m.RECIPE.name: m.RECIPE for m in (tiny, dmc64, dmc128)}
PRESETS: dict[str, Preset] = {name: recipe.preset for name, recipe in RECIPES.items()}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; the recipes are {', '.join(RECIPES)}")
    return RECIPES[name]


def get_preset(name: str) -> Preset:
    """The model config of recipe `name`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


__all__ = ["RECIPES", "PRESETS", "get_recipe", "get_preset", "Recipe", "Preset", "TrainRecipe",
           "TokenizerRecipe", "DynamicsRecipe", "AgentRecipe", "Pipeline"]
