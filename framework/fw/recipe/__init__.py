"""YAML recipes -> typed, validated configuration -> built components.

A recipe is a mapping with the top-level keys of :class:`Recipe`. Every component is written
``{name: <registered name>, <param>: <value>, ...}``; its params are checked against the
factory's signature (names, type hints, required values). A parameter whose type is a component
kind (e.g. ``p: NeighborhoodDistribution``, or ``of: Dataset`` for a dataset wrapping another)
takes a nested component mapping.

The package's modules, in the order a recipe meets them: `fw.recipe.files` (YAML, ``extends``,
overrides), `fw.recipe.checker` (validation against the registry), `fw.recipe.schema` (typed
settings, cache keys) and `fw.recipe.build` (validated recipes and built components).
"""

from fw.recipe.build import build, check_component, load_recipe, recipe_from_dict
from fw.recipe.checker import RecipeChecker, factory_params
from fw.recipe.files import apply_overrides, parse_override, read_recipe_file
from fw.recipe.schema import (
    DEFAULT_STEPS,
    NO_EFFECT,
    LoggerConfig,
    Recipe,
    TrainerConfig,
    dump_yaml,
    result_settings,
    settings_digest,
)

__all__ = [
    "DEFAULT_STEPS",
    "NO_EFFECT",
    "LoggerConfig",
    "Recipe",
    "RecipeChecker",
    "TrainerConfig",
    "apply_overrides",
    "build",
    "check_component",
    "dump_yaml",
    "factory_params",
    "load_recipe",
    "parse_override",
    "read_recipe_file",
    "recipe_from_dict",
    "result_settings",
    "settings_digest",
]
